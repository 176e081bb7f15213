//! The embedded store: one SQLite file in the data directory (WAL, versioned migrations).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

use crate::store::migrations::{DIGEST_INDEX, DIGEST_MIGRATION, MIGRATIONS};
use crate::store::{
    AdminCredentialRecord, AdminStore, AgentId, AgentRecord, AgentReportRecord, AgentStore,
    AuditRecord, AuditStore, ChainDecision, ChainView, EventFilter, EventStore, Labels,
    MAX_RECORDS_PER_EVENT_ID, PolicyRecord, PolicyStore, RedeemError, SinkCursorStore, StoreError,
    StoredEventRecord, TenantId, TokenRecord, TokenStore, record_digest,
};

/// SQLite: one writer connection behind a mutex (SQLite has one writer anyway; calls are
/// short) and, for a database file, a few read-only connections beside it, so that reads (admin
/// listings, sinks reading events, agents' checks) do not queue behind writes. In WAL mode a
/// reader sees every transaction committed before its statement began.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl rusqlite::ToSql for TenantId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.as_str().to_sql()
    }
}

impl rusqlite::ToSql for AgentId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.as_str().to_sql()
    }
}

/// Read-only connections of a file-backed store.
const READERS: usize = 4;

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
        mcp: None,
    })
}

/// [`AGENT_COLS`] from `agents LEFT JOIN agent_mcp USING (agent_id)`, then `mcp`.
const AGENT_MCP_COLS: &str = "agent_id, tenant, hostname, labels, enrolled_at, last_seen, applied_version, stale, last_error, revoked_at, cert_not_after, inventory, agent_version, token_id, agent_mcp.mcp";

fn agent_mcp_row(r: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    Ok(AgentRecord {
        mcp: r.get(14)?,
        ..agent_row(r)?
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
        let mut store = Self::setup(conn)?;
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(|e| failed(format!("cannot open {} to read: {e}", path.display())))?;
            reader
                .busy_timeout(std::time::Duration::from_secs(5))
                .map_err(backend)?;
            store.readers.push(Mutex::new(reader));
        }
        Ok(store)
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
        conn.pragma_update(None, "cache_size", -65536)
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
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for reading: a free read-only one (the writer for an in-memory store).
    fn read(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        if n == 0 {
            return self.conn();
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
    agent_id: &AgentId,
    events: &[StoredEventRecord],
    new_state: Option<(u64, String)>,
    read: Option<&ReadInTx<'_>>,
) -> Result<u64, StoreError> {
    let mut new = 0;
    {
        // An identical record under the same (tenant, agent, eventId) is a re-send: skipped. It is
        // found by its digest: in what the caller read in this transaction when it asked for it,
        // else through the index (never by comparing stored bodies). A plain INSERT after the
        // look-up: an INSERT … SELECT … WHERE NOT EXISTS on the same table costs SQLite a
        // temporary table per row.
        let mut exists = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM events WHERE tenant = ?1 AND agent_id = ?2 AND event_id = ?3 AND digest = ?4)",
            )
            .map_err(backend)?;
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO events (event_id, tenant, agent_id, seq, event_type, session_id, tool_name, timestamp, chain_ok, json, digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .map_err(backend)?;
        let digests: Vec<String> = events.iter().map(|e| record_digest(&e.json)).collect();
        // Pairs of `read` inserted by this call.
        let mut inserted = std::collections::HashSet::<(&str, &str)>::new();
        for (e, digest) in events.iter().zip(&digests) {
            let pair = (e.event_id.as_str(), digest.as_str());
            let asked = read.filter(|r| {
                r.tenant.as_str() == e.tenant
                    && agent_id.as_str() == e.agent_id
                    && r.asked.contains(&pair)
            });
            let held = match asked {
                Some(r) => r.held(pair.0, pair.1) || inserted.contains(&pair),
                None => exists
                    .query_row(params![e.tenant, e.agent_id, e.event_id, digest], |r| {
                        r.get(0)
                    })
                    .map_err(backend)?,
            };
            if held {
                continue;
            }
            insert
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
                .map_err(backend)?;
            new += 1;
            if asked.is_some() {
                inserted.insert(pair);
            }
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

/// What a write transaction read of one agent's stored records before inserting: the
/// (eventId, digest) pairs asked for, and the agent's [`ChainView`] saying which are stored.
struct ReadInTx<'a> {
    tenant: &'a TenantId,
    asked: std::collections::HashSet<(&'a str, &'a str)>,
    view: &'a ChainView,
}

impl ReadInTx<'_> {
    fn held(&self, event_id: &str, digest: &str) -> bool {
        self.view
            .seen
            .get(event_id)
            .is_some_and(|s| s.digests.contains(digest))
    }
}

mod admins;
mod agents;
mod approvals;
mod audit;
mod cursors;
mod events;
mod pins;
mod policy;
mod tokens;

#[cfg(test)]
mod tests;
