//! The evaluator: a pure function of (policy, server, session state, call, time) → decision.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::annotations;
use crate::approval::{Approver, Remember};
use crate::decision::{Action, Decision, Mode};
use crate::document::{Constraint, Policy, SeqAction, ServerRule, UnknownServers};
use crate::pattern::{PathGlob, normalize_path};
use crate::session::SessionState;

/// One `tools/call`.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    /// `params.name`.
    pub tool: &'a str,
    /// `params.arguments` (`Value::Null` when absent).
    pub arguments: Arguments<'a>,
    /// The tool's annotations, only when its definition is pinned and accepted (`None`
    /// otherwise: unpinned or changed definitions are never trusted).
    pub hints: Option<crate::integrity::TrustedHints>,
}

/// The arguments of a call, as a decoded value or as the JSON text the client sent. Only the
/// members a constraint names are ever read: from text, without decoding the rest.
#[derive(Debug, Clone, Copy)]
pub enum Arguments<'a> {
    /// Decoded.
    Value(&'a Value),
    /// JSON text, already checked to be valid JSON (e.g. a `serde_json` `RawValue`).
    Json(&'a str),
}

impl<'a> From<&'a Value> for Arguments<'a> {
    fn from(v: &'a Value) -> Self {
        Arguments::Value(v)
    }
}

impl Arguments<'_> {
    /// The argument at a dotted path (`a.b`: member `b` of member `a`), as `Value::get` reads
    /// it (a duplicate member: the last one); `None` when some step is missing or not an object.
    fn lookup(&self, path: &str) -> Option<Cow<'_, Value>> {
        match self {
            Arguments::Value(v) => {
                let mut value = Some(*v);
                for key in path.split('.') {
                    value = value.and_then(|v| v.get(key));
                }
                value.map(Cow::Borrowed)
            }
            Arguments::Json(text) => {
                let mut raw: &str = text;
                for key in path.split('.') {
                    raw = member(raw, key)?;
                }
                serde_json::from_str(raw).ok().map(Cow::Owned)
            }
        }
    }
}

/// The text of the last member named `key` of the JSON object `object`; `None` when there is
/// none or `object` is not an object.
fn member<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    let mut de = serde_json::Deserializer::from_str(object);
    Member(key)
        .deserialize(&mut de)
        .ok()
        .flatten()
        .map(RawValue::get)
}

struct Member<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<Key<'de>>()? {
            if k.0 == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A member name, borrowed unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Which entry of a policy governs one server: resolved once per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    /// The server's name.
    pub name: String,
    /// Index of the governing entry in `policy.servers`; `None` for an unknown server.
    pub entry: Option<usize>,
}

impl Policy {
    /// Finds the entry that governs the server `name` launched with `argv` (program first).
    pub fn resolve(&self, name: &str, argv: &[String]) -> ServerView {
        let entry = self.servers.iter().position(|rule| {
            rule.name.as_ref().is_none_or(|g| g.is_match(name))
                && rule.command.as_ref().is_none_or(|g| {
                    argv.iter().any(|tok| {
                        g.is_match(tok) || strip_npm_version(tok).is_some_and(|t| g.is_match(t))
                    })
                })
        });
        ServerView {
            name: name.to_owned(),
            entry,
        }
    }

    /// Whether `tools/list` should show `tool` of this server.
    pub fn tool_visible(&self, server: &ServerView, tool: &str) -> bool {
        let Some(rule) = server.entry.and_then(|i| self.servers.get(i)) else {
            return true;
        };
        if !rule.hide_unapproved {
            return true;
        }
        !rule.deny.iter().any(|g| g.is_match(tool))
            && (rule.approved_scope.iter().any(|g| g.is_match(tool))
                || rule.step_up.iter().any(|g| g.is_match(tool)))
    }

    /// Whether any entry of this server hides tools (so `tools/list` replies must be inspected).
    pub fn filters_tools(&self, server: &ServerView) -> bool {
        server
            .entry
            .and_then(|i| self.servers.get(i))
            .is_some_and(|r| r.hide_unapproved)
    }

    /// The approval timeout that applies to this server.
    pub fn approval_timeout(&self, server: &ServerView) -> Duration {
        let secs = self
            .entry(server)
            .and_then(|r| r.approval_timeout_secs)
            .unwrap_or(self.defaults.approval_timeout_secs);
        Duration::from_secs(secs)
    }

    /// Who may approve a call on this server: the entry's `approvers`, else `defaults.approvers`
    /// (never empty in a parsed policy).
    pub fn approvers(&self, server: &ServerView) -> Vec<Approver> {
        self.entry(server)
            .and_then(|r| r.approvers.clone())
            .unwrap_or_else(|| self.defaults.approvers.clone())
    }

    /// How long an approval on this server covers the identical call again: the entry's
    /// `approval_remember`, else `defaults.approval_remember`.
    pub fn approval_remember(&self, server: &ServerView) -> Remember {
        self.entry(server)
            .and_then(|r| r.approval_remember)
            .unwrap_or(self.defaults.approval_remember)
    }

    fn entry(&self, server: &ServerView) -> Option<&ServerRule> {
        server.entry.and_then(|i| self.servers.get(i))
    }
}

/// `@scope/pkg@1.2.3` → `@scope/pkg`, `pkg@latest` → `pkg`; `None` when there is no version.
fn strip_npm_version(tok: &str) -> Option<&str> {
    let at = tok.rfind('@')?;
    (at > 0).then(|| &tok[..at])
}

/// How a path argument is resolved before `path_glob` constraints match it. The policy does no
/// IO: the caller that can see the file system (the proxy) resolves, the evaluator matches.
pub trait PathResolver {
    /// Every path `path` may designate when the server uses it (with symlinks followed), each
    /// absolute or, for a relative `path` that stays in the server's directory, relative to it;
    /// `Err` says why it cannot be resolved (the constraint then refuses the call).
    fn resolve(&self, path: &str) -> Result<Vec<String>, ResolveError>;
}

/// Why a path cannot be resolved ([`PathResolver::resolve`]).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Taken lexically, the path climbs above its root (or holds a NUL byte).
    #[error("it climbs above its root or holds a NUL byte")]
    OutsideRoot,
    /// The path holds a NUL byte.
    #[error("it holds a NUL byte")]
    Nul,
    /// The working directory, which a relative path starts from, cannot be read.
    #[error("the working directory cannot be read: {0}")]
    WorkingDir(#[source] std::io::Error),
    /// More symbolic links than the kernel follows.
    #[error("too many symbolic links")]
    TooManyLinks,
    /// A component cannot be looked up.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path looked up.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Lexical resolution only (`.`, `..` and repeated separators folded; no file system): what a
/// policy means where there is no file system to look at (`thoth policy explain`, simulation).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lexical;

impl PathResolver for Lexical {
    fn resolve(&self, path: &str) -> Result<Vec<String>, ResolveError> {
        normalize_path(path)
            .map(|p| vec![p])
            .ok_or(ResolveError::OutsideRoot)
    }
}

/// Decides one call, path arguments resolved lexically ([`Lexical`]). Pure: the same arguments
/// always give the same decision. `now` is a monotonic instant: sequence windows are measured on
/// it, so a wall clock set back or forward cannot open or close them.
pub fn evaluate(
    policy: &Policy,
    server: &ServerView,
    session: &SessionState,
    call: &ToolCall<'_>,
    now: Instant,
) -> Decision {
    evaluate_with(policy, server, session, call, now, &Lexical)
}

/// Decides one call, path arguments resolved by `paths` (the proxy follows symlinks).
pub fn evaluate_with(
    policy: &Policy,
    server: &ServerView,
    session: &SessionState,
    call: &ToolCall<'_>,
    now: Instant,
    paths: &dyn PathResolver,
) -> Decision {
    let Some((index, rule)) = server
        .entry
        .and_then(|i| policy.servers.get(i).map(|r| (i, r)))
    else {
        return unknown_server(policy.defaults.unknown_servers, &server.name);
    };
    let mode: Mode = rule
        .enforcement
        .unwrap_or(policy.defaults.enforcement)
        .into();
    // One allocation per rule name: the part is formatted straight into it.
    let at = |part: fmt::Arguments<'_>| format!("servers[{index}].{part}");
    let tool = call.tool;

    let mut verdict = scope_verdict(rule, call, paths, &at);
    if verdict.out_of_scope {
        verdict = escalate(policy, rule, mode, session, verdict, &server.name);
    }
    if let Some(seq) = sequence_verdict(rule, session, tool, now, &at)
        && seq.action > verdict.action
    {
        verdict = Decision {
            out_of_scope: verdict.out_of_scope,
            ..seq
        };
    }
    if let Some(d) = annotations::destructive_verdict(rule, call.hints, tool, &at)
        && d.action > verdict.action
    {
        verdict = Decision {
            out_of_scope: verdict.out_of_scope,
            ..d
        };
    }
    verdict.mode = mode;
    if mode == Mode::Observe && matches!(verdict.action, Action::StepUp | Action::Deny) {
        verdict.action = Action::WouldBlock;
    }
    verdict
}

fn unknown_server(treatment: UnknownServers, name: &str) -> Decision {
    let (action, mode) = match treatment {
        UnknownServers::Allow => (Action::Allow, Mode::Allow),
        UnknownServers::Observe => (Action::WouldBlock, Mode::Observe),
        UnknownServers::Block => (Action::Deny, Mode::Block),
    };
    Decision {
        action,
        mode,
        rule: "defaults.unknown_servers".into(),
        reason: format!("server \"{name}\" is not covered by any entry of the policy"),
        out_of_scope: true,
    }
}

/// Deny list, constraints, step-up list and approved scope, in that order. An out-of-scope
/// verdict comes back as `Deny` with `out_of_scope` set, for [`escalate`] to adjust by mode.
fn scope_verdict(
    rule: &ServerRule,
    call: &ToolCall<'_>,
    paths: &dyn PathResolver,
    at: &dyn Fn(fmt::Arguments<'_>) -> String,
) -> Decision {
    let tool = call.tool;
    let decision = |action, rule: String, reason: String, out_of_scope| Decision {
        action,
        mode: Mode::Block,
        rule,
        reason,
        out_of_scope,
    };
    if let Some((i, g)) = rule.deny.iter().enumerate().find(|(_, g)| g.is_match(tool)) {
        return decision(
            Action::Deny,
            at(format_args!("deny[{i}]")),
            format!("tool \"{tool}\" is on the deny list (pattern \"{g}\")"),
            false,
        );
    }
    for (i, c) in rule.constraints.iter().enumerate() {
        if !c.tool.is_match(tool) {
            continue;
        }
        if let Err(why) = check_constraint(c, &call.arguments, paths) {
            return decision(
                Action::Deny,
                at(format_args!("constraints[{i}]")),
                why.to_string(),
                true,
            );
        }
    }
    if let Some((i, g)) = rule
        .step_up
        .iter()
        .enumerate()
        .find(|(_, g)| g.is_match(tool))
    {
        return decision(
            Action::StepUp,
            at(format_args!("step_up[{i}]")),
            format!("tool \"{tool}\" always requires human approval (pattern \"{g}\")"),
            false,
        );
    }
    if let Some(i) = rule.approved_scope.iter().position(|g| g.is_match(tool)) {
        return decision(
            Action::Allow,
            at(format_args!("approved_scope[{i}]")),
            format!("tool \"{tool}\" is in the approved scope"),
            false,
        );
    }
    if let Some(d) = annotations::read_only_approval(rule, call.hints, tool, at) {
        return d;
    }
    decision(
        Action::Deny,
        at(format_args!("approved_scope")),
        format!("tool \"{tool}\" is not in the approved scope"),
        true,
    )
}

/// Turns an out-of-scope verdict into the mode's answer.
fn escalate(
    policy: &Policy,
    rule: &ServerRule,
    mode: Mode,
    session: &SessionState,
    verdict: Decision,
    server: &str,
) -> Decision {
    let reason = format!("{} of server \"{server}\"", verdict.reason);
    let action = match mode {
        Mode::Observe => Action::WouldBlock,
        Mode::Block | Mode::Allow => Action::Deny,
        Mode::StepUp => Action::StepUp,
        Mode::Progressive => {
            let p = rule.progressive.unwrap_or(policy.defaults.progressive);
            let n = session.out_of_scope_calls().saturating_add(1);
            let (action, note) = if n <= p.warn {
                (
                    Action::Warn,
                    format!("out-of-scope call {n} of {} allowed with a warning", p.warn),
                )
            } else if n <= p.block_after {
                (
                    Action::StepUp,
                    format!(
                        "out-of-scope call {n} needs approval (calls after {} are blocked)",
                        p.block_after
                    ),
                )
            } else {
                (
                    Action::Deny,
                    format!(
                        "out-of-scope call {n} is past this session's limit of {}",
                        p.block_after
                    ),
                )
            };
            return Decision {
                action,
                reason: format!("{reason}; {note}"),
                ..verdict
            };
        }
    };
    Decision {
        action,
        reason,
        ..verdict
    }
}

fn sequence_verdict(
    rule: &ServerRule,
    session: &SessionState,
    tool: &str,
    now: Instant,
    at: &dyn Fn(fmt::Arguments<'_>) -> String,
) -> Option<Decision> {
    let mut best: Option<Decision> = None;
    for (i, seq) in rule.sequences.iter().enumerate() {
        if !seq.then.is_match(tool) {
            continue;
        }
        let Some(prev) = session.last_call_matching(&seq.after, now) else {
            continue;
        };
        if let Some(window) = seq.within_secs {
            let age = now.saturating_duration_since(prev);
            if age > Duration::from_secs(window) {
                continue;
            }
        }
        let action = match seq.action {
            SeqAction::Warn => Action::Warn,
            SeqAction::StepUp => Action::StepUp,
            SeqAction::Deny => Action::Deny,
        };
        if best.as_ref().is_some_and(|b| b.action >= action) {
            continue;
        }
        let why = seq.reason.as_deref().unwrap_or("sequence rule");
        best = Some(Decision {
            action,
            mode: Mode::Block,
            rule: at(format_args!("sequences[{i}]")),
            reason: format!(
                "tool \"{tool}\" called after a tool matching \"{}\" in this session: {why}",
                seq.after
            ),
            out_of_scope: false,
        });
    }
    best
}

/// How a call broke a constraint: which argument, and how (the reason of the decision).
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error("argument \"{arg}\" is required by a constraint but is missing")]
    Missing { arg: String },
    #[error("argument \"{arg}\" = {shown} is not a path string")]
    NotAPath { arg: String, shown: String },
    #[error(
        "argument \"{arg}\" = {shown} cannot be checked against the allowed paths {allowed:?}: {why}"
    )]
    Unresolvable {
        arg: String,
        shown: String,
        allowed: Vec<String>,
        why: ResolveError,
    },
    #[error("argument \"{arg}\" = {shown}{via} is outside the allowed paths {allowed:?}")]
    OutsidePaths {
        arg: String,
        shown: String,
        via: String,
        allowed: Vec<String>,
    },
    #[error("argument \"{arg}\" = {shown} does not match the pattern /{pattern}/")]
    NoMatch {
        arg: String,
        shown: String,
        pattern: String,
    },
    #[error("argument \"{arg}\" = {shown} is not one of the allowed values {allowed}")]
    NotOneOf {
        arg: String,
        shown: String,
        allowed: Value,
    },
}

/// Checks one constraint; `Err` says which argument broke it and how.
fn check_constraint(
    c: &Constraint,
    args: &Arguments<'_>,
    paths: &dyn PathResolver,
) -> Result<(), Broken> {
    let Some(value) = args.lookup(&c.arg).filter(|v| !v.is_null()) else {
        return if c.allow_missing {
            Ok(())
        } else {
            Err(Broken::Missing { arg: c.arg.clone() })
        };
    };
    match value.as_ref() {
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| check_value(c, item, paths)),
        v => check_value(c, v, paths),
    }
}

fn check_value(c: &Constraint, v: &Value, paths: &dyn PathResolver) -> Result<(), Broken> {
    // Shown only in a reason: rendered when a check fails, never on the way to an allow.
    let shown = || shorten(v);
    let arg = || c.arg.clone();
    if let Some(globs) = &c.path_glob {
        let Some(s) = v.as_str() else {
            return Err(Broken::NotAPath {
                arg: arg(),
                shown: shown(),
            });
        };
        let list = || -> Vec<String> { globs.iter().map(|g| g.as_str().to_owned()).collect() };
        let resolved = paths.resolve(s).map_err(|why| Broken::Unresolvable {
            arg: arg(),
            shown: shown(),
            allowed: list(),
            why,
        })?;
        // Every place the path may designate must be allowed.
        for r in &resolved {
            if !globs.iter().any(|g| path_allowed(g, r, paths)) {
                let via = if r != s {
                    format!(" resolves to \"{r}\", which")
                } else {
                    String::new()
                };
                return Err(Broken::OutsidePaths {
                    arg: arg(),
                    shown: shown(),
                    via,
                    allowed: list(),
                });
            }
        }
    }
    if let Some(re) = &c.regex {
        let ok = v.as_str().is_some_and(|s| re.is_match(s));
        if !ok {
            return Err(Broken::NoMatch {
                arg: arg(),
                shown: shown(),
                pattern: re.as_str().to_owned(),
            });
        }
    }
    if let Some(allowed) = &c.one_of
        && !allowed.contains(v)
    {
        return Err(Broken::NotOneOf {
            arg: arg(),
            shown: shown(),
            allowed: Value::Array(allowed.clone()),
        });
    }
    Ok(())
}

/// Whether the resolved path `r` is inside `g`. The glob names paths as the admin wrote them; when
/// its fixed leading directory itself resolves elsewhere (`/tmp` → `/private/tmp` on macOS), a
/// path under the resolved directory is matched as the same path under the written one.
fn path_allowed(g: &PathGlob, r: &str, paths: &dyn PathResolver) -> bool {
    if g.is_match(r) {
        return true;
    }
    let Some(prefix) = g.literal_prefix() else {
        return false;
    };
    let Ok(real) = paths.resolve(prefix) else {
        return false;
    };
    real.iter().any(|real| {
        real != prefix
            && r.strip_prefix(real.as_str())
                .filter(|rest| rest.starts_with('/'))
                .is_some_and(|rest| g.is_match(&format!("{prefix}{rest}")))
    })
}

/// A value as shown in a reason: JSON, cut to a readable length.
fn shorten(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 120 {
        return s;
    }
    let mut end = 117;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_read_from_text_as_from_the_value() {
        let cases = [
            (r#"{"a":1,"a":2}"#, "a"),
            (r#"{"p\u0061th":"/x","b":[1]}"#, "path"),
            (r#"{"a":{"b":{"c":"deep"}},"a2":0}"#, "a.b.c"),
            (r#"{"a":[{"b":1}]}"#, "a.b"),
            (r#"{"a":"s"}"#, "a.b"),
            (r#"[1,2]"#, "a"),
            (r#"null"#, "a"),
            (r#"{"a":null}"#, "a"),
            (r#"{}"#, "a"),
            (r#"{"x":{"y":1},"x":{"z":2}}"#, "x.z"),
        ];
        for (text, path) in cases {
            let value: Value = serde_json::from_str(text).unwrap();
            let from_value = Arguments::Value(&value).lookup(path).map(Cow::into_owned);
            let from_text = Arguments::Json(text).lookup(path).map(Cow::into_owned);
            assert_eq!(from_value, from_text, "{text} at {path}");
        }
    }
}
