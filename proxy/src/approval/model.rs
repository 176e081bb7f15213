//! What an approver is and what it trades with the relay: the [`Approver`] trait, the calls it
//! holds, the requests it makes and the decisions it settles (shared by every approver).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;
use thoth_proto::fleet::ApprovalDecision;

use crate::events::Decided;
use crate::message::ToolCallParams;

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
    /// The tool definition the approval is about, when the call was held because the tool's
    /// definition changed (an approval by the agent accepts it for the user).
    pub(crate) pin: Option<thoth_proto::fleet::PinRef>,
    /// The arguments as an approver outside the client sees them (DLP matches replaced);
    /// `None`: `arguments`.
    pub(crate) shown: Option<Value>,
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

/// What became of a `RequestApproval`: the agent's decision, or why it could not be asked.
#[derive(Debug, Clone)]
pub(crate) enum AgentAnswer {
    Decision(ApprovalDecision),
    Failed(String),
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
