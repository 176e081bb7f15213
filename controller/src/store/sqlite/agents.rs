//! SQLite: enrolled agents.

use super::*;

impl AgentStore for SqliteStore {
    fn agent(&self, agent_id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        self.read()
            .query_row(
                &format!(
                    "SELECT {AGENT_MCP_COLS} FROM agents LEFT JOIN agent_mcp USING (agent_id) WHERE agent_id = ?1"
                ),
                params![agent_id],
                agent_mcp_row,
            )
            .optional()
            .map_err(backend)
    }

    fn list_agents(&self, tenant: Option<&TenantId>) -> Result<Vec<AgentRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {AGENT_COLS} FROM agents WHERE (?1 IS NULL OR tenant = ?1) ORDER BY tenant, hostname, agent_id"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant], agent_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn list_agents_page(
        &self,
        tenant: Option<&TenantId>,
        after: Option<(&str, &str)>,
        limit: usize,
        mcp: bool,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let conn = self.read();
        let (after_tenant, after_id) = after.unzip();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let filter =
            "WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR (tenant, agent_id) > (?2, ?3))
             ORDER BY tenant, agent_id LIMIT ?4";
        let (sql, row): (String, fn(&Row<'_>) -> rusqlite::Result<AgentRecord>) = if mcp {
            (
                format!(
                    "SELECT {AGENT_MCP_COLS} FROM agents LEFT JOIN agent_mcp USING (agent_id) {filter}"
                ),
                agent_mcp_row,
            )
        } else {
            (
                format!("SELECT {AGENT_COLS} FROM agents {filter}"),
                agent_row,
            )
        };
        let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant, after_tenant, after_id, limit], row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn revoke_agent(
        &self,
        agent_id: &AgentId,
        now: i64,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?2) WHERE agent_id = ?1",
            params![agent_id, now],
        )
        .map_err(backend)?;
        conn.query_row(
            &format!(
                "SELECT {AGENT_MCP_COLS} FROM agents LEFT JOIN agent_mcp USING (agent_id) WHERE agent_id = ?1"
            ),
            params![agent_id],
            agent_mcp_row,
        )
        .optional()
        .map_err(backend)
    }

    fn record_report(
        &self,
        agent_id: &AgentId,
        r: &AgentReportRecord,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let found = tx
            .execute(
                "UPDATE agents SET last_seen = ?2, applied_version = ?3, stale = ?4, last_error = ?5,
                    inventory = COALESCE(?6, inventory), hostname = COALESCE(?7, hostname),
                    agent_version = ?8
                 WHERE agent_id = ?1",
                params![
                    agent_id,
                    now,
                    r.applied_version as i64,
                    r.stale,
                    r.last_error,
                    r.inventory,
                    r.hostname,
                    r.agent_version
                ],
            )
            .map_err(backend)?;
        let mut written = false;
        if let (1, Some((json, sha256))) = (found, &r.mcp) {
            // Unchanged (same digest): no write at all, so a heartbeat does not rewrite it.
            written = tx
                .execute(
                    "INSERT INTO agent_mcp (agent_id, sha256, mcp) VALUES (?1, ?2, ?3)
                     ON CONFLICT (agent_id) DO UPDATE SET sha256 = excluded.sha256, mcp = excluded.mcp
                        WHERE agent_mcp.sha256 <> excluded.sha256",
                    params![agent_id, sha256, json],
                )
                .map_err(backend)?
                > 0;
        }
        tx.commit().map_err(backend)?;
        Ok(written)
    }

    fn touch_agent(&self, agent_id: &AgentId, now: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE agents SET last_seen = ?2 WHERE agent_id = ?1",
                params![agent_id, now],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn set_agent_cert(&self, agent_id: &AgentId, not_after: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE agents SET cert_not_after = ?2 WHERE agent_id = ?1",
                params![agent_id, not_after],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn count_applied(&self, tenant: &TenantId, version: u64) -> Result<u64, StoreError> {
        self.read()
            .query_row(
                "SELECT COUNT(*) FROM agents WHERE tenant = ?1 AND applied_version = ?2 AND revoked_at IS NULL",
                params![tenant, version as i64],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(backend)
    }
}
