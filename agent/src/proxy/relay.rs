//! The two relay directions and the state they share.
//!
//! Client → server: every line is classified; `tools/call` is decided before anything is
//! written to the server; everything else is forwarded byte for byte. Server → client: lines are
//! forwarded byte for byte, except `tools/list` results that policy filters. One mutex guards the
//! session state; it is held for bookkeeping only, never across IO.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use serde_json::value::RawValue;
use thoth_policy::{Action, Decision, Mode, SessionState, ToolCall, evaluate_with};

use super::approval::{
    Outcome, Parked, PendingInput, args_digest, preview, remember_server_state, server_input_state,
    strip_input_state, take_server_state,
};
use super::events::{Decided, EventSink, Record};
use super::message::{self, Message, code};
use super::paths::FsResolver;
use super::policy::{PolicyHandle, PolicyState};
use super::respond::{self, NoApproval};

/// Requests to the server remembered at once (to answer them if the server dies, and to pair
/// results with calls), counting calls waiting for a human and cancelled requests the server may
/// still answer. Past this, new requests are refused (a tools/call is denied), never forwarded
/// unremembered, and nothing remembered is forgotten to make room.
pub const MAX_PENDING: usize = 4096;
/// How long a request the client cancelled after it was forwarded keeps its id in use: a late
/// answer within this time is recorded and relayed as any answer (MCP clients ignore it), and
/// cannot be paired with a new request under the same id. Later, it is dropped.
pub const CANCELLED_KEPT: Duration = Duration::from_secs(600);
/// How a late answer to a cancelled call is marked in its second `TOOL_CALL_POST`.
pub const ANSWERED_AFTER_CANCEL: &str = "answered by the server after the client cancelled it";
/// What a call's `TOOL_CALL_POST` says when the client cancelled it after it was forwarded.
pub const CANCELLED_AFTER_FORWARDING: &str =
    "cancelled by the client after forwarding; the server may have acted";
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
    /// Cancelled by the client after it was forwarded: the server may still answer it. `call`:
    /// the call's tool, decision and start, when it was a `tools/call`; `list`: a `tools/list`
    /// whose answer is filtered.
    Cancelled {
        call: Option<(String, Arc<Decided>, Instant)>,
        list: bool,
        until: Instant,
    },
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
    /// When set, every tool call is denied with this reason (rule `refused`), whatever the policy.
    refusal: std::sync::OnceLock<String>,
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
            refusal: std::sync::OnceLock::new(),
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

    /// From now on, denies every tool call for `why` (fail closed), whatever the policy says.
    pub fn refuse_all(&self, why: String) {
        let _ = self.refusal.set(why);
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
        if let Message::Request { id, method, .. } = &msg
            && self.id_in_use(id)
        {
            // Two requests under one id would let the server's single answer be paired with
            // either (a call's result shown unfiltered, a tools/list answered as a call, a call
            // left without its POST event): the second one never reaches the server.
            tracing::warn!(
                method = %method,
                id = id.get(),
                "refused a request whose id is still in use by a pending request"
            );
            let why = format!(
                "request id {} is already in use by a request still pending; use a new id",
                id.get()
            );
            self.reply(&respond::error(Some(id), code::INVALID_REQUEST, &why));
            return ToServer::Nothing;
        }
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
                    if !track(&mut st, id, Pending::Other) {
                        drop(st);
                        return self.refuse_busy(id, &method);
                    }
                }
                "tools/list" => {
                    let filters = self.policy.get().filters_tools();
                    let kind = if filters {
                        Pending::ToolsList
                    } else {
                        Pending::Other
                    };
                    if !track(&mut self.state(), id, kind) {
                        return self.refuse_busy(id, &method);
                    }
                }
                _ => {
                    if !track(&mut self.state(), id, Pending::Other) {
                        return self.refuse_busy(id, &method);
                    }
                }
            },
            Message::Notification { method, params } if method == "notifications/cancelled" => {
                let target = params
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .and_then(|p| p.get("requestId").map(message::id_key_value));
                if let Some(target) = target {
                    let (parked_id, cancelled) = {
                        let mut st = self.state();
                        // The server should not answer a cancelled request, but it may: its id
                        // stays in use for a while, and a late answer is recorded, not relayed.
                        let cancelled = match st.pending.get(&target) {
                            None | Some(Pending::Cancelled { .. }) => None,
                            Some(_) => st.pending.remove(&target),
                        };
                        if let Some(p) = &cancelled {
                            let call = match p {
                                Pending::ToolCall {
                                    tool,
                                    decided,
                                    started,
                                } => Some((tool.clone(), decided.clone(), *started)),
                                _ => None,
                            };
                            let list = matches!(p, Pending::ToolsList);
                            let until = Instant::now() + CANCELLED_KEPT;
                            st.pending
                                .insert(target.clone(), Pending::Cancelled { call, list, until });
                        }
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
                        // The call was forwarded: the server may well have acted on it already
                        // (a cancellation races the work), so the record must not say otherwise.
                        let note = respond::error(
                            raw.as_deref(),
                            code::INTERNAL_ERROR,
                            CANCELLED_AFTER_FORWARDING,
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

    /// Refuses a request the proxy cannot remember (too many pending): forwarded, its answer
    /// could not be paired, filtered or recorded.
    fn refuse_busy(&self, id: &RawValue, method: &str) -> ToServer {
        let msg =
            format!("too many requests are pending on this server; {method} refused, try again");
        self.reply(&respond::error(Some(id), code::INTERNAL_ERROR, &msg));
        ToServer::Nothing
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
            _ if self.refusal.get().is_some() => {
                let why = self.refusal.get().map_or("", String::as_str);
                let d = Decision {
                    action: Action::Deny,
                    mode: Mode::Block,
                    rule: "refused".into(),
                    reason: format!("{why}; Thoth fails closed"),
                    out_of_scope: false,
                };
                let version = match &policy {
                    PolicyState::Loaded(p) => p.version.clone(),
                    PolicyState::Missing { .. } => "none".to_owned(),
                };
                (d, version)
            }
            PolicyState::Loaded(p) => {
                // Sequence windows on the monotonic clock; paths as the server will resolve them.
                let d = evaluate_with(
                    &p.policy,
                    &p.server,
                    &st.session,
                    &ToolCall {
                        tool: &tool,
                        arguments: &call.arguments,
                    },
                    started,
                    &FsResolver,
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
        st.inputs.retain(|_, p| p.expires > started);
        // A call that would hold its id (forwarded, or waiting for a human) must be remembered,
        // or its answer would reach the client unpaired and unrecorded: denied when it cannot be.
        let holds_id =
            decided.decision.action.forwards() || decided.decision.action == Action::StepUp;
        if holds_id && !has_room(&mut st, &message::id_key(id)) {
            count_busy(&mut st);
            let d = Arc::make_mut(&mut decided);
            d.action = "deny".into();
            d.decision.action = Action::Deny;
            d.decision.out_of_scope = false;
            d.decision.rule = "too_many_pending".into();
            d.decision.reason = format!(
                "more than {MAX_PENDING} requests are pending on this server, so the call was not \
                 forwarded; try again when some are answered"
            );
        }
        let action = decided.decision.action;
        let room = st.parked.len() + st.inputs.len() < MAX_PARKED;
        let can_ask = action == Action::StepUp && st.client_elicitation && room;
        let can_ask_inline = action == Action::StepUp && !can_ask && call.meta_elicitation && room;
        let forwards = action.forwards();
        let counted = Decision {
            out_of_scope: decided.decision.out_of_scope && first_round.is_none(),
            ..decided.decision.clone()
        };
        st.session.record(&tool, &counted, forwards, started);
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
                    Some(Pending::Cancelled { .. }) => id.get().to_owned(),
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
            Some(Pending::Cancelled { call, list, .. }) => {
                // Relayed like any answer (the client ignores it, and no new request can hold
                // its id yet); what the server did after all is recorded in a second POST.
                if let Some((tool, decided, started)) = call {
                    let mut late = (*decided).clone();
                    late.decision.reason =
                        format!("{}; {ANSWERED_AFTER_CANCEL}", late.decision.reason);
                    self.answer_call(id, tool, line, Arc::new(late), started);
                } else if list && result {
                    self.reply(&self.filter_tools(line));
                } else {
                    self.reply(&line);
                }
            }
            Some(_) => self.reply(&line),
            None => {
                // Every forwarded request is remembered: this answers none (a cancelled one past
                // CANCELLED_KEPT, or a made-up id). The client would have nothing to pair it with.
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                tracing::warn!(
                    "the MCP server answered a request that is not pending; dropped: {shown:?}"
                );
            }
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
                // Its POST was written at the cancellation; the client expects no answer.
                Pending::Cancelled { .. } => {}
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

    /// Whether a request id (as the server will read it) is held by a request not yet answered:
    /// forwarded and pending, or parked for a human.
    fn id_in_use(&self, id: &RawValue) -> bool {
        let key = message::id_key(id);
        let st = self.state();
        let now = Instant::now();
        st.pending.get(&key).is_some_and(|p| match p {
            Pending::Cancelled { until, .. } => *until > now,
            _ => true,
        }) || st
            .parked
            .values()
            .any(|p| message::id_key(&p.request_id) == key)
    }

    /// Requests refused (a call denied) because too many were pending.
    pub fn untracked(&self) -> u64 {
        self.state().untracked
    }
}

/// Whether a request under `key` can be remembered: pending requests, parked calls and inline
/// approvals together stay under [`MAX_PENDING`] (a parked call or an approval moving to
/// `pending` takes the place it already held). Cancelled requests past [`CANCELLED_KEPT`] are
/// forgotten first; nothing else is ever evicted, as its answer is still due.
pub(super) fn has_room(st: &mut State, key: &str) -> bool {
    if st.pending.contains_key(key) {
        // Only an expired cancelled request can be there (`id_in_use`): replaced.
        return true;
    }
    let used = |st: &State| st.pending.len() + st.parked.len() + st.inputs.len();
    if used(st) >= MAX_PENDING {
        let now = Instant::now();
        st.pending
            .retain(|_, p| !matches!(p, Pending::Cancelled { until, .. } if *until <= now));
    }
    used(st) < MAX_PENDING
}

fn count_busy(st: &mut State) {
    st.untracked += 1;
    if st.untracked == 1 || st.untracked.is_power_of_two() {
        tracing::warn!(
            refused = st.untracked,
            "more than {MAX_PENDING} requests pending; refusing new ones"
        );
    }
}

/// Remembers a request about to be forwarded to the server; `false` (and nothing remembered)
/// when there is no room ([`has_room`]): the caller must then not forward it.
pub(super) fn track(st: &mut State, id: &RawValue, p: Pending) -> bool {
    let key = message::id_key(id);
    if !has_room(st, &key) {
        count_busy(st);
        return false;
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use thoth_proto::{ContentLimits, Identity};

    use super::*;
    use crate::proxy::events::SessionInfo;
    use crate::proxy::policy::LoadedPolicy;

    /// What the relay wrote to the client.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    struct Harness {
        relay: Arc<Relay>,
        out: Captured,
        events: PathBuf,
    }

    fn harness(policy: &str) -> Harness {
        let policy =
            thoth_policy::parse_policy(policy, "p.yaml", thoth_policy::Format::Yaml).unwrap();
        let server = policy.resolve("s", &[]);
        let state = PolicyState::Loaded(Arc::new(LoadedPolicy {
            policy,
            server,
            version: "1".into(),
        }));
        let dir = std::env::temp_dir().join(format!("thoth-relay-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let events = dir.join("events.jsonl");
        let info = SessionInfo {
            identity: Identity {
                tenant_id: "t".into(),
                agent_id: "a".into(),
                hostname: "h".into(),
                user: "u".into(),
            },
            session_id: "s1".into(),
            server_name: "s".into(),
        };
        let sink = EventSink::to_file(&events, info, ContentLimits::default(), None).unwrap();
        let out = Captured::default();
        let relay = Arc::new(Relay::new(
            ClientOut::new(Box::new(out.clone())),
            sink,
            state,
            "s".into(),
            "01a20abe-2043-7512-8916-ba4700421315",
        ));
        Harness { relay, out, events }
    }

    impl Harness {
        /// Ends the session and returns the events written.
        fn finish(&self) -> Vec<Value> {
            self.relay.server_gone("exit status 0");
            self.relay.events.shutdown(Duration::from_secs(5));
            let text = std::fs::read_to_string(&self.events).unwrap();
            let _ = std::fs::remove_dir_all(self.events.parent().unwrap());
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    fn posts(events: &[Value]) -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["eventType"] == "TOOL_CALL_POST")
            .collect()
    }

    const ALLOW: &str = "servers:\n  - name: s\n    enforcement: block\n    approved_scope: [read]\n    hide_unapproved: true\n";

    fn call(id: &str) -> Vec<u8> {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"read","arguments":{{}}}}}}"#).into_bytes()
    }

    #[test]
    fn a_numeric_id_the_server_re_encodes_still_pairs_with_its_call() {
        for id in ["2.0", "2e0", "20e-1"] {
            let h = harness(ALLOW);
            assert!(matches!(h.relay.from_client(&call(id)), ToServer::Original));
            // A JavaScript server answers `2`.
            h.relay.from_server(
                br#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"the secret notes"}]}}"#
                    .to_vec(),
            );
            let events = h.finish();
            let posts = posts(&events);
            assert_eq!(posts.len(), 1, "{id}: {events:?}");
            assert!(
                posts[0]["content"]
                    .as_str()
                    .unwrap()
                    .contains("the secret notes"),
                "{id}: the POST must hold what the client got: {}",
                posts[0]
            );
            assert_eq!(posts[0]["isError"], false, "{id}");
            // The client got the content and no made-up error.
            assert_eq!(h.out.lines().len(), 1, "{id}");
        }
    }

    #[test]
    fn a_second_request_under_a_pending_id_is_refused_not_forwarded() {
        let h = harness(ALLOW);
        assert!(matches!(
            h.relay.from_client(&call("5")),
            ToServer::Original
        ));
        for again in ["5", "5.0", "50e-1"] {
            assert!(
                matches!(h.relay.from_client(&call(again)), ToServer::Nothing),
                "{again}"
            );
            let ping = format!(r#"{{"jsonrpc":"2.0","id":{again},"method":"ping"}}"#);
            assert!(matches!(
                h.relay.from_client(ping.as_bytes()),
                ToServer::Nothing
            ));
        }
        let refusals = h.out.lines();
        assert_eq!(refusals.len(), 6);
        assert!(
            refusals
                .iter()
                .all(|r| r["error"]["code"] == code::INVALID_REQUEST)
        );
        h.relay
            .from_server(br#"{"jsonrpc":"2.0","id":5,"result":{"content":[]}}"#.to_vec());
        // Answered: the id is free again.
        assert!(matches!(
            h.relay.from_client(&call("5")),
            ToServer::Original
        ));
        let events = h.finish();
        assert_eq!(
            events
                .iter()
                .filter(|e| e["eventType"] == "TOOL_CALL_PRE")
                .count(),
            2,
            "refused duplicates are not decided"
        );
        // Both forwarded calls have their POST.
        assert_eq!(posts(&events).len(), 2);
    }

    #[test]
    fn a_call_cancelled_after_forwarding_is_recorded_as_possibly_done() {
        let h = harness(ALLOW);
        assert!(matches!(
            h.relay.from_client(&call("7")),
            ToServer::Original
        ));
        let cancel =
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7.0}}"#;
        assert!(matches!(h.relay.from_client(cancel), ToServer::Original));
        let events = h.finish();
        let posts = posts(&events);
        assert_eq!(posts.len(), 1, "{events:?}");
        let content = posts[0]["content"].as_str().unwrap();
        assert!(
            content.contains(CANCELLED_AFTER_FORWARDING),
            "the POST must not claim the call did not happen: {content}"
        );
    }

    #[test]
    fn a_late_answer_to_a_cancelled_call_is_recorded_and_its_id_stays_taken_until_then() {
        let h = harness(ALLOW);
        assert!(matches!(
            h.relay.from_client(&call("5")),
            ToServer::Original
        ));
        let cancel =
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}"#;
        assert!(matches!(h.relay.from_client(cancel), ToServer::Original));
        // The server has not answered yet: a new request under 5 would be paired with that
        // answer.
        assert!(matches!(h.relay.from_client(&call("5")), ToServer::Nothing));
        assert_eq!(h.out.lines()[0]["error"]["code"], code::INVALID_REQUEST);
        // The late answer: relayed as the server wrote it (the client ignores it), recorded.
        h.relay.from_server(
            br#"{"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"the secret notes"}]}}"#
                .to_vec(),
        );
        assert_eq!(h.out.lines().len(), 2, "{:?}", h.out.lines());
        // Answered: 5 is free, and its own answer reaches the client.
        assert!(matches!(
            h.relay.from_client(&call("5")),
            ToServer::Original
        ));
        h.relay
            .from_server(br#"{"jsonrpc":"2.0","id":5,"result":{"content":[]}}"#.to_vec());
        let out = h.out.lines();
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[2]["result"]["content"], serde_json::json!([]));
        // A cancelled tools/list answered late is still filtered.
        let list = br#"{"jsonrpc":"2.0","id":6,"method":"tools/list"}"#;
        assert!(matches!(h.relay.from_client(list), ToServer::Original));
        let cancel =
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":6}}"#;
        h.relay.from_client(cancel);
        h.relay.from_server(
            br#"{"jsonrpc":"2.0","id":6,"result":{"tools":[{"name":"read"},{"name":"delete_all"}]}}"#
                .to_vec(),
        );
        let out = h.out.lines();
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(
            out[3]["result"]["tools"],
            serde_json::json!([{"name": "read"}])
        );
        let events = h.finish();
        let posts = posts(&events);
        assert_eq!(posts.len(), 3, "{events:?}");
        assert!(
            posts[0]["content"]
                .as_str()
                .unwrap()
                .contains(CANCELLED_AFTER_FORWARDING)
        );
        assert!(
            posts[1]["content"]
                .as_str()
                .unwrap()
                .contains("the secret notes"),
            "what the server returned is recorded: {}",
            posts[1]
        );
        assert!(
            posts[1]["decision"]["reason"]
                .as_str()
                .unwrap()
                .contains(ANSWERED_AFTER_CANCEL),
            "{}",
            posts[1]
        );
    }

    #[test]
    fn a_cancelled_id_is_free_after_its_time_and_an_answer_to_nothing_pending_is_dropped() {
        let h = harness(ALLOW);
        h.relay.from_client(&call("8"));
        let cancel =
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":8}}"#;
        h.relay.from_client(cancel);
        assert!(matches!(h.relay.from_client(&call("8")), ToServer::Nothing));
        // CANCELLED_KEPT later (its deadline moved instead of waiting).
        for p in h.relay.state().pending.values_mut() {
            if let Pending::Cancelled { until, .. } = p {
                *until = Instant::now();
            }
        }
        assert!(matches!(
            h.relay.from_client(&call("8")),
            ToServer::Original
        ));
        h.relay
            .from_server(br#"{"jsonrpc":"2.0","id":8,"result":{"content":[]}}"#.to_vec());
        // A second answer under 8 (the old call's, too late) or a made-up id: nothing to pair.
        for id in ["8", "99", "\"x\""] {
            h.relay.from_server(
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[]}}}}"#).into_bytes(),
            );
        }
        let out = h.out.lines();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[1]["id"], 8);
        h.finish();
    }

    #[test]
    fn at_the_pending_limit_new_requests_are_refused_and_nothing_is_forgotten() {
        let h = harness(ALLOW);
        let ping = |id: usize| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        for id in 1..=MAX_PENDING {
            assert!(matches!(
                h.relay.from_client(ping(id).as_bytes()),
                ToServer::Original
            ));
        }
        // A call: denied, not forwarded untracked (nor by forgetting a ping).
        assert!(matches!(
            h.relay.from_client(&call("100000")),
            ToServer::Nothing
        ));
        let out = h.out.lines();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["id"], 100000);
        assert_eq!(out[0]["result"]["isError"], true, "{}", out[0]);
        assert!(
            out[0].to_string().contains("too_many_pending"),
            "{}",
            out[0]
        );
        // Any other request: refused.
        assert!(matches!(
            h.relay.from_client(ping(100001).as_bytes()),
            ToServer::Nothing
        ));
        assert_eq!(h.out.lines()[1]["error"]["code"], code::INTERNAL_ERROR);
        assert_eq!(h.relay.untracked(), 2);
        // Every ping is still remembered: its answer is relayed, and its id stays taken until
        // then.
        assert!(matches!(
            h.relay.from_client(ping(1).as_bytes()),
            ToServer::Nothing
        ));
        for id in 1..=MAX_PENDING {
            h.relay.from_server(
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#).into_bytes(),
            );
        }
        assert_eq!(h.out.lines().len(), 3 + MAX_PENDING);
        // Room again.
        assert!(matches!(
            h.relay.from_client(&call("100000")),
            ToServer::Original
        ));
        let events = h.finish();
        let pres: Vec<&Value> = events
            .iter()
            .filter(|e| e["eventType"] == "TOOL_CALL_PRE")
            .collect();
        assert_eq!(pres.len(), 2);
        assert_eq!(pres[0]["decision"]["action"], "deny");
        assert_eq!(posts(&events).len(), 2);
    }

    #[test]
    fn tools_list_stays_filtered_whatever_the_id_tricks() {
        let listed = |id: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"read"}},{{"name":"delete_all"}}]}}}}"#
            )
            .into_bytes()
        };
        let names = |v: &Value| -> Vec<String> {
            v["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect()
        };
        // An id the server re-encodes.
        let h = harness(ALLOW);
        let list = br#"{"jsonrpc":"2.0","id":3.0,"method":"tools/list"}"#;
        assert!(matches!(h.relay.from_client(list), ToServer::Original));
        h.relay.from_server(listed("3"));
        let out = h.out.lines();
        assert_eq!(names(&out[0]), ["read"], "{out:?}");
        h.finish();
        // An id reused by a second request while the list is pending.
        let h = harness(ALLOW);
        let list = br#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#;
        assert!(matches!(h.relay.from_client(list), ToServer::Original));
        let ping = br#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#;
        assert!(matches!(h.relay.from_client(ping), ToServer::Nothing));
        h.relay.from_server(listed("4"));
        let out = h.out.lines();
        assert_eq!(out[0]["error"]["code"], code::INVALID_REQUEST);
        assert_eq!(names(&out[1]), ["read"], "{out:?}");
        h.finish();
    }
}

#[cfg(all(test, unix))]
mod path_tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::proxy::policy::LoadedPolicy;

    fn relay(policy: &str) -> Arc<Relay> {
        let policy =
            thoth_policy::parse_policy(policy, "p.yaml", thoth_policy::Format::Yaml).unwrap();
        let server = policy.resolve("fs", &[]);
        Arc::new(Relay::new(
            ClientOut::new(Box::new(io::sink())),
            EventSink::disabled(),
            PolicyState::Loaded(Arc::new(LoadedPolicy {
                policy,
                server,
                version: "1".into(),
            })),
            "fs".into(),
            "01a20abe-2043-7512-8916-ba4700421315",
        ))
    }

    #[test]
    fn path_constraints_follow_symlinks_out_of_the_allowed_tree() {
        let root = std::env::temp_dir().join(format!("thoth-symlinks-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(root.join("public")).unwrap();
        std::fs::create_dir_all(root.join("private")).unwrap();
        std::fs::write(root.join("notes.txt"), "secret").unwrap();
        std::fs::write(root.join("public/a.txt"), "ok").unwrap();
        symlink("../notes.txt", root.join("public/link.txt")).unwrap();
        symlink("../private", root.join("public/dir")).unwrap();
        let root = std::fs::canonicalize(root).unwrap();
        let r = relay(&format!(
            "servers:\n  - name: fs\n    enforcement: block\n    approved_scope: [read_file, write_file]\n    constraints: [{{tool: \"*\", arg: path, path_glob: [\"{}/public/**\"]}}]\n",
            root.display()
        ));
        let call = |id: u32, tool: &str, rel: &str| {
            let line = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"path":"{}/{rel}","content":"x"}}}}}}"#,
                root.display()
            );
            matches!(r.from_client(line.as_bytes()), ToServer::Original)
        };
        assert!(call(1, "read_file", "public/a.txt"), "inside: forwarded");
        assert!(
            !call(2, "read_file", "public/link.txt"),
            "a link to ../notes.txt"
        );
        assert!(
            !call(3, "write_file", "public/dir/new.txt"),
            "a write through a symlinked directory"
        );
        assert!(
            !call(4, "write_file", "public/dir/../../notes.txt"),
            "`..` after a symlinked directory"
        );
        assert!(
            call(5, "write_file", "public/new/deeper.txt"),
            "new files inside"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
