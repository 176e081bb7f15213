//! SQLite: the approval queue.

use super::*;
use crate::store::{ApprovalRecord, ApprovalStore, ApprovalSubmit};

const APPROVAL_COLS: &str = "approval_id, tenant, agent_id, hostname, user, session_id, server_name, tool_name, content, reason, timeout_secs, arguments_sha256, client_name, approvers, remember, requested_ms, expires_ms, state, decided_ms, decided_by, decision_reason, decision_remember";

fn approval_row(r: &Row<'_>) -> rusqlite::Result<ApprovalRecord> {
    Ok(ApprovalRecord {
        approval_id: r.get(0)?,
        tenant: r.get(1)?,
        agent_id: r.get(2)?,
        hostname: r.get(3)?,
        user: r.get(4)?,
        session_id: r.get(5)?,
        server_name: r.get(6)?,
        tool_name: r.get(7)?,
        content: r.get(8)?,
        reason: r.get(9)?,
        timeout_secs: r.get(10)?,
        arguments_sha256: r.get(11)?,
        client_name: r.get(12)?,
        approvers: serde_json::from_str(&r.get::<_, String>(13)?).unwrap_or_default(),
        remember: r.get(14)?,
        requested_ms: r.get(15)?,
        expires_ms: r.get(16)?,
        state: r.get(17)?,
        decided_ms: r.get(18)?,
        decided_by: r.get(19)?,
        decision_reason: r.get(20)?,
        decision_remember: r.get(21)?,
    })
}

impl ApprovalStore for SqliteStore {
    fn submit_approval(
        &self,
        a: &ApprovalRecord,
        max_tenant: u32,
        max_agent: u32,
    ) -> Result<ApprovalSubmit, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let existing = tx
            .query_row(
                &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE approval_id = ?1"),
                params![a.approval_id],
                approval_row,
            )
            .optional()
            .map_err(backend)?;
        if let Some(e) = existing {
            if e.agent_id != a.agent_id {
                // Another agent's id: refused without saying whose.
                return Ok(ApprovalSubmit::IdTaken);
            }
            return Ok(ApprovalSubmit::Existing(Box::new(e)));
        }
        let count = |sql: &str, key: &str| -> Result<i64, StoreError> {
            tx.query_row(sql, params![key], |r| r.get(0))
                .map_err(backend)
        };
        if count(
            "SELECT COUNT(*) FROM approvals WHERE agent_id = ?1 AND state = 'pending'",
            &a.agent_id,
        )? >= i64::from(max_agent)
        {
            return Ok(ApprovalSubmit::AgentFull);
        }
        if count(
            "SELECT COUNT(*) FROM approvals WHERE tenant = ?1 AND state = 'pending'",
            &a.tenant,
        )? >= i64::from(max_tenant)
        {
            return Ok(ApprovalSubmit::TenantFull);
        }
        tx.execute(
            &format!(
                "INSERT INTO approvals ({APPROVAL_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
            ),
            params![
                a.approval_id,
                a.tenant,
                a.agent_id,
                a.hostname,
                a.user,
                a.session_id,
                a.server_name,
                a.tool_name,
                a.content,
                a.reason,
                a.timeout_secs,
                a.arguments_sha256,
                a.client_name,
                serde_json::to_string(&a.approvers).expect("strings are JSON"),
                a.remember,
                a.requested_ms,
                a.expires_ms,
                a.state,
                a.decided_ms,
                a.decided_by,
                a.decision_reason,
                a.decision_remember,
            ],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(ApprovalSubmit::Stored)
    }

    fn approval(
        &self,
        tenant: Option<&TenantId>,
        approval_id: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let conn = self.read();
        conn.query_row(
            &format!(
                "SELECT {APPROVAL_COLS} FROM approvals WHERE approval_id = ?1 AND (?2 IS NULL OR tenant = ?2)"
            ),
            params![approval_id, tenant],
            approval_row,
        )
        .optional()
        .map_err(backend)
    }

    fn list_approvals(
        &self,
        tenant: Option<&TenantId>,
        all: bool,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {APPROVAL_COLS} FROM approvals WHERE (?1 IS NULL OR tenant = ?1)
                   AND (?2 OR state = 'pending') ORDER BY requested_ms DESC, approval_id DESC LIMIT ?3"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant, all, i64::from(limit)], approval_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn decide_approval(
        &self,
        tenant: &str,
        approval_id: &str,
        d: &ApprovalRecord,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE approvals SET state = ?3, decided_ms = ?4, decided_by = ?5, decision_reason = ?6, decision_remember = ?7
                   WHERE tenant = ?1 AND approval_id = ?2 AND state = 'pending' AND expires_ms > ?4",
                params![
                    tenant,
                    approval_id,
                    d.state,
                    now_ms,
                    d.decided_by,
                    d.decision_reason,
                    d.decision_remember
                ],
            )
            .map_err(backend)?;
        Ok(n == 1)
    }

    fn withdraw_approval(
        &self,
        agent_id: &str,
        approval_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE approvals SET state = 'withdrawn', decided_ms = ?3
                   WHERE agent_id = ?1 AND approval_id = ?2 AND state = 'pending'",
                params![agent_id, approval_id, now_ms],
            )
            .map_err(backend)?;
        Ok(n == 1)
    }

    fn expire_approvals(&self, now_ms: i64) -> Result<u64, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE approvals SET state = 'expired', decided_ms = expires_ms
                   WHERE state = 'pending' AND expires_ms <= ?1",
                params![now_ms],
            )
            .map_err(backend)?;
        Ok(n as u64)
    }

    fn prune_approvals(&self, before_ms: i64, max_per_tenant: u32) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let mut n = tx
            .execute(
                "DELETE FROM approvals WHERE state != 'pending' AND decided_ms < ?1",
                params![before_ms],
            )
            .map_err(backend)?;
        let over: Vec<(String, i64)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT tenant, COUNT(*) FROM approvals GROUP BY tenant HAVING COUNT(*) > ?1",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![i64::from(max_per_tenant)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)?
        };
        for (tenant, count) in over {
            n += tx
                .execute(
                    "DELETE FROM approvals WHERE rowid IN (SELECT rowid FROM approvals
                       WHERE tenant = ?1 AND state != 'pending'
                       ORDER BY decided_ms, requested_ms, approval_id LIMIT ?2)",
                    params![tenant, count - i64::from(max_per_tenant)],
                )
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(n as u64)
    }

    fn agent_decisions(
        &self,
        agent_id: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {APPROVAL_COLS} FROM approvals WHERE agent_id = ?1
                   AND state IN ('approved', 'denied') AND expires_ms > ?2
                   ORDER BY decided_ms DESC LIMIT ?3"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![agent_id, now_ms, i64::from(limit)], approval_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }
}
