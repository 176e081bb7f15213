//! The gRPC services: enrollment, agent sync and administration. Identity comes from the verified
//! client certificate only (invariant 5); every admin mutation and every refusal is audited.

mod admin;
mod agent;
mod approvals;
mod conn;
mod pins;
mod upload;

pub use admin::AdminService;
pub use agent::{EnrollmentService, SyncService};
pub use approvals::ApprovalsService;
pub use conn::{Conn, ConnAuthorisation};
pub use upload::UploadService;
