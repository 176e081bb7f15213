//! SQLite: tool definitions pinned on agents, and admins' decisions on them (issue 17).

use super::*;
use crate::store::{PinDecisionRecord, PinRow, PinStore, ToolPinRecord};

const PIN_COLS: &str = "user, client, server_name, server_key, command, tool, digest, state, pending_digest, source, accepted, changes, first_seen_ms, changed_ms, pending_description";

fn changes_from_json(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn pin_row(r: &Row<'_>) -> rusqlite::Result<ToolPinRecord> {
    Ok(ToolPinRecord {
        user: r.get(0)?,
        client: r.get(1)?,
        server_name: r.get(2)?,
        server_key: r.get(3)?,
        command: r.get(4)?,
        tool: r.get(5)?,
        digest: r.get(6)?,
        state: r.get(7)?,
        pending_digest: r.get(8)?,
        source: r.get(9)?,
        accepted: r.get(10)?,
        changes: changes_from_json(&r.get::<_, String>(11)?),
        first_seen_ms: r.get(12)?,
        changed_ms: r.get(13)?,
        pending_description: r.get(14)?,
    })
}

const DECISION_COLS: &str =
    "tenant, server_key, tool, digest, accepted, decided_by, reason, decided_ms";

fn decision_row(r: &Row<'_>) -> rusqlite::Result<PinDecisionRecord> {
    Ok(PinDecisionRecord {
        tenant: r.get(0)?,
        server_key: r.get(1)?,
        tool: r.get(2)?,
        digest: r.get(3)?,
        accepted: r.get(4)?,
        decided_by: r.get(5)?,
        reason: r.get(6)?,
        decided_ms: r.get(7)?,
    })
}

/// Every reported definition as (agent, user, key, tool, digest, pending, pinned, changes,
/// client, server, command, description): the pinned digests, then the pending ones. `?1`
/// tenant, `?2` agent (NULL: all). Pinned and changes and description are NULL for a pinned
/// digest, so that grouping compares them among the reports of a pending one only. An added
/// tool (state "added": digest = pending digest, nothing pinned) gives only its pending row,
/// with no pinned digest.
const REPORTED: &str = "
    SELECT agent_id, user, server_key, tool, digest AS d, 0 AS pending, NULL AS pinned,
           NULL AS changes, client, server_name, command, NULL AS description
      FROM tool_pins WHERE tenant = ?1 AND (?2 IS NULL OR agent_id = ?2) AND state <> 'added'
    UNION ALL
    SELECT agent_id, user, server_key, tool, pending_digest, 1,
           CASE WHEN state = 'added' THEN NULL ELSE digest END, changes,
           client, server_name, command, pending_description
      FROM tool_pins WHERE tenant = ?1 AND (?2 IS NULL OR agent_id = ?2) AND pending_digest <> ''";

/// The union of the reporters' `changes` (each a JSON list; `sets` a JSON list of them, NULLs
/// for pinned reports), in the order of [`CHANGE_ORDER`] then any other; and whether the
/// reporters' sets differ.
fn union_changes(sets: &str) -> (Vec<String>, bool) {
    let lists: Vec<Option<String>> = serde_json::from_str(sets).unwrap_or_default();
    let mut seen: Vec<std::collections::BTreeSet<String>> = Vec::new();
    for l in lists.iter().flatten() {
        let set = changes_from_json(l).into_iter().collect();
        if !seen.contains(&set) {
            seen.push(set);
        }
    }
    let all: std::collections::BTreeSet<String> = seen.iter().flatten().cloned().collect();
    let mut out: Vec<String> = CHANGE_ORDER
        .iter()
        .filter(|c| all.contains(**c))
        .map(|c| (*c).to_owned())
        .collect();
    out.extend(
        all.into_iter()
            .filter(|c| !CHANGE_ORDER.contains(&c.as_str())),
    );
    (out, seen.len() > 1)
}

/// How changes are listed.
const CHANGE_ORDER: &[&str] = &["added", "description", "schema", "annotations", "removed"];

impl PinStore for SqliteStore {
    fn record_tool_pins(
        &self,
        agent_id: &AgentId,
        tenant: &TenantId,
        sha256: &str,
        pins: &[ToolPinRecord],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let stored: Option<String> = tx
            .query_row(
                "SELECT sha256 FROM agent_tool_pins WHERE agent_id = ?1",
                params![agent_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        if stored.as_deref() == Some(sha256) {
            return Ok(false);
        }
        tx.execute(
            "DELETE FROM tool_pins WHERE agent_id = ?1",
            params![agent_id],
        )
        .map_err(backend)?;
        {
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO tool_pins (agent_id, tenant, {PIN_COLS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
                ))
                .map_err(backend)?;
            for p in pins {
                let changes =
                    serde_json::to_string(&p.changes).expect("a string list is valid JSON");
                insert
                    .execute(params![
                        agent_id,
                        tenant,
                        p.user,
                        p.client,
                        p.server_name,
                        p.server_key,
                        p.command,
                        p.tool,
                        p.digest,
                        p.state,
                        p.pending_digest,
                        p.source,
                        p.accepted,
                        changes,
                        p.first_seen_ms,
                        p.changed_ms,
                        p.pending_description
                    ])
                    .map_err(backend)?;
            }
        }
        tx.execute(
            "INSERT INTO agent_tool_pins (agent_id, sha256, reported_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (agent_id) DO UPDATE SET sha256 = excluded.sha256, reported_ms = excluded.reported_ms",
            params![agent_id, sha256, now_ms],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(true)
    }

    fn agent_tool_pins(&self, agent_id: &AgentId) -> Result<Vec<ToolPinRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {PIN_COLS} FROM tool_pins WHERE agent_id = ?1 ORDER BY client, server_name, tool, user"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![agent_id], pin_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn pin_rows(
        &self,
        tenant: &TenantId,
        agent_id: Option<&AgentId>,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<PinRow>, StoreError> {
        let conn = self.read();
        // Waiting for a decision: reported pending and not decided.
        let sql = format!(
            "WITH r AS ({REPORTED}),
             g AS (
                SELECT r.server_key, r.tool, r.d AS digest, MAX(r.pending) AS pending,
                       COALESCE(MAX(r.pinned), '') AS pinned,
                       json_group_array(DISTINCT r.changes) AS changes,
                       MAX(r.client) AS client,
                       MAX(r.server_name) AS server_name, MAX(r.command) AS command,
                       COALESCE(MAX(r.description), '') AS description,
                       (COUNT(DISTINCT r.client) > 1 OR COUNT(DISTINCT r.server_name) > 1
                        OR COUNT(DISTINCT r.command) > 1 OR COUNT(DISTINCT r.pinned) > 1
                        OR COUNT(DISTINCT r.description) > 1) AS differ,
                       COUNT(DISTINCT r.agent_id) AS agents,
                       COUNT(DISTINCT r.agent_id || char(0) || r.user) AS users,
                       COALESCE(MAX(a.last_seen), 0) * 1000 AS last_seen_ms
                  FROM r JOIN agents a ON a.agent_id = r.agent_id
                 WHERE a.revoked_at IS NULL
                 GROUP BY r.server_key, r.tool, r.d
             )
             SELECT g.server_key, g.tool, g.digest, g.pending, g.pinned, g.changes, g.client,
                    g.server_name, g.command, g.agents, g.users, g.last_seen_ms,
                    d.tenant, d.accepted, d.decided_by, d.reason, d.decided_ms,
                    (g.pending = 1 AND d.tenant IS NULL) AS waiting, g.description, g.differ
               FROM g LEFT JOIN pin_decisions d
                 ON d.tenant = ?1 AND d.server_key = g.server_key AND d.tool = g.tool
                    AND d.digest = g.digest
              WHERE (?3 = 0 OR (g.pending = 1 AND d.tenant IS NULL))
              ORDER BY waiting DESC, g.server_name, g.tool, g.server_key, g.digest
              LIMIT ?4"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(
                params![tenant, agent_id, pending_only, i64::from(limit)],
                |r| {
                    let decided: Option<String> = r.get(12)?;
                    let decision = match decided {
                        Some(tenant) => Some(PinDecisionRecord {
                            tenant,
                            server_key: r.get(0)?,
                            tool: r.get(1)?,
                            digest: r.get(2)?,
                            accepted: r.get(13)?,
                            decided_by: r.get(14)?,
                            reason: r.get(15)?,
                            decided_ms: r.get(16)?,
                        }),
                        None => None,
                    };
                    let (changes, changes_differ) = union_changes(&r.get::<_, String>(5)?);
                    Ok(PinRow {
                        server_key: r.get(0)?,
                        tool: r.get(1)?,
                        digest: r.get(2)?,
                        pending: r.get::<_, i64>(3)? != 0,
                        pinned_digest: r.get(4)?,
                        changes,
                        client: r.get(6)?,
                        server_name: r.get(7)?,
                        command: r.get(8)?,
                        agents: u32::try_from(r.get::<_, i64>(9)?).unwrap_or(u32::MAX),
                        users: u32::try_from(r.get::<_, i64>(10)?).unwrap_or(u32::MAX),
                        last_seen_ms: r.get(11)?,
                        decision,
                        description: r.get(18)?,
                        reports_differ: changes_differ || r.get::<_, i64>(19)? != 0,
                    })
                },
            )
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn put_pin_decision(&self, d: &PinDecisionRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO pin_decisions ({DECISION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    d.tenant,
                    d.server_key,
                    d.tool,
                    d.digest,
                    d.accepted,
                    d.decided_by,
                    d.reason,
                    d.decided_ms
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn pin_decisions(
        &self,
        tenant: &TenantId,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<PinDecisionRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DECISION_COLS} FROM pin_decisions WHERE tenant = ?1 AND decided_ms >= ?2
                 ORDER BY decided_ms DESC, server_key, tool, digest LIMIT ?3"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant, since_ms, i64::from(limit)], decision_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }
}
