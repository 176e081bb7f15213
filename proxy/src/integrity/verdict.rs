//! One tool of a `tools/list` result: what the proxy observed, how it compares with its pinned
//! definition (the baseline: a policy pin, the agent's verdict or the session's book), and the
//! treatment and events that follow from the policy's `on_tool_change` / `on_suspicious_tool`.

use serde_json::{Value, json};
use thoth_policy::{Integrity, OnSuspiciousTool, OnToolChange, TrustedHints};
use thoth_proto::pins::{ToolDigest, pin_id, tool_digest};
use thoth_proto::{Action, EventType};

use super::poison::{Suspicion, suspicious};

/// Tools remembered per session; tools past this in a list are treated as unpinned (visible,
/// no event) and logged.
pub const MAX_TOOLS: usize = 4096;
/// Suspicion reasons kept per event.
const MAX_REASONS: usize = 16;
/// Longest description kept (bytes), for admins to review a definition.
pub const MAX_DESCRIPTION: usize = 2048;

/// One tool as the server listed it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Its digests.
    pub digest: ToolDigest,
    /// What its annotations claim (trusted only once the definition is accepted).
    pub hints: TrustedHints,
    /// Signs of poisoning.
    pub suspicions: Vec<Suspicion>,
    /// Its description, cut to [`MAX_DESCRIPTION`] bytes on a char boundary (untrusted text).
    pub description: String,
}

/// Reads one element of a `tools/list` result; `None` when it has no name.
pub fn observe(tool: &Value) -> Option<Observed> {
    let digest = tool_digest(tool)?;
    let ann = tool.get("annotations");
    let flag = |k: &str| ann.and_then(|a| a.get(k)).and_then(Value::as_bool);
    let read_only = flag("readOnlyHint") == Some(true);
    let hints = TrustedHints {
        read_only,
        destructive: !read_only && flag("destructiveHint") != Some(false),
    };
    Some(Observed {
        digest,
        hints,
        suspicions: suspicious(tool),
        description: clip(
            tool.get("description")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            MAX_DESCRIPTION,
        ),
    })
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary; when `s` is
/// longer, it ends with a marker saying how much was cut (within `max`), so an admin reading it
/// knows it is not the whole text.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let marker = format!(" …[cut: {} bytes in all]", s.len());
    let mut end = max.saturating_sub(marker.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &s[..end])
}

/// How a definition compares with the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The server's first list: pinned now (first use).
    New,
    /// The pinned definition.
    Same,
    /// A tool the pinned server did not offer before.
    Added,
    /// Differs from the pinned definition.
    Changed,
    /// An admin rejected exactly this definition.
    Rejected,
}

impl State {
    /// The agent's word for it.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "new" => State::New,
            "same" => State::Same,
            "added" => State::Added,
            "changed" => State::Changed,
            "rejected" => State::Rejected,
            _ => return None,
        })
    }
}

/// One tool's comparison with its pin.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub state: State,
    /// The digest pinned before ("" for new and added tools).
    pub pinned: String,
    /// Where the pin came from: `policy`, `first_use`, `admin`, `user_approval`.
    pub source: String,
    /// The definition is the pinned one and an admin (or the policy) accepted it.
    pub accepted: bool,
    /// What changed (`description`, `schema`, `annotations`).
    pub changes: Vec<String>,
    /// Whether a CHANGED event may be raised (the agent says whether it is the first report).
    pub first_report: bool,
}

/// What the session does with a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Treatment {
    /// Listed and callable.
    Visible,
    /// Left out of `tools/list`; calls denied under `rule` for `why`.
    Hidden { rule: &'static str, why: String },
    /// Listed; calls need approval.
    StepUp { why: String },
}

/// A tool's current status in the session.
#[derive(Debug, Clone)]
pub struct ToolStatus {
    /// The digest last listed.
    pub digest: String,
    pub treatment: Treatment,
    /// Annotations to pass to the evaluator: only for an accepted definition.
    pub hints: Option<TrustedHints>,
}

/// An event to raise (once per session per tool and digest: the caller checks).
#[derive(Debug, Clone)]
pub struct Raise {
    pub kind: EventType,
    pub tool: String,
    /// What the event is about, for the once-per-session check.
    pub digest: String,
    pub action: Action,
    pub rule: &'static str,
    pub reason: String,
    pub detail: Value,
}

fn tool_change_word(o: OnToolChange) -> &'static str {
    match o {
        OnToolChange::Allow => "allow",
        OnToolChange::Warn => "warn",
        OnToolChange::Block => "block",
        OnToolChange::StepUp => "step_up",
    }
}

fn suspicious_word(o: OnSuspiciousTool) -> &'static str {
    match o {
        OnSuspiciousTool::Allow => "allow",
        OnSuspiciousTool::Warn => "warn",
        OnSuspiciousTool::Block => "block",
    }
}

/// The treatment of one listed tool and the events it calls for. `approved`: a human approved
/// this very definition in this session (a `step_up` on_tool_change).
pub fn judge(
    server_key: &str,
    seen: &Observed,
    base: &Baseline,
    policy: &Integrity<'_>,
    approved: bool,
) -> (ToolStatus, Vec<Raise>) {
    let name = &seen.digest.name;
    let digest = &seen.digest.digest;
    let id = pin_id(server_key, name, digest);
    let what = if base.changes.is_empty() {
        "definition".to_owned()
    } else {
        base.changes.join(", ")
    };
    let accept =
        format!("an administrator must accept the new definition: `thothctl pins accept {id}`");
    let mut raises = Vec::new();
    let mut treatment = Treatment::Visible;
    let changed = matches!(base.state, State::Added | State::Changed);
    let reason = match base.state {
        State::Added => format!(
            "the tool \"{name}\" was added to a server whose tool list was pinned; {accept}"
        ),
        State::Rejected => format!(
            "this definition of the tool \"{name}\" was rejected by an administrator \
             (pin {id}); it stays held back until the server offers an accepted one"
        ),
        _ => format!("the {what} of the tool \"{name}\" changed since it was pinned; {accept}"),
    };
    let on_change = policy.on_tool_change;
    if base.state == State::Rejected {
        treatment = Treatment::Hidden {
            rule: "pins.rejected",
            why: reason.clone(),
        };
    } else if changed && !approved {
        match on_change {
            OnToolChange::Block => {
                treatment = Treatment::Hidden {
                    rule: "on_tool_change",
                    why: reason.clone(),
                }
            }
            OnToolChange::StepUp => {
                treatment = Treatment::StepUp {
                    why: reason.clone(),
                }
            }
            OnToolChange::Allow | OnToolChange::Warn => {}
        }
    }
    if (changed || base.state == State::Rejected) && base.first_report {
        let action = match (base.state, on_change) {
            (State::Rejected, _) | (_, OnToolChange::Block) => Action::Deny,
            (_, OnToolChange::Allow) => Action::Allow,
            (_, OnToolChange::Warn) => Action::Warn,
            (_, OnToolChange::StepUp) => Action::StepUp,
        };
        let mut changes = base.changes.clone();
        if base.state == State::Added {
            changes = vec!["added".to_owned()];
        }
        raises.push(Raise {
            kind: EventType::ToolDefinitionChanged,
            tool: name.clone(),
            digest: digest.clone(),
            action,
            rule: "on_tool_change",
            reason: reason.clone(),
            detail: json!({
                "serverKey": server_key,
                "changes": changes,
                "oldDigest": base.pinned,
                "newDigest": digest,
                "pinSource": base.source,
                "onToolChange": tool_change_word(on_change),
                "pinId": id,
            }),
        });
    }
    // A definition that looks poisoned stays blocked after `thothctl pins accept` (an admin
    // reads a description cut to 2 KiB, not the whole definition): only a pin written in the
    // policy, or the policy's own `on_suspicious_tool`, lets it through.
    let policy_pinned = base.accepted && base.source == "policy";
    if !seen.suspicions.is_empty() {
        let blocks = policy.on_suspicious_tool == OnSuspiciousTool::Block && !policy_pinned;
        let why = format!(
            "the definition of the tool \"{name}\" looks poisoned ({}); an administrator can \
             let it through only by pinning it in the policy (servers[].pins: {name}: \
             \"sha256:{digest}\") or with on_suspicious_tool: warn",
            seen.suspicions
                .iter()
                .map(|s| s.kind)
                .collect::<Vec<_>>()
                .join(", ")
        );
        if blocks && !matches!(treatment, Treatment::Hidden { .. }) {
            treatment = Treatment::Hidden {
                rule: "on_suspicious_tool",
                why: why.clone(),
            };
        }
        let action = match policy.on_suspicious_tool {
            OnSuspiciousTool::Block if blocks => Action::Deny,
            OnSuspiciousTool::Warn => Action::Warn,
            _ => Action::Allow,
        };
        let reasons: Vec<Value> = seen
            .suspicions
            .iter()
            .take(MAX_REASONS)
            .map(|s| json!({"kind": s.kind, "excerpt": s.excerpt}))
            .collect();
        raises.push(Raise {
            kind: EventType::ToolDefinitionSuspicious,
            tool: name.clone(),
            digest: digest.clone(),
            action,
            rule: "on_suspicious_tool",
            reason: why,
            detail: json!({
                "serverKey": server_key,
                "digest": digest,
                "reasons": reasons,
                "onSuspiciousTool": suspicious_word(policy.on_suspicious_tool),
                "pinId": id,
            }),
        });
    }
    // Annotations of a definition that looks poisoned are never trusted, unless the policy pins
    // it.
    let trusted =
        base.accepted && base.state == State::Same && (seen.suspicions.is_empty() || policy_pinned);
    let status = ToolStatus {
        digest: digest.clone(),
        treatment,
        hints: trusted.then_some(seen.hints),
    };
    (status, raises)
}

/// The event for a pinned tool absent from a complete list.
pub fn removed(server_key: &str, tool: &str, old: &str, policy: &Integrity<'_>) -> Raise {
    let action = match policy.on_tool_change {
        OnToolChange::Allow => Action::Allow,
        _ => Action::Warn,
    };
    Raise {
        kind: EventType::ToolDefinitionChanged,
        tool: tool.to_owned(),
        digest: format!("removed:{old}"),
        action,
        rule: "on_tool_change",
        reason: format!("the tool \"{tool}\" was pinned and is no longer listed by the server"),
        detail: json!({
            "serverKey": server_key,
            "changes": ["removed"],
            "oldDigest": old,
            "newDigest": "",
            "pinSource": "",
            "onToolChange": tool_change_word(policy.on_tool_change),
        }),
    }
}

/// The baseline a policy pin gives: the pinned digest is accepted; any other is a change.
pub fn from_policy_pin(seen: &Observed, pin: &str) -> Baseline {
    let same = seen.digest.digest == pin;
    Baseline {
        state: if same { State::Same } else { State::Changed },
        pinned: pin.to_owned(),
        source: "policy".to_owned(),
        accepted: same,
        changes: Vec::new(),
        first_report: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thoth_policy::AnnotationRules;

    fn settings(on_suspicious_tool: OnSuspiciousTool) -> Integrity<'static> {
        Integrity {
            on_tool_change: OnToolChange::Warn,
            on_suspicious_tool,
            pins: None,
            annotations: AnnotationRules::default(),
        }
    }

    fn poisoned() -> Observed {
        let mut o = observe(&json!({"name": "weather", "description": "x",
            "annotations": {"readOnlyHint": true}}))
        .unwrap();
        o.suspicions = vec![Suspicion {
            kind: "hidden_instruction_tag",
            excerpt: "<IMPORTANT>".into(),
        }];
        o
    }

    fn base(state: State, accepted: bool) -> Baseline {
        Baseline {
            state,
            pinned: String::new(),
            source: "first_use".into(),
            accepted,
            changes: vec![],
            first_report: true,
        }
    }

    #[test]
    fn a_poisoned_definition_is_hidden_under_block_unless_the_policy_pins_it() {
        let o = poisoned();
        let (s, r) = judge(
            "k",
            &o,
            &base(State::New, false),
            &settings(OnSuspiciousTool::Block),
            false,
        );
        assert!(matches!(
            s.treatment,
            Treatment::Hidden {
                rule: "on_suspicious_tool",
                ..
            }
        ));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind, EventType::ToolDefinitionSuspicious);
        assert_eq!(r[0].action, Action::Deny);
        assert_eq!(r[0].detail["reasons"][0]["kind"], "hidden_instruction_tag");
        // First-use pins are not accepted: no hints.
        assert_eq!(s.hints, None);
        // Second review, finding 2: an admin's `thothctl pins accept` (who read a description
        // cut to 2 KiB) neither releases it nor makes its annotations trusted.
        let admin = Baseline {
            source: "admin".into(),
            ..base(State::Same, true)
        };
        let (s, r) = judge("k", &o, &admin, &settings(OnSuspiciousTool::Block), false);
        assert!(matches!(s.treatment, Treatment::Hidden { .. }));
        assert_eq!(r[0].action, Action::Deny);
        assert_eq!(s.hints, None);
        // A pin written in the policy does.
        let policy = Baseline {
            source: "policy".into(),
            ..base(State::Same, true)
        };
        let (s, r) = judge("k", &o, &policy, &settings(OnSuspiciousTool::Block), false);
        assert_eq!(s.treatment, Treatment::Visible);
        assert_eq!(r[0].action, Action::Allow);
        assert_eq!(s.hints.map(|h| h.read_only), Some(true));
        let (s, r) = judge(
            "k",
            &o,
            &base(State::New, false),
            &settings(OnSuspiciousTool::Warn),
            false,
        );
        assert_eq!(s.treatment, Treatment::Visible);
        assert_eq!(r[0].action, Action::Warn);
    }

    #[test]
    fn annotations_read_as_mcp_defines_them() {
        let h = |a: Value| {
            observe(&json!({"name": "t", "annotations": a}))
                .unwrap()
                .hints
        };
        assert_eq!(
            h(json!({})),
            TrustedHints {
                read_only: false,
                destructive: true
            }
        );
        assert_eq!(
            h(json!({"readOnlyHint": true})),
            TrustedHints {
                read_only: true,
                destructive: false
            }
        );
        assert_eq!(
            h(json!({"destructiveHint": false})),
            TrustedHints {
                read_only: false,
                destructive: false
            }
        );
        assert!(observe(&json!({"description": "no name"})).is_none());
    }
}
