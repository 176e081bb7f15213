//! A manifest's platform overrides, rewritten one by one: an override that sets `command` and
//! `args` is an entry of its own; one that sets only `command` or only `args` inherits the rest
//! from the base (see the module doc of `manifest` for the wrapped forms).

use jsonc_parser::cst::CstObject;
use serde_json::{Map, Value};

use crate::format::cst::{
    self, add_args, element, prepend, raw, raw_string, raws, remove_added_args, remove_first,
    replace_after, replace_first, set_raw, set_string,
};
use crate::format::json;
use crate::format::model::{Ctx, Op, Report};
use crate::wrapper::{self, Entry, Markers};

/// Whether a JSON value is truthy in JavaScript (Claude reads overrides with `||`).
pub(super) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// What a platform override sets, and whether it is wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only `env` (or nothing): runs the base.
    Neither,
    /// `command` and `args`: an entry of its own.
    Both,
    /// Only `command`: inherits the base's arguments.
    CommandOnly { wrapped: bool },
    /// Only `args`: inherits the base's command.
    ArgsOnly { wrapped: bool },
}

fn classify(ov: &Map<String, Value>) -> Result<(Kind, Option<Vec<String>>), String> {
    let cmd = match ov.get("command") {
        Some(v) if truthy(v) => match v.as_str() {
            Some(c) => Some(c),
            None => return Err("\"command\" is not a string".into()),
        },
        _ => None,
    };
    let args: Option<Vec<String>> = match ov.get("args") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or("\"args\" holds something other than strings")?,
        ),
        Some(v) if !truthy(v) && cmd.is_none() => None,
        Some(v) if !truthy(v) => {
            return Err(format!(
                "\"args\" is {v}: which arguments run is ambiguous; not touched"
            ));
        }
        Some(_) => return Err("\"args\" is not an array".into()),
    };
    let head_markers = |a: &[String]| {
        (a.first().map(String::as_str) == Some("run"))
            .then(|| wrapper::split_wrapped(a).map(|(_, _, m)| m))
            .flatten()
    };
    let kind = match (cmd, &args) {
        (None, None) => Kind::Neither,
        (Some(c), Some(a)) => match head_markers(a) {
            Some(m) if wrapper::is_thoth_path(c) && m.no_command => {
                return Err("a thoth wrapper marked --no-command, with a command".into());
            }
            Some(m) if wrapper::is_thoth_path(c) && m.no_args => {
                Kind::CommandOnly { wrapped: true }
            }
            _ => Kind::Both,
        },
        (Some(_), None) => Kind::CommandOnly { wrapped: false },
        (None, Some(a)) => Kind::ArgsOnly {
            wrapped: head_markers(a).is_some_and(|m| m.no_command && !m.no_args),
        },
    };
    Ok((kind, args))
}

/// Applies the rewrite to one platform override (`site`; `ov` its value).
pub(super) fn override_one(
    site: &Site<'_>,
    ov: &Map<String, Value>,
    label: String,
    report: &mut Report,
) {
    let (kind, args) = match classify(ov) {
        Ok(k) => k,
        Err(why) => {
            report.skipped.push((label, why));
            return;
        }
    };
    let args = args.unwrap_or_default();
    let command = ov.get("command").and_then(Value::as_str).unwrap_or("");
    match kind {
        Kind::Neither => {}
        Kind::Both => {
            let entry = Entry::from_json(&Value::Object(ov.clone()));
            json::edit_entry(
                site.obj,
                &entry,
                site.server,
                label,
                site.op,
                site.ctx,
                report,
            );
        }
        Kind::CommandOnly { wrapped } => site.command_only(command, &args, wrapped, label, report),
        Kind::ArgsOnly { wrapped } => site.args_only(&args, wrapped, label, report),
    }
}

/// A platform override being rewritten: its syntax node, the server's name, the base's original
/// command line, and the rewrite.
#[derive(Clone, Copy)]
pub(super) struct Site<'a> {
    pub(super) obj: &'a CstObject,
    pub(super) server: &'a str,
    pub(super) base: Option<&'a (String, Option<Vec<String>>)>,
    pub(super) op: &'a Op,
    pub(super) ctx: &'a Ctx<'a>,
}

/// The position of `--` in a wrapper's arguments (classified as wrapped: it has one).
fn sep_of(args: &[String]) -> usize {
    args.iter().position(|a| a == "--").unwrap_or(0)
}

impl Site<'_> {
    /// Strict drift of a wrapper's head, in words.
    fn head_drift(&self, args: &[String]) -> Option<String> {
        match self.op {
            Op::Wrap {
                extra,
                strict: true,
                ..
            } => wrapper::wrapper_difference(self.server, self.ctx.client, args, extra),
            _ => None,
        }
    }

    /// An override that sets only `command` (see the module doc).
    fn command_only(
        &self,
        command: &str,
        args: &[String],
        wrapped: bool,
        label: String,
        report: &mut Report,
    ) {
        let inherits = || self.base.map(|(_, a)| a.clone().unwrap_or_default());
        match (self.op, wrapped) {
            (Op::Unwrap, false) => {}
            (Op::Unwrap, true) => {
                let sep = sep_of(args);
                let raw = cst::array(self.obj, "args")
                    .and_then(|a| element(&a, sep + 1))
                    .map(|l| l.raw_value());
                let Some(raw) = raw else {
                    report.skipped.push((
                        label,
                        "wrapped, but its original command cannot be read".into(),
                    ));
                    return;
                };
                set_raw(self.obj, "command", &raw);
                remove_added_args(self.obj);
                report.unwrapped.push(label);
            }
            (Op::Wrap { thoth, extra, .. }, false) => {
                let Some(suffix) = inherits() else {
                    report.skipped.push((
                        label,
                        "sets only \"command\", and the base's arguments it inherits cannot be read"
                            .into(),
                    ));
                    return;
                };
                let markers = Markers {
                    no_args: true,
                    no_command: false,
                };
                let mut items = raws(&wrapper::canonical_prefix(
                    self.server,
                    self.ctx.client,
                    extra,
                    markers,
                ));
                items.push(raw_string(self.obj, "command").unwrap_or_else(|| raw(command)));
                items.extend(raws(&suffix));
                add_args(self.obj, thoth, &items);
                report.wrapped.push(label);
            }
            (
                Op::Wrap {
                    thoth,
                    extra,
                    strict,
                },
                true,
            ) => {
                let Some(want) = inherits() else {
                    report.skipped.push((
                        label,
                        "wrapped, and the base's arguments it inherits cannot be read".into(),
                    ));
                    return;
                };
                let sep = sep_of(args);
                let mut diffs = Vec::new();
                if *strict && command != thoth {
                    diffs.push(format!("command {command} instead of {thoth}"));
                }
                let head = self.head_drift(args);
                diffs.extend(head.clone());
                let stale = args.get(sep + 2..).unwrap_or(&[]) != want.as_slice();
                if stale {
                    diffs.push("the base's arguments it inherits changed".into());
                }
                if diffs.is_empty() {
                    if command == thoth {
                        report.already.push(label);
                    } else {
                        set_string(self.obj, "command", thoth);
                        report.updated.push(label);
                    }
                    return;
                }
                set_string(self.obj, "command", thoth);
                if let Some(arr) = cst::array(self.obj, "args") {
                    if stale {
                        replace_after(&arr, sep + 1, &raws(&want));
                    }
                    if head.is_some() {
                        let m = wrapper::split_wrapped(args).map(|(_, _, m)| m);
                        let items = raws(&wrapper::canonical_prefix(
                            self.server,
                            self.ctx.client,
                            extra,
                            m.unwrap_or_default(),
                        ));
                        replace_first(&arr, sep + 1, &items);
                    }
                }
                report.rewrapped.push((label, diffs.join("; ")));
            }
        }
    }

    /// An override that sets only `args` (see the module doc).
    fn args_only(&self, args: &[String], wrapped: bool, label: String, report: &mut Report) {
        let markers = Markers {
            no_args: false,
            no_command: true,
        };
        let Some(arr) = cst::array(self.obj, "args") else {
            report
                .skipped
                .push((label, "cannot locate its \"args\"".into()));
            return;
        };
        match (self.op, wrapped) {
            (Op::Unwrap, false) => {}
            (Op::Unwrap, true) => {
                remove_first(&arr, sep_of(args) + 2);
                report.unwrapped.push(label);
            }
            (Op::Wrap { extra, .. }, wrapped) => {
                let Some((base_cmd, _)) = self.base else {
                    report.skipped.push((
                        label,
                        "sets only \"args\", and the base's command it inherits cannot be read"
                            .into(),
                    ));
                    return;
                };
                let mut diffs = Vec::new();
                let head = if wrapped {
                    let sep = sep_of(args);
                    let head = self.head_drift(args);
                    diffs.extend(head.clone());
                    if args.get(sep + 1) != Some(base_cmd) {
                        diffs.push("the base's command it inherits changed".into());
                    }
                    if diffs.is_empty() {
                        report.already.push(label);
                        return;
                    }
                    match head {
                        Some(_) => {
                            wrapper::canonical_head(self.server, self.ctx.client, extra, markers)
                        }
                        None => args[..sep].to_vec(),
                    }
                } else {
                    wrapper::canonical_head(self.server, self.ctx.client, extra, markers)
                };
                let mut items = raws(&head);
                items.push(raw("--"));
                items.push(raw(base_cmd));
                if wrapped {
                    replace_first(&arr, sep_of(args) + 2, &items);
                    report.rewrapped.push((label, diffs.join("; ")));
                } else {
                    prepend(&arr, &items);
                    report.wrapped.push(label);
                }
            }
        }
    }
}
