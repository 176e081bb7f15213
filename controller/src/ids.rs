//! Typed identifiers: a tenant and an agent. Constructors that validate are the ones the edges
//! call with what a caller sent; `trusted` wraps a value read from a verified certificate or the
//! store.

use std::fmt;

use crate::pki;

/// Longest agent id accepted from a caller.
pub const MAX_AGENT_ID: usize = 64;

/// Why a caller's id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not a tenant name.
    #[error("{0}")]
    Tenant(String),
    /// An agent id over [`MAX_AGENT_ID`] bytes.
    #[error("agent_id is {len} bytes, over the {MAX_AGENT_ID} byte limit")]
    AgentIdTooLong {
        /// Its length.
        len: usize,
    },
}

/// A tenant name (`pki::check_tenant`'s rules).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// A tenant a caller named: refused unless it follows the naming rules.
    pub fn parse(tenant: &str) -> Result<TenantId, IdError> {
        pki::check_tenant(tenant).map_err(|e| IdError::Tenant(e.to_string()))?;
        Ok(TenantId(tenant.to_owned()))
    }

    /// A tenant read from a verified certificate, the store or the configuration.
    pub fn trusted(tenant: impl Into<String>) -> TenantId {
        TenantId(tenant.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An agent id (`agt-…`, in the agent's certificate).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId(String);

impl AgentId {
    /// An agent id a caller named: at most [`MAX_AGENT_ID`] bytes.
    pub fn parse(agent_id: &str) -> Result<AgentId, IdError> {
        if agent_id.len() > MAX_AGENT_ID {
            return Err(IdError::AgentIdTooLong {
                len: agent_id.len(),
            });
        }
        Ok(AgentId(agent_id.to_owned()))
    }

    /// An id read from a verified certificate or the store.
    pub fn trusted(agent_id: impl Into<String>) -> AgentId {
        AgentId(agent_id.into())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AgentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
