//! Admin credentials: listed and revoked (by id or by name) by an admin for all tenants.

use crate::controller::{Controller, now_unix};
use crate::pki;
use crate::service::{Caller, Need, ServiceError, check_len};
use crate::store::AdminCredentialRecord;

/// The admin-credential service.
pub struct AdminService<'a>(pub &'a Controller);

impl AdminService<'_> {
    /// Who the caller is (any role).
    pub async fn who_am_i(&self, c: &Caller) -> Result<(), ServiceError> {
        c.authorize(self.0, "whoami", Need::Read, "").await?;
        Ok(())
    }

    /// Every recorded credential, oldest first.
    pub async fn list(&self, c: &Caller) -> Result<Vec<AdminCredentialRecord>, ServiceError> {
        let ctl = self.0;
        c.authorize(ctl, "admins.list", Need::Admin, "").await?;
        Ok(ctl.db(|s| s.list_admins()).await?)
    }

    /// Revokes the unrevoked credentials with this id, or of this name; returns them.
    pub async fn revoke(
        &self,
        c: &Caller,
        id_or_name: &str,
        reason: &str,
    ) -> Result<Vec<AdminCredentialRecord>, ServiceError> {
        let ctl = self.0;
        c.authorize(ctl, "admins.revoke", Need::Admin, "").await?;
        let target = id_or_name.trim().to_owned();
        check_len("reason", reason, 1000)?;
        if c.scope.is_some() {
            return Err(ServiceError::PermissionDenied(
                "revoking admin credentials needs an admin certificate for all tenants".into(),
            ));
        }
        if target.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "name a credential id or an admin name".into(),
            ));
        }
        let known = ctl.db(|s| s.list_admins()).await?;
        let matching: Vec<_> = known
            .iter()
            .filter(|a| a.revoked_at.is_none() && (a.fingerprint == target || a.name == target))
            .collect();
        if matching.iter().any(|a| a.fingerprint == c.fingerprint) {
            return Err(ServiceError::FailedPrecondition(format!(
                "{target} includes the credential of this call: revoke it with another admin's \
                 credential (so that an admin always remains)"
            )));
        }
        let by_name = !target.starts_with("sha256:");
        if !by_name && matching.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "no unrevoked admin credential {target}"
            )));
        }
        if by_name {
            pki::check_admin_name(&target)
                .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        }
        let now = now_unix();
        let (by, why, t) = (c.name.clone(), reason.to_owned(), target.clone());
        let mut revoked = ctl
            .db(move |s| {
                // By name, this also refuses every unrecorded credential of the name (issued
                // before credentials were recorded: unknown by fingerprint), in one transaction.
                s.revoke_admins(&t, &by, &why, now)
            })
            .await?;
        for a in &revoked {
            ctl.admins.note(a);
        }
        // Connections the revoked credentials hold open are closed.
        ctl.hub.revoked();
        revoked.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        c.audit_ok(
            ctl,
            "admins.revoke",
            "",
            serde_json::json!({
                "target": target,
                "reason": reason,
                "revoked": revoked.iter().map(|a| a.fingerprint.clone()).collect::<Vec<_>>(),
            }),
        )
        .await;
        Ok(revoked)
    }
}
