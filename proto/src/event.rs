//! The behavioral event record, exactly as a SIEM receives it (DESIGN: "Behavioral events").

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A Claude Desktop config was wrapped.
    ConfigWrapped,
    /// A wrapped config was changed by someone else.
    ConfigDrift,
    /// A config could not be parsed and was left alone.
    ConfigInvalid,
    /// A policy was applied.
    PolicyApplied,
    /// A policy was refused.
    PolicyRejected,
    /// The agent started.
    AgentStarted,
    /// Events were dropped because a bounded buffer was full; `detail.dropped` says how many.
    EventsDropped,
}

impl EventType {
    /// The wire name (`TOOL_CALL_PRE`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ToolCallPre => "TOOL_CALL_PRE",
            EventType::ToolCallPost => "TOOL_CALL_POST",
            EventType::ApprovalRequested => "APPROVAL_REQUESTED",
            EventType::ApprovalDecided => "APPROVAL_DECIDED",
            EventType::ConfigWrapped => "CONFIG_WRAPPED",
            EventType::ConfigDrift => "CONFIG_DRIFT",
            EventType::ConfigInvalid => "CONFIG_INVALID",
            EventType::PolicyApplied => "POLICY_APPLIED",
            EventType::PolicyRejected => "POLICY_REJECTED",
            EventType::AgentStarted => "AGENT_STARTED",
            EventType::EventsDropped => "EVENTS_DROPPED",
        }
    }
}

/// The decision part of an event (fields in the byte order of their names, as in [`Event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDecision<'a> {
    /// `allow`, `warn`, `would_block`, `step_up`, `deny` (and, after approval, `approved`).
    pub action: Cow<'a, str>,
    /// `observe`, `progressive`, `step_up`, `block`, or `allow` for an allowed unknown server.
    pub mode: Cow<'a, str>,
    /// Why.
    pub reason: Cow<'a, str>,
    /// The rule that decided (`servers[0].deny[1]`).
    pub rule: Cow<'a, str>,
}

/// One event. Optional fields are absent (not `null`) where they do not apply.
///
/// Fields are declared in the byte order of their JSON names, so serializing an event gives its
/// canonical form directly (see [`crate::Chain::seal`]); a test keeps it so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event<'a> {
    /// The agent whose chain this event is on (in standalone use, one per proxy process).
    pub agent_id: Cow<'a, str>,
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
    /// What happened.
    pub event_type: EventType,
    /// SHA-256 (hex) over the previous hash and this event's canonical bytes.
    #[serde(default, skip_serializing_if = "str_is_empty")]
    pub hash: Cow<'a, str>,
    /// The machine.
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
    /// `hash` of the previous event on the chain (64 zeros for the first).
    #[serde(default)]
    pub prev_hash: Cow<'a, str>,
    /// The JSON-RPC id of the call, as JSON text, to pair PRE and POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Cow<'a, str>>,
    /// Position in the chain, from 1.
    #[serde(default)]
    pub seq: u64,
    /// The MCP server's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<Cow<'a, str>>,
    /// One proxied MCP server connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Cow<'a, str>>,
    /// Tools already called in this session, in first-call order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_tool_calls: Option<Cow<'a, [String]>>,
    /// `agent_tool_call` for tool-call events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<Cow<'a, str>>,
    /// Tenant (`local` for standalone use).
    pub tenant_id: Cow<'a, str>,
    /// RFC 3339, UTC.
    pub timestamp: Cow<'a, str>,
    /// The tool called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<Cow<'a, str>>,
    /// The OS user.
    pub user: Cow<'a, str>,
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
            seq: 0,
            prev_hash: Cow::Borrowed(""),
            hash: Cow::Borrowed(""),
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
