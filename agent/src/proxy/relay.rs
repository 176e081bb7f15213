//! The two relay directions and the state they share.
//!
//! Client → server: every line is classified; `tools/call` is decided before anything is
//! written to the server; everything else is forwarded byte for byte. Server → client: lines are
//! forwarded byte for byte, except `tools/list` results that policy filters. One mutex guards the
//! session state; it is held for bookkeeping only, never across IO.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use serde_json::Value;
use serde_json::value::RawValue;
use thoth_policy::{Action, Decision, Mode, SessionState, ToolCall, evaluate};

use super::approval::{
    Outcome, Parked, PendingInput, args_digest, preview, remember_server_state, server_input_state,
    strip_input_state, take_server_state,
};
use super::events::{Decided, EventSink, Record};
use super::message::{self, Message, code};
use super::policy::{PolicyHandle, PolicyState};
use super::respond::{self, NoApproval};

/// Requests to the server remembered at once (to answer them if the server dies, and to pair
/// results with calls). Past this, requests are still forwarded but not remembered, and counted.
pub const MAX_PENDING: usize = 4096;
/// Calls waiting for a human at once; more are denied as "no approver reachable".
pub const MAX_PARKED: usize = 64;

/// The client side's output: stdout, one whole message per write, shared by every thread.
pub struct ClientOut {
    out: Mutex<Box<dyn Write + Send>>,
}

impl ClientOut {
    /// Wraps the writer the client reads from.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }

    /// Writes one message (adding the newline if `line` lacks it).
    pub fn send(&self, line: &[u8]) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(line)?;
        if line.last() != Some(&b'\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

/// A request forwarded to the server and not yet answered.
pub(super) enum Pending {
    ToolCall {
        tool: String,
        decided: Arc<Decided>,
        started: Instant,
    },
    ToolsList,
    Other,
}

pub(super) struct State {
    pub(super) session: SessionState,
    /// `requestState`s the server issued in `input_required` results, with the call's tool and
    /// decision (oldest first, bounded).
    pub(super) server_states: std::collections::VecDeque<(String, String, Arc<Decided>)>,
    pub(super) inputs: HashMap<String, PendingInput>,
    pub(super) tools_snapshot: Arc<Vec<String>>,
    pub(super) pending: HashMap<String, Pending>,
    pub(super) untracked: u64,
    pub(super) parked: HashMap<String, Parked>,
    pub(super) next_approval: u64,
    pub(super) client_elicitation: bool,
}

/// Everything both directions share.
pub struct Relay {
    /// Toward the client.
    pub client: ClientOut,
    /// The event writer.
    pub events: EventSink,
    /// The policy in force (replaced when the agent applies a new version).
    pub policy: PolicyHandle,
    /// The server's name.
    pub server_name: String,
    /// Prefix of the proxy's own request ids (unguessable per session).
    pub(super) approval_prefix: String,
    state: Mutex<State>,
}

/// What the client side must do after a message was handled.
pub enum ToServer {
    /// Nothing.
    Nothing,
    /// Write the message just handled to the server, as it is.
    Original,
    /// Write these bytes to the server (a call released by an approval).
    Forward(Vec<u8>),
}

impl Relay {
    /// A relay for one session.
    pub fn new(
        client: ClientOut,
        events: EventSink,
        policy: impl Into<PolicyHandle>,
        server_name: String,
        session_id: &str,
    ) -> Self {
        let short: String = session_id
            .chars()
            .filter(|c| *c != '-')
            .rev()
            .take(12)
            .collect();
        Relay {
            client,
            events,
            policy: policy.into(),
            server_name,
            approval_prefix: format!("thoth-approval-{short}-"),
            state: Mutex::new(State {
                session: SessionState::new(),
                tools_snapshot: Arc::new(Vec::new()),
                pending: HashMap::new(),
                untracked: 0,
                parked: HashMap::new(),
                inputs: HashMap::new(),
                server_states: std::collections::VecDeque::new(),
                next_approval: 0,
                client_elicitation: false,
            }),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn reply(&self, line: &[u8]) {
        if let Err(e) = self.client.send(line) {
            tracing::debug!(error = %e, "cannot write to the client");
        }
    }

    /// Handles one line from the client. Returns what to write to the server.
    pub fn from_client(self: &Arc<Self>, line: &[u8]) -> ToServer {
        let msg = match message::classify(line) {
            Ok(m) => m,
            Err(inv) => {
                tracing::warn!(
                    code = inv.code,
                    "client sent an invalid message: {}",
                    inv.message
                );
                self.reply(&respond::error(None, inv.code, &inv.message));
                return ToServer::Nothing;
            }
        };
        match msg {
            Message::Request { id, method, params } => match method.as_ref() {
                "tools/call" => {
                    return self.tool_call(id, params, line);
                }
                "initialize" => {
                    let elicit = params
                        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                        .is_some_and(|p| {
                            p.pointer("/capabilities/elicitation")
                                .is_some_and(|e| !e.is_null())
                        });
                    let mut st = self.state();
                    st.client_elicitation = elicit;
                    track(&mut st, id, Pending::Other);
                }
                "tools/list" => {
                    let filters = self.policy.get().filters_tools();
                    let kind = if filters {
                        Pending::ToolsList
                    } else {
                        Pending::Other
                    };
                    if !track(&mut self.state(), id, kind) && filters {
                        // Its answer could not be filtered: refuse rather than show hidden tools.
                        let msg = "too many requests are pending; tools/list refused, try again";
                        self.reply(&respond::error(Some(id), code::INTERNAL_ERROR, msg));
                        return ToServer::Nothing;
                    }
                }
                _ => {
                    track(&mut self.state(), id, Pending::Other);
                }
            },
            Message::Notification { method, params } if method == "notifications/cancelled" => {
                let target = params
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .and_then(|p| p.get("requestId").map(Value::to_string));
                if let Some(target) = target {
                    let (parked_id, cancelled) = {
                        let mut st = self.state();
                        // The server should not answer a cancelled request: forget it now.
                        let cancelled = st.pending.remove(&target);
                        let parked = st
                            .parked
                            .iter()
                            .find(|(_, p)| message::id_key(&p.request_id) == target)
                            .map(|(k, _)| k.clone());
                        (parked, cancelled)
                    };
                    if let Some(Pending::ToolCall {
                        tool,
                        decided,
                        started,
                    }) = cancelled
                    {
                        let raw = RawValue::from_string(target.clone()).ok();
                        let note = respond::error(
                            raw.as_deref(),
                            code::INTERNAL_ERROR,
                            "cancelled by the client before the server answered",
                        );
                        self.post_event(target.clone(), tool, Arc::new(note), decided, started);
                    }
                    if let Some(approval_id) = parked_id {
                        self.finish_approval(&approval_id, Outcome::CancelledByClient);
                        return ToServer::Nothing;
                    }
                }
            }
            Message::Notification { .. } => {}
            Message::Response { id, result, error } => {
                let is_error = error.is_some();
                if let Ok(approval_id) = serde_json::from_str::<String>(id.get())
                    && approval_id.starts_with(&self.approval_prefix)
                {
                    let accepted = !is_error
                        && result
                            .and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
                            .is_some_and(|r| {
                                r.get("action").and_then(Value::as_str) == Some("accept")
                            });
                    let outcome = if accepted {
                        Outcome::Approved
                    } else {
                        Outcome::Declined
                    };
                    return self.finish_approval(&approval_id, outcome);
                }
            }
        }
        ToServer::Original
    }

    fn tool_call(
        self: &Arc<Self>,
        id: &RawValue,
        params: Option<&RawValue>,
        line: &[u8],
    ) -> ToServer {
        let started = Instant::now();
        let at = SystemTime::now();
        let call = match message::tool_call_params(params) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!("refused a tools/call that cannot be decided on: {why}");
                self.reply(&respond::error(Some(id), code::INVALID_PARAMS, &why));
                return ToServer::Nothing;
            }
        };
        let tool = call.name.to_string();
        let modern = respond::is_modern(params);
        let ours = call
            .request_state
            .as_deref()
            .filter(|s| s.starts_with(&self.approval_prefix));
        if let Some(state) = ours
            && let Some(to_server) = self.resume(id, state, &tool, &call, line, started, modern)
        {
            return to_server;
        }
        // A stale or foreign approval state of ours never reaches the server: the call goes on
        // without it (or is refused when it cannot be re-encoded).
        let stripped = match ours.map(|_| strip_input_state(line)) {
            Some(None) => return self.forward_stripped(id, line),
            Some(Some(bytes)) => Some(bytes),
            None => None,
        };
        let mut st = self.state();
        let policy = self.policy.get();
        let (decision, version) = match &policy {
            PolicyState::Loaded(p) => {
                let d = evaluate(
                    &p.policy,
                    &p.server,
                    &st.session,
                    &ToolCall {
                        tool: &tool,
                        arguments: &call.arguments,
                    },
                    at,
                );
                (d, p.version.clone())
            }
            PolicyState::Missing { why } => (fail_closed(why), "none".to_owned()),
        };
        let action = decision.action;
        let mut decided = Arc::new(Decided {
            action: action.as_str().into(),
            decision,
            policy_version: version,
        });
        // A call re-sent to finish the server's own input round (2026-07-28) is the same call
        // continuing: it is decided again, but it does not count again towards escalation, and
        // escalation alone does not stop it where the first round was let through with a warning.
        let first_round = call
            .request_state
            .as_deref()
            .filter(|_| ours.is_none())
            .and_then(|state| take_server_state(&mut st, state, &tool));
        if let Some(first) = &first_round {
            let escalated =
                decided.decision.out_of_scope && decided.decision.mode == Mode::Progressive;
            if escalated
                && !decided.decision.action.forwards()
                && first.decision.action == Action::Warn
            {
                decided = first.clone();
            }
        }
        let action = decided.decision.action;
        st.inputs.retain(|_, p| p.expires > started);
        let room = st.parked.len() + st.inputs.len() < MAX_PARKED;
        let can_ask = action == Action::StepUp && st.client_elicitation && room;
        let can_ask_inline = action == Action::StepUp && !can_ask && call.meta_elicitation && room;
        let forwards = action.forwards();
        let counted = Decision {
            out_of_scope: decided.decision.out_of_scope && first_round.is_none(),
            ..decided.decision.clone()
        };
        st.session.record(&tool, &counted, forwards, at);
        let snapshot = refresh_snapshot(&mut st);
        let mut approval = None;
        let mut inline = None;
        if forwards {
            track(
                &mut st,
                id,
                Pending::ToolCall {
                    tool: tool.clone(),
                    decided: decided.clone(),
                    started,
                },
            );
        } else if can_ask {
            st.next_approval += 1;
            let approval_id = format!("{}{}", self.approval_prefix, st.next_approval);
            st.parked.insert(
                approval_id.clone(),
                Parked {
                    request_id: id.to_owned(),
                    modern,
                    line: stripped.clone().unwrap_or_else(|| line.to_vec()),
                    tool: tool.clone(),
                    decided: decided.clone(),
                    started,
                    timer: None,
                },
            );
            approval = Some(approval_id);
        } else if can_ask_inline {
            st.next_approval += 1;
            let state = format!("{}{}", self.approval_prefix, st.next_approval);
            let timeout = self.policy.get().approval_timeout();
            st.inputs.insert(
                state.clone(),
                PendingInput {
                    tool: tool.clone(),
                    digest: args_digest(&call.arguments),
                    expires: started + timeout,
                    decided: decided.clone(),
                    timeout_secs: timeout.as_secs(),
                },
            );
            inline = Some(state);
        } else if action == Action::StepUp {
            let d = Arc::make_mut(&mut decided);
            d.action = "deny".into();
            d.decision
                .reason
                .push_str("; no approver reachable, denied");
        }
        drop(st);

        let latency_us = started.elapsed().as_micros() as u64;
        if self.events.enabled() {
            self.events.push(Record::Pre {
                at,
                request_id: id.get().to_owned(),
                tool: tool.clone(),
                arguments: Some(call.arguments_raw.to_owned()),
                decided: decided.clone(),
                session_tools: snapshot.clone(),
                latency_us,
            });
        }
        if forwards {
            if action != Action::Allow {
                tracing::info!(tool = %tool, action = action.as_str(), rule = %decided.decision.rule, "{}", decided.decision.reason);
            }
            if let Some(bytes) = stripped {
                return ToServer::Forward(bytes);
            }
            return ToServer::Original;
        }
        if let Some(state) = inline {
            let timeout = self.policy.get().approval_timeout().as_secs();
            let preview = preview(&call.arguments);
            self.events.push(Record::Approval {
                at: SystemTime::now(),
                kind: thoth_proto::EventType::ApprovalRequested,
                request_id: id.get().to_owned(),
                tool: tool.clone(),
                decided: decided.clone(),
                detail: serde_json::json!({"channel": "mcp_input_required", "approvalId": state, "timeoutSecs": timeout}),
            });
            let reply = respond::input_required(
                id,
                &state,
                &tool,
                &self.server_name,
                &preview,
                &decided,
                timeout,
            );
            self.reply(&reply);
            return ToServer::Nothing;
        }
        if let Some(approval_id) = approval {
            self.ask(&approval_id, &tool, &call.arguments, &decided);
            return ToServer::Nothing;
        }
        let why = (action == Action::StepUp).then_some(NoApproval::Unreachable);
        self.deny(id, &tool, &decided, why, modern, started);
        ToServer::Nothing
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn deny(
        &self,
        id: &RawValue,
        tool: &str,
        decided: &Arc<Decided>,
        why: Option<NoApproval>,
        modern: bool,
        started: Instant,
    ) {
        tracing::info!(tool = %tool, rule = %decided.decision.rule, "denied: {}", decided.decision.reason);
        let line = respond::denial(id, tool, &self.server_name, decided, why, modern);
        self.answer_call(
            id.get().to_owned(),
            tool.to_owned(),
            line,
            decided.clone(),
            started,
        );
    }

    /// Sends the answer to a call, its `TOOL_CALL_POST` queued first: once the client has the
    /// answer it may send its next call, whose `TOOL_CALL_PRE` must come after this event.
    pub(super) fn answer_call(
        &self,
        request_id: String,
        tool: String,
        line: Vec<u8>,
        decided: Arc<Decided>,
        started: Instant,
    ) {
        let line = Arc::new(line);
        self.post_event(request_id, tool, line.clone(), decided, started);
        self.reply(&line);
    }

    /// Queues the `TOOL_CALL_POST` of a call: its answer as sent to the client.
    pub(super) fn post_event(
        &self,
        request_id: String,
        tool: String,
        response: Arc<Vec<u8>>,
        decided: Arc<Decided>,
        started: Instant,
    ) {
        if !self.events.enabled() {
            return;
        }
        let session_tools = self.state().tools_snapshot.clone();
        self.events.push(Record::Post {
            at: SystemTime::now(),
            request_id,
            tool,
            response: Some(response),
            decided,
            session_tools,
            latency_us: started.elapsed().as_micros() as u64,
        });
    }

    /// Handles one line from the server. Returns the bytes to forward to the client, if any.
    pub fn from_server(&self, line: Vec<u8>) {
        let (pending, id, result) = match message::classify(&line) {
            Ok(Message::Response { id, result, .. }) => {
                let mut st = self.state();
                let pending = st.pending.remove(&message::id_key(id));
                let id = match pending {
                    Some(Pending::ToolCall {
                        ref tool,
                        ref decided,
                        ..
                    }) => {
                        if let Some(state) = result.and_then(server_input_state) {
                            let entry = (state, tool.clone(), decided.clone());
                            remember_server_state(&mut st, entry);
                        }
                        id.get().to_owned()
                    }
                    _ => String::new(),
                };
                (pending, id, result.is_some())
            }
            Ok(_) => {
                self.reply(&line);
                return;
            }
            Err(inv) => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                tracing::warn!(
                    "the MCP server wrote something that is not JSON-RPC ({}); dropped: {shown:?}",
                    inv.message
                );
                return;
            }
        };
        match pending {
            Some(Pending::ToolsList) if result => self.reply(&self.filter_tools(line)),
            Some(Pending::ToolCall {
                tool,
                decided,
                started,
            }) => self.answer_call(id, tool, line, decided, started),
            _ => self.reply(&line),
        }
    }

    fn filter_tools(&self, line: Vec<u8>) -> Vec<u8> {
        let policy = self.policy.get();
        let PolicyState::Loaded(p) = &policy else {
            return line;
        };
        let Ok(mut msg) = serde_json::from_slice::<Value>(&line) else {
            return line;
        };
        let Some(tools) = msg
            .pointer_mut("/result/tools")
            .and_then(Value::as_array_mut)
        else {
            return line;
        };
        let before = tools.len();
        tools.retain(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| p.policy.tool_visible(&p.server, name))
        });
        if tools.len() == before {
            return line;
        }
        tracing::debug!(hidden = before - tools.len(), "filtered tools/list");
        let mut out = serde_json::to_vec(&msg).expect("serializing a JSON value into memory");
        out.push(b'\n');
        out
    }

    /// The server is gone: answer every request it left unanswered, and deny parked calls.
    pub fn server_gone(&self, status: &str) {
        let (pending, parked) = {
            let mut st = self.state();
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.parked),
            )
        };
        let message = format!(
            "MCP server \"{}\" exited ({status}) before answering",
            self.server_name
        );
        for (id, p) in pending {
            let raw = RawValue::from_string(id.clone()).ok();
            let line = respond::error(raw.as_deref(), code::INTERNAL_ERROR, &message);
            match p {
                Pending::ToolCall {
                    tool,
                    decided,
                    started,
                } => self.answer_call(id, tool, line, decided, started),
                _ => self.reply(&line),
            }
        }
        for (_, p) in parked {
            let line = respond::error(Some(&p.request_id), code::INTERNAL_ERROR, &message);
            self.answer_call(
                p.request_id.get().to_owned(),
                p.tool,
                line,
                p.decided,
                p.started,
            );
        }
    }

    /// Requests forwarded but not remembered because too many were pending.
    pub fn untracked(&self) -> u64 {
        self.state().untracked
    }
}

/// Remembers a request forwarded to the server. At the limit, a plain request makes room for a
/// call or a `tools/list` (whose answers the proxy must see); `false` when nothing could be
/// remembered.
pub(super) fn track(st: &mut State, id: &RawValue, p: Pending) -> bool {
    let key = message::id_key(id);
    if st.pending.len() >= MAX_PENDING && !st.pending.contains_key(&key) {
        let evict = match p {
            Pending::Other => None,
            _ => st
                .pending
                .iter()
                .find(|(_, v)| matches!(v, Pending::Other))
                .map(|(k, _)| k.clone()),
        };
        match evict {
            Some(k) => {
                st.pending.remove(&k);
            }
            None => {
                st.untracked += 1;
                if st.untracked == 1 || st.untracked.is_power_of_two() {
                    tracing::warn!(
                        untracked = st.untracked,
                        "more than {MAX_PENDING} requests pending; not remembering more"
                    );
                }
                return false;
            }
        }
    }
    st.pending.insert(key, p);
    true
}

/// Brings the shared list of called tools up to date and returns it.
pub(super) fn refresh_snapshot(st: &mut State) -> Arc<Vec<String>> {
    if st.tools_snapshot.len() != st.session.tools_called().count() {
        st.tools_snapshot = Arc::new(st.session.tools_called().map(str::to_owned).collect());
    }
    st.tools_snapshot.clone()
}

fn fail_closed(why: &str) -> Decision {
    Decision {
        action: Action::Deny,
        mode: Mode::Block,
        rule: "no_policy".into(),
        reason: format!("no policy is in force ({why}), and Thoth fails closed"),
        out_of_scope: false,
    }
}
