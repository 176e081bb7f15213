//! SQLite: enrolled agents.

use super::*;

impl AgentStore for SqliteStore {
    fn agent(&self, agent_id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        self.read()
            .query_row(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE agent_id = ?1"),
                params![agent_id],
                agent_row,
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
            &format!("SELECT {AGENT_COLS} FROM agents WHERE agent_id = ?1"),
            params![agent_id],
            agent_row,
        )
        .optional()
        .map_err(backend)
    }

    fn record_report(
        &self,
        agent_id: &AgentId,
        r: &AgentReportRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn()
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
        Ok(())
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
