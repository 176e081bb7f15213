//! DLP in the relay: secrets in a call's arguments (recorded, or the call denied) and in the
//! results of forwarded calls (recorded, redacted, or the result withheld). The event's copy
//! never holds a match, whatever the action (only `allow` is not scanned). With no match
//! possible (one pass over the raw text), nothing is parsed.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};
use thoth_policy::{DlpArguments, DlpResults};

use crate::dlp::Finding;
use crate::events::{Decided, Record};
use crate::integrity::scanners::{ArgScan, Compiled};
use crate::policy::PolicyState;
use crate::relay::Relay;

/// Findings listed in an event's `detail.dlp` (the rest are counted).
const MAX_FINDINGS: usize = 64;
/// Findings named in a denial's text.
const NAMED: usize = 3;
/// What an event keeps of content that may hold a secret but could not be decoded.
const UNSCANNABLE: &str = "[withheld by Thoth: may hold a secret, could not be scanned]";

fn detail(findings: &[Finding], action: &str) -> Value {
    let listed: Vec<Value> = findings
        .iter()
        .take(MAX_FINDINGS)
        .map(|f| {
            json!({"detector": f.detector, "location": f.location, "digest": f.digest,
                   "action": action})
        })
        .collect();
    let mut d = json!({ "dlp": listed });
    if findings.len() > MAX_FINDINGS {
        d["dlpNotListed"] = json!(findings.len() - MAX_FINDINGS);
    }
    d
}

/// "aws_secret_key in arguments.key, …" (never the matched text).
fn named(findings: &[Finding]) -> String {
    let mut s: Vec<String> = findings
        .iter()
        .take(NAMED)
        .map(|f| format!("{} in {}", f.detector, f.location))
        .collect();
    if findings.len() > NAMED {
        s.push(format!("{} more", findings.len() - NAMED));
    }
    s.join(", ")
}

fn line_of(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).expect("serializing a JSON value into memory");
    out.push(b'\n');
    out
}

/// What DLP made of a result.
struct ResultScan {
    /// What the client gets instead of the server's line (redact, block).
    to_client: Option<Vec<u8>>,
    /// The line the event records (every match replaced).
    for_event: Vec<u8>,
    detail: Value,
    /// The result was withheld: why.
    blocked: Option<String>,
}

impl Relay {
    fn dlp_in_force(&self) -> Option<Arc<Compiled>> {
        match self.policy.get() {
            PolicyState::Loaded(p) => {
                Some(self.dlp.scanner(&p.version, || p.policy.dlp(&p.server)))
            }
            PolicyState::Missing { .. } => None,
        }
    }

    /// Scans a call's arguments (JSON text); `None` when not scanned or nothing matched.
    pub(crate) fn scan_arguments(&self, tool: &str, raw: &str) -> Option<ArgScan> {
        let c = self.dlp_in_force()?;
        if c.dlp.arguments == DlpArguments::Allow || !c.scanner.may_match(raw.as_bytes()) {
            return None;
        }
        let mut args: Value = match serde_json::from_str(raw) {
            Ok(v) => v,
            // Valid JSON that cannot be read whole (nested too deep): it may hold a secret that
            // cannot be located, so it is treated as one.
            Err(e) => return Some(self.unscannable_arguments(tool, &c, &e)),
        };
        let findings = c.scanner.redact(&mut args, "arguments", &self.dlp.salt);
        if findings.is_empty() {
            return None;
        }
        let block = c.dlp.arguments == DlpArguments::Block;
        let blocked = block.then(|| {
            format!(
                "the arguments of \"{tool}\" carry a secret ({}); calls must not send secrets to \
                 an MCP server (rule dlp.arguments)",
                named(&findings)
            )
        });
        Some(ArgScan {
            blocked,
            content: args.to_string(),
            detail: detail(&findings, if block { "block" } else { "warn" }),
        })
    }

    /// Scans the server's answer to a forwarded call; `None` when not scanned or nothing
    /// matched.
    fn scan_result(&self, tool: &str, line: &[u8]) -> Option<ResultScan> {
        let c = self.dlp_in_force()?;
        if c.dlp.results == DlpResults::Allow || !c.scanner.may_match(line) {
            return None;
        }
        let msg: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return Some(self.unscannable_result(tool, &c, line, &e)),
        };
        let mut copy = msg.clone();
        let mut findings = Vec::new();
        for root in ["result", "error"] {
            if let Some(part) = copy.get_mut(root) {
                findings.extend(c.scanner.redact(part, root, &self.dlp.salt));
            }
        }
        if findings.is_empty() {
            return None;
        }
        let redacted = line_of(&copy);
        Some(match c.dlp.results {
            DlpResults::Redact => ResultScan {
                to_client: Some(redacted.clone()),
                for_event: redacted,
                detail: detail(&findings, "redact"),
                blocked: None,
            },
            DlpResults::Block => {
                let why = format!(
                    "the result of \"{tool}\" carried a secret ({}), so Thoth withheld it",
                    named(&findings)
                );
                let text = format!(
                    "Blocked by Thoth policy: the result of the tool \"{tool}\" on MCP server \
                     \"{}\" carried a secret ({}), so it was withheld (rule dlp.results). Do not \
                     retry it unchanged; tell the user that their organization's policy keeps \
                     secrets out of tool results.",
                    self.server_name,
                    named(&findings)
                );
                let out = json!({"jsonrpc": "2.0", "id": msg.get("id").cloned().unwrap_or(Value::Null),
                    "result": {"content": [{"type": "text", "text": text}], "isError": true}});
                let out = line_of(&out);
                ResultScan {
                    to_client: Some(out.clone()),
                    for_event: out,
                    detail: detail(&findings, "block"),
                    blocked: Some(why),
                }
            }
            _ => ResultScan {
                to_client: None,
                for_event: redacted,
                detail: detail(&findings, "warn"),
                blocked: None,
            },
        })
    }

    /// Arguments the scanner's one pass flagged but that cannot be decoded: denied under
    /// `block`, and never copied into the event.
    fn unscannable_arguments(&self, tool: &str, c: &Compiled, e: &serde_json::Error) -> ArgScan {
        tracing::warn!(tool = %tool, error = %e, "arguments may hold a secret but cannot be decoded");
        let block = c.dlp.arguments == DlpArguments::Block;
        ArgScan {
            blocked: block.then(|| {
                format!(
                    "the arguments of \"{tool}\" may carry a secret and cannot be scanned ({e}); \
                     denied (rule dlp.arguments)"
                )
            }),
            content: json!(UNSCANNABLE).to_string(),
            detail: json!({"dlp": [], "dlpUnscannable": true}),
        }
    }

    /// A result the one pass flagged but that cannot be decoded: withheld under `redact` and
    /// `block` (nothing in it can be located to redact), never copied into the event.
    fn unscannable_result(
        &self,
        tool: &str,
        c: &Compiled,
        line: &[u8],
        e: &serde_json::Error,
    ) -> ResultScan {
        tracing::warn!(tool = %tool, error = %e, "a result may hold a secret but cannot be decoded");
        let placeholder = line_of(&json!({"jsonrpc": "2.0", "result": UNSCANNABLE}));
        let detail = json!({"dlp": [], "dlpUnscannable": true});
        if c.dlp.results == DlpResults::Warn {
            return ResultScan {
                to_client: None,
                for_event: placeholder,
                detail,
                blocked: None,
            };
        }
        let id = match crate::message::classify(line) {
            Ok(crate::message::Message::Response { id, .. }) => {
                serde_json::from_str::<Value>(id.get()).unwrap_or(Value::Null)
            }
            _ => Value::Null,
        };
        let text = format!(
            "Blocked by Thoth policy: the result of the tool \"{tool}\" on MCP server \"{}\" may \
             carry a secret and could not be scanned ({e}), so it was withheld (rule dlp.results).",
            self.server_name
        );
        let out = line_of(&json!({"jsonrpc": "2.0", "id": id,
            "result": {"content": [{"type": "text", "text": text}], "isError": true}}));
        ResultScan {
            to_client: Some(out.clone()),
            for_event: out,
            detail,
            blocked: Some(format!(
                "the result of \"{tool}\" may carry a secret and could not be scanned, so Thoth \
                 withheld it"
            )),
        }
    }

    /// Sends the server's answer to a `resources/read` or `prompts/get` (content the model reads):
    /// scanned with the `dlp.results` setting. Redacted as a tool result is; under `block`, a
    /// JSON-RPC error says why (these results have no `isError`). No tool-call event: findings
    /// are logged (detector and location, never the text).
    pub(crate) fn answer_content(&self, line: Vec<u8>) {
        let Some(scan) = self.scan_result("resources/read or prompts/get", &line) else {
            self.reply(&line);
            return;
        };
        tracing::info!(detail = %scan.detail, "a secret in resource or prompt content");
        let policy_blocks = self
            .dlp_in_force()
            .is_some_and(|c| c.dlp.results == DlpResults::Block);
        if scan.blocked.is_some() || policy_blocks {
            let id = match crate::message::classify(&line) {
                Ok(crate::message::Message::Response { id, .. }) => Some(id.to_owned()),
                _ => None,
            };
            let text = format!(
                "Blocked by Thoth policy: content from MCP server \"{}\" carried a secret (or could \
                 not be scanned), so it was withheld (rule dlp.results).",
                self.server_name
            );
            self.reply(&crate::respond::error(
                id.as_deref(),
                crate::message::code::INTERNAL_ERROR,
                &text,
            ));
            return;
        }
        self.reply(scan.to_client.as_deref().unwrap_or(&line));
    }

    /// Sends the server's answer to a forwarded call (scanned first), its `TOOL_CALL_POST`
    /// queued first. `session_tools`: when the caller already read them.
    pub(crate) fn answer_forwarded(
        &self,
        call: (String, String, Arc<Decided>, Instant),
        line: Vec<u8>,
        session_tools: Option<Arc<Vec<String>>>,
    ) {
        let (request_id, tool, mut decided, started) = call;
        let (to_client, for_event, detail) = match self.scan_result(&tool, &line) {
            None => (Arc::new(line), None, None),
            Some(s) => {
                if let Some(why) = s.blocked {
                    tracing::info!(tool = %tool, rule = "dlp.results", "{why}");
                    let d = Arc::make_mut(&mut decided);
                    d.action = thoth_proto::Action::Deny;
                    d.decision.action = thoth_policy::Action::Deny;
                    d.decision.rule = "dlp.results".into();
                    d.decision.reason = why;
                }
                let to_client = Arc::new(s.to_client.unwrap_or(line));
                (to_client, Some(Arc::new(s.for_event)), Some(s.detail))
            }
        };
        if self.events.enabled() {
            let session_tools =
                session_tools.unwrap_or_else(|| self.state().tools_snapshot.clone());
            self.events.push(Record::Post {
                at: SystemTime::now(),
                request_id,
                tool,
                response: Some(for_event.unwrap_or_else(|| to_client.clone())),
                decided,
                session_tools,
                latency_us: started.elapsed().as_micros() as u64,
                detail,
            });
        }
        self.reply(&to_client);
    }
}
