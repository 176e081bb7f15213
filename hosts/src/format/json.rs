//! JSON and JSONC configs (Claude Desktop, Claude Code, Cursor, VS Code, Windsurf), on text:
//! wrap each stdio server of the file's server tables so it runs through `thoth run`, or unwrap
//! it back. Only the `command` and `args` of the entries change; every other byte (comments,
//! key order, indentation, line endings, escapes, a BOM, other keys) is kept, because the edit
//! is made on a concrete syntax tree (jsonc-parser) of the original text. The original command's
//! literal moves into `args` as written (escapes included) and back, so unwrapping restores the
//! original bytes.

use jsonc_parser::ParseOptions;
use jsonc_parser::cst::{CstArray, CstInputValue, CstNode, CstObject, CstRootNode};
use serde_json::Value;

use super::model::{ConfigError, Ctx, Found, Op, Report, Rewritten, label};
use crate::wrapper::{self, Entry, Markers};

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

pub(crate) fn options(jsonc: bool) -> ParseOptions {
    ParseOptions {
        allow_comments: jsonc,
        allow_loose_object_property_names: false,
        allow_trailing_commas: jsonc,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
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
        jsonc_parser::parse_to_serde_value::<Value>(body, &options(true)).map_err(|e| {
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

/// Every server table of `fmt` in `value` / `root` (the same text). A fixed path whose
/// container exists but is not an object is a shape error; under a wildcard, odd values are
/// passed over.
pub(crate) fn tables<'v>(
    value: &'v Value,
    root: &CstObject,
    fmt: &JsonFormat,
) -> Result<Vec<Table<'v>>, ConfigError> {
    let mut out = Vec::new();
    for path in fmt.tables {
        walk(value, root, path, 0, String::new(), None, &mut out)?;
    }
    Ok(out)
}

fn walk<'v>(
    value: &'v Value,
    cst: &CstObject,
    path: &[&str],
    depth: usize,
    at: String,
    scope: Option<String>,
    out: &mut Vec<Table<'v>>,
) -> Result<(), ConfigError> {
    let join = |at: &str, key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    let Some(obj) = value.as_object() else {
        return Ok(());
    };
    let Some((seg, rest)) = path[depth..].split_first() else {
        out.push(Table {
            scope,
            value: obj,
            cst: cst.clone(),
        });
        return Ok(());
    };
    let _ = rest;
    if *seg == "*" {
        let mut seen = std::collections::HashSet::new();
        // The last duplicate is the one serde reads; visit each key once.
        for prop in cst.properties().into_iter().rev() {
            let Some(name) = prop.decoded_name() else {
                continue;
            };
            if !seen.insert(name.clone()) {
                continue;
            }
            let (Some(v), Some(c)) = (obj.get(&name), prop.object_value()) else {
                continue;
            };
            walk(v, &c, path, depth + 1, join(&at, &name), Some(name), out)?;
        }
        return Ok(());
    }
    let Some(v) = obj.get(*seg) else {
        return Ok(());
    };
    let here = join(&at, seg);
    if !v.is_object() {
        if scope.is_some() {
            return Ok(());
        }
        return Err(ConfigError::Shape(format!(
            "\"{here}\" is not an object; nothing was changed"
        )));
    }
    // The last property of that name is the one serde reads.
    let Some(c) = cst
        .properties()
        .into_iter()
        .rev()
        .find(|p| p.decoded_name().as_deref() == Some(*seg))
        .and_then(|p| p.object_value())
    else {
        return Err(ConfigError::Shape(format!("cannot locate \"{here}\"")));
    };
    walk(v, &c, path, depth + 1, here, scope, out)
}

/// The server tables of `fmt` in `value` alone, as [`tables`] finds them (same order, same
/// shape errors): (dotted path, wildcard key, table).
#[allow(clippy::type_complexity)]
fn value_tables<'v>(
    value: &'v Value,
    fmt: &JsonFormat,
) -> Result<Vec<(String, Option<String>, &'v serde_json::Map<String, Value>)>, ConfigError> {
    fn walk<'v>(
        value: &'v Value,
        path: &[&str],
        at: String,
        scope: Option<String>,
        out: &mut Vec<(String, Option<String>, &'v serde_json::Map<String, Value>)>,
    ) -> Result<(), ConfigError> {
        let join = |key: &str| {
            if at.is_empty() {
                key.to_owned()
            } else {
                format!("{at}.{key}")
            }
        };
        let Some(obj) = value.as_object() else {
            return Ok(());
        };
        let Some((seg, rest)) = path.split_first() else {
            out.push((at, scope, obj));
            return Ok(());
        };
        if *seg == "*" {
            // In the order `tables` visits them (last first).
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
                "\"{here}\" is not an object; nothing was changed"
            )));
        }
        walk(v, rest, here, scope, out)
    }
    let mut out = Vec::new();
    for path in fmt.tables {
        walk(value, path, String::new(), None, &mut out)?;
    }
    Ok(out)
}

/// The report of a rewrite that changes nothing, from the value alone; `None` when some entry
/// needs an edit (then the syntax tree is built). The same decisions as [`edit_entry`] makes
/// for an entry it leaves alone.
fn unchanged_report(value: &Value, fmt: &JsonFormat, op: &Op, ctx: &Ctx<'_>) -> Option<Report> {
    let mut report = Report::default();
    for (_, scope, map) in value_tables(value, fmt).ok()? {
        for (name, v) in map {
            let label = label(name, scope.as_deref());
            if !v.is_object() {
                report
                    .skipped
                    .push((label, "the entry is not an object".into()));
                continue;
            }
            let entry = Entry::from_json(v);
            if let Some(why) = &entry.malformed {
                report.skipped.push((label, why.clone()));
                continue;
            }
            if entry.is_remote() && !(matches!(op, Op::Unwrap) && entry.is_wrapped()) {
                report.remote.push(label);
                continue;
            }
            let Some(command) = &entry.command else {
                if entry.is_remote() {
                    report.remote.push(label);
                } else {
                    report
                        .skipped
                        .push((label, "no \"command\" and no URL".into()));
                }
                continue;
            };
            match op {
                Op::Unwrap if entry.is_wrapped() => return None,
                Op::Unwrap => {}
                Op::Wrap {
                    thoth,
                    extra,
                    strict,
                } => {
                    if !entry.is_wrapped() || command != thoth {
                        return None;
                    }
                    let all = entry.args.clone().unwrap_or_default();
                    if *strict
                        && wrapper::wrapper_difference(
                            &ctx.server_name(name),
                            ctx.client,
                            &all,
                            extra,
                        )
                        .is_some()
                    {
                        return None;
                    }
                    report.already.push(label);
                }
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
        .flat_map(|(table, scope, map)| {
            map.iter()
                .map(|(name, v)| Found {
                    table: table.clone(),
                    scope: scope.clone(),
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
    let root = CstRootNode::parse(body, &options(fmt.jsonc)).map_err(|e| ConfigError::Invalid {
        line: e.line_display(),
        column: e.column_display(),
        message: e.kind().to_string(),
    })?;
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
    if let Some(why) = &entry.malformed {
        report.skipped.push((label, why.clone()));
        return;
    }
    // Remote by its type even with a command beside it; an old wrapper on such an entry is
    // still taken out by unwrap.
    if entry.is_remote() && !(matches!(op, Op::Unwrap) && entry.is_wrapped()) {
        report.remote.push(label);
        return;
    }
    let Some(command) = entry.command.clone() else {
        if entry.is_remote() {
            report.remote.push(label);
        } else {
            report
                .skipped
                .push((label, "no \"command\" and no URL".into()));
        }
        return;
    };
    let wrapped = entry.is_wrapped();
    match op {
        Op::Wrap {
            thoth,
            extra,
            strict,
        } => {
            if wrapped {
                let all = entry.args.clone().unwrap_or_default();
                // Strict (the agent): another `thoth` than the agent's is drift too, not a path
                // to update quietly (a binary named `thoth` may be anything).
                let diff = strict
                    .then(|| {
                        let args = wrapper::wrapper_difference(server, ctx.client, &all, extra);
                        match (wrapper::command_difference(entry, thoth), args) {
                            (Some(c), Some(a)) => Some(format!("{c}; {a}")),
                            (c, a) => c.or(a),
                        }
                    })
                    .flatten();
                if let Some(diff) = diff {
                    // Re-wrapped around the command after the first `--`, whatever came before.
                    let Some((head, tail, markers)) = wrapper::split_wrapped(&all) else {
                        report.skipped.push((
                            label,
                            format!("a thoth wrapper with {diff}, and no command to keep"),
                        ));
                        return;
                    };
                    let keep = head.len() + 1;
                    let new_head = wrapper::canonical_head(server, ctx.client, extra, markers);
                    set_string(obj, "command", thoth);
                    let mut items = raws(&new_head);
                    items.push(raw("--"));
                    for arr in arrays(obj, "args") {
                        replace_head(&arr, keep, &items);
                    }
                    let _ = tail;
                    report.rewrapped.push((label, diff));
                } else if command == *thoth {
                    report.already.push(label);
                } else {
                    set_string(obj, "command", thoth);
                    report.updated.push(label);
                }
                return;
            }
            let markers = Markers {
                no_args: entry.args.is_none(),
                no_command: false,
            };
            let mut prefix = wrapper::canonical_head(server, ctx.client, extra, markers);
            prefix.push("--".to_owned());
            let cmd_raw = raw_string(obj, "command")
                .unwrap_or_else(|| serde_json::to_string(&command).expect("strings serialize"));
            if entry.args.is_some() {
                // Insert in place, so the array keeps its layout (inline or one per line); the
                // command's literal moves as written.
                let mut items = raws(&prefix);
                items.push(cmd_raw.clone());
                for arr in arrays(obj, "args") {
                    insert_head(&arr, &items);
                }
                set_string(obj, "command", thoth);
            } else {
                // No `args`: `"args": […]` is written right after the command's value: on the
                // same line in an inline object, else on a line of its own in the command's
                // indentation (unwrapping erases exactly that text).
                let mut items = raws(&prefix);
                items.push(cmd_raw.clone());
                let children = obj.children();
                // The last `command` (see [`last`]).
                let at = children
                    .iter()
                    .rposition(|c| prop_named(c, "command").is_some());
                if let Some(i) = at
                    && let Some(lit) = prop_named(&children[i], "command")
                        .and_then(|p| p.value())
                        .and_then(|v| v.as_string_lit())
                {
                    let sep = separator(&children, i);
                    lit.set_raw_value(format!(
                        "{},{sep}\"args\": [{}]",
                        raw(thoth),
                        items.join(", ")
                    ));
                }
            }
            report.wrapped.push(label);
        }
        Op::Unwrap => {
            if !wrapped {
                return;
            }
            let all = entry.args.clone().unwrap_or_default();
            let Some((orig_cmd, orig_args, markers)) = wrapper::original_of(&all) else {
                report.skipped.push((
                    label,
                    "wrapped, but its original command line cannot be read".into(),
                ));
                return;
            };
            let sep = all.len() - orig_args.as_ref().map_or(0, Vec::len) - 2;
            // The command's literal as it sits in args (escapes as written).
            let cmd_raw = arrays(obj, "args")
                .last()
                .and_then(|a| a.elements().get(sep + 1).cloned())
                .and_then(|n| n.as_string_lit())
                .map(|l| l.raw_value())
                .unwrap_or_else(|| serde_json::to_string(&orig_cmd).expect("strings serialize"));
            if markers.no_command {
                for p in obj.properties() {
                    if p.decoded_name().as_deref() == Some("command") {
                        p.remove();
                    }
                }
            } else {
                set_raw(obj, "command", &cmd_raw);
            }
            match orig_args {
                Some(_) => {
                    // Remove the wrapper's elements in place, keeping the array's layout.
                    for arr in arrays(obj, "args") {
                        remove_head(&arr, sep + 2);
                    }
                }
                None => remove_added_args(obj),
            }
            report.unwrapped.push(label);
        }
    }
}

/// A string's JSON literal.
fn raw(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn raws(v: &[String]) -> Vec<String> {
    v.iter().map(|s| raw(s)).collect()
}

/// An array's children (tokens and trivia included) and the indexes of its elements among them.
fn layout(arr: &CstArray) -> (Vec<CstNode>, Vec<usize>) {
    let children = arr.children();
    let elements = children
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.is_trivia() && !c.is_token())
        .map(|(i, _)| i)
        .collect();
    (children, elements)
}

/// What follows each comma between the elements the wrapper writes before the element at
/// `first` (a child index): a space on an inline array; on a multi-line one, the line break and
/// indentation that precede that element, so each gets a line of its own.
fn separator(children: &[CstNode], first: usize) -> String {
    let before = &children[..first];
    let Some(nl) = before.iter().rposition(CstNode::is_newline) else {
        return " ".into();
    };
    let mut sep = before[nl].to_string();
    for c in before[nl + 1..].iter().take_while(|c| c.is_whitespace()) {
        sep.push_str(&c.to_string());
    }
    sep
}

/// Erases the children `from..to` from the printed text, exactly (no sibling is adjusted, unlike
/// the parser's own removal, which rearranges commas and whitespace).
fn erase(children: &[CstNode], from: usize, to: usize) {
    for c in &children[from..to] {
        if let CstNode::Container(_) = c {
            erase(&c.children(), 0, c.children().len());
        } else if let Some(s) = c.as_string_lit() {
            s.set_raw_value(String::new());
        } else if let Some(c) = c.as_comment() {
            c.set_raw_value(String::new());
        } else if let Some(w) = c.as_whitespace() {
            w.set_value(String::new());
        } else if c.is_token() || c.is_newline() {
            c.clone().remove();
        } else if let Some(n) = c.as_number_lit() {
            n.set_raw_value(String::new());
        } else if let Some(w) = c.as_word_lit() {
            w.set_raw_value(String::new());
        }
    }
}

/// Writes the wrapper's elements (`items`: raw literals, the command's last) at the start of
/// `args`, as text before its first element: every byte of the array is kept after them, so
/// [`remove_head`] gives back exactly what was there.
fn insert_head(arr: &CstArray, items: &[String]) {
    let (children, elements) = layout(arr);
    match elements.first() {
        Some(&first) => {
            let sep = separator(&children, first);
            let lit = children[first].as_string_lit().expect("args are strings");
            let text = format!(
                "{},{sep}{}",
                items.join(&format!(",{sep}")),
                lit.raw_value()
            );
            lit.set_raw_value(text);
        }
        None => {
            // Empty: the array's text with the elements right after `[` (whatever the array
            // held, comments or line breaks, stays after them).
            let text = arr.to_string();
            let text = format!("[{}{}", items.join(", "), &text[1..]);
            if let Some(lit) = arr
                .clone()
                .replace_with(CstInputValue::String(String::new()))
                .and_then(|n| n.as_string_lit())
            {
                lit.set_raw_value(text);
            }
        }
    }
}

/// Removes the first `n` elements of `args` (the wrapper's), and the text between them and the
/// next one: the inverse of [`insert_head`]. With no element after them, a comma that follows
/// the last goes too.
fn remove_head(arr: &CstArray, n: usize) {
    let (children, elements) = layout(arr);
    let (Some(&first), Some(&last)) = (elements.first(), elements.get(n.saturating_sub(1))) else {
        return;
    };
    match elements.get(n) {
        Some(&next) => erase(&children, first, next),
        None => {
            let end = children[last + 1..]
                .iter()
                .position(|c| c.is_comma())
                .map_or(last + 1, |i| last + 2 + i);
            erase(&children, first, end);
        }
    }
}

/// Replaces the first `n` elements of `args` (a wrapper's head and its `--`) by `items` (raw
/// literals), written as [`insert_head`] writes them.
fn replace_head(arr: &CstArray, n: usize, items: &[String]) {
    let (children, elements) = layout(arr);
    let (Some(&first), Some(&next)) = (elements.first(), elements.get(n)) else {
        return;
    };
    let sep = separator(&children, first);
    let lit = children[next].as_string_lit().expect("args are strings");
    let text = format!(
        "{},{sep}{}",
        items.join(&format!(",{sep}")),
        lit.raw_value()
    );
    erase(&children, first, next);
    lit.set_raw_value(text);
}

/// `c` as the property `key`, if it is one.
fn prop_named(c: &CstNode, key: &str) -> Option<jsonc_parser::cst::CstObjectProp> {
    c.as_object_prop()
        .filter(|p| p.decoded_name().as_deref() == Some(key))
}

/// Removes the `args` a wrap added to an entry that had none: where the wrap wrote it, right
/// after the command's value with only a comma and spacing between, exactly that text is erased
/// (so the bytes come back); elsewhere (moved by hand), the property is removed.
fn remove_added_args(obj: &CstObject) {
    let children = obj.children();
    // Right after the last `command`, where the wrap writes it.
    let span = children
        .iter()
        .rposition(|c| prop_named(c, "command").is_some())
        .and_then(|i| {
            let next = i
                + 1
                + children[i + 1..]
                    .iter()
                    .position(|c| c.as_object_prop().is_some())?;
            let between = &children[i + 1..next];
            (prop_named(&children[next], "args").is_some()
                && between.iter().filter(|c| c.is_comma()).count() == 1
                && between
                    .iter()
                    .all(|c| c.is_comma() || c.is_whitespace() || c.is_newline()))
            .then_some((i + 1, next + 1))
        });
    match span {
        Some((from, to)) => erase(&children, from, to),
        None => remove_args(obj),
    }
}

/// Removes `args` (the original entry had none).
fn remove_args(obj: &CstObject) {
    for p in obj.properties() {
        if p.decoded_name().as_deref() == Some("args") {
            p.remove();
        }
    }
}

/// The raw literal (quotes and escapes as written) of the string property `key`.
fn raw_string(obj: &CstObject, key: &str) -> Option<String> {
    obj.properties()
        .into_iter()
        .rev()
        .find(|p| p.decoded_name().as_deref() == Some(key))
        .and_then(|p| p.value())
        .and_then(|v| v.as_string_lit())
        .map(|l| l.raw_value())
}

/// The last property named `key`: the one every reader (serde, `JSON.parse`, VS Code) takes
/// when a key is repeated, and the only one edited (earlier duplicates stay as written, so
/// unwrapping restores them).
fn last(obj: &CstObject, key: &str) -> Option<jsonc_parser::cst::CstObjectProp> {
    obj.properties()
        .into_iter()
        .rev()
        .find(|p| p.decoded_name().as_deref() == Some(key))
}

/// The array value of the property `key` (the last, see [`last`]).
fn arrays(obj: &CstObject, key: &str) -> Vec<CstArray> {
    last(obj, key)
        .and_then(|p| p.array_value())
        .into_iter()
        .collect()
}

fn set_string(obj: &CstObject, key: &str, value: &str) {
    if let Some(p) = last(obj, key) {
        p.set_value(CstInputValue::String(value.to_owned()));
    }
}

fn set_raw(obj: &CstObject, key: &str, raw: &str) {
    if let Some(p) = last(obj, key) {
        match p.value().and_then(|v| v.as_string_lit()) {
            Some(lit) => lit.set_raw_value(raw.to_owned()),
            None => p.set_value(CstInputValue::String(
                serde_json::from_str::<String>(raw).unwrap_or_default(),
            )),
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
