//! TOML configs (Codex `~/.codex/config.toml`, servers in `mcp_servers`), on text: wrap each
//! stdio server so it runs through `thoth run`, or unwrap it back.
//!
//! The file is parsed with `toml_edit`, which keeps the byte span of every key and value, and
//! the edit is made by splicing the original text at those spans: every byte outside a server's
//! `command` value and `args` array (comments, key order, indentation, CRLF line endings, a BOM,
//! literal strings, escapes, dotted keys, inline tables, other settings) is kept as it is.
//! (`toml_edit`'s own printer drops carriage returns, so it is not used for output.)
//!
//! Wrapping inserts the canonical head and the original command in front of the existing `args`
//! elements: inline arrays get `"run", "--server", …, CMD, ` before their first element, arrays
//! with one element per line get one line per inserted element, in that element's indentation.
//! The original command's literal moves into `args` as written (`'C:\x'`, `"\u00e9"`, a
//! multi-line string) and back on unwrap, so unwrapping restores the original bytes. An entry
//! without `args` gets an `args` key with the `--no-args` marker: in a `[table]` (or with dotted
//! keys, `mcp_servers.files.args = […]`, the command's key prefix reused) as a new line after
//! the command's line; in an inline table as `, args = […]` right after the command's value.
//! Unwrapping removes exactly that line, or that `, args = […]`. Where that cannot be done
//! exactly (an inline table whose `args` comes first), the entry is left alone and reported in
//! [`Report::skipped`] with the reason.
//!
//! A file that does not parse (TOML 1.0, as `toml_edit` 0.23 reads it; duplicate keys are
//! errors) is refused with the line and column; `mcp_servers` that is not a table is a shape
//! error. After editing, the result is parsed again and compared with the original with every
//! server's `command` and `args` masked out: any other difference refuses the whole file.

mod splice;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use toml_edit::{Array, Document, InlineTable, Item, TableLike, Value};

use self::splice::{Edit, apply, boundary, insert_front, quote, remove_front, replace_front};
use super::json::split_bom;
use super::model::{ConfigError, Ctx, Found, Op, Report, Rewritten, label};
use crate::wrapper::{self, Change, Decision, Entry};

/// Parses a file's text (after any BOM), with the position of the first error.
fn parse(body: &str) -> Result<Document<&str>, ConfigError> {
    Document::parse(body).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start).min(body.len());
        let (line, column) = position(body, at);
        ConfigError::Invalid {
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })
}

/// The 1-based line and column (in characters) of byte `at` of `text`.
fn position(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// Where a server entry sits, which decides how a missing `args` key is added and removed.
#[derive(Clone, Copy)]
enum Layout<'d> {
    /// A `[table]`, or dotted keys of one: each key-value pair on its own line.
    Std,
    /// Inside the inline table `container` (the entry's own `{ … }`, or `mcp_servers = { … }`
    /// when the entry is written with dotted keys inside it).
    Inline(&'d InlineTable),
}

/// One server entry of the document.
struct Server<'d> {
    name: String,
    item: &'d Item,
    layout: Layout<'d>,
}

/// The server entries of `table` in `doc` (document order).
fn servers<'d>(doc: &'d Document<&str>, table: &str) -> Result<Vec<Server<'d>>, ConfigError> {
    let Some(top) = doc.as_table().get(table) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    match top {
        Item::Table(t) => {
            for (name, item) in t.iter() {
                let layout = match item {
                    Item::Value(Value::InlineTable(it)) => Layout::Inline(it),
                    _ => Layout::Std,
                };
                out.push(Server {
                    name: name.to_owned(),
                    item,
                    layout,
                });
            }
        }
        Item::Value(Value::InlineTable(container)) => {
            for (name, value) in container.iter() {
                let layout = match value {
                    Value::InlineTable(it) if !it.is_dotted() => Layout::Inline(it),
                    _ => Layout::Inline(container),
                };
                let Some((_, item)) = container.get_key_value(name) else {
                    continue;
                };
                out.push(Server {
                    name: name.to_owned(),
                    item,
                    layout,
                });
            }
        }
        other => {
            return Err(ConfigError::Shape(format!(
                "\"{table}\" is {} rather than a table; nothing was changed",
                describe(other)
            )));
        }
    }
    Ok(out)
}

fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "empty",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Table(_) => "a table",
        Item::Value(v) => match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "an inline table",
        },
    }
}

/// The format-free view of a TOML server entry.
fn entry_of(item: &Item) -> Entry {
    let Some(t) = item.as_table_like() else {
        return Entry {
            malformed: Some("the entry is not a table".into()),
            ..Entry::default()
        };
    };
    let mut e = Entry::default();
    match t.get("command") {
        None => {}
        Some(c) => match c.as_str() {
            Some(s) => e.command = Some(s.to_owned()),
            None => e.malformed = Some("\"command\" is not a string".into()),
        },
    }
    match t.get("args") {
        None => {}
        Some(Item::Value(Value::Array(a))) => {
            match a.iter().map(|v| v.as_str().map(str::to_owned)).collect() {
                Some(v) => e.args = Some(v),
                None => e.malformed = Some("\"args\" holds something other than strings".into()),
            }
        }
        Some(_) => e.malformed = Some("\"args\" is not an array".into()),
    }
    e.env_keys = t
        .get("env")
        .and_then(Item::as_table_like)
        .map(|env| env.iter().map(|(k, _)| k.to_owned()).collect())
        .unwrap_or_default();
    e.url = t.get("url").and_then(Item::as_str).map(str::to_owned);
    e.disabled = t.get("enabled").and_then(Item::as_bool) == Some(false);
    e
}

/// Every server entry of a TOML file.
pub fn entries(text: &str, table: &str) -> Result<Vec<Found>, ConfigError> {
    let body = split_bom(text).1;
    let doc = parse(body)?;
    Ok(servers(&doc, table)?
        .into_iter()
        .map(|s| Found {
            table: table.to_owned(),
            scope: None,
            entry: entry_of(s.item),
            name: s.name,
        })
        .collect())
}

/// Wraps or unwraps every server of the table `table`.
pub fn rewrite(text: &str, table: &str, op: &Op, ctx: &Ctx<'_>) -> Result<Rewritten, ConfigError> {
    let (bom, body) = split_bom(text);
    let doc = parse(body)?;
    let mut report = Report::default();
    let mut edits = Vec::new();
    let mut bounds = HashMap::new();
    for server in servers(&doc, table)? {
        let label = label(&server.name, None);
        let name = ctx.server_name(&server.name);
        let entry = entry_of(server.item);
        let mut e = Editor {
            body,
            item: server.item,
            layout: server.layout,
            edits: &mut edits,
            bounds: &mut bounds,
        };
        e.edit(&entry, &name, label, op, ctx, &mut report);
    }
    let unchanged = |report| {
        Ok(Rewritten {
            text: text.to_owned(),
            report,
        })
    };
    if !report.changed() {
        return unchanged(report);
    }
    let Some(new_body) = apply(body, edits) else {
        return Err(ConfigError::Shape(
            "internal error: overlapping edits; nothing was changed".into(),
        ));
    };
    // Defence in depth: the result must parse, and only command/args of the servers changed.
    let new_doc = parse(&new_body).map_err(|e| {
        ConfigError::Shape(format!(
            "internal error: the rewritten file would not parse ({e}); nothing was changed"
        ))
    })?;
    if mask(&doc, table) != mask(&new_doc, table) {
        return Err(ConfigError::Shape(
            "internal error: the rewrite changed more than the servers' command and args; \
             nothing was changed"
                .into(),
        ));
    }
    Ok(Rewritten {
        text: format!("{bom}{new_body}"),
        report,
    })
}

/// The edits of one server entry.
struct Editor<'a, 'd> {
    body: &'a str,
    item: &'d Item,
    layout: Layout<'d>,
    edits: &'a mut Vec<Edit>,
    bounds: &'a mut HashMap<usize, Vec<usize>>,
}

impl Editor<'_, '_> {
    fn table(&self) -> &dyn TableLike {
        self.item
            .as_table_like()
            .expect("only table-like entries are edited")
    }

    /// The span of the `key` value of the entry.
    fn value_span(&self, key: &str) -> Option<Range<usize>> {
        self.table().get(key).and_then(Item::span)
    }

    fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table().key(key).and_then(|k| k.span())
    }

    fn args(&self) -> Option<&Array> {
        self.table().get("args").and_then(Item::as_array)
    }

    /// Applies `op` (as [`wrapper::decide`]s, like every engine).
    fn edit(
        &mut self,
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
        let Some(cmd_span) = self.value_span("command") else {
            report
                .skipped
                .push((label, "cannot locate \"command\" in the file".into()));
            return;
        };
        let thoth = op.thoth();
        let no_args = || "cannot locate \"args\" in the file".to_owned();
        match change {
            Change::Update => {
                self.set_command(&cmd_span, thoth);
                report.updated.push(label);
            }
            Change::Rewrap { diff, keep, head } => {
                let items: Vec<String> = head.iter().map(|a| quote(a)).collect();
                let Some(edit) = self
                    .args()
                    .and_then(|a| replace_front(self.body, a, keep, &items))
                else {
                    report.skipped.push((label, no_args()));
                    return;
                };
                self.edits.push(edit);
                self.set_command(&cmd_span, thoth);
                report.rewrapped.push((label, diff));
            }
            Change::Wrap { head, .. } => {
                let mut items: Vec<String> = head.iter().map(|a| quote(a)).collect();
                // The command's literal moves as written.
                items.push(self.body[cmd_span.clone()].to_owned());
                if entry.args.is_some() {
                    let Some(edit) = self.args().and_then(|a| insert_front(self.body, a, &items))
                    else {
                        report.skipped.push((label, no_args()));
                        return;
                    };
                    self.edits.push(edit);
                    self.set_command(&cmd_span, thoth);
                } else if let Err(why) = self.add_args(&cmd_span, thoth, &items) {
                    report.skipped.push((label, why));
                    return;
                }
                report.wrapped.push(label);
            }
            Change::Unwrap { sep, markers, .. } => {
                if markers.no_command {
                    report.skipped.push((
                        label,
                        "wrapped with --no-command, which a Codex entry cannot have".into(),
                    ));
                    return;
                }
                let Some(arr) = self.args() else {
                    report.skipped.push((label, no_args()));
                    return;
                };
                // The command's literal as it sits in args (as written).
                let Some(cmd_raw) = arr
                    .get(sep + 1)
                    .and_then(Value::span)
                    .and_then(|s| self.body.get(s))
                    .map(str::to_owned)
                else {
                    report
                        .skipped
                        .push((label, "cannot locate the command in \"args\"".into()));
                    return;
                };
                let edit = if markers.no_args {
                    self.remove_args()
                } else {
                    remove_front(self.body, arr, sep + 2)
                };
                match edit {
                    Ok(edit) => self.edits.push(edit),
                    Err(why) => {
                        report.skipped.push((label, why));
                        return;
                    }
                }
                self.edits.push(Edit {
                    range: cmd_span,
                    text: cmd_raw,
                });
                report.unwrapped.push(label);
            }
        }
    }

    fn set_command(&mut self, span: &Range<usize>, thoth: &str) {
        self.edits.push(Edit {
            range: span.clone(),
            text: quote(thoth),
        });
    }

    /// Sets `command` to thoth and adds `args = [items]` to an entry that has none.
    fn add_args(
        &mut self,
        cmd_span: &Range<usize>,
        thoth: &str,
        items: &[String],
    ) -> Result<(), String> {
        let body = self.body;
        let key = self
            .key_span("command")
            .ok_or("cannot locate \"command\" in the file")?;
        let array = format!("[{}]", items.join(", "));
        match self.layout {
            Layout::Std => {
                // A new line after the command's, with its indentation and dotted-key prefix.
                let line = body[..key.start].rfind('\n').map_or(0, |i| i + 1);
                let lead = &body[line..key.start];
                let indent_len = lead.len() - lead.trim_start_matches([' ', '\t']).len();
                let (indent, prefix) = lead.split_at(indent_len);
                let kv = format!("{indent}{prefix}args = {array}");
                let edit = match body[cmd_span.end..].find('\n') {
                    Some(i) => {
                        let at = cmd_span.end + i;
                        let nl = if body[..at].ends_with('\r') {
                            "\r\n"
                        } else {
                            "\n"
                        };
                        Edit {
                            range: at + 1..at + 1,
                            text: format!("{kv}{nl}"),
                        }
                    }
                    None => {
                        let nl = if body.contains("\r\n") { "\r\n" } else { "\n" };
                        Edit {
                            range: body.len()..body.len(),
                            text: format!("{nl}{kv}"),
                        }
                    }
                };
                self.set_command(cmd_span, thoth);
                self.edits.push(edit);
            }
            Layout::Inline(container) => {
                // `, args = […]` right after the command's value, on its line.
                let from = boundary(body, container, key.start, self.bounds)
                    .ok_or("cannot locate \"command\" in its inline table")?;
                // After the last line break (TOML 1.1 inline tables may span lines and hold
                // comments): the comma, and the dotted-key prefix.
                let lead = &body[from..key.start];
                let prefix = lead[lead.rfind('\n').map_or(0, |i| i + 1)..]
                    .trim_start()
                    .trim_start_matches(',')
                    .trim_start();
                self.edits.push(Edit {
                    range: cmd_span.clone(),
                    text: format!("{}, {prefix}args = {array}", quote(thoth)),
                });
            }
        }
        Ok(())
    }

    /// Removes the `args` key-value (the original entry had none).
    fn remove_args(&mut self) -> Result<Edit, String> {
        let body = self.body;
        let (Some(key), Some(value)) = (self.key_span("args"), self.value_span("args")) else {
            return Err("cannot locate \"args\" in the file".into());
        };
        match self.layout {
            Layout::Std => {
                // Its whole line (lines: a multi-line array).
                let line = body[..key.start].rfind('\n').map_or(0, |i| i + 1);
                Ok(match body[value.end..].find('\n') {
                    Some(i) => Edit {
                        range: line..value.end + i + 1,
                        text: String::new(),
                    },
                    None => {
                        // The last line of the file: the line break before it goes.
                        let mut start = line;
                        if body[..start].ends_with('\n') {
                            start -= 1;
                            if body[..start].ends_with('\r') {
                                start -= 1;
                            }
                        }
                        Edit {
                            range: start..body.len(),
                            text: String::new(),
                        }
                    }
                })
            }
            Layout::Inline(container) => {
                let from = boundary(body, container, key.start, self.bounds)
                    .ok_or("cannot locate \"args\" in its inline table")?;
                if !body[from..key.start].trim_start().starts_with(',') {
                    return Err(
                        "\"args\" comes first in its inline table: it cannot be taken out \
                         exactly; remove the wrapper by hand"
                            .into(),
                    );
                }
                Ok(Edit {
                    range: from..value.end,
                    text: String::new(),
                })
            }
        }
    }
}

/// A TOML value for comparison (layout and representation ignored).
#[derive(Debug, PartialEq)]
enum Plain {
    S(String),
    I(i64),
    F(u64),
    B(bool),
    D(String),
    A(Vec<Plain>),
    T(BTreeMap<String, Plain>),
    /// An array of tables.
    Aot(Vec<Plain>),
}

fn plain_item(item: &Item) -> Plain {
    match item {
        Item::None => Plain::T(BTreeMap::new()),
        Item::Value(v) => plain_value(v),
        Item::Table(t) => Plain::T(
            t.iter()
                .map(|(k, v)| (k.to_owned(), plain_item(v)))
                .collect(),
        ),
        Item::ArrayOfTables(a) => Plain::Aot(
            a.iter()
                .map(|t| {
                    Plain::T(
                        t.iter()
                            .map(|(k, v)| (k.to_owned(), plain_item(v)))
                            .collect(),
                    )
                })
                .collect(),
        ),
    }
}

fn plain_value(v: &Value) -> Plain {
    match v {
        Value::String(s) => Plain::S(s.value().clone()),
        Value::Integer(i) => Plain::I(*i.value()),
        Value::Float(f) => Plain::F(f.value().to_bits()),
        Value::Boolean(b) => Plain::B(*b.value()),
        Value::Datetime(d) => Plain::D(d.value().to_string()),
        Value::Array(a) => Plain::A(a.iter().map(plain_value).collect()),
        Value::InlineTable(t) => Plain::T(
            t.iter()
                .map(|(k, v)| (k.to_owned(), plain_value(v)))
                .collect(),
        ),
    }
}

/// The document with `command` and `args` taken out of every server entry: two files whose
/// masks are equal differ at most in those.
fn mask(doc: &Document<&str>, table: &str) -> Plain {
    let mut p = plain_item(doc.as_item());
    if let Plain::T(top) = &mut p
        && let Some(Plain::T(servers)) = top.get_mut(table)
    {
        for e in servers.values_mut() {
            if let Plain::T(e) = e {
                e.remove("command");
                e.remove("args");
            }
        }
    }
    p
}

#[cfg(test)]
#[path = "toml_tests.rs"]
mod tests;
