//! The embedded store: one SQLite file in the data directory (WAL, versioned migrations).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::migrations::{DIGEST_INDEX, DIGEST_MIGRATION, MIGRATIONS};
use super::{
    AdminCredentialRecord, AgentRecord, AgentReportRecord, AuditRecord, ChainDecision, ChainView,
    EventFilter, Labels, MAX_RECORDS_PER_EVENT_ID, PolicyRecord, RedeemError, SeenEventId, Store,
    StoreError, StoredEventRecord, TokenRecord, record_digest,
};

/// SQLite behind a mutex (SQLite has one writer anyway; calls are short).
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// A SQLite failure, typed: busy or locked (a retry may succeed), corrupt, or anything else.
fn backend(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Busy(e.to_string())
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            what: "the SQLite database".into(),
            detail: e.to_string(),
        },
        _ => match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt {
                what: "a stored row".into(),
                detail: e.to_string(),
            },
            e => StoreError::backend(e),
        },
    }
}

/// A failure described in words.
fn failed(msg: String) -> StoreError {
    StoreError::backend(msg)
}

fn labels_to_json(labels: &Labels) -> String {
    serde_json::to_string(labels).expect("a string map is valid JSON")
}

fn labels_from_json(text: &str) -> Labels {
    serde_json::from_str(text).unwrap_or_default()
}

const POLICY_COLS: &str = "tenant, version, document, sha256, bundle, issued_at, expires_at, key_id, pushed_by, comment, rollback_of, created_at";

fn policy_row(r: &Row<'_>) -> rusqlite::Result<PolicyRecord> {
    Ok(PolicyRecord {
        tenant: r.get(0)?,
        version: r.get::<_, i64>(1)? as u64,
        document: r.get(2)?,
        sha256: r.get(3)?,
        bundle: r.get(4)?,
        issued_at: r.get(5)?,
        expires_at: r.get(6)?,
        key_id: r.get(7)?,
        pushed_by: r.get(8)?,
        comment: r.get(9)?,
        rollback_of: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        created_at: r.get(11)?,
    })
}

const TOKEN_COLS: &str = "id, hash, tenant, created_at, expires_at, max_uses, uses, labels, revoked, created_by, comment";

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        hash: r.get(1)?,
        tenant: r.get(2)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        max_uses: r.get(5)?,
        uses: r.get(6)?,
        labels: labels_from_json(&r.get::<_, String>(7)?),
        revoked: r.get(8)?,
        created_by: r.get(9)?,
        comment: r.get(10)?,
    })
}

const AGENT_COLS: &str = "agent_id, tenant, hostname, labels, enrolled_at, last_seen, applied_version, stale, last_error, revoked_at, cert_not_after, inventory, agent_version, token_id";

fn agent_row(r: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    Ok(AgentRecord {
        agent_id: r.get(0)?,
        tenant: r.get(1)?,
        hostname: r.get(2)?,
        labels: labels_from_json(&r.get::<_, String>(3)?),
        enrolled_at: r.get(4)?,
        last_seen: r.get(5)?,
        applied_version: r.get::<_, i64>(6)? as u64,
        stale: r.get(7)?,
        last_error: r.get(8)?,
        revoked_at: r.get(9)?,
        cert_not_after: r.get(10)?,
        inventory: r.get(11)?,
        agent_version: r.get(12)?,
        token_id: r.get(13)?,
    })
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: r.get::<_, i64>(0)? as u64,
        at_ms: r.get(1)?,
        actor: r.get(2)?,
        role: r.get(3)?,
        action: r.get(4)?,
        tenant: r.get(5)?,
        outcome: r.get(6)?,
        detail: r.get(7)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?;
        Self::setup(conn)
    }

    /// An in-memory store (tests).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::setup(Connection::open_in_memory().map_err(backend)?)
    }

    fn setup(mut conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        let have: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(backend)?;
        let known = MIGRATIONS.len() as i64;
        if have > known {
            return Err(failed(format!(
                "the database has schema version {have}, newer than this controller knows ({known}); run a newer controller"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(have as usize) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Exclusive)
                .map_err(backend)?;
            tx.execute_batch(sql)
                .map_err(|e| failed(format!("migration {}: {e}", i + 1)))?;
            if i + 1 == DIGEST_MIGRATION {
                // The index after the backfill: built once from the filled column rather than
                // updated by every row's UPDATE.
                backfill_digests(&tx)
                    .and_then(|()| tx.execute_batch(DIGEST_INDEX))
                    .map_err(|e| failed(format!("migration {}: {e}", i + 1)))?;
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(backend)
    }
}

/// Gives every stored event without one its digest (once, inside the migration that adds it).
fn backfill_digests(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let mut read = tx.prepare("SELECT id, json FROM events WHERE digest IS NULL")?;
    let mut write = tx.prepare("UPDATE events SET digest = ?2 WHERE id = ?1")?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        let (id, json): (i64, String) = (r.get(0)?, r.get(1)?);
        write.execute(params![id, record_digest(&json)])?;
    }
    Ok(())
}

/// Inserts events inside `tx` (a write transaction) and moves the agent's chain state.
///
/// Cursor order: `id` is INTEGER PRIMARY KEY AUTOINCREMENT, taken here while the transaction
/// holds SQLite's single write lock (IMMEDIATE), which it keeps until commit. So the ids of one
/// commit are all above those of every commit before it and below those of every commit after
/// it: ids become visible in increasing order (the `Store` contract sinks rely on), and
/// AUTOINCREMENT never gives out an id twice, even after the highest rows are deleted.
fn insert_events(
    tx: &rusqlite::Transaction<'_>,
    agent_id: &str,
    events: &[StoredEventRecord],
    new_state: Option<(u64, String)>,
) -> Result<u64, StoreError> {
    let mut new = 0;
    {
        // An identical record under the same (tenant, agent, eventId) is a re-send: skipped. It is
        // found by its digest through the index, never by comparing stored bodies.
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO events (event_id, tenant, agent_id, seq, event_type, session_id, tool_name, timestamp, chain_ok, json, digest)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11
                 WHERE NOT EXISTS (SELECT 1 FROM events WHERE tenant = ?2 AND agent_id = ?3 AND event_id = ?1 AND digest = ?11)",
            )
            .map_err(backend)?;
        for e in events {
            let digest = record_digest(&e.json);
            new += stmt
                .execute(params![
                    e.event_id,
                    e.tenant,
                    e.agent_id,
                    e.seq as i64,
                    e.event_type,
                    e.session_id,
                    e.tool_name,
                    e.timestamp,
                    e.chain_ok,
                    e.json,
                    digest
                ])
                .map_err(backend)? as u64;
        }
    }
    if let Some((seq, hash)) = new_state {
        tx.execute(
            "INSERT INTO chains (agent_id, last_seq, last_hash) VALUES (?1, ?2, ?3)
             ON CONFLICT(agent_id) DO UPDATE SET last_seq = excluded.last_seq, last_hash = excluded.last_hash",
            params![agent_id, seq as i64, hash],
        )
        .map_err(backend)?;
    }
    Ok(new)
}

impl Store for SqliteStore {
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
        let conn = self.conn();
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
                        crate::admins::unrecorded_id(id_or_name),
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

    fn latest_policy(&self, tenant: &str) -> Result<Option<PolicyRecord>, StoreError> {
        self.conn()
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

    fn policy(&self, tenant: &str, version: u64) -> Result<Option<PolicyRecord>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {POLICY_COLS} FROM policies WHERE tenant = ?1 AND version = ?2"),
                params![tenant, version as i64],
                policy_row,
            )
            .optional()
            .map_err(backend)
    }

    fn policy_history(&self, tenant: &str, limit: u32) -> Result<Vec<PolicyRecord>, StoreError> {
        let limit = if limit == 0 { -1 } else { i64::from(limit) };
        let conn = self.conn();
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
        tenant: &str,
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
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT tenant FROM policies ORDER BY tenant")
            .map_err(backend)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    t.id,
                    t.hash,
                    t.tenant,
                    t.created_at,
                    t.expires_at,
                    t.max_uses,
                    t.uses,
                    labels_to_json(&t.labels),
                    t.revoked,
                    t.created_by,
                    t.comment
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn list_tokens(
        &self,
        tenant: Option<&str>,
        include_inactive: bool,
        now: i64,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLS} FROM tokens
                 WHERE (?1 IS NULL OR tenant = ?1)
                   AND (?2 OR (revoked = 0 AND expires_at > ?3 AND uses < max_uses))
                 ORDER BY created_at, id"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant, include_inactive, now], token_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = ?1"),
                params![id],
                token_row,
            )
            .optional()
            .map_err(backend)
    }

    fn revoke_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let conn = self.conn();
        conn.execute("UPDATE tokens SET revoked = 1 WHERE id = ?1", params![id])
            .map_err(backend)?;
        conn.query_row(
            &format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = ?1"),
            params![id],
            token_row,
        )
        .optional()
        .map_err(backend)
    }

    fn enroll(
        &self,
        token_hash: &str,
        asserted_tenant: Option<&str>,
        now: i64,
        register: &mut dyn FnMut(&TokenRecord) -> Result<AgentRecord, StoreError>,
    ) -> Result<Result<AgentRecord, RedeemError>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let token = tx
            .query_row(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash = ?1"),
                params![token_hash],
                token_row,
            )
            .optional()
            .map_err(backend)?;
        let Some(mut token) = token else {
            return Ok(Err(RedeemError::Unknown));
        };
        let refused = if token.revoked {
            Some(RedeemError::Revoked {
                id: token.id.clone(),
            })
        } else if token.expires_at <= now {
            Some(RedeemError::Expired {
                id: token.id.clone(),
            })
        } else if token.uses >= token.max_uses {
            Some(RedeemError::Exhausted {
                id: token.id.clone(),
                uses: token.uses,
                max_uses: token.max_uses,
            })
        } else if let Some(asked) = asserted_tenant
            && asked != token.tenant
        {
            Some(RedeemError::WrongTenant {
                asked: asked.to_owned(),
            })
        } else {
            None
        };
        if let Some(refused) = refused {
            return Ok(Err(refused));
        }
        token.uses += 1;
        tx.execute(
            "UPDATE tokens SET uses = uses + 1 WHERE id = ?1",
            params![token.id],
        )
        .map_err(backend)?;
        let agent = register(&token)?;
        tx.execute(
            &format!(
                "INSERT INTO agents ({AGENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            params![
                agent.agent_id,
                agent.tenant,
                agent.hostname,
                labels_to_json(&agent.labels),
                agent.enrolled_at,
                agent.last_seen,
                agent.applied_version as i64,
                agent.stale,
                agent.last_error,
                agent.revoked_at,
                agent.cert_not_after,
                agent.inventory,
                agent.agent_version,
                agent.token_id
            ],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(Ok(agent))
    }

    fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE agent_id = ?1"),
                params![agent_id],
                agent_row,
            )
            .optional()
            .map_err(backend)
    }

    fn list_agents(&self, tenant: Option<&str>) -> Result<Vec<AgentRecord>, StoreError> {
        let conn = self.conn();
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

    fn revoke_agent(&self, agent_id: &str, now: i64) -> Result<Option<AgentRecord>, StoreError> {
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
        agent_id: &str,
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

    fn touch_agent(&self, agent_id: &str, now: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE agents SET last_seen = ?2 WHERE agent_id = ?1",
                params![agent_id, now],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn set_agent_cert(&self, agent_id: &str, not_after: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE agents SET cert_not_after = ?2 WHERE agent_id = ?1",
                params![agent_id, not_after],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn count_applied(&self, tenant: &str, version: u64) -> Result<u64, StoreError> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM agents WHERE tenant = ?1 AND applied_version = ?2 AND revoked_at IS NULL",
                params![tenant, version as i64],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(backend)
    }

    fn chain_state(&self, agent_id: &str) -> Result<Option<(u64, String)>, StoreError> {
        self.conn()
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
        agent_id: &str,
        events: &[StoredEventRecord],
        new_state: Option<(u64, String)>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let new = insert_events(&tx, agent_id, events, new_state)?;
        tx.commit().map_err(backend)?;
        Ok(new)
    }

    fn commit_checked(
        &self,
        tenant: &str,
        agent_id: &str,
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
        {
            // Index look-ups only: how many records an id holds (counting stops past the cap) and
            // whether a digest is among them. No stored body is read.
            let mut count = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE tenant = ?1 AND agent_id = ?2 AND event_id = ?3 LIMIT ?4)",
                )
                .map_err(backend)?;
            let mut has = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM events WHERE tenant = ?1 AND agent_id = ?2 AND event_id = ?3 AND digest = ?4)",
                )
                .map_err(backend)?;
            let mut counted = std::collections::HashMap::<&str, u64>::new();
            for (id, digest) in keys {
                let records = match counted.get(id.as_str()) {
                    Some(n) => *n,
                    None => {
                        let n = count
                            .query_row(
                                params![
                                    tenant,
                                    agent_id,
                                    id,
                                    (MAX_RECORDS_PER_EVENT_ID + 1) as i64
                                ],
                                |r| r.get::<_, i64>(0),
                            )
                            .map_err(backend)? as u64;
                        counted.insert(id, n);
                        n
                    }
                };
                if records == 0 {
                    continue;
                }
                let stored: bool = has
                    .query_row(params![tenant, agent_id, id, digest], |r| r.get(0))
                    .map_err(backend)?;
                let seen = view.seen.entry(id.clone()).or_insert_with(|| SeenEventId {
                    records,
                    ..SeenEventId::default()
                });
                if stored {
                    seen.digests.insert(digest.clone());
                }
            }
        }
        let (records, new_state) = check(&view);
        let new = insert_events(&tx, agent_id, &records, new_state)?;
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
        let limit = i64::from(f.limit.clamp(1, super::MAX_EVENTS_PER_QUERY));
        if f.newest && f.after_id == 0 {
            sql = format!("SELECT * FROM ({sql} ORDER BY id DESC LIMIT {limit}) ORDER BY id");
        } else {
            sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
        }
        let conn = self.conn();
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
        self.conn()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(backend)
    }

    fn sink_cursor(&self, sink: &str) -> Result<u64, StoreError> {
        self.conn()
            .query_row(
                "SELECT last_id FROM sink_cursors WHERE sink = ?1",
                params![sink],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.unwrap_or(0) as u64)
            .map_err(backend)
    }

    fn set_sink_cursor(&self, sink: &str, id: u64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO sink_cursors (sink, last_id) VALUES (?1, ?2)
                 ON CONFLICT(sink) DO UPDATE SET last_id = excluded.last_id",
                params![sink, id as i64],
            )
            .map_err(backend)?;
        Ok(())
    }

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
        tenant: Option<&str>,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.conn();
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

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
