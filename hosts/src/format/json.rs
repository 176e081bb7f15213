//! JSON and JSONC configs (Claude Desktop, Claude Code, Cursor, VS Code, Windsurf), on text:
//! wrap each stdio server of the file's server tables so it runs through `thoth run`, or unwrap
//! it back. Only the `command` and `args` of the entries change; every other byte (comments,
//! key order, indentation, line endings, escapes, a BOM, other keys) is kept, because the edit
//! is made on a concrete syntax tree (jsonc-parser) of the original text. The original command's
//! literal moves into `args` as written (escapes included) and back, so unwrapping restores the
//! original bytes.

use jsonc_parser::cst::CstObject;
use serde_json::Value;

use super::cst;
use super::model::{ConfigError, Ctx, Found, Op, Report, Rewritten, label};
use crate::wrapper::{self, Change, Decision, Entry};

/// A JSON-family format: strict JSON or JSONC, and where the server tables are (a path of keys
/// from the top; `*` stands for every key of an object, e.g. Claude Code's
/// `projects.*.mcpServers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonFormat {
    /// Comments and trailing commas allowed (VS Code).
    pub jsonc: bool,
    /// The server tables.
    pub tables: &'static [&'static [&'static str]],
}

/// Splits off a UTF-8 byte-order mark.
pub(crate) fn split_bom(text: &str) -> (&str, &str) {
    match text.strip_prefix('\u{feff}') {
        Some(rest) => ("\u{feff}", rest),
        None => ("", text),
    }
}

/// Parses a file's text (after any BOM): strictly (serde_json) or as JSONC, with the position
/// of the first error. An empty JSONC file is `null` (VS Code creates empty settings files).
pub fn parse(text: &str, jsonc: bool) -> Result<Value, ConfigError> {
    let body = split_bom(text).1;
    if jsonc {
        jsonc_parser::parse_to_serde_value::<Value>(body, &cst::options(true)).map_err(|e| {
            ConfigError::Invalid {
                line: e.line_display(),
                column: e.column_display(),
                message: e.kind().to_string(),
            }
        })
    } else {
        serde_json::from_str(body).map_err(|e| ConfigError::Invalid {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }
}

/// A server table located in both trees: the wildcard key it sits under (a Claude Code project),
/// its value, and its syntax node.
pub(crate) struct Table<'v> {
    pub(crate) scope: Option<String>,
    pub(crate) value: &'v serde_json::Map<String, Value>,
    pub(crate) cst: CstObject,
}

/// Every server table of `fmt` in `value` / `root` (the same text), as [`value_tables`] finds
/// them, each located in the syntax tree by its keys (the last property of a repeated key: the
/// one serde reads).
pub(crate) fn tables<'v>(
    value: &'v Value,
    root: &CstObject,
    fmt: &JsonFormat,
) -> Result<Vec<Table<'v>>, ConfigError> {
    value_tables(value, fmt)?
        .into_iter()
        .map(|t| {
            let mut node = root.clone();
            for (i, key) in t.keys.iter().enumerate() {
                node = cst::child(&node, key).ok_or_else(|| {
                    ConfigError::Shape(format!("cannot locate \"{}\"", t.keys[..=i].join(".")))
                })?;
            }
            Ok(Table {
                scope: t.scope,
                value: t.value,
                cst: node,
            })
        })
        .collect()
}

/// A server table found in the value: the keys that lead to it, the wildcard key it sits under,
/// and its value.
struct ValueTable<'v> {
    keys: Vec<String>,
    scope: Option<String>,
    value: &'v serde_json::Map<String, Value>,
}

/// The server tables of `fmt` in `value`. A fixed path whose container exists but is not an
/// object is a shape error; under a wildcard, odd values are passed over (last key first).
fn value_tables<'v>(
    value: &'v Value,
    fmt: &JsonFormat,
) -> Result<Vec<ValueTable<'v>>, ConfigError> {
    fn walk<'v>(
        value: &'v Value,
        path: &[&str],
        keys: Vec<String>,
        scope: Option<String>,
        out: &mut Vec<ValueTable<'v>>,
    ) -> Result<(), ConfigError> {
        let join = |key: &str| {
            let mut k = keys.clone();
            k.push(key.to_owned());
            k
        };
        let Some(obj) = value.as_object() else {
            return Ok(());
        };
        let Some((seg, rest)) = path.split_first() else {
            out.push(ValueTable {
                keys,
                scope,
                value: obj,
            });
            return Ok(());
        };
        if *seg == "*" {
            for (name, v) in obj.iter().rev() {
                walk(v, rest, join(name), Some(name.clone()), out)?;
            }
            return Ok(());
        }
        let Some(v) = obj.get(*seg) else {
            return Ok(());
        };
        let here = join(seg);
        if !v.is_object() {
            if scope.is_some() {
                return Ok(());
            }
            return Err(ConfigError::Shape(format!(
                "\"{}\" is not an object; nothing was changed",
                here.join(".")
            )));
        }
        walk(v, rest, here, scope, out)
    }
    let mut out = Vec::new();
    for path in fmt.tables {
        walk(value, path, Vec::new(), None, &mut out)?;
    }
    Ok(out)
}

/// The report of a rewrite that changes nothing, from the value alone; `None` when some entry
/// needs an edit (then the syntax tree is built). The same decisions ([`wrapper::decide`]) as
/// [`edit_entry`] makes.
fn unchanged_report(value: &Value, fmt: &JsonFormat, op: &Op, ctx: &Ctx<'_>) -> Option<Report> {
    let mut report = Report::default();
    for table in value_tables(value, fmt).ok()? {
        let scope = table.scope;
        for (name, v) in table.value {
            let entry = Entry::from_json(v);
            match wrapper::decide(&entry, &ctx.server_name(name), ctx.client, op) {
                Decision::Leave(left) => report.leave(label(name, scope.as_deref()), left),
                Decision::Change(_) => return None,
            }
        }
    }
    Some(report)
}

/// Every server entry of a JSON-family file.
pub fn entries(text: &str, fmt: &JsonFormat) -> Result<Vec<Found>, ConfigError> {
    let value = parse(text, fmt.jsonc)?;
    if value.is_null() {
        return Ok(Vec::new());
    }
    if !value.is_object() {
        return Err(ConfigError::Shape(
            "the top level is not a JSON object".into(),
        ));
    }
    // The value alone says it (no syntax tree: `~/.claude.json` can be megabytes).
    Ok(value_tables(&value, fmt)?
        .into_iter()
        .flat_map(|t| {
            let table = t.keys.join(".");
            t.value
                .iter()
                .map(|(name, v)| Found {
                    table: table.clone(),
                    scope: t.scope.clone(),
                    name: name.clone(),
                    entry: Entry::from_json(v),
                })
                .collect::<Vec<_>>()
        })
        .collect())
}

/// Wraps or unwraps every server of the file's tables.
pub fn rewrite(
    text: &str,
    fmt: &JsonFormat,
    op: &Op,
    ctx: &Ctx<'_>,
) -> Result<Rewritten, ConfigError> {
    let (bom, body) = split_bom(text);
    let value = parse(text, fmt.jsonc)?;
    let unchanged = |report| {
        Ok(Rewritten {
            text: text.to_owned(),
            report,
        })
    };
    if value.is_null() {
        return unchanged(Report::default());
    }
    if !value.is_object() {
        return Err(ConfigError::Shape(
            "the top level is not a JSON object".into(),
        ));
    }
    // Most rewrites find nothing to do (the agent re-checks a file at each change, and Claude
    // Code rewrites a `~/.claude.json` of megabytes often): the value alone says so.
    if let Some(report) = unchanged_report(&value, fmt, op, ctx) {
        return unchanged(report);
    }
    let root = cst::parse_root(body, fmt.jsonc)?;
    let Some(top) = root.object_value() else {
        return Err(ConfigError::Shape(
            "the top level is not a JSON object".into(),
        ));
    };
    let mut report = Report::default();
    for table in tables(&value, &top, fmt)? {
        let props = table.cst.properties();
        let names: Vec<Option<String>> = props.iter().map(|p| p.decoded_name()).collect();
        for (i, prop) in props.into_iter().enumerate() {
            let Some(name) = names[i].clone() else {
                continue;
            };
            // A duplicate key: the last one is what every reader (serde, JSON.parse) sees, and
            // the only one edited; the earlier ones are left as written.
            if names[i + 1..].contains(&names[i]) {
                continue;
            }
            let Some(v) = table.value.get(&name) else {
                continue;
            };
            let label = label(&name, table.scope.as_deref());
            let Some(obj) = prop.object_value() else {
                report
                    .skipped
                    .push((label, "the entry is not an object".into()));
                continue;
            };
            let server = ctx.server_name(&name);
            edit_entry(
                &obj,
                &Entry::from_json(v),
                &server,
                label,
                op,
                ctx,
                &mut report,
            );
        }
    }
    if !report.changed() {
        return unchanged(report);
    }
    let out = format!("{bom}{root}");
    // Defence in depth: the result must parse, and only command/args of the servers changed.
    let new_value = parse(&out, fmt.jsonc).map_err(|e| {
        ConfigError::Shape(format!(
            "internal error: the rewritten file would not parse ({e}); nothing was changed"
        ))
    })?;
    check_only_servers_changed(&value, &new_value, fmt)?;
    Ok(Rewritten { text: out, report })
}

/// Applies `op` to one entry (`obj` its syntax node, `entry` its value) of the server named
/// `server`; `label` names it in the report. Used for every JSON-family table and for
/// extension manifests.
pub(crate) fn edit_entry(
    obj: &CstObject,
    entry: &Entry,
    server: &str,
    label: String,
    op: &Op,
    ctx: &Ctx<'_>,
    report: &mut Report,
) {
    let change = match wrapper::decide(entry, server, ctx.client, op) {
        Decision::Leave(left) => return report.leave(label, left),
        Decision::Change(c) => c,
    };
    let thoth = op.thoth();
    match change {
        Change::Update => {
            cst::set_string(obj, "command", thoth);
            report.updated.push(label);
        }
        Change::Rewrap { diff, keep, head } => {
            cst::set_string(obj, "command", thoth);
            if let Some(arr) = cst::array(obj, "args") {
                cst::replace_first(&arr, keep, &cst::raws(&head));
            }
            report.rewrapped.push((label, diff));
        }
        Change::Wrap { head, command } => {
            // The command's literal moves as written (escapes included).
            let mut items = cst::raws(&head);
            items.push(cst::raw_string(obj, "command").unwrap_or_else(|| cst::raw(&command)));
            if entry.args.is_some() {
                // Inserted in place, so the array keeps its layout (inline or one per line).
                if let Some(arr) = cst::array(obj, "args") {
                    cst::prepend(&arr, &items);
                }
                cst::set_string(obj, "command", thoth);
            } else {
                cst::add_args(obj, thoth, &items);
            }
            report.wrapped.push(label);
        }
        Change::Unwrap {
            command,
            sep,
            markers,
        } => {
            // The command's literal as it sits in args (escapes as written).
            let cmd_raw = cst::array(obj, "args")
                .and_then(|a| cst::element(&a, sep + 1))
                .map(|l| l.raw_value())
                .unwrap_or_else(|| cst::raw(&command));
            if markers.no_command {
                cst::remove_all(obj, "command");
            } else {
                cst::set_raw(obj, "command", &cmd_raw);
            }
            if markers.no_args {
                cst::remove_added_args(obj);
            } else if let Some(arr) = cst::array(obj, "args") {
                // The wrapper's elements go, in place, keeping the array's layout.
                cst::remove_first(&arr, sep + 2);
            }
            report.unwrapped.push(label);
        }
    }
}

/// `value` with `command` and `args` taken out of every entry of every server table: two files
/// whose masks are equal differ at most in those.
pub(crate) fn mask(value: &Value, fmt: &JsonFormat) -> Value {
    let mut v = value.clone();
    for path in fmt.tables {
        mask_at(&mut v, path);
    }
    v
}

fn mask_at(v: &mut Value, path: &[&str]) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    match path.split_first() {
        None => {
            for e in obj.values_mut() {
                if let Some(e) = e.as_object_mut() {
                    e.remove("command");
                    e.remove("args");
                }
            }
        }
        Some((&"*", rest)) => {
            for child in obj.values_mut() {
                mask_at(child, rest);
            }
        }
        Some((seg, rest)) => {
            if let Some(child) = obj.get_mut(*seg) {
                mask_at(child, rest);
            }
        }
    }
}

fn check_only_servers_changed(
    old: &Value,
    new: &Value,
    fmt: &JsonFormat,
) -> Result<(), ConfigError> {
    if mask(old, fmt) != mask(new, fmt) {
        return Err(ConfigError::Shape(
            "internal error: the rewrite changed more than the servers' command and args; \
             nothing was changed"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
