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

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::events::Decided;

mod agent;
mod elicitation;
mod model;
pub(crate) use agent::{WithAgent, request_approval};
pub(crate) use elicitation::Elicitation;
pub use model::MAX_PARKED;
pub(crate) use model::{
    AgentAnswer, Approver, Held, Outcome, Reach, Release, Request, Requested, Resent, Settled,
};

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
