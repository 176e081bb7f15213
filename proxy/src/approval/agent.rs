//! The approver of a proxy that runs with an agent: the client's own elicitation first (when it
//! declared it), else the agent (`LocalAgent.RequestApproval`), which finds a human (the user's
//! dialog, an admin's queue) and answers when one decides, or when its deadline passes.
//!
//! The call is held here while the relay runs the RPC off its lock; the agent's answer comes
//! back through [`Approver::agent_answered`]. The relay's own timer stays the backstop, a little
//! after the deadline the agent was given, so the agent's answer (which names its approval id)
//! normally comes first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use thoth_proto::fleet::{ApprovalDecision, ApprovalRequest};

use super::elicitation::Elicitation;
use super::model::{
    AgentAnswer, Approver, Held, MAX_PARKED, Outcome, Release, Request, Requested, Resent, Settled,
    args_digest, decide,
};
use crate::message;

/// How much later than the agent's deadline the relay's own timer ends a held call.
pub(crate) const BACKSTOP_GRACE: Duration = Duration::from_secs(3);
/// Cap of the arguments preview sent to the agent.
const CONTENT_MAX: usize = 4096;
/// Cap of one value (a string, or a nested value's JSON) in the preview, in characters.
const VALUE_MAX: usize = 256;
/// Cap of one key's name in the preview, in characters.
const KEY_MAX: usize = 128;
/// What the preview keeps free for the note naming keys that did not fit.
const NOTE_ROOM: usize = 512;
/// The preview's key naming the keys that did not fit.
pub(crate) const MORE_KEY: &str = "…keys not shown";
/// Caps of the strings an answer brings back.
const WHO_MAX: usize = 256;
const REASON_MAX: usize = 1024;

const AGENT_CHANNEL: &str = "agent";

/// A call held while the agent finds a human.
struct AgentHeld {
    call: Held,
    line: Vec<u8>,
    timeout_secs: u64,
}

/// Elicitation when the client can show it, else the agent.
pub(crate) struct WithAgent {
    elicitation: Elicitation,
    prefix: String,
    next: u64,
    held: HashMap<String, AgentHeld>,
    server_name: String,
}

impl WithAgent {
    pub(crate) fn new(prefix: String, server_name: String) -> Self {
        Self {
            elicitation: Elicitation::new(prefix.clone(), server_name.clone()),
            prefix: format!("{prefix}agent-"),
            next: 0,
            held: HashMap::new(),
            server_name,
        }
    }

    fn settle_held(
        &mut self,
        approval_id: &str,
        outcome: Outcome,
        agent: Option<&ApprovalDecision>,
    ) -> Option<Settled> {
        let AgentHeld {
            mut call,
            line,
            timeout_secs,
        } = self.held.remove(approval_id)?;
        let outcome = match outcome {
            Outcome::TimedOut(_) => Outcome::TimedOut(timeout_secs),
            o => o,
        };
        decide(&mut call, outcome);
        let mut detail = serde_json::json!({
            "channel": AGENT_CHANNEL,
            "approvalId": approval_id,
            "outcome": outcome.as_str(),
        });
        let mut denial = None;
        if let Some(d) = agent {
            let agent_id = shown(&d.approval_id, WHO_MAX);
            let who = shown(&d.decided_by, WHO_MAX);
            let why = shown(&d.reason, REASON_MAX);
            detail["agentApprovalId"] = Value::String(agent_id.clone());
            detail["agentChannel"] = Value::String(shown(&d.channel, WHO_MAX));
            detail["decidedBy"] = Value::String(who.clone());
            detail["remember"] = Value::String(shown(&d.remember, WHO_MAX));
            if !agent_id.is_empty() {
                std::sync::Arc::make_mut(&mut call.decided).approval_id = Some(agent_id.clone());
            }
            denial = match outcome {
                Outcome::Declined => Some(declined_text(&who, &d.channel, &why, &agent_id)),
                Outcome::TimedOut(secs) if !agent_id.is_empty() => Some(format!(
                    "requires human approval, and none was given within {secs} s, so the call \
                     was not sent to the server. Approval was requested (id {agent_id}); if it \
                     is approved, the same call will go through when retried."
                )),
                _ => None,
            };
        }
        Some(Settled {
            approval_id: approval_id.to_owned(),
            call,
            outcome,
            detail,
            notice: None,
            release: Release::Held(line),
            denial,
        })
    }
}

fn declined_text(who: &str, channel: &str, why: &str, agent_id: &str) -> String {
    let by = match (who.is_empty(), channel) {
        (true, _) => "the approver".to_owned(),
        (false, "admin") => format!("the administrator {who}"),
        (false, _) => format!("the user {who}"),
    };
    let mut text = format!("requires human approval, and {by} denied it");
    if !why.is_empty() {
        text.push_str(&format!(" (\"{why}\")"));
    }
    if !agent_id.is_empty() {
        text.push_str(&format!(" (approval id {agent_id})"));
    }
    text.push('.');
    text
}

/// `s` cut to `max` characters; a cut one ends with `…(N bytes not shown)`.
fn cut_value(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…({} bytes not shown)", &s[..at], s.len() - at),
    }
}

/// The preview of a call's arguments the approver reads: secrets masked; every top-level key
/// present, shortest value first (so a short `path` cannot be pushed out of sight by a long
/// `content`), each string cut to [`VALUE_MAX`] characters with the number of bytes not shown,
/// nested values as their JSON cut the same way (then a string); at most [`CONTENT_MAX`] bytes,
/// and valid JSON. Keys that would not fit are named under [`MORE_KEY`], never dropped silently.
fn preview(arguments: &Value) -> String {
    let mut args = arguments.clone();
    thoth_proto::content::redact(&mut args);
    let small = |v: &Value| -> Value {
        match v {
            Value::String(s) => Value::String(cut_value(s, VALUE_MAX)),
            Value::Array(_) | Value::Object(_) => {
                let text = v.to_string();
                if text.chars().count() <= VALUE_MAX {
                    v.clone()
                } else {
                    Value::String(cut_value(&text, VALUE_MAX))
                }
            }
            other => other.clone(),
        }
    };
    let Value::Object(map) = &args else {
        return small(&args).to_string();
    };
    let mut entries: Vec<(String, String)> = map
        .iter()
        .map(|(k, v)| {
            let key = Value::String(cut_value(k, KEY_MAX)).to_string();
            (key, small(v).to_string())
        })
        .collect();
    entries.sort_by(|a, b| (a.1.len(), &a.0).cmp(&(b.1.len(), &b.0)));
    let mut out = String::from("{");
    let mut left_out: Vec<&str> = Vec::new();
    for (k, v) in &entries {
        let add = k.len() + 1 + v.len() + 1;
        if left_out.is_empty() && out.len() + add <= CONTENT_MAX - NOTE_ROOM {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(k);
            out.push(':');
            out.push_str(v);
        } else {
            left_out.push(k);
        }
    }
    if !left_out.is_empty() {
        let names: Vec<String> = left_out
            .iter()
            .map(|k| serde_json::from_str::<String>(k).unwrap_or_default())
            .collect();
        let mut note = format!("{} more: ", left_out.len());
        for (i, n) in names.iter().enumerate() {
            let more = if i == 0 { n.clone() } else { format!(", {n}") };
            if note.len() + more.len() > NOTE_ROOM / 2 {
                note.push_str(", …");
                break;
            }
            note.push_str(&more);
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&Value::String(MORE_KEY.into()).to_string());
        out.push(':');
        out.push_str(&Value::String(note).to_string());
    }
    out.push('}');
    out
}

/// A string from the agent as shown to the model: no control, format or bidi characters, cut
/// to `max` bytes.
fn shown(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_control() || is_invisible(c) {
            continue;
        }
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}'
        | '\u{061c}' | '\u{feff}' | '\u{00ad}')
}

impl Approver for WithAgent {
    fn request(&mut self, req: Request<'_>) -> Result<Requested, Held> {
        if req.reach.client_elicitation || req.reach.meta_elicitation {
            return self.elicitation.request(req);
        }
        if self.waiting() >= MAX_PARKED {
            return Err(req.call);
        }
        self.next += 1;
        let approval_id = format!("{}{}", self.prefix, self.next);
        let secs = req.timeout.as_secs();
        let ask = ApprovalRequest {
            server_name: shown(&self.server_name, WHO_MAX),
            tool_name: shown(&req.call.tool, WHO_MAX),
            content: preview(req.shown.as_ref().unwrap_or(req.arguments)),
            reason: shown(&req.call.decided.decision.reason, REASON_MAX),
            timeout_secs: u32::try_from(secs).unwrap_or(u32::MAX),
            arguments_sha256: args_digest(req.arguments),
            approvers: req.approvers.iter().map(|a| shown(a, WHO_MAX)).collect(),
            remember: shown(&req.remember, WHO_MAX),
            pin: req.pin,
            ..Default::default()
        };
        let detail = serde_json::json!({"channel": AGENT_CHANNEL, "approvalId": approval_id, "timeoutSecs": secs});
        let mut call = req.call;
        std::sync::Arc::make_mut(&mut call.decided).approval_id = Some(approval_id.clone());
        self.held.insert(
            approval_id.clone(),
            AgentHeld {
                call,
                line: req.line,
                timeout_secs: secs,
            },
        );
        Ok(Requested {
            approval_id,
            prompt: Vec::new(),
            detail,
            deadline: Some(Instant::now() + req.timeout + BACKSTOP_GRACE),
            agent: Some(ask),
        })
    }

    fn answered(&mut self, approval_id: &str, accepted: bool) -> Option<Settled> {
        // Only the elicitation's own requests can be answered by the client.
        self.elicitation.answered(approval_id, accepted)
    }

    fn resumed(&mut self, state: &str, call: Resent<'_>) -> Option<Settled> {
        self.elicitation.resumed(state, call)
    }

    fn cancelled(&mut self, request_key: &str) -> Option<Settled> {
        if let Some(s) = self.elicitation.cancelled(request_key) {
            return Some(s);
        }
        let approval_id = self
            .held
            .iter()
            .find(|(_, h)| message::id_key(&h.call.request_id) == request_key)
            .map(|(k, _)| k.clone())?;
        self.settle_held(&approval_id, Outcome::CancelledByClient, None)
    }

    fn timed_out(&mut self, approval_id: &str) -> Option<Settled> {
        if self.held.contains_key(approval_id) {
            return self.settle_held(approval_id, Outcome::TimedOut(0), None);
        }
        self.elicitation.timed_out(approval_id)
    }

    fn holds(&self, request_key: &str) -> bool {
        self.elicitation.holds(request_key)
            || self
                .held
                .values()
                .any(|h| message::id_key(&h.call.request_id) == request_key)
    }

    fn waiting(&self) -> usize {
        self.elicitation.waiting() + self.held.len()
    }

    fn expire(&mut self, now: Instant) {
        self.elicitation.expire(now);
    }

    fn abandon(&mut self) -> Vec<Held> {
        let mut calls = self.elicitation.abandon();
        calls.extend(self.held.drain().map(|(_, h)| h.call));
        calls
    }

    fn agent_answered(&mut self, approval_id: &str, answer: AgentAnswer) -> Option<Settled> {
        match answer {
            AgentAnswer::Decision(d) => {
                let outcome = if d.approved {
                    Outcome::Approved
                } else if d.timed_out {
                    Outcome::TimedOut(0)
                } else {
                    Outcome::Declined
                };
                self.settle_held(approval_id, outcome, Some(&d))
            }
            AgentAnswer::Failed(why) => {
                let mut s = self.settle_held(approval_id, Outcome::Declined, None)?;
                s.detail["error"] = Value::String(shown(&why, REASON_MAX));
                s.denial = Some(format!(
                    "requires human approval, and the Thoth agent could not ask anyone ({}), so \
                     the call was denied.",
                    shown(&why, REASON_MAX)
                ));
                Some(s)
            }
        }
    }
}

/// Asks the agent at `socket`, waiting at most `wait`.
pub(crate) async fn request_approval(
    socket: &std::path::Path,
    ask: ApprovalRequest,
    wait: Duration,
) -> AgentAnswer {
    let ch = match thoth_endpoint::tls::local_channel(socket) {
        Ok(c) => c,
        Err(e) => return AgentAnswer::Failed(e.to_string()),
    };
    let mut client = thoth_proto::fleet::local_agent_client::LocalAgentClient::new(ch);
    match tokio::time::timeout(wait, client.request_approval(ask)).await {
        Ok(Ok(r)) => AgentAnswer::Decision(r.into_inner()),
        Ok(Err(s)) => AgentAnswer::Failed(format!("the agent refused: {}", s.message())),
        Err(_) => AgentAnswer::Failed("the agent did not answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_strings_lose_control_and_bidi_characters_and_are_capped() {
        assert_eq!(shown("a\u{202e}b\nc\u{200b}d\x1b[31m", 100), "abcd[31m");
        assert_eq!(shown(&"é".repeat(10), 5), "éé");
    }

    /// Review (High): the argument an approver needs was cut out of the preview (the client's
    /// key order kept, the preview cut at 4 KiB): a long `content` first hid `path`.
    #[test]
    fn every_top_level_key_is_in_the_preview_short_values_first() {
        let args = serde_json::json!({
            "content": "Meeting notes: nothing to see here. ".repeat(200),
            "path": "/home/alice/.bashrc",
            "nested": {"deep": vec!["x"; 400]},
            "api_key": "sk-live-secret",
        });
        let p = preview(&args);
        assert!(p.len() <= CONTENT_MAX, "{}", p.len());
        let v: Value = serde_json::from_str(&p).expect("valid JSON");
        assert_eq!(v["path"], "/home/alice/.bashrc");
        assert!(
            p.find("\"path\"").unwrap() < p.find("\"content\"").unwrap(),
            "{p}"
        );
        let c = v["content"].as_str().unwrap();
        assert!(
            c.ends_with(" bytes not shown)") && c.chars().count() < 300,
            "{c}"
        );
        assert!(v["nested"].as_str().unwrap().contains("bytes not shown"));
        assert!(!p.contains("sk-live-secret"), "{p}");
        // Many keys: each one is shown or named, and the whole stays bounded, valid JSON.
        let many: serde_json::Map<String, Value> = (0..300)
            .map(|i| (format!("k{i:03}"), Value::String("v".repeat(40))))
            .collect();
        let p = preview(&Value::Object(many));
        assert!(p.len() <= CONTENT_MAX, "{}", p.len());
        let v: Value = serde_json::from_str(&p).expect("valid JSON");
        let note = v[MORE_KEY].as_str().unwrap();
        let shown = v.as_object().unwrap().len() - 1;
        assert!(
            note.starts_with(&format!("{} more: ", 300 - shown)),
            "{note}"
        );
        assert!(note.contains(&format!("k{shown:03}")), "{note}");
    }

    #[test]
    fn a_denial_names_who_decided_and_the_approval() {
        let t = declined_text("alice", "admin", "not today", "0190");
        assert!(t.contains("the administrator alice denied it"), "{t}");
        assert!(t.contains("not today") && t.contains("0190"), "{t}");
    }
}
