//! The gRPC services: enrollment, agent sync and administration. Identity comes from the verified
//! client certificate only (invariant 5); every admin mutation and every refusal is audited.

mod admin;
mod agent;
mod conn;

pub use admin::AdminService;
pub use agent::{EnrollmentService, SyncService};
pub(crate) use conn::agent_caller;
pub use conn::{Conn, ConnAuthorisation};
