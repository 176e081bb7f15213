//! SQLite: admin credentials.

use super::*;

impl AdminStore for SqliteStore {
    fn record_admin(&self, a: &AdminCredentialRecord) -> Result<bool, StoreError> {
        // One statement (atomic): an unrecorded credential recorded at its first use, of a name
        // revoked as a whole (its `unrecorded:NAME` row), is recorded revoked, however its first
        // use raced the revocation. (One issued and recorded since, by `issue-admin`, is not.)
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO admin_credentials (fingerprint, name, role, tenant, not_after, recorded_at, source, revoked_at, revoked_by, reason)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7,
                        COALESCE(?8, u.revoked_at),
                        CASE WHEN ?8 IS NULL AND u.revoked_at IS NOT NULL THEN u.revoked_by ELSE ?9 END,
                        CASE WHEN ?8 IS NULL AND u.revoked_at IS NOT NULL THEN u.reason ELSE ?10 END
                 FROM (SELECT 1) LEFT JOIN admin_credentials u
                   ON u.fingerprint = 'unrecorded:' || ?2 AND u.revoked_at IS NOT NULL
                      AND ?1 <> u.fingerprint AND ?7 = 'first use'",
                params![
                    a.fingerprint,
                    a.name,
                    a.role,
                    a.tenant,
                    a.not_after,
                    a.recorded_at,
                    a.source,
                    a.revoked_at,
                    a.revoked_by,
                    a.reason
                ],
            )
            .map_err(backend)?;
        Ok(n == 1)
    }

    fn list_admins(&self) -> Result<Vec<AdminCredentialRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare(
                "SELECT fingerprint, name, role, tenant, not_after, recorded_at, source, revoked_at, revoked_by, reason
                 FROM admin_credentials ORDER BY recorded_at, name",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AdminCredentialRecord {
                    fingerprint: r.get(0)?,
                    name: r.get(1)?,
                    role: r.get(2)?,
                    tenant: r.get(3)?,
                    not_after: r.get(4)?,
                    recorded_at: r.get(5)?,
                    source: r.get(6)?,
                    revoked_at: r.get(7)?,
                    revoked_by: r.get(8)?,
                    reason: r.get(9)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn revoke_admins(
        &self,
        id_or_name: &str,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<Vec<AdminCredentialRecord>, StoreError> {
        {
            // One transaction: no credential of the name can be recorded unrevoked in between.
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            tx.execute(
                "UPDATE admin_credentials SET revoked_at = ?1, revoked_by = ?2, reason = ?3
                 WHERE revoked_at IS NULL AND (fingerprint = ?4 OR name = ?4)",
                params![now, by, reason, id_or_name],
            )
            .map_err(backend)?;
            if !id_or_name.starts_with("sha256:") && !id_or_name.starts_with("unrecorded:") {
                // Revoked by name: every unrecorded credential of the name is refused too.
                tx.execute(
                    "INSERT OR IGNORE INTO admin_credentials (fingerprint, name, role, tenant, not_after, recorded_at, source, revoked_at, revoked_by, reason)
                     VALUES (?1, ?2, '', '', 0, ?3, 'revoked by name', ?3, ?4, ?5)",
                    params![
                        crate::store::unrecorded_id(id_or_name),
                        id_or_name,
                        now,
                        by,
                        reason
                    ],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
        }
        Ok(self
            .list_admins()?
            .into_iter()
            .filter(|a| {
                (a.fingerprint == id_or_name || a.name == id_or_name) && a.revoked_at == Some(now)
            })
            .collect())
    }
}
