//! What the controller keeps, behind one trait so another backend (PostgreSQL, for replicas) can
//! be added without touching callers. Methods may block: async callers run them on the blocking
//! pool (see `Controller::db`). Times are Unix seconds unless named `_ms`.

use std::collections::BTreeMap;

pub use crate::ids::{AgentId, TenantId};

pub mod migrations;
mod pin_records;
pub mod sqlite;

pub use pin_records::{PinDecisionRecord, PinRow, ToolPinRecord};

/// Labels on tokens and agents.
pub type Labels = BTreeMap<String, String>;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What an update names does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A uniqueness or ordering rule was broken (e.g. a racing push took the version).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data cannot be read back (a damaged file, a row that does not decode).
    #[error("storage is corrupt ({what}): {detail}")]
    Corrupt {
        /// What was being read.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The backend is busy or unreachable for now (locked, pool exhausted, task lost): a retry
    /// may succeed.
    #[error("storage busy: {0}")]
    Busy(String),
    /// The backend failed (I/O, a schema from a newer controller, …).
    #[error("storage: {source}")]
    Backend {
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Raised by a callback inside a transaction; everything in it is rolled back.
    #[error("{0}")]
    Aborted(String),
}

impl StoreError {
    /// A backend failure from an error or a message.
    pub fn backend(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Backend {
            source: source.into(),
        }
    }
}

/// `fingerprint` of the admin-credential row that stands for "every unrecorded credential of
/// NAME".
pub fn unrecorded_id(name: &str) -> String {
    format!("unrecorded:{name}")
}

/// One policy version of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    /// Tenant.
    pub tenant: String,
    /// Version (strictly increasing per tenant, from 1).
    pub version: u64,
    /// The document as pushed.
    pub document: String,
    /// Hex SHA-256 of the document.
    pub sha256: String,
    /// The current signed envelope (replaced when re-signed).
    pub bundle: Vec<u8>,
    /// Of the current envelope.
    pub issued_at: i64,
    /// Of the current envelope.
    pub expires_at: i64,
    /// Signing key of the current envelope.
    pub key_id: String,
    /// Admin who pushed it.
    pub pushed_by: String,
    /// Free text.
    pub comment: String,
    /// For a rollback: the version re-issued.
    pub rollback_of: Option<u64>,
    /// When it was pushed.
    pub created_at: i64,
}

/// An enrollment token (its secret is kept only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id (for listing and revoking).
    pub id: String,
    /// Hex SHA-256 of the secret token.
    pub hash: String,
    /// Tenant the token enrolls into.
    pub tenant: String,
    /// Created.
    pub created_at: i64,
    /// Expires.
    pub expires_at: i64,
    /// Enrollments allowed.
    pub max_uses: u32,
    /// Enrollments done.
    pub uses: u32,
    /// Labels given to agents enrolled with it.
    pub labels: Labels,
    /// Revoked by an admin.
    pub revoked: bool,
    /// Admin who created it.
    pub created_by: String,
    /// Free text.
    pub comment: String,
}

/// Why a token cannot enroll.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedeemError {
    /// No token has this secret.
    #[error("the enrollment token is not recognised")]
    Unknown,
    /// Past its expiry.
    #[error("the enrollment token {id} expired")]
    Expired {
        /// Token id.
        id: String,
    },
    /// Every use is spent.
    #[error("the enrollment token {id} is used up ({uses} of {max_uses} enrollments)")]
    Exhausted {
        /// Token id.
        id: String,
        /// Uses.
        uses: u32,
        /// Allowed.
        max_uses: u32,
    },
    /// Revoked.
    #[error("the enrollment token {id} was revoked")]
    Revoked {
        /// Token id.
        id: String,
    },
    /// The agent said it belongs to another tenant.
    #[error("the enrollment token is for another tenant than {asked:?}")]
    WrongTenant {
        /// What the agent asserted.
        asked: String,
    },
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentRecord {
    /// Id (in its certificate).
    pub agent_id: String,
    /// Tenant (in its certificate).
    pub tenant: String,
    /// Hostname at enrollment, then as reported.
    pub hostname: String,
    /// Token labels plus the agent's own.
    pub labels: Labels,
    /// Enrolled.
    pub enrolled_at: i64,
    /// Last call from it.
    pub last_seen: Option<i64>,
    /// Bundle version it reports applied.
    pub applied_version: u64,
    /// It reports its bundle expired.
    pub stale: bool,
    /// Its last reported error.
    pub last_error: String,
    /// When revoked.
    pub revoked_at: Option<i64>,
    /// Its current certificate's expiry.
    pub cert_not_after: i64,
    /// Last inventory, JSON, without its MCP part.
    pub inventory: Option<String>,
    /// Agent software version.
    pub agent_version: String,
    /// Token it enrolled with.
    pub token_id: String,
    /// Its last MCP inventory, JSON (`mcpServers`, `mcpFiles`), when it sent one and it was
    /// asked for (kept apart from the row: see [`AgentStore::list_agents_page`]).
    pub mcp: Option<String>,
}

/// What an agent reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentReportRecord {
    /// Applied version.
    pub applied_version: u64,
    /// Stale flag.
    pub stale: bool,
    /// Last error.
    pub last_error: String,
    /// Inventory JSON, when sent, without its MCP part.
    pub inventory: Option<String>,
    /// Hostname, when sent.
    pub hostname: Option<String>,
    /// Agent version.
    pub agent_version: String,
    /// The MCP inventory, JSON, and the SHA-256 (hex) of that JSON, when sent: stored only when
    /// the digest differs from the stored one.
    pub mcp: Option<(String, String)>,
}

/// An issued admin credential (its certificate), recorded when `init` / `issue-admin` made it
/// or, for one issued before admins were recorded, at its first use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminCredentialRecord {
    /// `sha256:<hex>` of the certificate (DER): the credential's id.
    pub fingerprint: String,
    /// The admin name in the certificate.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Its tenant scope (empty: all tenants).
    pub tenant: String,
    /// Certificate expiry (Unix seconds).
    pub not_after: i64,
    /// When it was recorded (Unix seconds).
    pub recorded_at: i64,
    /// `init`, `issue-admin` or `first use`.
    pub source: String,
    /// When it was revoked (Unix seconds).
    pub revoked_at: Option<i64>,
    /// Who revoked it.
    pub revoked_by: String,
    /// Why.
    pub reason: String,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Assigned by the store (0 when appending).
    pub id: u64,
    /// When (Unix milliseconds).
    pub at_ms: i64,
    /// Who (admin name).
    pub actor: String,
    /// Their role.
    pub role: String,
    /// What (`policy.push`, `token.create`, …).
    pub action: String,
    /// Tenant acted on (empty: none).
    pub tenant: String,
    /// `ok` or why it was refused.
    pub outcome: String,
    /// JSON object with details.
    pub detail: String,
}

/// One stored behavioral event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredEventRecord {
    /// The store's cursor (0 when inserting).
    pub id: u64,
    /// `eventId`: a record identical to one stored under the same (tenant, agent, eventId) is
    /// ignored; a different record under a stored eventId is stored too (ingest alerts on it).
    pub event_id: String,
    /// Tenant, from the uploading agent's certificate.
    pub tenant: String,
    /// Agent, from its certificate.
    pub agent_id: String,
    /// Chain position (0 for controller alerts).
    pub seq: u64,
    /// `eventType`.
    pub event_type: String,
    /// `sessionId`.
    pub session_id: String,
    /// `toolName`.
    pub tool_name: String,
    /// `timestamp` (RFC 3339).
    pub timestamp: String,
    /// The chain verified.
    pub chain_ok: bool,
    /// The event JSON, as received.
    pub json: String,
}

/// Most events one [`EventStore::query_events`] returns (a larger `limit` is cut to it).
pub const MAX_EVENTS_PER_QUERY: u32 = 10_000;

/// A filter over stored events.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Tenant (None: all).
    pub tenant: Option<String>,
    /// Agent.
    pub agent_id: Option<String>,
    /// Session.
    pub session_id: Option<String>,
    /// Tool.
    pub tool_name: Option<String>,
    /// Event types (empty: all).
    pub event_types: Vec<String>,
    /// Tenants (empty: all; for sinks).
    pub tenants: Vec<String>,
    /// timestamp >= since.
    pub since: Option<String>,
    /// timestamp <= until.
    pub until: Option<String>,
    /// After this cursor.
    pub after_id: u64,
    /// Up to this cursor, inclusive (0: no bound).
    pub upto_id: u64,
    /// At most.
    pub limit: u32,
    /// With after_id 0: the newest `limit` (else the oldest after `after_id`).
    pub newest: bool,
    /// Only events with a DLP finding (`detail.dlp`).
    pub dlp_only: bool,
    /// Only events with a DLP finding of this detector.
    pub dlp_detector: Option<String>,
}

/// What ingest sees of one agent inside the transaction that commits its batch.
#[derive(Debug, Clone, Default)]
pub struct ChainView {
    /// The last (seq, hash) committed for the agent's chain.
    pub state: Option<(u64, String)>,
    /// For each asked eventId stored before for this tenant and agent: how many records it
    /// holds and which of the asked digests are among them. Bodies are never loaded.
    pub seen: std::collections::HashMap<String, SeenEventId>,
}

/// Most distinct records stored under one (tenant, agent, `eventId`): past it, ingest stores an
/// alert instead of the record, so a flood of records under one id costs no more than any event.
pub const MAX_RECORDS_PER_EVENT_ID: u64 = 8;

/// What the store holds under one (tenant, agent, `eventId`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenEventId {
    /// Records stored under it (counted up to [`MAX_RECORDS_PER_EVENT_ID`] + 1).
    pub records: u64,
    /// Which of the asked SHA-256 digests (hex, of the record's JSON) are stored under it.
    pub digests: std::collections::HashSet<String>,
}

/// The digest a stored record is de-duplicated by: hex SHA-256 of its JSON.
pub fn record_digest(json: &str) -> String {
    use sha2::Digest as _;
    let mut out = [0u8; 64];
    hex::encode_to_slice(sha2::Sha256::digest(json.as_bytes()), &mut out)
        .expect("64 hex digits for 32 bytes");
    String::from_utf8_lossy(&out).into_owned()
}

/// What ingest decided for a batch: the records to store (alerts included) and the chain state
/// to keep (None: unchanged).
pub type ChainDecision = (Vec<StoredEventRecord>, Option<(u64, String)>);

/// The storage contract: one trait per aggregate, and [`Store`] for a backend that holds them
/// all (what the controller is built on). Methods may block: async callers run them on the
/// blocking pool (see `Controller::db`). A second backend (PostgreSQL, for several controllers)
/// implements each trait; the SQLite one is `sqlite::SqliteStore`.
///
/// Event cursors (`StoredEventRecord::id`) are given out in commit order: once an event with id
/// N is visible to a reader, every event that becomes visible later has an id above N. Sinks
/// rely on it to move their cursor past events they did not need to deliver (see
/// `sinks::run`). A backend must guarantee it (SQLite: ids are taken inside the write
/// transaction, and SQLite has one writer at a time; PostgreSQL sequences would NOT do it alone).
pub trait Store:
    PolicyStore
    + TokenStore
    + AgentStore
    + EventStore
    + SinkCursorStore
    + AdminStore
    + AuditStore
    + ApprovalStore
    + PinStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: PolicyStore
        + TokenStore
        + AgentStore
        + EventStore
        + SinkCursorStore
        + AdminStore
        + AuditStore
        + ApprovalStore
        + PinStore
        + Send
        + Sync
        + 'static
{
}

/// Policy versions of each tenant.
pub trait PolicyStore: Send + Sync {
    /// The newest version of a tenant's policy.
    fn latest_policy(&self, tenant: &TenantId) -> Result<Option<PolicyRecord>, StoreError>;
    /// One version.
    fn policy(&self, tenant: &TenantId, version: u64) -> Result<Option<PolicyRecord>, StoreError>;
    /// Newest first; `limit` 0 means all.
    fn policy_history(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<PolicyRecord>, StoreError>;
    /// Adds a version; [`StoreError::Conflict`] unless it is exactly one above the newest.
    fn insert_policy(&self, record: &PolicyRecord) -> Result<(), StoreError>;
    /// Replaces the signed envelope of a version (re-signing).
    fn replace_bundle(
        &self,
        tenant: &TenantId,
        version: u64,
        bundle: &[u8],
        issued_at: i64,
        expires_at: i64,
        key_id: &str,
    ) -> Result<(), StoreError>;
    /// Tenants that have a policy.
    fn policy_tenants(&self) -> Result<Vec<String>, StoreError>;
}

/// Enrollment tokens, and enrollment (a token use spent and an agent registered, atomically).
pub trait TokenStore: Send + Sync {
    /// Adds a token.
    fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// Tokens of one tenant or all; inactive ones (revoked, expired, used up) only on request.
    fn list_tokens(
        &self,
        tenant: Option<&TenantId>,
        include_inactive: bool,
        now: i64,
    ) -> Result<Vec<TokenRecord>, StoreError>;
    /// One token by id.
    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Marks a token revoked.
    fn revoke_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// In one transaction: checks the token with this hash and spends one use, then runs `register`
    /// (which signs the certificate) and stores the agent it returns. Any error rolls it all back.
    fn enroll(
        &self,
        token_hash: &str,
        asserted_tenant: Option<&TenantId>,
        now: i64,
        register: &mut dyn FnMut(&TokenRecord) -> Result<AgentRecord, StoreError>,
    ) -> Result<Result<AgentRecord, RedeemError>, StoreError>;
}

/// Enrolled agents and what they report.
pub trait AgentStore: Send + Sync {
    /// One agent, with its MCP inventory.
    fn agent(&self, agent_id: &AgentId) -> Result<Option<AgentRecord>, StoreError>;
    /// Agents of one tenant or all (without their MCP inventory).
    fn list_agents(&self, tenant: Option<&TenantId>) -> Result<Vec<AgentRecord>, StoreError>;
    /// At most `limit` agents of one tenant or all, ordered by (tenant, agent_id), after the
    /// (tenant, agent_id) `after`; with their MCP inventory when `mcp`, else without reading it.
    fn list_agents_page(
        &self,
        tenant: Option<&TenantId>,
        after: Option<(&str, &str)>,
        limit: usize,
        mcp: bool,
    ) -> Result<Vec<AgentRecord>, StoreError>;
    /// Marks an agent revoked (idempotent; keeps the first time).
    fn revoke_agent(&self, agent_id: &AgentId, now: i64)
    -> Result<Option<AgentRecord>, StoreError>;
    /// Records a report (and last-seen). Returns whether the MCP inventory was written (sent and
    /// different from the stored one).
    fn record_report(
        &self,
        agent_id: &AgentId,
        report: &AgentReportRecord,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Records last-seen only.
    fn touch_agent(&self, agent_id: &AgentId, now: i64) -> Result<(), StoreError>;
    /// Records a renewed certificate's expiry.
    fn set_agent_cert(&self, agent_id: &AgentId, not_after: i64) -> Result<(), StoreError>;
    /// How many agents of a tenant report this version applied.
    fn count_applied(&self, tenant: &TenantId, version: u64) -> Result<u64, StoreError>;
}

/// Behavioral events and each agent's chain state (cursors in commit order: see [`Store`]).
pub trait EventStore: Send + Sync {
    /// The last (seq, hash) committed for an agent's chain.
    fn chain_state(&self, agent_id: &AgentId) -> Result<Option<(u64, String)>, StoreError>;
    /// In one transaction: stores events (skipping a record identical to one stored under the
    /// same tenant, agent and `eventId`) and moves the agent's chain state. Returns how many
    /// were new.
    fn commit_events(
        &self,
        agent_id: &AgentId,
        events: &[StoredEventRecord],
        new_state: Option<(u64, String)>,
    ) -> Result<u64, StoreError>;
    /// In one transaction: reads the agent's [`ChainView`] (its chain state and, for each
    /// (eventId, digest) of `keys`, how many records the id holds and whether that digest is one
    /// of them: indexed look-ups, never the stored bodies), runs `check` on it, stores the records
    /// it returns as [`EventStore::commit_events`] does and moves the chain state. Concurrent batches of
    /// one agent are thereby checked one after the other. Returns how many records were new.
    fn commit_checked(
        &self,
        tenant: &TenantId,
        agent_id: &AgentId,
        keys: &[(String, String)],
        check: &mut dyn FnMut(&ChainView) -> ChainDecision,
    ) -> Result<u64, StoreError>;
    /// Events matching a filter, oldest first.
    fn query_events(&self, filter: &EventFilter) -> Result<Vec<StoredEventRecord>, StoreError>;
    /// The highest event cursor committed (every event at or below it is visible).
    fn max_event_id(&self) -> Result<u64, StoreError>;
}

/// Where each sink is in the event stream.
pub trait SinkCursorStore: Send + Sync {
    /// A sink's cursor.
    fn sink_cursor(&self, sink: &str) -> Result<u64, StoreError>;
    /// Moves a sink's cursor.
    fn set_sink_cursor(&self, sink: &str, id: u64) -> Result<(), StoreError>;
}

/// Issued admin credentials and their revocation.
pub trait AdminStore: Send + Sync {
    /// Records an issued admin credential; false (and no change) if it is already recorded.
    /// One recorded at its first use (`source` "first use": it was unrecorded) of a name revoked
    /// as a whole is recorded revoked (atomically).
    fn record_admin(&self, record: &AdminCredentialRecord) -> Result<bool, StoreError>;
    /// Every recorded admin credential, oldest first.
    fn list_admins(&self) -> Result<Vec<AdminCredentialRecord>, StoreError>;
    /// Revokes the unrevoked credentials whose fingerprint or name is `id_or_name`; returns them.
    /// By name, in the same transaction, also records the name's `unrecorded:NAME` row (revoked),
    /// so that [`AdminStore::record_admin`] records any later credential of the name revoked.
    fn revoke_admins(
        &self,
        id_or_name: &str,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<Vec<AdminCredentialRecord>, StoreError>;
}

/// The audit log.
pub trait AuditStore: Send + Sync {
    /// Appends an entry; returns its id.
    fn append_audit(&self, entry: &AuditRecord) -> Result<u64, StoreError>;
    /// Entries after `after_id`, oldest first, at most `limit`, of one tenant or all.
    fn list_audit(
        &self,
        tenant: Option<&TenantId>,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

/// One approval request in the controller's queue (issue 16), with its decision once made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalRecord {
    /// The agent's id for it (UUIDv7); unique per agent.
    pub approval_id: String,
    /// From the agent's certificate.
    pub tenant: String,
    /// From the agent's certificate.
    pub agent_id: String,
    /// From the agent registry.
    pub hostname: String,
    /// The OS user who made the call.
    pub user: String,
    /// The proxy's MCP session.
    pub session_id: String,
    /// The MCP server.
    pub server_name: String,
    /// The tool.
    pub tool_name: String,
    /// The redacted arguments preview.
    pub content: String,
    /// Why approval is needed.
    pub reason: String,
    /// How long the proxy holds the call.
    pub timeout_secs: u32,
    /// SHA-256 (hex) of the canonical arguments.
    pub arguments_sha256: String,
    /// The MCP client.
    pub client_name: String,
    /// Who may approve ("user", "admin").
    pub approvers: Vec<String>,
    /// What the request asked to remember ("once", "session", a duration).
    pub remember: String,
    /// When the agent asked (Unix ms).
    pub requested_ms: i64,
    /// When a pending request expires (Unix ms).
    pub expires_ms: i64,
    /// pending, approved, denied, expired, withdrawn.
    pub state: String,
    /// When it was decided, withdrawn or expired (Unix ms; 0 while pending).
    pub decided_ms: i64,
    /// The admin who decided.
    pub decided_by: String,
    /// The admin's comment or reason.
    pub decision_reason: String,
    /// What the decision remembers.
    pub decision_remember: String,
}

/// What [`ApprovalStore::submit_approval`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalSubmit {
    /// Stored, pending.
    Stored,
    /// The agent had submitted this id already: the stored one.
    Existing(Box<ApprovalRecord>),
    /// The tenant has too many pending requests.
    TenantFull,
    /// The agent has too many pending requests.
    AgentFull,
    /// Another agent holds this id.
    IdTaken,
}

/// The approval queue.
pub trait ApprovalStore: Send + Sync {
    /// Stores a pending request unless the agent sent this id already or a limit is reached
    /// (pending requests of the tenant, of the agent), in one transaction.
    fn submit_approval(
        &self,
        rec: &ApprovalRecord,
        max_tenant: u32,
        max_agent: u32,
    ) -> Result<ApprovalSubmit, StoreError>;
    /// One request by id (of `tenant` only, when given).
    fn approval(
        &self,
        tenant: Option<&TenantId>,
        approval_id: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError>;
    /// Pending requests (`all`: every state), newest first, at most `limit`.
    fn list_approvals(
        &self,
        tenant: Option<&TenantId>,
        all: bool,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;
    /// Moves a pending, unexpired request (`now_ms`) of `tenant` to `state` with the decision
    /// fields of `rec`; false when it was not pending (or has expired).
    fn decide_approval(
        &self,
        tenant: &str,
        approval_id: &str,
        rec: &ApprovalRecord,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// The agent's pending request becomes withdrawn; false when it was not pending.
    fn withdraw_approval(
        &self,
        agent_id: &str,
        approval_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Pending requests past their expiry become expired; returns how many.
    fn expire_approvals(&self, now_ms: i64) -> Result<u64, StoreError>;
    /// Deletes requests no longer pending that ended (decided, withdrawn, expired) before
    /// `before_ms`, then, in every tenant holding more than `max_per_tenant` rows, the oldest
    /// ended ones down to it (pending rows are never deleted); returns how many went.
    fn prune_approvals(&self, before_ms: i64, max_per_tenant: u32) -> Result<u64, StoreError>;
    /// The agent's decided (approved or denied) requests not yet expired, newest first, at
    /// most `limit`: what is (re-)sent on its Subscribe stream.
    fn agent_decisions(
        &self,
        agent_id: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;
}

/// Tool definitions pinned on agents (as they report them) and admins' decisions on them.
pub trait PinStore: Send + Sync {
    /// Replaces the pins an agent reported, unless `sha256` (of the checked report) is the one
    /// stored: a heartbeat that changed nothing writes nothing. Returns whether it wrote.
    fn record_tool_pins(
        &self,
        agent_id: &AgentId,
        tenant: &TenantId,
        sha256: &str,
        pins: &[ToolPinRecord],
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// What one agent reported last.
    fn agent_tool_pins(&self, agent_id: &AgentId) -> Result<Vec<ToolPinRecord>, StoreError>;
    /// The tenant's definitions (of one agent's reports when given) reported by unrevoked
    /// agents, with their decisions; those waiting for a decision first, then by server name,
    /// tool; at most `limit`.
    fn pin_rows(
        &self,
        tenant: &TenantId,
        agent_id: Option<&AgentId>,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<PinRow>, StoreError>;
    /// Records a decision, replacing an earlier one on the same definition.
    fn put_pin_decision(&self, d: &PinDecisionRecord) -> Result<(), StoreError>;
    /// The tenant's decisions made at or after `since_ms`, newest first, at most `limit`.
    fn pin_decisions(
        &self,
        tenant: &TenantId,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<PinDecisionRecord>, StoreError>;
}
