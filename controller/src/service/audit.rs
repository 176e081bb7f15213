//! The audit log, read by admins (every service appends to it through [`Caller`]).

use crate::controller::Controller;
use crate::service::{Caller, Need, ServiceError};
use crate::store::AuditRecord;

/// The audit service.
pub struct AuditService<'a>(pub &'a Controller);

impl AuditService<'_> {
    /// Entries after `after_id`, oldest first (`limit` 0: 100; at most 10,000).
    pub async fn list(
        &self,
        c: &Caller,
        tenant: &str,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        let ctl = self.0;
        let resolved = c.authorize(ctl, "audit.list", Need::Admin, tenant).await?;
        let scope = c.list_scope(tenant, resolved);
        let limit = if limit == 0 { 100 } else { limit.min(10_000) };
        Ok(ctl
            .db(move |s| s.list_audit(scope.as_ref(), after_id, limit))
            .await?)
    }
}
