//! What a service call can fail with. The transport maps it (gRPC: one `From` impl in
//! `grpc/mod.rs`; an HTTP API would map it to status codes the same way).

use crate::ids::IdError;
use crate::store::StoreError;

/// A service failure, with the message the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No credential, or a revoked one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential may not make this call (role, tenant scope, kind of certificate).
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is malformed or over a limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What it creates exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A concurrent change won (e.g. another push took the version): retrying may succeed.
    #[error("{0}")]
    Conflict(String),
    /// The state forbids it (e.g. revoking the credential making the call).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The answer would be too large (e.g. every agent in one answer): ask for less.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A dependency (the store) is unavailable for now.
    #[error("{0}")]
    Unavailable(String),
    /// The controller failed.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The message the caller sees.
    pub fn message(&self) -> &str {
        match self {
            ServiceError::Unauthenticated(m)
            | ServiceError::PermissionDenied(m)
            | ServiceError::InvalidArgument(m)
            | ServiceError::NotFound(m)
            | ServiceError::AlreadyExists(m)
            | ServiceError::Conflict(m)
            | ServiceError::FailedPrecondition(m)
            | ServiceError::ResourceExhausted(m)
            | ServiceError::Unavailable(m)
            | ServiceError::Internal(m) => m,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> ServiceError {
        tracing::error!("storage error: {e}");
        let msg = format!("the controller could not complete the request: {e}");
        match e {
            StoreError::Busy(_) => ServiceError::Unavailable(msg),
            _ => ServiceError::Internal(msg),
        }
    }
}

impl From<IdError> for ServiceError {
    fn from(e: IdError) -> ServiceError {
        ServiceError::InvalidArgument(e.to_string())
    }
}
