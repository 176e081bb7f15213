//! The controller's service layer: policy, tokens, agents, audit, events and admin credentials
//! as services that take a typed [`Caller`] (role, tenant scope) and return [`ServiceError`]s.
//! Authorization, validation, token minting and audit writes live here; a transport (gRPC today,
//! an HTTP API later) builds the caller from the verified certificate, calls a service and maps
//! its error, nothing more.

mod caller;
mod error;

pub mod admins;
pub mod agents;
pub mod approval_notify;
pub mod approvals;
pub mod audit;
pub mod enrollment;
pub mod events;
pub mod pins;
pub mod policy;
pub mod tokens;

pub use caller::{AgentRefusal, Caller, Need, agent_caller};
pub use error::ServiceError;

use crate::store::Labels;

/// Longest free text (comments, reasons, sources).
pub const MAX_TEXT: usize = 1024;
/// Most labels on a token or agent.
pub const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 255;

/// Refuses `value` if it is longer than `max` bytes.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    if value.len() > max {
        return Err(ServiceError::InvalidArgument(format!(
            "{field} is {} bytes, over the {max} byte limit",
            value.len()
        )));
    }
    Ok(())
}

/// Checks labels sent by a caller (count, key syntax, value length and characters).
pub fn check_labels(
    labels: &std::collections::HashMap<String, String>,
) -> Result<Labels, ServiceError> {
    if labels.len() > MAX_LABELS {
        return Err(ServiceError::InvalidArgument(format!(
            "{} labels, over the limit of {MAX_LABELS}",
            labels.len()
        )));
    }
    let mut out = Labels::new();
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
        if !key_ok {
            return Err(ServiceError::InvalidArgument(format!(
                "label key {k:?}: use 1-{MAX_LABEL_KEY} letters, digits, '.', '_', '-' or '/'"
            )));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(ServiceError::InvalidArgument(format!(
                "label {k}: the value must be at most {MAX_LABEL_VALUE} bytes with no control characters"
            )));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
