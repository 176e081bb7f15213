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
use thoth_policy::{Action, Decision, Mode, SessionState};

use crate::approval::{Approver, Elicitation, ServerRounds, WithAgent, server_input_state};
use crate::events::{Decided, EventSink, Record};
use crate::integrity::ListKind;
use crate::message::{self, Message, code};
use crate::policy::PolicyHandle;
use crate::respond::{self, NoApproval};

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
pub use crate::approval::MAX_PARKED;

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
    /// The proxy's own `tools/list` (after `notifications/tools/list_changed`): its answer is
    /// checked and not sent to the client.
    OwnToolsList,
    /// `resources/read` or `prompts/get`: content the model reads, scanned like a tool's result.
    Content,
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
    /// The server's own input rounds (2026-07-28).
    pub(super) server_rounds: ServerRounds,
    /// Who obtains a human's decision on `step_up` calls, and the calls it holds.
    pub(super) approver: Box<dyn Approver>,
    /// Deadlines of pending approvals: the timer thread of each (set once it runs), woken when
    /// the approval is settled earlier, so timers never outlive their approvals.
    pub(super) timers: HashMap<String, Option<std::thread::Thread>>,
    /// Approvals asked of the agent: dropping the sender drops the in-flight RPC (the agent then
    /// withdraws the request).
    pub(super) agent_calls: HashMap<String, tokio::sync::oneshot::Sender<()>>,
    pub(super) tools_snapshot: Arc<Vec<String>>,
    pub(super) pending: HashMap<String, Pending>,
    pub(super) untracked: u64,
    pub(super) client_elicitation: bool,
    /// The server's tools: pins, treatments, events raised.
    pub(super) integrity: crate::integrity::book::Book,
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
    /// Prefix of the proxy's own request ids and states (unguessable per session).
    pub(super) approval_prefix: String,
    /// Prefix of the proxy's own requests to the server (its `tools/list` after
    /// `list_changed`): random, and unrelated to [`Self::approval_prefix`], which the server
    /// must never learn.
    pub(super) own_prefix: String,
    /// When set, every tool call is denied with this reason (rule `refused`), whatever the policy.
    pub(super) refusal: std::sync::OnceLock<String>,
    /// This session's id (sent with approval requests to the agent).
    pub(super) session_id: String,
    /// The agent's socket, when the proxy runs with an agent (approvals may be asked of it).
    pub(super) agent: std::sync::OnceLock<std::path::PathBuf>,
    /// Writes a line to the server: for a call released by the agent's answer, which comes on
    /// no client line, and for the proxy's own `tools/list`.
    pub(super) server_in: std::sync::OnceLock<SharedWriter>,
    /// The server's original command line (its identity for tool pins).
    pub(super) server_argv: std::sync::OnceLock<Vec<String>>,
    /// The session's DLP salt and scanner.
    pub(super) dlp: crate::integrity::scanners::SessionDlp,
    state: Mutex<State>,
}

/// Writes one whole line to the server.
pub type ServerWriter = Box<dyn Fn(&[u8]) + Send + Sync>;

/// A [`ServerWriter`] the relay shares with the threads that write to the server.
pub(crate) type SharedWriter = Arc<dyn Fn(&[u8]) + Send + Sync>;

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
        // Random, not derived from anything the server sees: a server that learned the prefix
        // could send the client an elicitation under the id of the proxy's next approval and
        // have the client's answer to it taken as that approval.
        let approval_prefix = format!("thoth-approval-{:016x}-", random_u64());
        let own_prefix = format!("thoth-tools-{:016x}-", random_u64());
        let approver = Elicitation::new(approval_prefix.clone(), server_name.clone());
        Relay {
            client,
            events,
            policy: policy.into(),
            server_name,
            approval_prefix,
            own_prefix,
            refusal: std::sync::OnceLock::new(),
            session_id: session_id.to_owned(),
            agent: std::sync::OnceLock::new(),
            server_in: std::sync::OnceLock::new(),
            server_argv: std::sync::OnceLock::new(),
            dlp: Default::default(),
            state: Mutex::new(State {
                session: SessionState::new(),
                server_rounds: ServerRounds::default(),
                approver: Box::new(approver),
                timers: HashMap::new(),
                agent_calls: HashMap::new(),
                tools_snapshot: Arc::new(Vec::new()),
                pending: HashMap::new(),
                untracked: 0,
                client_elicitation: false,
                integrity: Default::default(),
            }),
        }
    }

    /// The proxy runs with the agent at `socket`: a `step_up` call the client cannot be asked
    /// about (no elicitation) is held while the agent finds a human. `server_in` writes a call
    /// the agent's answer releases to the server.
    pub fn use_agent(&self, socket: std::path::PathBuf, server_in: ServerWriter) {
        if self.agent.set(socket).is_ok() {
            let _ = self.server_in.set(Arc::from(server_in));
            self.state().approver = Box::new(WithAgent::new(
                self.approval_prefix.clone(),
                self.server_name.clone(),
            ));
        }
    }

    /// The server's original command line (tool pins are per server identity) and the writer
    /// of the proxy's own requests to the server (without an agent; [`Self::use_agent`] sets it
    /// otherwise).
    pub fn set_server(&self, argv: Vec<String>, server_in: Option<ServerWriter>) {
        let _ = self.server_argv.set(argv);
        if let Some(w) = server_in {
            let _ = self.server_in.set(Arc::from(w));
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
                    let params = params.and_then(|p| serde_json::from_str::<Value>(p.get()).ok());
                    let elicit = params.as_ref().is_some_and(|p| {
                        p.pointer("/capabilities/elicitation")
                            .is_some_and(|e| !e.is_null())
                    });
                    // Events name the client: `--client` when given (set first), else this.
                    if let Some(name) = params
                        .as_ref()
                        .and_then(|p| p.pointer("/clientInfo/name"))
                        .and_then(Value::as_str)
                    {
                        self.events.set_client(name);
                    }
                    let mut st = self.state();
                    st.client_elicitation = elicit;
                    if !track(&mut st, id, Pending::Other) {
                        drop(st);
                        return self.refuse_busy(id, &method);
                    }
                }
                "tools/list" => {
                    // Every list is read (tool integrity), filtered or not; a later page may
                    // only make a tool's treatment stricter.
                    let later_page = params
                        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                        .is_some_and(|p| p.get("cursor").is_some_and(|c| !c.is_null()));
                    let mut st = self.state();
                    if !track(&mut st, id, Pending::ToolsList) {
                        drop(st);
                        return self.refuse_busy(id, &method);
                    }
                    if later_page {
                        st.integrity.later_page(message::id_key(id));
                    }
                }
                _ => {
                    let kind = match method.as_ref() {
                        "resources/read" | "prompts/get" => Pending::Content,
                        _ => Pending::Other,
                    };
                    if !track(&mut self.state(), id, kind) {
                        return self.refuse_busy(id, &method);
                    }
                }
            },
            Message::Notification { method, params } if method == "notifications/cancelled" => {
                let target = params
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .and_then(|p| p.get("requestId").map(message::id_key_value));
                if let Some(target) = target {
                    let (settled, cancelled) = {
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
                        (st.approver.cancelled(&target), cancelled)
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
                    if let Some(settled) = settled {
                        self.settle(self.state(), settled, None);
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
                    let mut st = self.state();
                    return match st.approver.answered(&approval_id, accepted) {
                        Some(settled) => self.settle(st, settled, None),
                        None => ToServer::Nothing,
                    };
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
        self.post_event_seen(request_id, tool, response, decided, started, session_tools);
    }

    fn post_event_seen(
        &self,
        request_id: String,
        tool: String,
        response: Arc<Vec<u8>>,
        decided: Arc<Decided>,
        started: Instant,
        session_tools: Arc<Vec<String>>,
    ) {
        if !self.events.enabled() {
            return;
        }
        self.events.push(Record::Post {
            at: SystemTime::now(),
            request_id,
            tool,
            response: Some(response),
            decided,
            session_tools,
            latency_us: started.elapsed().as_micros() as u64,
            detail: None,
        });
    }

    /// Handles one line from the server. Returns the bytes to forward to the client, if any.
    pub fn from_server(&self, line: Vec<u8>) {
        let (pending, id, result, session_tools, first_page) = match message::classify(&line) {
            Ok(Message::Response { id, result, .. }) => {
                let mut st = self.state();
                let key = message::id_key(id);
                let pending = st.pending.remove(&key);
                let first_page = !st.integrity.was_later_page(&key);
                let session_tools = st.tools_snapshot.clone();
                let id = match pending {
                    Some(Pending::ToolCall {
                        ref tool,
                        ref decided,
                        ..
                    }) => {
                        if let Some(state) = result.and_then(server_input_state) {
                            st.server_rounds
                                .remember(state, tool.clone(), decided.clone());
                        }
                        id.get().to_owned()
                    }
                    Some(Pending::Cancelled { .. }) => id.get().to_owned(),
                    _ => String::new(),
                };
                (pending, id, result.is_some(), session_tools, first_page)
            }
            Ok(Message::Request { id, method, .. }) if self.ours(id) => {
                // The client would answer it under an id the proxy reads as its own (an
                // approval): never relayed.
                tracing::warn!(
                    method = %method,
                    "the MCP server sent a request under an id of the proxy's own; dropped"
                );
                return;
            }
            Ok(m) => {
                let changed = matches!(m, Message::Notification { ref method, .. }
                    if method == "notifications/tools/list_changed");
                self.reply(&line);
                if changed {
                    self.tools_list_changed();
                }
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
            Some(Pending::ToolsList) if result => {
                let kind = if first_page {
                    ListKind::ShownFirstPage
                } else {
                    ListKind::ShownLaterPage
                };
                self.reply(&self.tools_listed(line, kind));
            }
            Some(Pending::OwnToolsList) => self.own_tools_listed(line, result),
            Some(Pending::Content) => self.answer_content(line),
            Some(Pending::ToolCall {
                tool,
                decided,
                started,
            }) => self.answer_forwarded((id, tool, decided, started), line, Some(session_tools)),
            Some(Pending::Cancelled { call, list, .. }) => {
                // Relayed like any answer (the client ignores it, and no new request can hold
                // its id yet); what the server did after all is recorded in a second POST.
                if let Some((tool, decided, started)) = call {
                    let mut late = (*decided).clone();
                    late.decision.reason =
                        format!("{}; {ANSWERED_AFTER_CANCEL}", late.decision.reason);
                    self.answer_forwarded((id, tool, Arc::new(late), started), line, None);
                } else if list && result {
                    self.reply(&self.tools_listed(line, ListKind::ShownLaterPage));
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

    /// The server is gone: answer every request it left unanswered, and deny parked calls.
    pub fn server_gone(&self, status: &str) {
        let (pending, parked) = {
            let mut st = self.state();
            for (_, timer) in st.timers.drain() {
                if let Some(t) = timer {
                    t.unpark();
                }
            }
            st.agent_calls.clear();
            (std::mem::take(&mut st.pending), st.approver.abandon())
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
                // The proxy's own request: the client knows nothing of it.
                Pending::OwnToolsList => {}
                _ => self.reply(&line),
            }
        }
        for p in parked {
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
        }) || st.approver.holds(&key)
    }

    /// Whether a request id is under one of the proxy's own prefixes.
    fn ours(&self, id: &RawValue) -> bool {
        // Decoded, so an id written with escapes is read as the client would read it.
        serde_json::from_str::<String>(id.get())
            .is_ok_and(|s| s.starts_with(&self.approval_prefix) || s.starts_with(&self.own_prefix))
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
    let used = |st: &State| st.pending.len() + st.approver.waiting();
    if used(st) >= MAX_PENDING {
        let now = Instant::now();
        st.pending
            .retain(|_, p| !matches!(p, Pending::Cancelled { until, .. } if *until <= now));
    }
    used(st) < MAX_PENDING
}

pub(super) fn count_busy(st: &mut State) {
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

/// A random `u64` from the OS.
pub(crate) fn random_u64() -> u64 {
    rand_core::RngCore::next_u64(&mut rand_core::OsRng)
}

pub(super) fn fail_closed(why: &str) -> Decision {
    Decision {
        action: Action::Deny,
        mode: Mode::Block,
        rule: "no_policy".into(),
        reason: format!("no policy is in force ({why}), and Thoth fails closed"),
        out_of_scope: false,
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;

#[cfg(test)]
#[cfg(unix)]
#[path = "relay_path_tests.rs"]
mod path_tests;
