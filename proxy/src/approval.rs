//! Human approval of `step_up` calls, in both MCP lifecycles, and the server's own input rounds.
//!
//! With `initialize`: the call is parked and the proxy sends its own `elicitation/create`; the
//! client's reply (or the timeout) releases or denies it. In 2026-07-28: the proxy answers the call
//! with `input_required` and releases the re-sent call only against its single-use, call-bound
//! `requestState`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::Value;
use serde_json::value::RawValue;
use thoth_policy::Decision;

use crate::events::{Decided, Record};
use crate::message::{self, code};
use crate::relay::{Pending, Relay, State, ToServer, refresh_snapshot, track};
use crate::respond::{self, NoApproval};

/// A call waiting for a human's answer.
pub(super) struct Parked {
    pub(super) request_id: Box<RawValue>,
    pub(super) modern: bool,
    pub(super) line: Vec<u8>,
    pub(super) tool: String,
    pub(super) decided: Arc<Decided>,
    pub(super) started: Instant,
    /// The thread that denies the call at its deadline; woken when the call is settled earlier,
    /// so timers never outlive their approvals.
    pub(super) timer: Option<std::thread::Thread>,
}

/// A call answered with `input_required` (2026-07-28), waiting to be re-sent with our state.
pub(super) struct PendingInput {
    pub(super) tool: String,
    pub(super) digest: String,
    pub(super) expires: Instant,
    pub(super) decided: Arc<Decided>,
    pub(super) timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Approved,
    Declined,
    CancelledByClient,
    TimedOut(u64),
}

impl Outcome {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Declined => "declined",
            Outcome::CancelledByClient => "cancelled",
            Outcome::TimedOut(_) => "timed_out",
        }
    }
}

/// Arguments as shown in an approval prompt: JSON, cut to 300 bytes.
pub(super) fn preview(arguments: &Value) -> String {
    let mut preview = arguments.to_string();
    if preview.len() > 300 {
        let mut end = 300;
        while !preview.is_char_boundary(end) {
            end -= 1;
        }
        preview.truncate(end);
        preview.push_str("...");
    }
    preview
}

/// What an approval is bound to: the canonical JSON of the arguments, hashed.
pub(super) fn args_digest(arguments: &Value) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(thoth_proto::canonical::to_canonical(
        arguments,
    )))
}

/// The call without the approval round's `requestState` and `inputResponses` (which are ours,
/// not the server's).
pub(super) fn strip_input_state(line: &[u8]) -> Option<Vec<u8>> {
    let mut msg = serde_json::from_slice::<Value>(line).ok()?;
    let params = msg.get_mut("params").and_then(Value::as_object_mut)?;
    params.shift_remove("requestState");
    params.shift_remove("inputResponses");
    let mut out = serde_json::to_vec(&msg).ok()?;
    out.push(b'\n');
    Some(out)
}

/// `requestState` of a 2026-07-28 `input_required` tools/call result.
pub(super) fn server_input_state(result: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct InputRequired {
        #[serde(rename = "resultType")]
        result_type: Option<String>,
        #[serde(rename = "requestState")]
        request_state: Option<String>,
    }
    if !result.get().contains("input_required") {
        return None;
    }
    let r: InputRequired = serde_json::from_str(result.get()).ok()?;
    (r.result_type.as_deref() == Some("input_required")).then_some(r.request_state?)
}

/// Server-issued states remembered at once.
pub(super) const MAX_SERVER_STATES: usize = 256;

/// The decision of the first round, when `state` was issued by the server for a call to `tool`
/// (each state is honoured once).
pub(super) fn take_server_state(st: &mut State, state: &str, tool: &str) -> Option<Arc<Decided>> {
    let i = st
        .server_states
        .iter()
        .position(|(s, t, _)| s == state && t == tool)?;
    st.server_states.remove(i).map(|(_, _, d)| d)
}

pub(super) fn remember_server_state(st: &mut State, state: (String, String, Arc<Decided>)) {
    if st.server_states.len() >= MAX_SERVER_STATES {
        st.server_states.pop_front();
    }
    st.server_states.push_back(state);
}

impl Relay {
    /// A call re-sent with one of our `requestState`s. `None` when the state is unknown (then the
    /// call is decided afresh, and the state is stripped before anything is forwarded).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn resume(
        &self,
        id: &RawValue,
        state: &str,
        tool: &str,
        call: &message::ToolCallParams<'_>,
        line: &[u8],
        started: Instant,
        modern: bool,
    ) -> Option<ToServer> {
        let mut st = self.state();
        let pending = st.inputs.remove(state)?;
        if pending.tool != tool || pending.digest != args_digest(&call.arguments) {
            tracing::warn!(tool = %tool, "an approval was presented for a different call; deciding afresh");
            return None;
        }
        let accepted = call
            .input_responses
            .as_ref()
            .and_then(|r| r.get(respond::INPUT_KEY))
            .and_then(|r| r.get("action"))
            .and_then(Value::as_str)
            == Some("accept");
        let outcome = if pending.expires < started {
            Outcome::TimedOut(pending.timeout_secs)
        } else if accepted {
            Outcome::Approved
        } else {
            Outcome::Declined
        };
        let mut decided = pending.decided;
        Arc::make_mut(&mut decided).action = if outcome == Outcome::Approved {
            thoth_proto::Action::Approved
        } else {
            thoth_proto::Action::Denied
        };
        let now = Instant::now();
        let at = SystemTime::now();
        if outcome == Outcome::Approved {
            let d = Decision {
                out_of_scope: false,
                ..decided.decision.clone()
            };
            st.session.record(tool, &d, true, now);
            track(
                &mut st,
                id,
                Pending::ToolCall {
                    tool: tool.to_owned(),
                    decided: decided.clone(),
                    started,
                },
            );
        }
        refresh_snapshot(&mut st);
        drop(st);
        self.events.push(Record::Approval {
            at,
            kind: thoth_proto::EventType::ApprovalDecided,
            request_id: id.get().to_owned(),
            tool: tool.to_owned(),
            decided: decided.clone(),
            detail: serde_json::json!({"channel": "mcp_input_required", "approvalId": state, "outcome": outcome.as_str()}),
        });
        Some(match outcome {
            Outcome::Approved => self.forward_stripped(id, line),
            Outcome::TimedOut(secs) => {
                self.deny(
                    id,
                    tool,
                    &decided,
                    Some(NoApproval::TimedOut(secs)),
                    modern,
                    started,
                );
                ToServer::Nothing
            }
            _ => {
                self.deny(
                    id,
                    tool,
                    &decided,
                    Some(NoApproval::Declined),
                    modern,
                    started,
                );
                ToServer::Nothing
            }
        })
    }

    pub(super) fn ask(
        self: &Arc<Self>,
        approval_id: &str,
        tool: &str,
        arguments: &Value,
        decided: &Arc<Decided>,
    ) {
        let timeout = self.policy.get().approval_timeout();
        let secs = timeout.as_secs();
        let preview = preview(arguments);
        let req = respond::approval_request(
            approval_id,
            tool,
            &self.server_name,
            &preview,
            decided,
            secs,
        );
        self.events.push(Record::Approval {
            at: SystemTime::now(),
            kind: thoth_proto::EventType::ApprovalRequested,
            request_id: self.parked_request_id(approval_id).unwrap_or_default(),
            tool: tool.to_owned(),
            decided: decided.clone(),
            detail: serde_json::json!({"channel": "mcp_elicitation", "approvalId": approval_id, "timeoutSecs": secs}),
        });
        let deadline = Instant::now() + timeout;
        let relay = Arc::clone(self);
        let timer_id = approval_id.to_owned();
        let spawned = std::thread::Builder::new()
            .name("thoth-approval".into())
            .spawn(move || {
                loop {
                    if !relay.state().parked.contains_key(&timer_id) {
                        return; // settled before its deadline
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        // A timed-out approval never forwards anything.
                        relay.finish_approval(&timer_id, Outcome::TimedOut(secs));
                        return;
                    }
                    std::thread::park_timeout(deadline - now);
                }
            });
        match spawned {
            Ok(handle) => {
                // Stored before the request goes out, so no answer can come before it.
                if let Some(p) = self.state().parked.get_mut(approval_id) {
                    p.timer = Some(handle.thread().clone());
                }
                self.reply(&req);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the approval timer; denying now");
                self.finish_approval(approval_id, Outcome::TimedOut(0));
            }
        }
    }

    pub(super) fn parked_request_id(&self, approval_id: &str) -> Option<String> {
        self.state()
            .parked
            .get(approval_id)
            .map(|p| p.request_id.get().to_owned())
    }

    pub(super) fn finish_approval(&self, approval_id: &str, outcome: Outcome) -> ToServer {
        let mut st = self.state();
        let Some(mut parked) = st.parked.remove(approval_id) else {
            return ToServer::Nothing;
        };
        if let Some(timer) = parked.timer.take() {
            timer.unpark();
        }
        let approved = outcome == Outcome::Approved;
        let now = Instant::now();
        let at = SystemTime::now();
        Arc::make_mut(&mut parked.decided).action = if approved {
            thoth_proto::Action::Approved
        } else {
            thoth_proto::Action::Denied
        };
        if approved {
            st.session.record(
                &parked.tool,
                &Decision {
                    out_of_scope: false,
                    ..parked.decided.decision.clone()
                },
                true,
                now,
            );
            track(
                &mut st,
                &parked.request_id,
                Pending::ToolCall {
                    tool: parked.tool.clone(),
                    decided: parked.decided.clone(),
                    started: parked.started,
                },
            );
        }
        refresh_snapshot(&mut st);
        drop(st);
        let outcome_name = outcome.as_str();
        self.events.push(Record::Approval {
            at,
            kind: thoth_proto::EventType::ApprovalDecided,
            request_id: parked.request_id.get().to_owned(),
            tool: parked.tool.clone(),
            decided: parked.decided.clone(),
            detail: serde_json::json!({"channel": "mcp_elicitation", "approvalId": approval_id, "outcome": outcome_name}),
        });
        match outcome {
            Outcome::Approved => return ToServer::Forward(parked.line),
            Outcome::Declined | Outcome::TimedOut(_) => {
                let why = match outcome {
                    Outcome::TimedOut(secs) => {
                        self.reply(&respond::cancelled(approval_id, "approval timed out"));
                        NoApproval::TimedOut(secs)
                    }
                    _ => NoApproval::Declined,
                };
                let p = &parked;
                self.deny(
                    &p.request_id,
                    &p.tool,
                    &p.decided,
                    Some(why),
                    p.modern,
                    p.started,
                );
            }
            Outcome::CancelledByClient => {
                self.reply(&respond::cancelled(approval_id, "the call was cancelled"));
            }
        }
        ToServer::Nothing
    }

    /// Forwards a call without the approval round's fields; a call they cannot be taken out of
    /// is refused (it would carry the proxy's state to the server).
    pub(super) fn forward_stripped(&self, id: &RawValue, line: &[u8]) -> ToServer {
        match strip_input_state(line) {
            Some(bytes) => ToServer::Forward(bytes),
            None => {
                let why = "this tools/call cannot be re-encoded without its requestState";
                self.reply(&respond::error(Some(id), code::INVALID_PARAMS, why));
                ToServer::Nothing
            }
        }
    }
}
