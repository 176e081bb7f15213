//! SQLite: events and chain state.

use super::*;

impl EventStore for SqliteStore {
    fn chain_state(&self, agent_id: &AgentId) -> Result<Option<(u64, String)>, StoreError> {
        self.read()
            .query_row(
                "SELECT last_seq, last_hash FROM chains WHERE agent_id = ?1",
                params![agent_id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()
            .map_err(backend)
    }

    fn commit_events(
        &self,
        agent_id: &AgentId,
        events: &[StoredEventRecord],
        new_state: Option<(u64, String)>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let new = insert_events(&tx, agent_id, events, new_state, None)?;
        tx.commit().map_err(backend)?;
        Ok(new)
    }

    fn commit_checked(
        &self,
        tenant: &TenantId,
        agent_id: &AgentId,
        keys: &[(String, String)],
        check: &mut dyn FnMut(&ChainView) -> ChainDecision,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        // IMMEDIATE: the write lock is taken before the chain is read, so what `check` sees is
        // what the commit builds on.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let state = tx
            .query_row(
                "SELECT last_seq, last_hash FROM chains WHERE agent_id = ?1",
                params![agent_id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()
            .map_err(backend)?;
        let mut view = ChainView {
            state,
            seen: Default::default(),
        };
        let asked: std::collections::HashSet<(&str, &str)> = keys
            .iter()
            .map(|(id, d)| (id.as_str(), d.as_str()))
            .collect();
        if !keys.is_empty() {
            // One index range scan for the whole batch (its eventIds as one JSON array): how many
            // records each id holds (counting stops past the cap) and which of the asked digests
            // are among them. No stored body is read.
            let mut ids: Vec<&str> = keys.iter().map(|(id, _)| id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let ids = serde_json::to_string(&ids).map_err(StoreError::backend)?;
            let mut stmt = tx
                .prepare_cached(
                    "SELECT event_id, digest, COUNT(*) FROM events
                     WHERE tenant = ?1 AND agent_id = ?2 AND event_id IN (SELECT value FROM json_each(?3))
                     GROUP BY event_id, digest",
                )
                .map_err(backend)?;
            let mut rows = stmt
                .query(params![tenant, agent_id, ids])
                .map_err(backend)?;
            while let Some(r) = rows.next().map_err(backend)? {
                let id: String = r.get(0).map_err(backend)?;
                let digest: Option<String> = r.get(1).map_err(backend)?;
                let n = r.get::<_, i64>(2).map_err(backend)? as u64;
                let wanted = digest
                    .as_deref()
                    .is_some_and(|d| asked.contains(&(id.as_str(), d)));
                let seen = view.seen.entry(id).or_default();
                seen.records = (seen.records + n).min(MAX_RECORDS_PER_EVENT_ID + 1);
                if let (true, Some(d)) = (wanted, digest) {
                    seen.digests.insert(d);
                }
            }
        }
        let (records, new_state) = check(&view);
        let read = ReadInTx {
            tenant,
            asked,
            view: &view,
        };
        let new = insert_events(&tx, agent_id, &records, new_state, Some(&read))?;
        tx.commit().map_err(backend)?;
        Ok(new)
    }

    fn query_events(&self, f: &EventFilter) -> Result<Vec<StoredEventRecord>, StoreError> {
        let mut sql = String::from(
            "SELECT id, event_id, tenant, agent_id, seq, event_type, session_id, tool_name, timestamp, chain_ok, json FROM events WHERE id > ?1",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![(f.after_id as i64).into()];
        let mut add = |sql: &mut String, clause: &str, v: String| {
            args.push(v.into());
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(t) = &f.tenant {
            add(&mut sql, "tenant =", t.clone());
        }
        if let Some(a) = &f.agent_id {
            add(&mut sql, "agent_id =", a.clone());
        }
        if let Some(s2) = &f.session_id {
            add(&mut sql, "session_id =", s2.clone());
        }
        if let Some(t) = &f.tool_name {
            add(&mut sql, "tool_name =", t.clone());
        }
        if let Some(t) = &f.since {
            add(&mut sql, "timestamp >=", t.clone());
        }
        if let Some(t) = &f.until {
            add(&mut sql, "timestamp <=", t.clone());
        }
        if f.upto_id > 0 {
            args.push((f.upto_id as i64).into());
            sql.push_str(&format!(" AND id <= ?{}", args.len()));
        }
        for (col, list) in [("event_type", &f.event_types), ("tenant", &f.tenants)] {
            if !list.is_empty() {
                let mut marks = Vec::new();
                for v in list {
                    args.push(v.clone().into());
                    marks.push(format!("?{}", args.len()));
                }
                sql.push_str(&format!(" AND {col} IN ({})", marks.join(", ")));
            }
        }
        // Qualified: inside the subquery, a bare `json` names json_each's own hidden column.
        if f.dlp_only {
            sql.push_str(" AND json_extract(json, '$.detail.dlp') IS NOT NULL");
        }
        if let Some(d) = &f.dlp_detector {
            args.push(d.clone().into());
            sql.push_str(&format!(
                " AND json_type(events.json, '$.detail.dlp') = 'array' AND EXISTS (SELECT 1 FROM json_each(events.json, '$.detail.dlp') AS j WHERE CASE WHEN j.type = 'object' THEN json_extract(j.value, '$.detector') END = ?{})",
                args.len()
            ));
        }
        let limit = i64::from(f.limit.clamp(1, crate::store::MAX_EVENTS_PER_QUERY));
        if f.newest && f.after_id == 0 {
            sql = format!("SELECT * FROM ({sql} ORDER BY id DESC LIMIT {limit}) ORDER BY id");
        } else {
            sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
        }
        let conn = self.read();
        let mut stmt = conn.prepare(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(StoredEventRecord {
                    id: r.get::<_, i64>(0)? as u64,
                    event_id: r.get(1)?,
                    tenant: r.get(2)?,
                    agent_id: r.get(3)?,
                    seq: r.get::<_, i64>(4)? as u64,
                    event_type: r.get(5)?,
                    session_id: r.get(6)?,
                    tool_name: r.get(7)?,
                    timestamp: r.get(8)?,
                    chain_ok: r.get(9)?,
                    json: r.get(10)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn max_event_id(&self) -> Result<u64, StoreError> {
        self.read()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(backend)
    }
}
