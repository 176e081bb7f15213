//! The relay and human approval: a held call asked about (by elicitation, or of the agent), the
//! answer or the deadline carried out (forwarded, or denied), and calls re-sent with one of the
//! proxy's `requestState`s.

use std::sync::{Arc, MutexGuard};
use std::time::{Instant, SystemTime};

use serde_json::value::RawValue;
use thoth_policy::Decision;

use crate::approval::{
    AgentAnswer, Outcome, Release, Requested, Resent, Settled, strip_input_state,
};
use crate::events::{Decided, Record};
use crate::message::{self, code};
use crate::relay::{Pending, Relay, State, ToServer, refresh_snapshot, track};
use crate::respond::{self, NoApproval};

impl Relay {
    /// A call re-sent with one of our `requestState`s. `None` when the approver does not know
    /// the state for this call (then the call is decided afresh, and the state is stripped
    /// before anything is forwarded).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn resume(
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
        let resent = Resent {
            id,
            tool,
            call,
            modern,
            started,
        };
        let settled = st.approver.resumed(state, resent)?;
        Some(self.settle(st, settled, Some(line)))
    }

    /// Sends an approval's prompt, its `APPROVAL_REQUESTED` recorded first, and starts the
    /// timer that ends it at its deadline.
    pub(crate) fn ask(
        self: &Arc<Self>,
        id: &RawValue,
        tool: &str,
        decided: &Arc<Decided>,
        r: Requested,
    ) {
        self.events.push(Record::Approval {
            at: SystemTime::now(),
            kind: thoth_proto::EventType::ApprovalRequested,
            request_id: id.get().to_owned(),
            tool: tool.to_owned(),
            decided: decided.clone(),
            detail: r.detail,
        });
        let Some(deadline) = r.deadline else {
            self.reply(&r.prompt);
            return;
        };
        if let Some(ask) = r.agent {
            self.ask_agent(&r.approval_id, ask, deadline);
        }
        let relay = Arc::clone(self);
        let timer_id = r.approval_id.clone();
        let spawned = std::thread::Builder::new()
            .name("thoth-approval".into())
            .spawn(move || {
                loop {
                    if !relay.state().timers.contains_key(&timer_id) {
                        return; // settled before its deadline
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        // A timed-out approval never forwards anything.
                        relay.approval_timed_out(&timer_id, None);
                        return;
                    }
                    std::thread::park_timeout(deadline - now);
                }
            });
        match spawned {
            Ok(handle) => {
                // Stored before the request goes out, so no answer can come before it.
                if let Some(t) = self.state().timers.get_mut(&r.approval_id) {
                    *t = Some(handle.thread().clone());
                }
                if !r.prompt.is_empty() {
                    self.reply(&r.prompt);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the approval timer; denying now");
                self.approval_timed_out(&r.approval_id, Some(0));
            }
        }
    }

    /// Runs `LocalAgent.RequestApproval` on a thread of its own (off the session lock); its
    /// answer settles the held call. Settling it any other way (the client cancels, the timer,
    /// the server exits) drops the RPC.
    pub(crate) fn ask_agent(
        self: &Arc<Self>,
        approval_id: &str,
        mut ask: thoth_proto::fleet::ApprovalRequest,
        deadline: Instant,
    ) {
        let Some(socket) = self.agent.get().cloned() else {
            self.approval_answered_by_agent(approval_id, AgentAnswer::Failed("no agent".into()));
            return;
        };
        ask.session_id = self.session_id.clone();
        ask.client_name = self.events.client().unwrap_or_default().to_owned();
        let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
        {
            let mut st = self.state();
            if !st.timers.contains_key(approval_id) {
                return; // already settled
            }
            st.agent_calls.insert(approval_id.to_owned(), cancel);
        }
        let relay = Arc::clone(self);
        let id = approval_id.to_owned();
        let wait = deadline.saturating_duration_since(Instant::now());
        let spawned = std::thread::Builder::new()
            .name("thoth-approval-agent".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        relay.approval_answered_by_agent(&id, AgentAnswer::Failed(e.to_string()));
                        return;
                    }
                };
                let answer = rt.block_on(async move {
                    tokio::select! {
                        a = crate::approval::request_approval(&socket, ask, wait) => Some(a),
                        _ = cancelled => None,
                    }
                });
                if let Some(answer) = answer {
                    relay.approval_answered_by_agent(&id, answer);
                }
            });
        if let Err(e) = spawned {
            self.approval_answered_by_agent(approval_id, AgentAnswer::Failed(e.to_string()));
        }
    }

    /// The agent answered an approval (or could not be asked): the held call is forwarded at
    /// once (approved) or denied with the agent's words.
    pub(crate) fn approval_answered_by_agent(&self, approval_id: &str, answer: AgentAnswer) {
        let mut st = self.state();
        let Some(settled) = st.approver.agent_answered(approval_id, answer) else {
            return;
        };
        if let ToServer::Forward(bytes) = self.settle(st, settled, None) {
            match self.server_in.get() {
                Some(write) => write(&bytes),
                None => tracing::error!("an approved call cannot be written to the server"),
            }
        }
    }

    /// The deadline of an approval passed (`secs` overrides the timeout the denial states).
    pub(crate) fn approval_timed_out(&self, approval_id: &str, secs: Option<u64>) -> ToServer {
        let mut st = self.state();
        let Some(mut settled) = st.approver.timed_out(approval_id) else {
            return ToServer::Nothing;
        };
        if let Some(secs) = secs {
            settled.outcome = Outcome::TimedOut(secs);
        }
        self.settle(st, settled, None)
    }

    /// Carries out a decided approval: an approved call is counted and remembered as pending
    /// (in the same critical section that the approver let it go), `APPROVAL_DECIDED` is
    /// recorded, then the call is forwarded or denied. `line`: the re-sent call that carried
    /// the answer, if one did.
    pub(crate) fn settle(
        &self,
        mut st: MutexGuard<'_, State>,
        s: Settled,
        line: Option<&[u8]>,
    ) -> ToServer {
        if let Some(Some(timer)) = st.timers.remove(&s.approval_id) {
            timer.unpark();
        }
        // Dropped: an RPC still in flight is cancelled (the agent withdraws the request).
        st.agent_calls.remove(&s.approval_id);
        let now = Instant::now();
        let at = SystemTime::now();
        let call = s.call;
        let held_pin = st.integrity.released(&s.approval_id);
        if s.outcome == Outcome::Approved {
            let d = Decision {
                out_of_scope: false,
                ..call.decided.decision.clone()
            };
            st.session.record(&call.tool, &d, true, now);
            // Exactly the definition the human was asked about (a server may have listed
            // another one meanwhile).
            if let Some(pin) = &held_pin {
                st.integrity.approve(&pin.tool, &pin.digest);
            }
            track(
                &mut st,
                &call.request_id,
                Pending::ToolCall {
                    tool: call.tool.clone(),
                    decided: call.decided.clone(),
                    started: call.started,
                },
            );
        }
        refresh_snapshot(&mut st);
        drop(st);
        self.events.push(Record::Approval {
            at,
            kind: thoth_proto::EventType::ApprovalDecided,
            request_id: call.request_id.get().to_owned(),
            tool: call.tool.clone(),
            decided: call.decided.clone(),
            detail: s.detail,
        });
        if let Some(notice) = &s.notice {
            self.reply(notice);
        }
        let why = match s.outcome {
            Outcome::Approved => {
                return match s.release {
                    Release::Held(bytes) => ToServer::Forward(bytes),
                    Release::Resent => self.forward_stripped(&call.request_id, line.unwrap_or(b"")),
                };
            }
            Outcome::CancelledByClient => return ToServer::Nothing,
            Outcome::TimedOut(secs) => NoApproval::TimedOut(secs),
            Outcome::Declined => NoApproval::Declined,
        };
        if let Some(middle) = &s.denial {
            let pending = matches!(s.outcome, Outcome::TimedOut(_));
            tracing::info!(tool = %call.tool, rule = %call.decided.decision.rule, "denied: {middle}");
            let text = respond::held_denial_text(
                &call.tool,
                &self.server_name,
                &call.decided,
                middle,
                pending,
            );
            let line = respond::denial_with_text(
                &call.request_id,
                &call.tool,
                &self.server_name,
                &call.decided,
                text,
                call.modern,
            );
            self.answer_call(
                call.request_id.get().to_owned(),
                call.tool.clone(),
                line,
                call.decided.clone(),
                call.started,
            );
            return ToServer::Nothing;
        }
        self.deny(
            &call.request_id,
            &call.tool,
            &call.decided,
            Some(why),
            call.modern,
            call.started,
        );
        ToServer::Nothing
    }

    /// Forwards a call without the approval round's fields; a call they cannot be taken out of
    /// is refused (it would carry the proxy's state to the server).
    pub(crate) fn forward_stripped(&self, id: &RawValue, line: &[u8]) -> ToServer {
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
