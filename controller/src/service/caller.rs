//! Who is calling: built once per request by the transport from the verified client
//! certificate, then handed to every service call, which checks the role and tenant scope the
//! action needs. Refusals are counted and audited here.

use std::time::{Duration, SystemTime};

use crate::controller::{Controller, now_unix};
use crate::ids::{AgentId, TenantId};
use crate::metrics::Metrics;
use crate::pki::{self, Identity, Role};
use crate::service::ServiceError;
use crate::store::AgentRecord;

/// What an admin action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any role.
    Read,
    /// operator or admin.
    Manage,
    /// admin.
    Admin,
}

/// An admin caller, from its verified certificate (and the deny list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The admin name in the certificate.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its tenant scope (None: all tenants).
    pub scope: Option<TenantId>,
    /// `sha256:<hex>` of the caller's certificate: the credential's id.
    pub fingerprint: String,
}

impl Caller {
    /// The admin calling with the verified leaf certificate `leaf` (None: the connection sent no
    /// client certificate). Refused if it is not an admin credential or the deny list refuses
    /// it; a credential issued before credentials were recorded is recorded at its first use.
    pub async fn admin(ctl: &Controller, leaf: Option<&[u8]>) -> Result<Caller, ServiceError> {
        let refused = |e: ServiceError| {
            Metrics::inc(&ctl.metrics.auth_refused);
            e
        };
        let Some(leaf) = leaf else {
            return Err(refused(ServiceError::Unauthenticated(
                "a client certificate is required: enroll the agent, or use an admin credential"
                    .into(),
            )));
        };
        let fingerprint = pki::fingerprint(leaf);
        let id = Identity::from_cert_der(leaf)
            .map_err(|e| refused(ServiceError::PermissionDenied(e.to_string())))?;
        let Identity::Admin { name, role, tenant } = id else {
            return Err(refused(ServiceError::PermissionDenied(
                "this call needs an admin certificate (thothctl); agent certificates cannot make it"
                    .into(),
            )));
        };
        // An unknown credential of a revoked name: the store is read here (once, off the TLS
        // verifier), in case `issue-admin` recorded it since.
        ctl.admins.settle(&ctl.store, &fingerprint, &name).await;
        // The admin deny list, at every request (a revoked admin's open connection is refused
        // too).
        if let Some(why) = ctl.admins.refusal(&fingerprint, &name) {
            return Err(refused(ServiceError::Unauthenticated(why)));
        }
        let caller = Caller {
            name,
            role,
            scope: tenant.map(TenantId::trusted),
            fingerprint,
        };
        // A credential issued before credentials were recorded is recorded at its first use,
        // so that it can be listed and revoked by id.
        if !ctl.admins.is_recorded(&caller.fingerprint)
            && let Ok(rec) = crate::admins::record_for(leaf, "first use", now_unix())
        {
            let fp = rec.fingerprint.clone();
            // Recorded revoked if its name was revoked meanwhile (one statement): note what
            // was stored, and check again.
            let stored = ctl
                .db(move |s| {
                    s.record_admin(&rec)?;
                    Ok(s.list_admins()?
                        .into_iter()
                        .filter(|a| a.fingerprint == fp)
                        .collect::<Vec<_>>())
                })
                .await?;
            for a in &stored {
                ctl.admins.note(a);
            }
            if let Some(why) = ctl.admins.refusal(&caller.fingerprint, &caller.name) {
                return Err(refused(ServiceError::Unauthenticated(why)));
            }
        }
        Ok(caller)
    }

    /// Checks the caller has the role `need` asks, and resolves the tenant it acts on
    /// (`requested`, or its own scope, or the default). Refusals are audited.
    pub async fn authorize(
        &self,
        ctl: &Controller,
        action: &str,
        need: Need,
        requested: &str,
    ) -> Result<TenantId, ServiceError> {
        let tenant = if requested.is_empty() {
            self.scope
                .clone()
                .unwrap_or_else(|| TenantId::trusted(ctl.config.default_tenant.clone()))
        } else {
            TenantId::parse(requested)?
        };
        let allowed = match need {
            Need::Read => true,
            Need::Manage => matches!(self.role, Role::Operator | Role::Admin),
            Need::Admin => self.role == Role::Admin,
        };
        let refusal = if !allowed {
            Some(format!(
                "{} has role {}; {action} needs {}",
                self.name,
                self.role,
                if need == Need::Admin {
                    "admin"
                } else {
                    "operator or admin"
                }
            ))
        } else if let Some(scope) = &self.scope
            && *scope != tenant
        {
            Some(format!(
                "{} may act on tenant {:?} only, not {:?}",
                self.name,
                scope.as_str(),
                tenant.as_str()
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            Metrics::inc(&ctl.metrics.auth_refused);
            ctl.audit(
                &self.name,
                self.role.as_str(),
                action,
                tenant.as_str(),
                &format!("refused: {why}"),
                serde_json::json!({}),
            )
            .await;
            return Err(ServiceError::PermissionDenied(why));
        }
        Ok(tenant)
    }

    /// For listings: `Some(tenant)` to filter, `None` for all (unscoped callers naming none).
    pub fn list_scope(&self, requested: &str, resolved: TenantId) -> Option<TenantId> {
        if requested.is_empty() && self.scope.is_none() {
            None
        } else {
            Some(resolved)
        }
    }

    /// Appends a successful action to the audit log.
    pub(crate) async fn audit_ok(
        &self,
        ctl: &Controller,
        action: &str,
        tenant: &str,
        detail: serde_json::Value,
    ) {
        ctl.audit(&self.name, self.role.as_str(), action, tenant, "ok", detail)
            .await;
    }

    /// Appends a refused action to the audit log.
    pub(crate) async fn audit_refused(
        &self,
        ctl: &Controller,
        action: &str,
        tenant: &str,
        why: &str,
        detail: serde_json::Value,
    ) {
        ctl.audit(
            &self.name,
            self.role.as_str(),
            action,
            tenant,
            &format!("refused: {why}"),
            detail,
        )
        .await;
    }
}

/// Why an agent call is refused, and whether the authorisation the server gave its connection
/// from memory (a verified certificate) must be withdrawn: the store refused the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRefusal {
    /// What the caller is told.
    pub error: ServiceError,
    /// The connection loses its authorisation.
    pub withdraw: bool,
}

impl From<ServiceError> for AgentRefusal {
    fn from(error: ServiceError) -> AgentRefusal {
        AgentRefusal {
            error,
            withdraw: false,
        }
    }
}

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64),
    )
    .to_string()
}

/// The enrolled, unrevoked agent calling with the verified leaf certificate `leaf` (None: the
/// connection sent no client certificate).
pub async fn agent_caller(
    ctl: &Controller,
    leaf: Option<&[u8]>,
) -> Result<AgentRecord, AgentRefusal> {
    let refused = |error: ServiceError, withdraw: bool| {
        Metrics::inc(&ctl.metrics.auth_refused);
        AgentRefusal { error, withdraw }
    };
    let Some(leaf) = leaf else {
        return Err(refused(
            ServiceError::Unauthenticated(
                "a client certificate is required: enroll the agent, or use an admin credential"
                    .into(),
            ),
            false,
        ));
    };
    let id = Identity::from_cert_der(leaf)
        .map_err(|e| refused(ServiceError::PermissionDenied(e.to_string()), false))?;
    // The admin deny list, at every request (a revoked admin's open connection is refused too).
    if let Identity::Admin { name, .. } = &id
        && let Some(why) = ctl.admins.refusal(&pki::fingerprint(leaf), name)
    {
        return Err(refused(ServiceError::Unauthenticated(why), false));
    }
    let Identity::Agent { tenant, agent_id } = id else {
        return Err(refused(
            ServiceError::PermissionDenied(
                "this call is for agents; an admin certificate cannot make it".into(),
            ),
            false,
        ));
    };
    let id = AgentId::trusted(agent_id.as_str());
    let agent = ctl
        .db(move |s| s.agent(&id))
        .await
        .map_err(ServiceError::from)?;
    let Some(agent) = agent.filter(|a| a.tenant == tenant) else {
        return Err(refused(
            ServiceError::PermissionDenied(format!(
                "agent {agent_id} is not enrolled with this controller"
            )),
            true,
        ));
    };
    if let Some(at) = agent.revoked_at {
        // Memory learns it too (a revocation by another process on the same store).
        ctl.admins.agent_revoked(&agent_id);
        return Err(refused(
            ServiceError::PermissionDenied(format!(
                "agent {agent_id} was revoked at {}; it must be enrolled again with a new token",
                rfc3339(at)
            )),
            true,
        ));
    }
    Ok(agent)
}
