//! The behavioral event record, exactly as a SIEM receives it (DESIGN: "Behavioral events").

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Kinds of events: every type a proxy, the agent or the controller raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// A `tools/call` was decided (before it is forwarded, or instead of forwarding it).
    ToolCallPre,
    /// A `tools/call` finished: the server's result, or the denial.
    ToolCallPost,
    /// Human approval was asked for.
    ApprovalRequested,
    /// Human approval was given, refused, or timed out.
    ApprovalDecided,
    /// An MCP client's config was wrapped.
    ConfigWrapped,
    /// A wrapped config was changed by someone else.
    ConfigDrift,
    /// A config could not be parsed and was left alone.
    ConfigInvalid,
    /// An MCP server the agent cannot govern (remote, or a local entry it could not wrap);
    /// raised once per file, server and reason.
    McpServerUngoverned,
    /// A policy was applied.
    PolicyApplied,
    /// A policy was refused.
    PolicyRejected,
    /// The policy in force is older than the controller's and cannot be refreshed.
    PolicyStale,
    /// The agent started.
    AgentStarted,
    /// The agent enrolled with a controller.
    AgentEnrolled,
    /// Events were dropped because a bounded buffer was full; `detail.dropped` says how many.
    EventsDropped,
    /// Events from a proxy were refused by the agent (counted in `detail`).
    EventsRefused,
    /// A record the controller keeps refusing was set aside by the agent.
    EventQuarantined,
    /// The agent's spool held corrupt records at start.
    SpoolCorrupt,
    /// A proxy binary or its launch was tampered with.
    ProxyTampered,
    /// The controller saw a chain break at ingest (a controller record, on no agent chain).
    ChainAlert,
    /// A signed chain head the controller verified (a controller record, on no agent chain).
    ChainHead,
    /// A tool's definition differs from the one pinned for its server (description, schema,
    /// annotations), or a pinned server added or removed a tool; `detail` says what changed,
    /// the old and new digests and what the policy did.
    ToolDefinitionChanged,
    /// A tool's definition carries signs of instructions aimed at the model (tool poisoning);
    /// `detail.reasons` lists them.
    ToolDefinitionSuspicious,
    /// The same tool name is offered by two servers of one MCP client of one user (raised by
    /// the agent, which sees every server's list).
    ToolNameShadowed,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 23] = [
        EventType::ToolCallPre,
        EventType::ToolCallPost,
        EventType::ApprovalRequested,
        EventType::ApprovalDecided,
        EventType::ConfigWrapped,
        EventType::ConfigDrift,
        EventType::ConfigInvalid,
        EventType::McpServerUngoverned,
        EventType::PolicyApplied,
        EventType::PolicyRejected,
        EventType::PolicyStale,
        EventType::AgentStarted,
        EventType::AgentEnrolled,
        EventType::EventsDropped,
        EventType::EventsRefused,
        EventType::EventQuarantined,
        EventType::SpoolCorrupt,
        EventType::ProxyTampered,
        EventType::ChainAlert,
        EventType::ChainHead,
        EventType::ToolDefinitionChanged,
        EventType::ToolDefinitionSuspicious,
        EventType::ToolNameShadowed,
    ];

    /// The only types a proxy may send to an agent; every other type is the agent's or the
    /// controller's.
    pub const FROM_PROXY: [EventType; 7] = [
        EventType::ToolCallPre,
        EventType::ToolCallPost,
        EventType::ApprovalRequested,
        EventType::ApprovalDecided,
        EventType::EventsDropped,
        EventType::ToolDefinitionChanged,
        EventType::ToolDefinitionSuspicious,
    ];

    /// The wire name (`TOOL_CALL_PRE`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::ToolCallPre => "TOOL_CALL_PRE",
            EventType::ToolCallPost => "TOOL_CALL_POST",
            EventType::ApprovalRequested => "APPROVAL_REQUESTED",
            EventType::ApprovalDecided => "APPROVAL_DECIDED",
            EventType::ConfigWrapped => "CONFIG_WRAPPED",
            EventType::ConfigDrift => "CONFIG_DRIFT",
            EventType::ConfigInvalid => "CONFIG_INVALID",
            EventType::McpServerUngoverned => "MCP_SERVER_UNGOVERNED",
            EventType::PolicyApplied => "POLICY_APPLIED",
            EventType::PolicyRejected => "POLICY_REJECTED",
            EventType::PolicyStale => "POLICY_STALE",
            EventType::AgentStarted => "AGENT_STARTED",
            EventType::AgentEnrolled => "AGENT_ENROLLED",
            EventType::EventsDropped => "EVENTS_DROPPED",
            EventType::EventsRefused => "EVENTS_REFUSED",
            EventType::EventQuarantined => "EVENT_QUARANTINED",
            EventType::SpoolCorrupt => "SPOOL_CORRUPT",
            EventType::ProxyTampered => "PROXY_TAMPERED",
            EventType::ChainAlert => "CHAIN_ALERT",
            EventType::ChainHead => "CHAIN_HEAD",
            EventType::ToolDefinitionChanged => "TOOL_DEFINITION_CHANGED",
            EventType::ToolDefinitionSuspicious => "TOOL_DEFINITION_SUSPICIOUS",
            EventType::ToolNameShadowed => "TOOL_NAME_SHADOWED",
        }
    }

    /// The type named `s` (its wire name), if there is one.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether a proxy may send events of this type ([`EventType::FROM_PROXY`]).
    pub fn from_proxy(self) -> bool {
        EventType::FROM_PROXY.contains(&self)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a call, as events say it (the policy's actions, and after approval
/// `approved` or `denied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forwarded.
    Allow,
    /// Forwarded with a warning.
    Warn,
    /// Forwarded (observe mode); it would have been blocked.
    WouldBlock,
    /// Held for a human's approval.
    StepUp,
    /// Not forwarded.
    Deny,
    /// Approved by a human.
    Approved,
    /// Refused by a human (or the approval timed out).
    Denied,
}

impl Action {
    /// The wire name (`allow`, `would_block`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Warn => "warn",
            Action::WouldBlock => "would_block",
            Action::StepUp => "step_up",
            Action::Deny => "deny",
            Action::Approved => "approved",
            Action::Denied => "denied",
        }
    }
}

/// The mode a decision was made in, as events say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// An unknown server, allowed.
    Allow,
    /// `observe`.
    Observe,
    /// `progressive`.
    Progressive,
    /// `step_up`.
    StepUp,
    /// `block`.
    Block,
}

impl Mode {
    /// The wire name (`observe`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Allow => "allow",
            Mode::Observe => "observe",
            Mode::Progressive => "progressive",
            Mode::StepUp => "step_up",
            Mode::Block => "block",
        }
    }
}

/// The decision part of an event (fields in the byte order of their names, as in [`Event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDecision<'a> {
    /// What happened to the call.
    pub action: Action,
    /// The mode it was decided in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'a, str>>,
    /// The rule that decided (`servers[0].deny[1]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Cow<'a, str>>,
}

/// A SHA-256 on the chain: 32 bytes inside, 64 lowercase hex digits in JSON.
pub type Hash = [u8; 32];

/// A hash given in hex (64 digits), as 32 bytes.
pub fn parse_hash(hex_text: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

/// `Option<Hash>` as hex in JSON.
mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        h: &Option<super::Hash>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match h {
            Some(h) => {
                let mut buf = [0u8; 64];
                hex::encode_to_slice(h, &mut buf).expect("64 bytes for 32");
                s.serialize_str(std::str::from_utf8(&buf).expect("hex is ASCII"))
            }
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<super::Hash>, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        super::parse_hash(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("not a SHA-256 in hex"))
    }
}

/// One event. Optional fields are absent (not `null`) where they do not apply.
///
/// Fields are declared in the byte order of their JSON names, so serializing an event gives its
/// canonical form directly (see [`crate::Chain::seal`]); a test keeps it so. An event a proxy
/// hands to an agent is not on a chain yet (no `seq`, `prevHash`, `hash`): the agent chains it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event<'a> {
    /// The agent whose chain this event is on (in standalone use, one per proxy process).
    #[serde(default)]
    pub agent_id: Cow<'a, str>,
    /// TOOL_CALL_PRE/POST of a call held for approval: the approval it waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<Cow<'a, str>>,
    /// The MCP client, when a proxy knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<Cow<'a, str>>,
    /// Set by the agent when a proxy's timestamp is this far (seconds, negative: behind) from
    /// the agent's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<i64>,
    /// Arguments (PRE) or result (POST), JSON-serialized, secrets masked, size-capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Cow<'a, str>>,
    /// SHA-256 (hex) of the full content (after masking), when it was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<Cow<'a, str>>,
    /// Set when `content` was cut to the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_truncated: Option<bool>,
    /// The decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<EventDecision<'a>>,
    /// Type-specific details for the other event types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    /// UUIDv7.
    pub event_id: Cow<'a, str>,
    /// Set by the agent when a caller used this `proxyEventId` before for a different record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id_reused: Option<bool>,
    /// What happened.
    pub event_type: EventType,
    /// SHA-256 over the previous hash and this event's canonical bytes (absent off the chain).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_hash")]
    pub hash: Option<Hash>,
    /// The machine.
    #[serde(default)]
    pub hostname: Cow<'a, str>,
    /// POST: whether the result was an error (`isError`, a JSON-RPC error, or a denial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// PRE: time to decide. POST: time from receiving the call to its answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Version of the policy that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<Cow<'a, str>>,
    /// `hash` of the previous event on the chain ([`crate::chain::GENESIS`] for the first).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_hash")]
    pub prev_hash: Option<Hash>,
    /// The `eventId` the proxy gave the event (the agent assigns the exported one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_event_id: Option<Cow<'a, str>>,
    /// Set by the agent: whose spool quota the record counts against, when not its `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_owner: Option<Cow<'a, str>>,
    /// The JSON-RPC id of the call, as JSON text, to pair PRE and POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Cow<'a, str>>,
    /// Position in the chain, from 1 (absent off the chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The MCP server's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<Cow<'a, str>>,
    /// One proxied MCP server connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Cow<'a, str>>,
    /// Tools already called in this session, in first-call order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_tool_calls: Option<Cow<'a, [String]>>,
    /// `agent_tool_call` for tool-call events, `agent` for the agent's own, `proxy` for a
    /// proxy's `EVENTS_DROPPED`, `controller` for the controller's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<Cow<'a, str>>,
    /// Tenant (`local` for standalone use).
    #[serde(default)]
    pub tenant_id: Cow<'a, str>,
    /// RFC 3339, UTC.
    pub timestamp: Cow<'a, str>,
    /// The tool called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<Cow<'a, str>>,
    /// The OS user (absent on the agent's own events).
    #[serde(default, skip_serializing_if = "str_is_empty")]
    pub user: Cow<'a, str>,
}

/// The `detail` of an `EVENTS_DROPPED` event: how many events were lost and why, and on the
/// agent, whose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dropped {
    /// Events lost.
    pub dropped: u64,
    /// Of the records the agent's spool lost, how many per OS user (the agent's own not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_user: Option<std::collections::BTreeMap<String, u64>>,
    /// Of the records the agent's spool lost, how many were the agent's evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_evidence_lost: Option<u64>,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

impl Dropped {
    /// `dropped` events lost, for `reason`.
    pub fn new(dropped: u64, reason: impl Into<String>) -> Dropped {
        Dropped {
            dropped,
            by_user: None,
            agent_evidence_lost: None,
            reason: reason.into(),
        }
    }

    /// The `detail` of the event: the one way it is written.
    pub fn to_detail(&self) -> Value {
        serde_json::to_value(self).expect("a Dropped is always JSON")
    }

    /// Reads the detail of an `EVENTS_DROPPED` event back.
    pub fn from_detail(detail: &Value) -> Option<Dropped> {
        Dropped::deserialize(detail).ok()
    }
}

// serde's `skip_serializing_if` hands over a reference to the field's own type.
#[allow(clippy::ptr_arg)]
fn str_is_empty(s: &Cow<'_, str>) -> bool {
    s.is_empty()
}

impl<'a> Event<'a> {
    /// A new event with the common fields set (borrowing the identity) and every optional field
    /// empty; `seq`, `prevHash` and `hash` are filled by [`crate::Chain::seal`].
    pub fn new(
        event_type: EventType,
        event_id: String,
        timestamp: String,
        identity: &'a Identity,
    ) -> Self {
        Event {
            event_id: Cow::Owned(event_id),
            event_type,
            timestamp: Cow::Owned(timestamp),
            tenant_id: Cow::Borrowed(&identity.tenant_id),
            agent_id: Cow::Borrowed(&identity.agent_id),
            approval_id: None,
            hostname: Cow::Borrowed(&identity.hostname),
            user: Cow::Borrowed(&identity.user),
            session_id: None,
            server_name: None,
            source_type: None,
            tool_name: None,
            request_id: None,
            content: None,
            content_truncated: None,
            content_sha256: None,
            session_tool_calls: None,
            decision: None,
            policy_version: None,
            latency_us: None,
            is_error: None,
            detail: None,
            seq: None,
            prev_hash: None,
            hash: None,
            client_name: None,
            clock_skew_secs: None,
            event_id_reused: None,
            proxy_event_id: None,
            quota_owner: None,
        }
    }

    /// The one way an `EVENTS_DROPPED` event is built (by a proxy's writer, its forwarder to
    /// the agent, and the agent's spool): `detail` says how many and why.
    pub fn events_dropped(
        event_id: String,
        timestamp: String,
        identity: &'a Identity,
        dropped: &Dropped,
    ) -> Self {
        let mut e = Event::new(EventType::EventsDropped, event_id, timestamp, identity);
        e.detail = Some(dropped.to_detail());
        e
    }

    /// The same event, owning every string.
    pub fn into_owned(self) -> Event<'static> {
        fn own(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        let opt = |c: Option<Cow<'_, str>>| c.map(own);
        Event {
            agent_id: own(self.agent_id),
            approval_id: opt(self.approval_id),
            client_name: opt(self.client_name),
            clock_skew_secs: self.clock_skew_secs,
            content: opt(self.content),
            content_sha256: opt(self.content_sha256),
            content_truncated: self.content_truncated,
            decision: self.decision.map(|d| EventDecision {
                action: d.action,
                mode: d.mode,
                reason: d.reason.map(own),
                rule: d.rule.map(own),
            }),
            detail: self.detail,
            event_id: own(self.event_id),
            event_id_reused: self.event_id_reused,
            event_type: self.event_type,
            hash: self.hash,
            hostname: own(self.hostname),
            is_error: self.is_error,
            latency_us: self.latency_us,
            policy_version: opt(self.policy_version),
            prev_hash: self.prev_hash,
            proxy_event_id: opt(self.proxy_event_id),
            quota_owner: opt(self.quota_owner),
            request_id: opt(self.request_id),
            seq: self.seq,
            server_name: opt(self.server_name),
            session_id: opt(self.session_id),
            session_tool_calls: self.session_tool_calls.map(|s| Cow::Owned(s.into_owned())),
            source_type: opt(self.source_type),
            tenant_id: own(self.tenant_id),
            timestamp: own(self.timestamp),
            tool_name: opt(self.tool_name),
            user: own(self.user),
        }
    }
}

/// Who emits events: the fields every event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Tenant.
    pub tenant_id: String,
    /// Agent (chain owner).
    pub agent_id: String,
    /// Machine.
    pub hostname: String,
    /// OS user.
    pub user: String,
}
