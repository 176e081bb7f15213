//! The approver that asks the MCP client itself: MCP elicitation, in either lifecycle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::model::{
    Approver, Held, MAX_PARKED, Outcome, Release, Request, Requested, Resent, Settled, args_digest,
    decide, preview,
};
use crate::events::Decided;
use crate::message;
use crate::respond;

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
        // The counter keeps ids unique, the random part unguessable even to one who saw an
        // earlier id.
        format!(
            "{}{}-{:08x}",
            self.prefix,
            self.next,
            rand_core::RngCore::next_u32(&mut rand_core::OsRng)
        )
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
