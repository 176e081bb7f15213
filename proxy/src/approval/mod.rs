//! Human approval of `step_up` calls, as a state machine behind the [`Approver`] trait, and the
//! server's own input rounds.
//!
//! An approval is *requested* ([`Approver::request`] hands the relay a prompt to send), then
//! *pending* (the approver holds the call while a human decides), then *decided* ([`Settled`],
//! with an [`Outcome`]: approved, declined, cancelled by the client or timed out). The relay
//! drives every transition (the client's answer, a re-sent call, a cancellation, the deadline)
//! under its session lock, and does the IO and the session bookkeeping a decision implies; an
//! approver keeps its calls and says what became of them, and never sees the relay.
//!
//! [`Elicitation`] is today's approver, in both MCP lifecycles. With `initialize`: the call is
//! parked and the proxy sends its own `elicitation/create`; the client's reply (or the timeout)
//! releases or denies it. In 2026-07-28: the proxy answers the call with `input_required` and
//! releases the re-sent call only against its single-use, call-bound `requestState`. Another
//! way to reach a human (a native dialog, the agent) is another implementation of the trait.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;

use crate::events::Decided;
use crate::message::{self, ToolCallParams};
use crate::respond;

mod agent;
pub(crate) use agent::{AgentAnswer, WithAgent, request_approval};

/// Calls waiting for a human at once; more are denied as "no approver reachable".
pub const MAX_PARKED: usize = 64;

/// A `step_up` call as the relay hands it to an approver, and gets it back decided.
pub(crate) struct Held {
    /// The call's JSON-RPC id.
    pub(crate) request_id: Box<RawValue>,
    /// Whether the call came in the 2026-07-28 lifecycle (its denial says so).
    pub(crate) modern: bool,
    pub(crate) tool: String,
    /// The decision; its `action` becomes `approved` or `denied` once decided.
    pub(crate) decided: Arc<Decided>,
    /// When the call arrived.
    pub(crate) started: Instant,
}

/// How the client can be reached for an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reach {
    /// The client declared elicitation at `initialize`.
    pub(crate) client_elicitation: bool,
    /// The call's `_meta` declares elicitation (2026-07-28).
    pub(crate) meta_elicitation: bool,
}

/// What the relay asks an approver to obtain a decision on.
pub(crate) struct Request<'a> {
    pub(crate) call: Held,
    /// The bytes to forward if it is approved (the call without any approval state of ours).
    pub(crate) line: Vec<u8>,
    pub(crate) arguments: &'a Value,
    pub(crate) reach: Reach,
    /// How long a human has to answer.
    pub(crate) timeout: Duration,
    /// Who may approve ("user", "admin") and how long an approval covers the identical call
    /// again ("once", "session", "15m"), from the policy.
    pub(crate) approvers: Vec<String>,
    pub(crate) remember: String,
}

/// An approval requested: the relay records `APPROVAL_REQUESTED` with `detail` and sends
/// `prompt` to the client; with a `deadline`, it calls [`Approver::timed_out`] then.
pub(crate) struct Requested {
    pub(crate) approval_id: String,
    /// A request of the proxy's own, or the answer to the call itself.
    pub(crate) prompt: Vec<u8>,
    pub(crate) detail: Value,
    pub(crate) deadline: Option<Instant>,
    /// Asked of the agent (`LocalAgent.RequestApproval`): the relay runs the RPC off its lock
    /// and hands the answer to [`Approver::agent_answered`]; `prompt` is then empty.
    pub(crate) agent: Option<thoth_proto::fleet::ApprovalRequest>,
}

/// A call re-sent with one of the proxy's `requestState`s (2026-07-28).
pub(crate) struct Resent<'a> {
    pub(crate) id: &'a RawValue,
    pub(crate) tool: &'a str,
    pub(crate) call: &'a ToolCallParams<'a>,
    pub(crate) modern: bool,
    pub(crate) started: Instant,
}

/// What an approved call forwards.
pub(crate) enum Release {
    /// These bytes (the call as it was held).
    Held(Vec<u8>),
    /// The re-sent call that carried the answer, without the approval round's fields.
    Resent,
}

/// An approval decided: the relay records `APPROVAL_DECIDED` with `detail`, sends `notice` to
/// the client (when the approver's own request must be withdrawn), then forwards the call
/// (approved), denies it (declined, timed out), or does nothing more (cancelled).
pub(crate) struct Settled {
    pub(crate) approval_id: String,
    pub(crate) call: Held,
    pub(crate) outcome: Outcome,
    pub(crate) detail: Value,
    pub(crate) notice: Option<Vec<u8>>,
    pub(crate) release: Release,
    /// A denial's own words after "the tool … on MCP server …" (the agent's answer), instead
    /// of the outcome's standard text.
    pub(crate) denial: Option<String>,
}

/// How an approval ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Approved,
    Declined,
    CancelledByClient,
    TimedOut(u64),
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Declined => "declined",
            Outcome::CancelledByClient => "cancelled",
            Outcome::TimedOut(_) => "timed_out",
        }
    }
}

/// A way to obtain a human's decision on `step_up` calls: the state machine of every approval
/// it holds. Called with the relay's session lock held: no IO, no blocking.
pub(crate) trait Approver: Send {
    /// Requests a decision; `Err` gives the call back when no human can be reached (then it is
    /// denied).
    fn request(&mut self, req: Request<'_>) -> Result<Requested, Held>;
    /// The client answered the approver's own request `approval_id`.
    fn answered(&mut self, approval_id: &str, accepted: bool) -> Option<Settled>;
    /// A call came back with one of the approver's states. `None`: the state is unknown or was
    /// issued for another call (the call is then decided afresh).
    fn resumed(&mut self, state: &str, call: Resent<'_>) -> Option<Settled>;
    /// The client cancelled the held call whose id has key `request_key`.
    fn cancelled(&mut self, request_key: &str) -> Option<Settled>;
    /// The deadline of `approval_id` passed.
    fn timed_out(&mut self, approval_id: &str) -> Option<Settled>;
    /// Whether a held call uses this request id key (a new request must not).
    fn holds(&self, request_key: &str) -> bool;
    /// Approvals pending (each holds a place among the relay's pending requests).
    fn waiting(&self) -> usize;
    /// Forgets approvals whose time is up without the relay having to be told.
    fn expire(&mut self, now: Instant);
    /// The server is gone: every held call, to be answered with an error.
    fn abandon(&mut self) -> Vec<Held>;
    /// The agent answered the request `approval_id` (or could not be asked).
    fn agent_answered(&mut self, _approval_id: &str, _answer: AgentAnswer) -> Option<Settled> {
        None
    }
}

/// Marks a decided call `approved` or `denied`.
pub(crate) fn decide(call: &mut Held, outcome: Outcome) {
    Arc::make_mut(&mut call.decided).action = if outcome == Outcome::Approved {
        thoth_proto::Action::Approved
    } else {
        thoth_proto::Action::Denied
    };
}

/// A call parked while the client is asked with our own `elicitation/create`.
struct Parked {
    call: Held,
    line: Vec<u8>,
    timeout_secs: u64,
}

/// A call answered with `input_required` (2026-07-28), waiting to be re-sent with our state.
struct PendingInput {
    tool: String,
    digest: String,
    expires: Instant,
    decided: Arc<Decided>,
    timeout_secs: u64,
}

const PARKED_CHANNEL: &str = "mcp_elicitation";
const INPUT_CHANNEL: &str = "mcp_input_required";

/// The approver that asks the MCP client itself (MCP elicitation, in either lifecycle).
pub(crate) struct Elicitation {
    /// Prefix of the ids and states this approver issues (unguessable per session).
    prefix: String,
    server_name: String,
    next: u64,
    parked: HashMap<String, Parked>,
    inputs: HashMap<String, PendingInput>,
}

impl Elicitation {
    pub(crate) fn new(prefix: String, server_name: String) -> Self {
        Self {
            prefix,
            server_name,
            next: 0,
            parked: HashMap::new(),
            inputs: HashMap::new(),
        }
    }

    fn next_id(&mut self) -> String {
        self.next += 1;
        format!("{}{}", self.prefix, self.next)
    }

    fn settle_parked(&mut self, approval_id: &str, outcome: Outcome) -> Option<Settled> {
        let Parked {
            mut call,
            line,
            timeout_secs,
        } = self.parked.remove(approval_id)?;
        let outcome = match outcome {
            Outcome::TimedOut(_) => Outcome::TimedOut(timeout_secs),
            o => o,
        };
        decide(&mut call, outcome);
        let notice = match outcome {
            Outcome::TimedOut(_) => Some(respond::cancelled(approval_id, "approval timed out")),
            Outcome::CancelledByClient => {
                Some(respond::cancelled(approval_id, "the call was cancelled"))
            }
            _ => None,
        };
        Some(Settled {
            approval_id: approval_id.to_owned(),
            call,
            outcome,
            detail: serde_json::json!({"channel": PARKED_CHANNEL, "approvalId": approval_id, "outcome": outcome.as_str()}),
            notice,
            release: Release::Held(line),
            denial: None,
        })
    }
}

impl Approver for Elicitation {
    fn request(&mut self, req: Request<'_>) -> Result<Requested, Held> {
        let room = self.waiting() < MAX_PARKED;
        let secs = req.timeout.as_secs();
        if room && req.reach.client_elicitation {
            let approval_id = self.next_id();
            let prompt = respond::approval_request(
                &approval_id,
                &req.call.tool,
                &self.server_name,
                &preview(req.arguments),
                &req.call.decided,
                secs,
            );
            let detail = serde_json::json!({"channel": PARKED_CHANNEL, "approvalId": approval_id, "timeoutSecs": secs});
            let deadline = Instant::now() + req.timeout;
            let mut call = req.call;
            Arc::make_mut(&mut call.decided).approval_id = Some(approval_id.clone());
            self.parked.insert(
                approval_id.clone(),
                Parked {
                    call,
                    line: req.line,
                    timeout_secs: secs,
                },
            );
            return Ok(Requested {
                approval_id,
                prompt,
                detail,
                deadline: Some(deadline),
                agent: None,
            });
        }
        if room && req.reach.meta_elicitation {
            let state = self.next_id();
            let mut call = req.call;
            Arc::make_mut(&mut call.decided).approval_id = Some(state.clone());
            let prompt = respond::input_required(
                &call.request_id,
                &state,
                &call.tool,
                &self.server_name,
                &preview(req.arguments),
                &call.decided,
                secs,
            );
            let detail = serde_json::json!({"channel": INPUT_CHANNEL, "approvalId": state, "timeoutSecs": secs});
            self.inputs.insert(
                state.clone(),
                PendingInput {
                    tool: call.tool,
                    digest: args_digest(req.arguments),
                    expires: call.started + req.timeout,
                    decided: call.decided,
                    timeout_secs: secs,
                },
            );
            return Ok(Requested {
                approval_id: state,
                prompt,
                detail,
                deadline: None,
                agent: None,
            });
        }
        Err(req.call)
    }

    fn answered(&mut self, approval_id: &str, accepted: bool) -> Option<Settled> {
        let outcome = if accepted {
            Outcome::Approved
        } else {
            Outcome::Declined
        };
        self.settle_parked(approval_id, outcome)
    }

    fn resumed(&mut self, state: &str, r: Resent<'_>) -> Option<Settled> {
        let pending = self.inputs.remove(state)?;
        if pending.tool != r.tool || pending.digest != args_digest(&r.call.arguments_value()) {
            tracing::warn!(tool = %r.tool, "an approval was presented for a different call; deciding afresh");
            return None;
        }
        let accepted = r
            .call
            .input_responses
            .as_ref()
            .and_then(|v| v.get(respond::INPUT_KEY))
            .and_then(|v| v.get("action"))
            .and_then(Value::as_str)
            == Some("accept");
        let outcome = if pending.expires < r.started {
            Outcome::TimedOut(pending.timeout_secs)
        } else if accepted {
            Outcome::Approved
        } else {
            Outcome::Declined
        };
        let mut call = Held {
            request_id: r.id.to_owned(),
            modern: r.modern,
            tool: r.tool.to_owned(),
            decided: pending.decided,
            started: r.started,
        };
        decide(&mut call, outcome);
        Some(Settled {
            approval_id: state.to_owned(),
            call,
            outcome,
            detail: serde_json::json!({"channel": INPUT_CHANNEL, "approvalId": state, "outcome": outcome.as_str()}),
            notice: None,
            release: Release::Resent,
            denial: None,
        })
    }

    fn cancelled(&mut self, request_key: &str) -> Option<Settled> {
        let approval_id = self
            .parked
            .iter()
            .find(|(_, p)| message::id_key(&p.call.request_id) == request_key)
            .map(|(k, _)| k.clone())?;
        self.settle_parked(&approval_id, Outcome::CancelledByClient)
    }

    fn timed_out(&mut self, approval_id: &str) -> Option<Settled> {
        self.settle_parked(approval_id, Outcome::TimedOut(0))
    }

    fn holds(&self, request_key: &str) -> bool {
        self.parked
            .values()
            .any(|p| message::id_key(&p.call.request_id) == request_key)
    }

    fn waiting(&self) -> usize {
        self.parked.len() + self.inputs.len()
    }

    fn expire(&mut self, now: Instant) {
        if !self.inputs.is_empty() {
            self.inputs.retain(|_, p| p.expires > now);
        }
    }

    fn abandon(&mut self) -> Vec<Held> {
        self.parked.drain().map(|(_, p)| p.call).collect()
    }
}

/// Arguments as shown in an approval prompt: JSON, cut to 300 bytes.
pub(crate) fn preview(arguments: &Value) -> String {
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
pub(crate) fn args_digest(arguments: &Value) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(thoth_proto::canonical::to_canonical(
        arguments,
    )))
}

/// The call without the approval round's `requestState` and `inputResponses` (which are ours,
/// not the server's).
pub(crate) fn strip_input_state(line: &[u8]) -> Option<Vec<u8>> {
    let mut msg = serde_json::from_slice::<Value>(line).ok()?;
    let params = msg.get_mut("params").and_then(Value::as_object_mut)?;
    params.shift_remove("requestState");
    params.shift_remove("inputResponses");
    let mut out = serde_json::to_vec(&msg).ok()?;
    out.push(b'\n');
    Some(out)
}

/// `requestState` of a 2026-07-28 `input_required` tools/call result.
pub(crate) fn server_input_state(result: &RawValue) -> Option<String> {
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
const MAX_SERVER_STATES: usize = 256;

/// The `requestState`s the server issued in `input_required` results, with the call's tool and
/// decision (oldest first, bounded): a call re-sent to finish the server's own input round.
#[derive(Default)]
pub(crate) struct ServerRounds(VecDeque<(String, String, Arc<Decided>)>);

impl ServerRounds {
    /// The decision of the first round, when `state` was issued by the server for a call to
    /// `tool` (each state is honoured once).
    pub(crate) fn take(&mut self, state: &str, tool: &str) -> Option<Arc<Decided>> {
        let i = self
            .0
            .iter()
            .position(|(s, t, _)| s == state && t == tool)?;
        self.0.remove(i).map(|(_, _, d)| d)
    }

    pub(crate) fn remember(&mut self, state: String, tool: String, decided: Arc<Decided>) {
        if self.0.len() >= MAX_SERVER_STATES {
            self.0.pop_front();
        }
        self.0.push_back((state, tool, decided));
    }
}
