//! What every gRPC service shares: `ServiceError` → `Status` (the one place), the agent caller
//! check, and the connection's authorisation hooks the server puts in each request.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::controller::Controller;
use crate::service::{self, ServiceError};
use crate::store::AgentRecord;

/// The one place a service error becomes a gRPC status.
impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        match e {
            ServiceError::Unauthenticated(m) => Status::unauthenticated(m),
            ServiceError::PermissionDenied(m) => Status::permission_denied(m),
            ServiceError::InvalidArgument(m) => Status::invalid_argument(m),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::AlreadyExists(m) => Status::already_exists(m),
            ServiceError::Conflict(m) => Status::aborted(m),
            ServiceError::FailedPrecondition(m) => Status::failed_precondition(m),
            ServiceError::ResourceExhausted(m) => Status::resource_exhausted(m),
            ServiceError::Unavailable(m) => Status::unavailable(m),
            ServiceError::Internal(m) => Status::internal(m),
        }
    }
}

/// An enrolled, unrevoked agent calling with its certificate.
pub(crate) async fn agent_caller<T>(
    ctl: &Controller,
    req: &Request<T>,
) -> Result<AgentRecord, Status> {
    let leaf = req.peer_certs().and_then(|c| c.first().map(|c| c.to_vec()));
    match service::agent_caller(ctl, leaf.as_deref()).await {
        Ok(agent) => {
            authorised(req);
            Ok(agent)
        }
        Err(refusal) => {
            if refusal.withdraw {
                withdraw(req);
            }
            Err(refusal.error.into())
        }
    }
}

/// What a service may tell the server about its request's connection. The server puts a
/// [`Conn`] in each request's extensions; the services know nothing else of it.
pub trait ConnAuthorisation: Send + Sync {
    /// The connection made an authorised request.
    fn authorise(&self);
    /// The store refused a caller the server authorised from memory.
    fn withdraw(&self);
}

/// A request's connection, in its extensions.
#[derive(Clone)]
pub struct Conn(pub Arc<dyn ConnAuthorisation>);

/// Tells the server that this request's connection made an authorised request (an enrolled,
/// unrevoked agent; an admin the deny list lets through): from now on it is bounded by
/// keepalive, not by the limits on connections not yet authorised. (The server already did so
/// from memory when the request started; this confirms it after the store was read.)
pub(crate) fn authorised<T>(req: &Request<T>) {
    if let Some(conn) = req.extensions().get::<Conn>() {
        conn.0.authorise();
    }
}

/// The store refused a caller the server authorised from memory: its connection is under the
/// limits on connections not yet authorised again.
pub(crate) fn withdraw<T>(req: &Request<T>) {
    if let Some(conn) = req.extensions().get::<Conn>() {
        conn.0.withdraw();
    }
}
