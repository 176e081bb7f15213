//! The relay and one `tools/call` from the client: the decision before anything reaches the
//! server.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::value::RawValue;
use thoth_policy::{Action, Decision, Mode, ToolCall, evaluate_with};

use crate::approval::{Held, Reach, Request, strip_input_state};
use crate::events::{Decided, Record};
use crate::message::{self, code};
use crate::paths::FsResolver;
use crate::policy::PolicyState;
use crate::relay::{
    MAX_PENDING, Pending, Relay, ToServer, count_busy, fail_closed, has_room, refresh_snapshot,
    track,
};
use crate::respond::{self, NoApproval};

impl Relay {
    /// A `tools/call` from the client: decided (policy, the tool's integrity treatment, DLP on
    /// its arguments), then forwarded, held for a human, or denied; its `TOOL_CALL_PRE` queued.
    pub(crate) fn tool_call(
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
                self.reply(&respond::error(
                    Some(id),
                    code::INVALID_PARAMS,
                    &why.to_string(),
                ));
                return ToServer::Nothing;
            }
        };
        let tool = call.name.to_string();
        // Only a denial or an approval says which lifecycle the call came in: not read for a
        // call that is let through.
        let modern = || respond::is_modern(params);
        let ours = call
            .request_state
            .as_deref()
            .filter(|s| s.starts_with(&self.approval_prefix));
        if let Some(state) = ours
            && let Some(to_server) = self.resume(id, state, &tool, &call, line, started, modern())
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
        let dlp_args = self.scan_arguments(&tool, call.arguments_raw);
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
                        arguments: call.arguments(),
                        hints: st.integrity.hints(&tool),
                    },
                    started,
                    &FsResolver,
                );
                (d, p.version.clone())
            }
            PolicyState::Missing { why } => (fail_closed(why), "none".to_owned()),
        };
        let decision = self.gate_call(&st.integrity, &tool, decision, dlp_args.as_ref());
        let action = decision.action;
        let mut decided = Arc::new(Decided {
            action: crate::events::event_action(action),
            decision,
            policy_version: version,
            approval_id: None,
        });
        // A call re-sent to finish the server's own input round (2026-07-28) is the same call
        // continuing: it is decided again, but it does not count again towards escalation, and
        // escalation alone does not stop it where the first round was let through with a warning.
        let first_round = call
            .request_state
            .as_deref()
            .filter(|_| ours.is_none())
            .and_then(|state| st.server_rounds.take(state, &tool));
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
        st.approver.expire(started);
        // A call that would hold its id (forwarded, or waiting for a human) must be remembered,
        // or its answer would reach the client unpaired and unrecorded: denied when it cannot be.
        let holds_id =
            decided.decision.action.forwards() || decided.decision.action == Action::StepUp;
        if holds_id && !has_room(&mut st, &message::id_key(id)) {
            count_busy(&mut st);
            let d = Arc::make_mut(&mut decided);
            d.action = thoth_proto::Action::Deny;
            d.decision.action = Action::Deny;
            d.decision.out_of_scope = false;
            d.decision.rule = "too_many_pending".into();
            d.decision.reason = format!(
                "more than {MAX_PENDING} requests are pending on this server, so the call was not \
                 forwarded; try again when some are answered"
            );
        }
        let action = decided.decision.action;
        let forwards = action.forwards();
        if first_round.is_some() && decided.decision.out_of_scope {
            // The continuing round was counted as out of scope the first time.
            let counted = Decision {
                out_of_scope: false,
                ..decided.decision.clone()
            };
            st.session.record(&tool, &counted, forwards, started);
        } else {
            st.session
                .record(&tool, &decided.decision, forwards, started);
        }
        let snapshot = refresh_snapshot(&mut st);
        let mut requested = None;
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
        } else if action == Action::StepUp {
            let arguments = call.arguments_value();
            let pin = st.integrity.pin_ref(&tool, &decided.decision);
            let (approvers, remember) = match &policy {
                PolicyState::Loaded(p) => (
                    p.policy
                        .approvers(&p.server)
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    p.policy.approval_remember(&p.server).to_string(),
                ),
                PolicyState::Missing { .. } => (Vec::new(), String::new()),
            };
            let req = Request {
                call: Held {
                    request_id: id.to_owned(),
                    modern: modern(),
                    tool: tool.clone(),
                    decided: decided.clone(),
                    started,
                },
                line: stripped.clone().unwrap_or_else(|| line.to_vec()),
                arguments: &arguments,
                reach: Reach {
                    client_elicitation: st.client_elicitation,
                    meta_elicitation: call.meta_elicitation,
                },
                timeout: self.policy.get().approval_timeout(),
                approvers,
                remember,
                pin: pin.clone(),
                shown: dlp_args
                    .as_ref()
                    .and_then(|scan| serde_json::from_str(&scan.content).ok()),
            };
            match st.approver.request(req) {
                Ok(r) => {
                    if let Some(pin) = pin {
                        st.integrity.hold(&r.approval_id, pin);
                    }
                    Arc::make_mut(&mut decided).approval_id = Some(r.approval_id.clone());
                    if r.deadline.is_some() {
                        // Before the timer starts: it ends as soon as it finds no entry.
                        st.timers.insert(r.approval_id.clone(), None);
                    }
                    requested = Some(r);
                }
                Err(held) => {
                    drop(held);
                    let d = Arc::make_mut(&mut decided);
                    d.action = thoth_proto::Action::Deny;
                    d.decision
                        .reason
                        .push_str("; no approver reachable, denied");
                }
            }
        }
        drop(st);

        let latency_us = started.elapsed().as_micros() as u64;
        if self.events.enabled() {
            self.events.push(Record::Pre {
                at,
                request_id: id.get().to_owned(),
                tool: tool.clone(),
                arguments: Some(match &dlp_args {
                    Some(scan) => scan.content.clone(),
                    None => call.arguments_raw.to_owned(),
                }),
                decided: decided.clone(),
                session_tools: snapshot.clone(),
                latency_us,
                detail: dlp_args.map(|scan| scan.detail),
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
        if let Some(requested) = requested {
            self.ask(id, &tool, &decided, requested);
            return ToServer::Nothing;
        }
        let why = (action == Action::StepUp).then_some(NoApproval::Unreachable);
        self.deny(id, &tool, &decided, why, modern(), started);
        ToServer::Nothing
    }
}
