//! What the proxy records (`Record`, with the decision behind it and the session it belongs to)
//! and how each record becomes the SIEM-facing [`Event`]: one place that knows the fields.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;
use serde_json::value::RawValue;
use thoth_policy::Decision;
use thoth_proto::{
    Action, ContentLimits, Event, EventDecision, EventType, Identity, Mode, render_content,
};

use crate::message::{self, Message};

/// What `content` says when it was left out to keep the queue within its byte budget.
const OMITTED: &str = "[content omitted: the event queue was over its byte budget]";

/// What the session knows about itself: copied into every event.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Chain owner, tenant, host and user.
    pub identity: Identity,
    /// This session's id (UUIDv7).
    pub session_id: String,
    /// The MCP server's name.
    pub server_name: String,
}

/// The decision part of an event, with the policy version it came from.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The decision; `action` may be rewritten after approval (`approved`, `denied`).
    pub action: Action,
    /// The evaluator's decision.
    pub decision: Decision,
    /// The policy version.
    pub policy_version: String,
    /// A call held for approval: the approval's id (the proxy's own, or once the agent
    /// answered, the agent's).
    pub approval_id: Option<String>,
}

/// One record pushed by the relay.
#[derive(Debug)]
pub enum Record {
    /// `TOOL_CALL_PRE`.
    Pre {
        /// When the call arrived.
        at: SystemTime,
        /// JSON-RPC id text.
        request_id: String,
        /// Tool.
        tool: String,
        /// Arguments, as the client wrote them (JSON text); `None` when left out to keep the
        /// queue within its byte budget.
        arguments: Option<String>,
        /// The decision.
        decided: Arc<Decided>,
        /// Tools already called in the session.
        session_tools: Arc<Vec<String>>,
        /// Time to decide.
        latency_us: u64,
        /// `detail` (DLP findings), if any.
        detail: Option<Value>,
    },
    /// `TOOL_CALL_POST`.
    Post {
        /// When the answer went out.
        at: SystemTime,
        /// JSON-RPC id text.
        request_id: String,
        /// Tool.
        tool: String,
        /// The answer line as sent (result, error, or the denial).
        response: Option<Arc<Vec<u8>>>,
        /// The decision that let the call through or stopped it.
        decided: Arc<Decided>,
        /// Tools already called in the session.
        session_tools: Arc<Vec<String>>,
        /// From arrival of the call to its answer.
        latency_us: u64,
        /// `detail` (DLP findings), if any.
        detail: Option<Value>,
    },
    /// `APPROVAL_REQUESTED` / `APPROVAL_DECIDED`.
    Approval {
        /// When.
        at: SystemTime,
        /// Which of the two.
        kind: EventType,
        /// JSON-RPC id text of the call.
        request_id: String,
        /// Tool.
        tool: String,
        /// The decision.
        decided: Arc<Decided>,
        /// Channel and outcome.
        detail: Value,
    },
    /// `TOOL_DEFINITION_CHANGED` / `TOOL_DEFINITION_SUSPICIOUS`, raised by the proxy.
    Integrity {
        /// When.
        at: SystemTime,
        /// Which of the two.
        kind: EventType,
        /// Tool.
        tool: String,
        /// `decision.action`.
        action: Action,
        /// `decision.rule`.
        rule: &'static str,
        /// `decision.reason`.
        reason: String,
        /// The policy version in force.
        policy_version: String,
        /// What changed or looks poisoned.
        detail: Value,
    },
}

impl Record {
    pub(crate) fn content_bytes(&self) -> usize {
        match self {
            Record::Post {
                response: Some(r), ..
            } => r.len(),
            Record::Pre {
                arguments: Some(a), ..
            } => a.len(),
            _ => 0,
        }
    }

    pub(crate) fn at(&self) -> SystemTime {
        match self {
            Record::Pre { at, .. }
            | Record::Post { at, .. }
            | Record::Approval { at, .. }
            | Record::Integrity { at, .. } => *at,
        }
    }

    pub(crate) fn drop_content(&mut self) {
        match self {
            Record::Post { response, .. } => *response = None,
            Record::Pre { arguments, .. } => *arguments = None,
            Record::Approval { .. } | Record::Integrity { .. } => {}
        }
    }
}

pub(crate) fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// The event's word for the policy's action.
pub(crate) fn event_action(a: thoth_policy::Action) -> Action {
    match a {
        thoth_policy::Action::Allow => Action::Allow,
        thoth_policy::Action::Warn => Action::Warn,
        thoth_policy::Action::WouldBlock => Action::WouldBlock,
        thoth_policy::Action::StepUp => Action::StepUp,
        thoth_policy::Action::Deny => Action::Deny,
    }
}

fn event_mode(m: thoth_policy::Mode) -> Mode {
    match m {
        thoth_policy::Mode::Allow => Mode::Allow,
        thoth_policy::Mode::Observe => Mode::Observe,
        thoth_policy::Mode::Progressive => Mode::Progressive,
        thoth_policy::Mode::StepUp => Mode::StepUp,
        thoth_policy::Mode::Block => Mode::Block,
    }
}

/// The fields every event of this session has.
fn base<'r>(info: &'r SessionInfo, kind: EventType, event_id: String, at: SystemTime) -> Event<'r> {
    let mut e = Event::new(kind, event_id, timestamp(at), &info.identity);
    e.session_id = Some(Cow::Borrowed(&info.session_id));
    e.server_name = Some(Cow::Borrowed(&info.server_name));
    e
}

#[allow(clippy::too_many_arguments)]
fn tool_event<'r>(
    info: &'r SessionInfo,
    kind: EventType,
    event_id: String,
    at: SystemTime,
    request_id: &'r str,
    tool: &'r str,
    d: &'r Decided,
) -> Event<'r> {
    let mut e = base(info, kind, event_id, at);
    e.source_type = Some(Cow::Borrowed("agent_tool_call"));
    e.tool_name = Some(Cow::Borrowed(tool));
    e.request_id = Some(Cow::Borrowed(request_id));
    e.decision = Some(EventDecision {
        action: d.action,
        mode: Some(event_mode(d.decision.mode)),
        rule: Some(Cow::Borrowed(&d.decision.rule)),
        reason: Some(Cow::Borrowed(&d.decision.reason)),
    });
    e.policy_version = Some(Cow::Borrowed(&d.policy_version));
    if matches!(kind, EventType::ToolCallPre | EventType::ToolCallPost) {
        e.approval_id = d.approval_id.as_deref().map(Cow::Borrowed);
    }
    e
}

fn set_content(e: &mut Event<'_>, json: &str, limits: ContentLimits) {
    let c = render_content(json, limits);
    e.content = Some(Cow::Owned(c.text));
    if c.truncated {
        e.content_truncated = Some(true);
        e.content_sha256 = c.sha256.map(Cow::Owned);
    }
}

pub(crate) fn render<'r>(
    info: &'r SessionInfo,
    limits: ContentLimits,
    event_id: String,
    record: &'r Record,
) -> Event<'r> {
    match record {
        Record::Pre {
            at,
            request_id,
            tool,
            arguments,
            decided,
            session_tools,
            latency_us,
            detail,
        } => {
            let mut e = tool_event(
                info,
                EventType::ToolCallPre,
                event_id,
                *at,
                request_id,
                tool,
                decided,
            );
            match arguments {
                Some(a) => set_content(&mut e, a, limits),
                None => e.content = Some(Cow::Borrowed(OMITTED)),
            }
            e.session_tool_calls = Some(Cow::Borrowed(session_tools.as_slice()));
            e.latency_us = Some(*latency_us);
            e.detail = detail.clone();
            e
        }
        Record::Post {
            at,
            request_id,
            tool,
            response,
            decided,
            session_tools,
            latency_us,
            detail,
        } => {
            let mut e = tool_event(
                info,
                EventType::ToolCallPost,
                event_id,
                *at,
                request_id,
                tool,
                decided,
            );
            match response.as_deref().map(|r| message::classify(r)) {
                Some(Ok(Message::Response { result, error, .. })) => {
                    let is_error = error.is_some() || result.is_some_and(result_is_error);
                    e.is_error = Some(is_error);
                    let body = result.or(error).map(|r| r.get()).unwrap_or("null");
                    set_content(&mut e, body, limits);
                }
                Some(_) => e.content = Some(Cow::Borrowed("[unparseable response]")),
                None => e.content = Some(Cow::Borrowed(OMITTED)),
            }
            e.session_tool_calls = Some(Cow::Borrowed(session_tools.as_slice()));
            e.latency_us = Some(*latency_us);
            e.detail = detail.clone();
            e
        }
        Record::Approval {
            at,
            kind,
            request_id,
            tool,
            decided,
            detail,
        } => {
            let mut e = tool_event(info, *kind, event_id, *at, request_id, tool, decided);
            e.detail = Some(detail.clone());
            e
        }
        Record::Integrity {
            at,
            kind,
            tool,
            action,
            rule,
            reason,
            policy_version,
            detail,
        } => {
            let mut e = base(info, *kind, event_id, *at);
            e.tool_name = Some(Cow::Borrowed(tool));
            e.decision = Some(EventDecision {
                action: *action,
                mode: None,
                rule: Some(Cow::Borrowed(rule)),
                reason: Some(Cow::Borrowed(reason)),
            });
            e.policy_version = Some(Cow::Borrowed(policy_version));
            e.detail = Some(detail.clone());
            e
        }
    }
}

/// Whether a `tools/call` result says `isError: true`.
fn result_is_error(result: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Flag {
        #[serde(rename = "isError", default)]
        is_error: Option<bool>,
    }
    serde_json::from_str::<Flag>(result.get())
        .ok()
        .and_then(|f| f.is_error)
        == Some(true)
}
