//! What the store keeps of tool integrity (issue 17): pins agents report, admins' decisions,
//! and the rows `thothctl pins list` shows (see `PinStore` in the parent).

/// One pinned tool of one user on one agent, as its heartbeat reported it (tool integrity,
/// issue 17; see `ToolPinReport` in fleet.proto). Checked by `service::pins` before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolPinRecord {
    pub user: String,
    pub client: String,
    pub server_name: String,
    pub server_key: String,
    pub command: String,
    pub tool: String,
    /// The digest in force (added: the added definition's own; nothing is pinned).
    pub digest: String,
    /// pinned, changed, rejected, added.
    pub state: String,
    /// The newer definition seen (changed, rejected; added: equal to `digest`), else empty.
    pub pending_digest: String,
    pub source: String,
    pub accepted: bool,
    pub changes: Vec<String>,
    pub first_seen_ms: i64,
    pub changed_ms: i64,
    /// The pending definition's description (untrusted text, at most 2 KiB), else empty.
    pub pending_description: String,
}

/// An admin's decision on one tool definition of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PinDecisionRecord {
    pub tenant: String,
    pub server_key: String,
    pub tool: String,
    pub digest: String,
    pub accepted: bool,
    pub decided_by: String,
    pub reason: String,
    pub decided_ms: i64,
}

/// The tenant's reported definitions grouped by (server key, tool, digest): one per pinned
/// digest and one per pending digest (a digest pinned somewhere and pending elsewhere is one
/// row, pending).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PinRow {
    pub server_key: String,
    pub tool: String,
    pub digest: String,
    /// Some agent reports it as a newer definition waiting for a decision.
    pub pending: bool,
    /// For a pending definition, the pinned one it would replace.
    pub pinned_digest: String,
    pub client: String,
    pub server_name: String,
    pub command: String,
    pub changes: Vec<String>,
    /// Distinct agents and (agent, user) pairs that report it.
    pub agents: u32,
    pub users: u32,
    /// The newest `last_seen` of those agents (Unix ms).
    pub last_seen_ms: i64,
    /// The decision recorded for exactly this definition.
    pub decision: Option<PinDecisionRecord>,
    /// A pending definition's description as one reporter gave it (empty for pinned rows).
    pub description: String,
    /// Reporters disagree about the client, server name, command, pinned digest, changes or
    /// description: the row shows one reporter's (`changes` is the union of all of them).
    pub reports_differ: bool,
}
