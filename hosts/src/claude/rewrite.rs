//! The Claude Desktop config rewrite, on text: wrap each stdio server so it runs through
//! `thoth run`, or unwrap it back. Only the `command` and `args` of the entries change; every
//! other byte of the file (key order, indentation, line endings, escapes, other keys) is kept,
//! because the edit is made on a concrete syntax tree (jsonc-parser) of the original text.
//!
//! A wrapped entry: `command` = the absolute path of `thoth`, `args` =
//! `["run", "--server", NAME, "--", ORIGINAL_COMMAND, ORIGINAL_ARGS…]`; an entry that had no
//! `args` gets `"--no-args"` before `"--"`, so unwrapping restores it exactly.

use jsonc_parser::ParseOptions;
use jsonc_parser::cst::{CstInputValue, CstObject, CstRootNode};
use serde_json::Value;

/// Marks a wrapped entry whose original had no `args` key.
pub const NO_ARGS: &str = "--no-args";

/// Why a file cannot be rewritten. Nothing is written in any of these cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not valid JSON.
    #[error("not valid JSON at line {line}, column {column}: {message}")]
    Invalid {
        /// 1-based.
        line: usize,
        /// 1-based.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// Valid JSON of the wrong shape.
    #[error("{0}")]
    Shape(String),
}

/// What happened to each server entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Wrapped now.
    pub wrapped: Vec<String>,
    /// Already running through this thoth.
    pub already: Vec<String>,
    /// Wrapper pointing at another thoth path, updated.
    pub updated: Vec<String>,
    /// Wrapper whose arguments before `--` were not the canonical form: rewritten to it (the
    /// command after `--` kept), with what differed.
    pub rewrapped: Vec<(String, String)>,
    /// Unwrapped now.
    pub unwrapped: Vec<String>,
    /// No `command` (URL / remote servers): left untouched.
    pub remote: Vec<String>,
    /// Left untouched for the reason given.
    pub skipped: Vec<(String, String)>,
}

impl Report {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        !(self.wrapped.is_empty()
            && self.updated.is_empty()
            && self.rewrapped.is_empty()
            && self.unwrapped.is_empty())
    }
}

/// The result of a rewrite.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The new text (identical to the input when nothing changed).
    pub text: String,
    /// Per entry.
    pub report: Report,
}

fn strict() -> ParseOptions {
    ParseOptions {
        allow_comments: false,
        allow_loose_object_property_names: false,
        allow_trailing_commas: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

/// Parses strictly (serde_json), with the position of the first error.
pub fn parse_strict(body: &str) -> Result<Value, ConfigError> {
    serde_json::from_str(body).map_err(|e| ConfigError::Invalid {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// Splits off a UTF-8 byte-order mark.
fn split_bom(text: &str) -> (&str, &str) {
    match text.strip_prefix('\u{feff}') {
        Some(rest) => ("\u{feff}", rest),
        None => ("", text),
    }
}

/// Whether an entry already runs through thoth: `command` is a thoth binary and `args[0]` is
/// `run`.
pub fn is_wrapped(entry: &Value) -> bool {
    let cmd = entry.get("command").and_then(Value::as_str).unwrap_or("");
    let first = entry
        .get("args")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    is_thoth_path(cmd) && first == Some("run")
}

/// The arguments before `--` the agent writes for the server `name` (`extra`: the options that
/// reach this agent, `no_args`: the original entry had no `args`).
pub fn canonical_head(name: &str, extra: &[String], no_args: bool) -> Vec<String> {
    let mut head = vec!["run".to_owned(), "--server".to_owned(), name.to_owned()];
    head.extend(extra.iter().cloned());
    if no_args {
        head.push(NO_ARGS.to_owned());
    }
    head
}

/// How a wrapped entry's arguments before `--` differ from what the agent would write: `None`
/// when they are exactly the canonical form; else what was added and what is missing, in words
/// (`added --policy /home/ann/allow.yaml; missing --server files`). Any difference is drift: an
/// option before `--` can point the proxy at another policy, socket or state directory.
pub fn wrapper_difference(name: &str, args: &[Value], extra: &[String]) -> Option<String> {
    let strs: Vec<&str> = match args.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
        Some(s) => s,
        None => return Some("arguments that are not strings".into()),
    };
    let Some(sep) = strs.iter().position(|a| *a == "--") else {
        return Some("no \"--\" before the server's command".into());
    };
    let (head, tail) = (&strs[..sep], &strs[sep + 1..]);
    if tail.is_empty() {
        return Some("no server command after \"--\"".into());
    }
    let no_args = tail.len() == 1 && head.contains(&NO_ARGS);
    let canonical = canonical_head(name, extra, no_args);
    if head
        .iter()
        .copied()
        .eq(canonical.iter().map(String::as_str))
    {
        return None;
    }
    // Compared option by option (`--flag value` is one), so the difference reads as written.
    let canonical: Vec<&str> = canonical.iter().map(String::as_str).collect();
    let mut missing = options(&canonical);
    let mut added = Vec::new();
    for o in options(head) {
        match missing.iter().position(|m| *m == o) {
            Some(i) => {
                missing.remove(i);
            }
            None => added.push(o),
        }
    }
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("added {}", added.join(" ")));
    }
    if !missing.is_empty() {
        parts.push(format!("missing {}", missing.join(" ")));
    }
    if parts.is_empty() {
        parts.push(format!("options reordered ({})", head.join(" ")));
    }
    Some(parts.join("; "))
}

/// Arguments grouped into options: `--flag value` is one, a lone word or `--switch` another.
fn options(args: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        let takes_value = a.starts_with("--") && a != NO_ARGS && !a.contains('=');
        match args.get(i + 1) {
            Some(v) if takes_value && !v.starts_with("--") => {
                out.push(format!("{a} {v}"));
                i += 2;
            }
            _ => {
                out.push(a.to_owned());
                i += 1;
            }
        }
    }
    out
}

/// Environment variables that make the dynamic loader run other code inside a process
/// (`thoth run` refuses to govern with them; the guardian reports entries that set them).
pub fn is_loader_variable(name: &str) -> bool {
    matches!(name, "LD_PRELOAD" | "LD_AUDIT" | "LD_LIBRARY_PATH") || name.starts_with("DYLD_")
}

/// The loader variables an entry's `env` sets (see [`is_loader_variable`]).
pub fn loader_variables(entry: &Value) -> Vec<String> {
    entry
        .get("env")
        .and_then(Value::as_object)
        .map(|env| {
            env.keys()
                .filter(|k| is_loader_variable(k))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Why an entry is not governed as the agent would leave it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotGoverned {
    /// `thoth run` is not in front of the server.
    #[error("not wrapped")]
    NotWrapped,
    /// The wrapper's command or its arguments before `--` differ from the canonical form (in
    /// words, from [`command_difference`] or [`wrapper_difference`]).
    #[error("wrapper altered: {0}")]
    WrapperAltered(String),
    /// The entry's `env` sets loader variables (see [`is_loader_variable`]).
    #[error("env sets {}", .0.join(", "))]
    LoaderVariables(Vec<String>),
}

/// Whether an entry is governed as the agent would leave it: wrapped, running the agent's own
/// `thoth` (`thoth`: its canonical path; a binary that is merely named `thoth` may be anything),
/// with the canonical arguments before `--`, and no loader variable in its `env`. `Err` says why
/// not.
pub fn governed(
    name: &str,
    entry: &Value,
    thoth: &str,
    extra: &[String],
) -> Result<(), NotGoverned> {
    if !is_wrapped(entry) {
        return Err(NotGoverned::NotWrapped);
    }
    if let Some(diff) = command_difference(entry, thoth) {
        return Err(NotGoverned::WrapperAltered(diff));
    }
    let args = entry
        .get("args")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if let Some(diff) = wrapper_difference(name, args, extra) {
        return Err(NotGoverned::WrapperAltered(diff));
    }
    let vars = loader_variables(entry);
    if !vars.is_empty() {
        return Err(NotGoverned::LoaderVariables(vars));
    }
    Ok(())
}

/// How a wrapped entry's command differs from the agent's `thoth` (its canonical path), if it
/// does.
pub fn command_difference(entry: &Value, thoth: &str) -> Option<String> {
    let cmd = entry.get("command").and_then(Value::as_str).unwrap_or("");
    (cmd != thoth).then(|| format!("command {cmd} instead of {thoth}"))
}

fn is_thoth_path(cmd: &str) -> bool {
    let base = cmd.rsplit(['/', '\\']).next().unwrap_or(cmd);
    base == "thoth" || base.eq_ignore_ascii_case("thoth.exe")
}

/// The original command line of a wrapped entry: (command, args or `None` when it had none).
pub fn original_of(args: &[Value]) -> Option<(String, Option<Vec<String>>)> {
    let strs: Vec<&str> = args.iter().map(Value::as_str).collect::<Option<_>>()?;
    let sep = strs.iter().position(|a| *a == "--")?;
    let head = &strs[..sep];
    let tail = &strs[sep + 1..];
    let (cmd, rest) = tail.split_first()?;
    let no_args = head.contains(&NO_ARGS);
    if no_args && !rest.is_empty() {
        return None;
    }
    Some((
        (*cmd).to_owned(),
        (!no_args).then(|| rest.iter().map(|s| (*s).to_owned()).collect()),
    ))
}

fn strings(v: &[String]) -> CstInputValue {
    CstInputValue::Array(v.iter().cloned().map(CstInputValue::String).collect())
}

fn servers(root_value: &Value) -> Result<Option<&serde_json::Map<String, Value>>, ConfigError> {
    let obj = root_value
        .as_object()
        .ok_or_else(|| ConfigError::Shape("the top level is not a JSON object".into()))?;
    match obj.get("mcpServers") {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ConfigError::Shape(
            "\"mcpServers\" is not an object; nothing was changed".into(),
        )),
    }
}

fn cst_servers(root: &CstRootNode) -> Option<CstObject> {
    root.object_value()?.object_value("mcpServers")
}

enum Mode<'a> {
    /// Wrap with this thoth and these extra options; `strict`: a wrapped entry must also be in
    /// the canonical form (the agent), else only its thoth path is updated (`wrap-config`, where
    /// a standalone user may have added `--policy` on purpose).
    Wrap(&'a str, &'a [String], bool),
    Unwrap,
}

fn rewrite(text: &str, mode: Mode<'_>) -> Result<Rewritten, ConfigError> {
    let (bom, body) = split_bom(text);
    let value = parse_strict(body)?;
    let mut report = Report::default();
    let Some(entries) = servers(&value)? else {
        return Ok(Rewritten {
            text: text.to_owned(),
            report,
        });
    };
    let root = CstRootNode::parse(body, &strict()).map_err(|e| ConfigError::Invalid {
        line: 0,
        column: 0,
        message: e.to_string(),
    })?;
    let Some(cst) = cst_servers(&root) else {
        return Err(ConfigError::Shape("cannot locate \"mcpServers\"".into()));
    };
    for prop in cst.properties() {
        let Some(name) = prop.decoded_name() else {
            continue;
        };
        // The value as JSON: the last duplicate wins in serde_json; edit only matching props.
        let Some(entry) = entries.get(&name) else {
            continue;
        };
        let Some(obj) = entry.as_object() else {
            report
                .skipped
                .push((name, "the entry is not an object".into()));
            continue;
        };
        let Some(cst_obj) = prop.object_value() else {
            continue;
        };
        let command = match obj.get("command") {
            None => {
                report.remote.push(name);
                continue;
            }
            Some(Value::String(c)) => c.clone(),
            Some(_) => {
                report
                    .skipped
                    .push((name, "\"command\" is not a string".into()));
                continue;
            }
        };
        let args: Option<Vec<String>> = match obj.get("args") {
            None => None,
            Some(Value::Array(a)) => {
                match a.iter().map(|v| v.as_str().map(str::to_owned)).collect() {
                    Some(v) => Some(v),
                    None => {
                        report
                            .skipped
                            .push((name, "\"args\" holds something other than strings".into()));
                        continue;
                    }
                }
            }
            Some(_) => {
                report
                    .skipped
                    .push((name, "\"args\" is not an array".into()));
                continue;
            }
        };
        let wrapped = is_wrapped(entry);
        match mode {
            Mode::Wrap(thoth, extra, strict) => {
                if wrapped {
                    let all = args.clone().unwrap_or_default();
                    let values: Vec<Value> = all.iter().cloned().map(Value::String).collect();
                    // Strict (the agent): another `thoth` than the agent's is drift too, not a
                    // path to update quietly (a binary named `thoth` may be anything).
                    let diff = strict
                        .then(|| {
                            let args = wrapper_difference(&name, &values, extra);
                            match (command_difference(entry, thoth), args) {
                                (Some(c), Some(a)) => Some(format!("{c}; {a}")),
                                (c, a) => c.or(a),
                            }
                        })
                        .flatten();
                    if let Some(diff) = diff {
                        // Re-wrapped around the command after the first `--`, whatever came
                        // before it.
                        let Some(sep) = all.iter().position(|a| a == "--") else {
                            report.skipped.push((
                                name,
                                format!("a thoth wrapper with {diff}, and no command to keep"),
                            ));
                            continue;
                        };
                        let tail = &all[sep + 1..];
                        if tail.is_empty() {
                            report.skipped.push((
                                name,
                                format!("a thoth wrapper with {diff}, and no command to keep"),
                            ));
                            continue;
                        }
                        let no_args = tail.len() == 1 && all[..sep].iter().any(|a| a == NO_ARGS);
                        let mut new_args = canonical_head(&name, extra, no_args);
                        new_args.push("--".to_owned());
                        new_args.extend(tail.iter().cloned());
                        set_prop(&cst_obj, "command", CstInputValue::String(thoth.to_owned()));
                        set_prop(&cst_obj, "args", strings(&new_args));
                        report.rewrapped.push((name, diff));
                    } else if command == thoth {
                        report.already.push(name);
                    } else {
                        set_prop(&cst_obj, "command", CstInputValue::String(thoth.to_owned()));
                        report.updated.push(name);
                    }
                    continue;
                }
                let mut new_args = vec!["run".to_owned(), "--server".to_owned(), name.clone()];
                new_args.extend(extra.iter().cloned());
                if args.is_none() {
                    new_args.push(NO_ARGS.to_owned());
                }
                new_args.push("--".to_owned());
                new_args.push(command);
                new_args.extend(args.clone().unwrap_or_default());
                set_prop(&cst_obj, "command", CstInputValue::String(thoth.to_owned()));
                if args.is_some() {
                    // Insert in place, so the array keeps its layout (inline or one per line).
                    let prefix = &new_args[..new_args.len() - args.as_ref().map_or(0, Vec::len)];
                    for arr in arrays(&cst_obj, "args") {
                        for (i, a) in prefix.iter().enumerate() {
                            arr.insert(i, CstInputValue::String(a.clone()));
                        }
                    }
                } else if cst_obj.children().iter().any(|c| c.is_newline()) {
                    // A multi-line object: a new line after "command", in its indentation.
                    let at = cst_obj.get("command").map_or(0, |p| p.property_index() + 1);
                    cst_obj.insert(at, "args", strings(&new_args));
                } else {
                    // An inline object stays inline: `"args": […]` follows the command's value on
                    // the same line (inserting a property would make the object multi-line, and
                    // unwrapping could not restore its layout).
                    let items: Vec<String> = new_args
                        .iter()
                        .map(|a| serde_json::to_string(a).expect("strings serialize"))
                        .collect();
                    let raw = format!(
                        "{}, \"args\": [{}]",
                        serde_json::to_string(thoth).expect("strings serialize"),
                        items.join(", ")
                    );
                    for p in cst_obj.properties() {
                        if p.decoded_name().as_deref() == Some("command")
                            && let Some(lit) = p.value().and_then(|v| v.as_string_lit())
                        {
                            lit.set_raw_value(raw.clone());
                        }
                    }
                }
                report.wrapped.push(name);
            }
            Mode::Unwrap => {
                if !wrapped {
                    continue;
                }
                let Some((orig_cmd, orig_args)) =
                    original_of(obj["args"].as_array().map_or(&[][..], Vec::as_slice))
                else {
                    report.skipped.push((
                        name,
                        "wrapped, but its original command line cannot be read".into(),
                    ));
                    continue;
                };
                set_prop(&cst_obj, "command", CstInputValue::String(orig_cmd));
                match orig_args {
                    Some(a) => {
                        // Remove the wrapper's elements in place, keeping the array's layout.
                        let strip = obj["args"].as_array().map_or(0, Vec::len) - a.len();
                        for arr in arrays(&cst_obj, "args") {
                            for el in arr.elements().into_iter().take(strip) {
                                el.remove();
                            }
                            tidy_inline(&arr);
                        }
                    }
                    None => {
                        for p in cst_obj.properties() {
                            if p.decoded_name().as_deref() == Some("args") {
                                p.remove();
                            }
                        }
                    }
                }
                report.unwrapped.push(name);
            }
        }
    }
    if !report.changed() {
        return Ok(Rewritten {
            text: text.to_owned(),
            report,
        });
    }
    let out = format!("{bom}{}", root);
    // Defence in depth: the result must parse, and only command/args of the servers changed.
    let new_value = parse_strict(split_bom(&out).1).map_err(|e| {
        ConfigError::Shape(format!(
            "internal error: the rewritten file would not parse ({e}); nothing was changed"
        ))
    })?;
    check_only_servers_changed(&value, &new_value)?;
    Ok(Rewritten { text: out, report })
}

/// After leading elements were removed from an inline array, the spaces that followed their
/// commas remain between `[` and the first element: remove them, as wrapping found none there.
fn tidy_inline(arr: &jsonc_parser::cst::CstArray) {
    let children = arr.children();
    if children.iter().any(|c| c.is_newline()) {
        return;
    }
    for c in children
        .into_iter()
        .skip_while(|c| c.token_char() != Some('['))
        .skip(1)
        .take_while(|c| c.is_whitespace())
    {
        c.remove();
    }
}

/// The array values of every property named `key` (duplicates included).
fn arrays(obj: &CstObject, key: &str) -> Vec<jsonc_parser::cst::CstArray> {
    obj.properties()
        .into_iter()
        .filter(|p| p.decoded_name().as_deref() == Some(key))
        .filter_map(|p| p.array_value())
        .collect()
}

fn set_prop(obj: &CstObject, key: &str, value: CstInputValue) {
    // Every duplicate of the key is set, so the value serde reads (the last) is the new one.
    for p in obj.properties() {
        if p.decoded_name().as_deref() == Some(key) {
            p.set_value(value.clone());
        }
    }
}

fn check_only_servers_changed(old: &Value, new: &Value) -> Result<(), ConfigError> {
    let fail =
        |what: String| ConfigError::Shape(format!("internal error: {what}; nothing was changed"));
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return Err(fail("the top level changed".into()));
    };
    if o.keys().ne(n.keys()) {
        return Err(fail("top-level keys changed".into()));
    }
    for (k, v) in o {
        if k != "mcpServers" && n.get(k) != Some(v) {
            return Err(fail(format!("top-level key {k:?} changed")));
        }
    }
    let (Some(os), Some(ns)) = (o["mcpServers"].as_object(), n["mcpServers"].as_object()) else {
        return Err(fail("mcpServers changed shape".into()));
    };
    if os.keys().ne(ns.keys()) {
        return Err(fail("the server names changed".into()));
    }
    for (name, e) in os {
        let (Some(eo), Some(en)) = (e.as_object(), ns[name].as_object()) else {
            if e != &ns[name] {
                return Err(fail(format!("server {name:?} changed")));
            }
            continue;
        };
        for (k, v) in eo {
            if k != "command" && k != "args" && en.get(k) != Some(v) {
                return Err(fail(format!("key {k:?} of server {name:?} changed")));
            }
        }
        if en
            .keys()
            .any(|k| k != "command" && k != "args" && !eo.contains_key(k))
        {
            return Err(fail(format!("server {name:?} gained a key")));
        }
    }
    Ok(())
}

/// Wraps every stdio server so it runs through `thoth` (an absolute path).
pub fn wrap(text: &str, thoth: &str) -> Result<Rewritten, ConfigError> {
    rewrite(text, Mode::Wrap(thoth, &[], false))
}

/// Like [`wrap`], with extra `thoth run` options placed before `--` (the agent adds
/// `--agent-socket` and `--state-dir` when its own are not the defaults), and strict: a wrapped
/// entry whose arguments before `--` are not exactly the canonical form is re-wrapped
/// ([`Report::rewrapped`]).
pub fn wrap_with(text: &str, thoth: &str, extra: &[String]) -> Result<Rewritten, ConfigError> {
    rewrite(text, Mode::Wrap(thoth, extra, true))
}

/// The extra `thoth run` options a wrapped entry needs to reach the agent at `socket` with its
/// state in `state_dir` (none for the defaults): part of the canonical form.
pub fn canonical_extra(socket: &std::path::Path, state_dir: &std::path::Path) -> Vec<String> {
    let mut extra = Vec::new();
    if socket != std::path::Path::new(thoth_endpoint::config::DEFAULT_SOCKET) {
        extra.push("--agent-socket".into());
        extra.push(socket.display().to_string());
    }
    if state_dir != std::path::Path::new(thoth_endpoint::config::DEFAULT_STATE_DIR) {
        extra.push("--state-dir".into());
        extra.push(state_dir.display().to_string());
    }
    extra
}

/// Restores every wrapped server's original command line.
pub fn unwrap(text: &str) -> Result<Rewritten, ConfigError> {
    rewrite(text, Mode::Unwrap)
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
