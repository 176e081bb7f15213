//! SQLite: the audit log.

use super::*;

impl AuditStore for SqliteStore {
    fn append_audit(&self, e: &AuditRecord) -> Result<u64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO audit (at_ms, actor, role, action, tenant, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![e.at_ms, e.actor, e.role, e.action, e.tenant, e.outcome, e.detail],
        )
        .map_err(backend)?;
        Ok(conn.last_insert_rowid() as u64)
    }

    fn list_audit(
        &self,
        tenant: Option<&TenantId>,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.read();
        let limit = i64::from(limit.max(1));
        // after_id 0: the newest `limit` entries; otherwise the oldest after it. Oldest first.
        let sql = if after_id == 0 {
            "SELECT * FROM (SELECT id, at_ms, actor, role, action, tenant, outcome, detail FROM audit
               WHERE (?1 IS NULL OR tenant = ?1) AND id > ?2 ORDER BY id DESC LIMIT ?3) ORDER BY id"
        } else {
            "SELECT id, at_ms, actor, role, action, tenant, outcome, detail FROM audit
               WHERE (?1 IS NULL OR tenant = ?1) AND id > ?2 ORDER BY id LIMIT ?3"
        };
        let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant, after_id as i64, limit], audit_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }
}
