//! SQLite: policy versions.

use super::*;

impl PolicyStore for SqliteStore {
    fn latest_policy(&self, tenant: &TenantId) -> Result<Option<PolicyRecord>, StoreError> {
        self.read()
            .query_row(
                &format!(
                    "SELECT {POLICY_COLS} FROM policies WHERE tenant = ?1 ORDER BY version DESC LIMIT 1"
                ),
                params![tenant],
                policy_row,
            )
            .optional()
            .map_err(backend)
    }

    fn policy(&self, tenant: &TenantId, version: u64) -> Result<Option<PolicyRecord>, StoreError> {
        self.read()
            .query_row(
                &format!("SELECT {POLICY_COLS} FROM policies WHERE tenant = ?1 AND version = ?2"),
                params![tenant, version as i64],
                policy_row,
            )
            .optional()
            .map_err(backend)
    }

    fn policy_history(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<PolicyRecord>, StoreError> {
        let limit = if limit == 0 { -1 } else { i64::from(limit) };
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {POLICY_COLS} FROM policies WHERE tenant = ?1 ORDER BY version DESC LIMIT ?2"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant, limit], policy_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn insert_policy(&self, p: &PolicyRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let newest: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM policies WHERE tenant = ?1",
                params![p.tenant],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if p.version as i64 != newest + 1 {
            return Err(StoreError::Conflict(format!(
                "tenant {} is at version {newest}; version {} cannot follow it",
                p.tenant, p.version
            )));
        }
        tx.execute(
            &format!(
                "INSERT INTO policies ({POLICY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                p.tenant,
                p.version as i64,
                p.document,
                p.sha256,
                p.bundle,
                p.issued_at,
                p.expires_at,
                p.key_id,
                p.pushed_by,
                p.comment,
                p.rollback_of.map(|v| v as i64),
                p.created_at
            ],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)
    }

    fn replace_bundle(
        &self,
        tenant: &TenantId,
        version: u64,
        bundle: &[u8],
        issued_at: i64,
        expires_at: i64,
        key_id: &str,
    ) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE policies SET bundle = ?3, issued_at = ?4, expires_at = ?5, key_id = ?6 WHERE tenant = ?1 AND version = ?2",
                params![tenant, version as i64, bundle, issued_at, expires_at, key_id],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "tenant {tenant} has no version {version}"
            )));
        }
        Ok(())
    }

    fn policy_tenants(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT tenant FROM policies ORDER BY tenant")
            .map_err(backend)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }
}
