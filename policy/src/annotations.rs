//! The evaluator's use of a server entry's `annotations:` rules. Only annotations of a
//! definition that is pinned and accepted reach here ([`ToolCall::hints`](crate::ToolCall)):
//! with no hints, these rules never change a decision.

use std::fmt;

use crate::decision::{Action, Decision, Mode};
use crate::document::ServerRule;
use crate::integrity::{DestructiveUse, ReadOnlyUse, TrustedHints};

/// `read_only: approve`: a tool the approved scope does not name, whose accepted definition is
/// read-only, is allowed as if it were in the approved scope. Asked only after the deny list,
/// the constraints and the step-up list have had their say.
pub(crate) fn read_only_approval(
    rule: &ServerRule,
    hints: Option<TrustedHints>,
    tool: &str,
    at: &dyn Fn(fmt::Arguments<'_>) -> String,
) -> Option<Decision> {
    let rules = rule.annotations?;
    if rules.read_only != ReadOnlyUse::Approve || !hints?.read_only {
        return None;
    }
    Some(Decision {
        action: Action::Allow,
        mode: Mode::Block,
        rule: at(format_args!("annotations.read_only")),
        reason: format!(
            "tool \"{tool}\" is read-only by its accepted definition (readOnlyHint: true), \
             which this server's policy approves"
        ),
        out_of_scope: false,
    })
}

/// `destructive: step_up | deny`: a call to a tool whose accepted definition is destructive
/// needs approval, or is denied, whatever the approved scope says. The caller keeps the
/// stronger of this and the scope's verdict (so the deny list still wins).
pub(crate) fn destructive_verdict(
    rule: &ServerRule,
    hints: Option<TrustedHints>,
    tool: &str,
    at: &dyn Fn(fmt::Arguments<'_>) -> String,
) -> Option<Decision> {
    let rules = rule.annotations?;
    let (action, what) = match rules.destructive {
        DestructiveUse::Ignore => return None,
        DestructiveUse::StepUp => (Action::StepUp, "requires human approval for"),
        DestructiveUse::Deny => (Action::Deny, "denies"),
    };
    if !hints?.destructive {
        return None;
    }
    Some(Decision {
        action,
        mode: Mode::Block,
        rule: at(format_args!("annotations.destructive")),
        reason: format!(
            "tool \"{tool}\" is destructive by its accepted definition (readOnlyHint not true, \
             destructiveHint not false), and this server's policy {what} destructive tools"
        ),
        out_of_scope: false,
    })
}
