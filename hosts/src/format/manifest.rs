//! Claude Desktop extensions (`.mcpb`, formerly `.dxt`): each installed extension's
//! `manifest.json`, and Claude's registry of installed extensions
//! (`extensions-installations.json`, a copy of each manifest at `extensions.<id>.manifest`).
//!
//! A manifest's server is `server.mcp_config`: `command`, `args`, `env`, and
//! `platform_overrides` keyed by platform (`darwin`, `win32`, `linux`). Claude runs, on a
//! platform, the base with the fields the override names replaced (a field the override leaves
//! out, or sets to a JavaScript-falsy value, is the base's); see [`effective`]. `${__dirname}`,
//! `${HOME}`, `${user_config.X}`… are substituted by Claude in the command, the arguments and the
//! environment; they are moved verbatim into the wrapped arguments, where Claude substitutes them
//! all the same.
//!
//! Wrapping makes what runs on every platform `thoth run --server ID --client claude-extension
//! … -- <the effective command> <the effective arguments>` (ID: the extension's id, its
//! directory's name; else the manifest's `name`):
//! - the base is wrapped like any JSON entry;
//! - an override that sets `command` and `args` is wrapped like an entry;
//! - an override that sets only `command` inherits the base's arguments: it gets `command` =
//!   thoth and an `args` key = the head with `--no-args` (it had no `args` key), `--`, its
//!   command and a copy of the base's ORIGINAL arguments (kept up to date by the agent; unwrap
//!   removes the key);
//! - an override that sets only `args` inherits the base's command, which is now thoth: its
//!   `args` become the head with `--no-command` (it had no `command` key), `--`, the base's
//!   ORIGINAL command and its own arguments (unwrap restores the arguments; no `command` is
//!   added);
//! - an override that sets only `env` is untouched (it runs the wrapped base).
//!
//! As for every format, only `command` and `args` change, unwrapping gives back the original
//! bytes, wrapping twice is wrapping once, and a rewrite is checked before it is returned:
//! nothing else changed, and on each platform the command line after `--` is the one that ran
//! before. A manifest without `server.mcp_config` (the `uv` type may omit it) is not wrapped:
//! Claude builds that command line itself ([`NO_MCP_CONFIG`]).
//!
//! Bundled Node: with `command: node`, Claude runs the server on its own bundled runtime (on
//! macOS in an Electron UtilityProcess), so a laptop may have no `node` on PATH. Wrapped, the
//! entry's command is `thoth`, and `thoth run` spawns `node` itself: the proxy resolves `node`
//! at launch when the client is `claude-extension` (an installed Node in the usual places, else
//! Claude's own executable run as Node), see the proxy's `node` module.
//!
//! Unverified, and left to `thoth run` and the OS: the spec says apps append `.exe` to a
//! `binary` server's command on Windows; wrapped, that command is an argument, and Windows
//! appends `.exe` itself when it starts a file named without an extension. A relative command
//! (`server/my-server`) is started from the directory Claude starts `thoth` in.

use std::collections::HashSet;

use jsonc_parser::cst::{CstArray, CstInputValue, CstNode, CstObject, CstObjectProp, CstRootNode};
use serde_json::{Map, Value};

use super::json::{self, options, parse, split_bom};
use super::model::{ConfigError, Ctx, Found, Op, Report, Rewritten};
use crate::wrapper::{self, Entry, Markers};

/// Why a manifest without `server.mcp_config` is not wrapped.
pub const NO_MCP_CONFIG: &str =
    "no mcp_config: Claude builds the command line itself; not governed";

/// The platforms Claude Desktop runs on, as manifests name them.
pub const PLATFORMS: [&str; 3] = ["darwin", "win32", "linux"];

/// The base server's table in a manifest.
pub const BASE_TABLE: &str = "server.mcp_config";

/// The platform overrides' table in a manifest.
pub const OVERRIDES_TABLE: &str = "server.mcp_config.platform_overrides";

/// Whether a JSON value is truthy in JavaScript (Claude reads overrides with `||`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// The entry Claude runs on `platform` (`darwin`, `win32`, `linux`) for a manifest: the base
/// `server.mcp_config` with the `command`, `args` and `env` its override for that platform sets
/// (truthy) replaced. Without `mcp_config`, an entry marked malformed with [`NO_MCP_CONFIG`];
/// a manifest of the wrong shape, one marked malformed with what is wrong.
pub fn effective(manifest: &Value, platform: &str) -> Entry {
    let obj = match mcp_config(manifest) {
        Ok(Some(obj)) => obj,
        Ok(None) => return no_config(),
        Err(why) => {
            return Entry {
                malformed: Some(why),
                ..Entry::default()
            };
        }
    };
    let mut merged = obj.clone();
    merged.remove("platform_overrides");
    if let Some(ov) = obj
        .get("platform_overrides")
        .and_then(|o| o.get(platform))
        .and_then(Value::as_object)
    {
        for key in ["command", "args", "env"] {
            if let Some(v) = ov.get(key).filter(|v| truthy(v)) {
                merged.insert(key.to_owned(), v.clone());
            }
        }
    }
    Entry::from_json(&Value::Object(merged))
}

fn no_config() -> Entry {
    Entry {
        malformed: Some(NO_MCP_CONFIG.into()),
        ..Entry::default()
    }
}

/// The command line an entry finally runs: after `--` when wrapped, else itself.
fn run_line(e: &Entry) -> Option<(String, Vec<String>)> {
    if e.malformed.is_some() {
        return None;
    }
    if e.is_wrapped() {
        return wrapper::inner_line(e.args.as_deref().unwrap_or(&[]));
    }
    e.command
        .clone()
        .map(|c| (c, e.args.clone().unwrap_or_default()))
}

/// A manifest's `server.mcp_config` (`None`: it has none), or why its shape is wrong.
fn mcp_config(manifest: &Value) -> Result<Option<&Map<String, Value>>, String> {
    let Some(top) = manifest.as_object() else {
        return Err("the manifest is not a JSON object".into());
    };
    let server = match top.get("server") {
        None => return Err("the manifest has no \"server\"".into()),
        Some(Value::Object(s)) => s,
        Some(_) => return Err("\"server\" is not an object".into()),
    };
    let mcp = match server.get("mcp_config") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(format!("\"{BASE_TABLE}\" is not an object")),
    };
    match mcp.get("platform_overrides") {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(Some(mcp)),
        Some(_) => Err(format!("\"{OVERRIDES_TABLE}\" is not an object")),
    }
}

/// The entries of one manifest (`prefix`: where it sits in its file; `name`: the entry name).
fn manifest_entries(
    manifest: &Value,
    prefix: &str,
    scope: Option<&str>,
    name: &str,
) -> Result<Vec<Found>, String> {
    let found = |table: String, entry: Entry| Found {
        table: format!("{prefix}{table}"),
        scope: scope.map(str::to_owned),
        name: name.to_owned(),
        entry,
    };
    let Some(mcp) = mcp_config(manifest)? else {
        return Ok(vec![found(BASE_TABLE.into(), no_config())]);
    };
    let base = Value::Object(mcp.clone());
    let mut out = vec![found(BASE_TABLE.into(), Entry::from_json(&base))];
    if let Some(ovs) = mcp.get("platform_overrides").and_then(Value::as_object) {
        for (os, ov) in ovs {
            let Some(o) = ov.as_object() else { continue };
            let sets_command = o.get("command").is_some_and(truthy);
            if sets_command || o.get("args").is_some_and(truthy) {
                out.push(found(
                    format!("{OVERRIDES_TABLE}.{os}"),
                    Entry::from_json(ov),
                ));
            }
        }
    }
    Ok(out)
}

/// Every server entry of a manifest: the base (table `server.mcp_config`, named by the
/// manifest's `name`) and each platform override that sets `command` or `args`. A manifest
/// without `mcp_config` gives its base, marked malformed with [`NO_MCP_CONFIG`].
pub fn entries(text: &str) -> Result<Vec<Found>, ConfigError> {
    let value = parse(text, false)?;
    let name = value.get("name").and_then(Value::as_str).unwrap_or("");
    manifest_entries(&value, "", None, name).map_err(ConfigError::Shape)
}

/// Every server entry of the registry of installed extensions: per extension, the same as
/// [`entries`], with its id as name and scope, under `extensions.<id>.manifest.`. A copy that
/// cannot be read is one entry marked malformed.
pub fn entries_registry(text: &str) -> Result<Vec<Found>, ConfigError> {
    let value = parse(text, false)?;
    let Some(exts) = registry_extensions(&value)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (id, ext) in exts {
        let prefix = format!("extensions.{id}.manifest.");
        let copy = ext.get("manifest").unwrap_or(&Value::Null);
        match manifest_entries(copy, &prefix, Some(id), id) {
            Ok(found) => out.extend(found),
            Err(why) => out.push(Found {
                table: format!("{prefix}{BASE_TABLE}"),
                scope: Some(id.clone()),
                name: id.clone(),
                entry: Entry {
                    malformed: Some(why),
                    ..Entry::default()
                },
            }),
        }
    }
    Ok(out)
}

/// The registry's `extensions` object (`None`: none).
fn registry_extensions(value: &Value) -> Result<Option<&Map<String, Value>>, ConfigError> {
    let Some(top) = value.as_object() else {
        return Err(ConfigError::Shape(
            "the top level is not a JSON object".into(),
        ));
    };
    match top.get("extensions") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ConfigError::Shape(
            "\"extensions\" is not an object; nothing was changed".into(),
        )),
    }
}

/// The object value of the last property named `key` (the one a JSON reader keeps).
fn child(obj: &CstObject, key: &str) -> Option<CstObject> {
    obj.properties()
        .into_iter()
        .rev()
        .find(|p| p.decoded_name().as_deref() == Some(key))
        .and_then(|p| p.object_value())
}

/// The properties of `obj`, the last of each name only, in document order.
fn last_props(obj: &CstObject) -> Vec<(String, CstObjectProp)> {
    let mut seen = HashSet::new();
    let mut out: Vec<(String, CstObjectProp)> = obj
        .properties()
        .into_iter()
        .rev()
        .filter_map(|p| {
            let name = p.decoded_name()?;
            seen.insert(name.clone()).then_some((name, p))
        })
        .collect();
    out.reverse();
    out
}

fn invalid(e: jsonc_parser::errors::ParseError) -> ConfigError {
    ConfigError::Invalid {
        line: e.line_display(),
        column: e.column_display(),
        message: e.kind().to_string(),
    }
}

/// Wraps or unwraps a manifest's server: the base and every platform override (see the module
/// doc). The `--server` name is `ctx.server` (the extension's id), else the manifest's `name`.
pub fn rewrite(text: &str, op: &Op, ctx: &Ctx<'_>) -> Result<Rewritten, ConfigError> {
    let (bom, body) = split_bom(text);
    let value = parse(text, false)?;
    if !value.is_object() {
        return Err(ConfigError::Shape(
            "the top level is not a JSON object".into(),
        ));
    }
    let root = CstRootNode::parse(body, &options(false)).map_err(invalid)?;
    let Some(top) = root.object_value() else {
        return Err(ConfigError::Shape(
            "the top level is not a JSON object".into(),
        ));
    };
    let name = value.get("name").and_then(Value::as_str);
    let Some(server) = ctx.server.or(name).filter(|s| !s.is_empty()) else {
        return Err(ConfigError::Shape(
            "the manifest has no \"name\" and no extension id was given; nothing was changed"
                .into(),
        ));
    };
    let mut report = Report::default();
    rewrite_manifest(&value, &top, server, server, op, ctx, &mut report)
        .map_err(|why| ConfigError::Shape(format!("{why}; nothing was changed")))?;
    if !report.changed() {
        return Ok(Rewritten {
            text: text.to_owned(),
            report,
        });
    }
    let out = format!("{bom}{root}");
    let new = reparse(&out)?;
    check_manifest(&value, &new, server, op, ctx, &report).map_err(internal)?;
    Ok(Rewritten { text: out, report })
}

/// Wraps or unwraps every manifest copy of the registry of installed extensions, each as its
/// extension's id. A copy that cannot be rewritten is reported in `skipped`; the others are.
pub fn rewrite_registry(text: &str, op: &Op, ctx: &Ctx<'_>) -> Result<Rewritten, ConfigError> {
    let (bom, body) = split_bom(text);
    let value = parse(text, false)?;
    let unchanged = |report| {
        Ok(Rewritten {
            text: text.to_owned(),
            report,
        })
    };
    let Some(exts) = registry_extensions(&value)? else {
        return unchanged(Report::default());
    };
    let root = CstRootNode::parse(body, &options(false)).map_err(invalid)?;
    let Some(exts_cst) = root.object_value().and_then(|t| child(&t, "extensions")) else {
        return Err(ConfigError::Shape("cannot locate \"extensions\"".into()));
    };
    let mut report = Report::default();
    for (id, prop) in last_props(&exts_cst) {
        let Some(copy) = exts.get(&id).and_then(|e| e.get("manifest")) else {
            report
                .skipped
                .push((id.clone(), "no manifest copy in the registry".into()));
            continue;
        };
        let Some(m_cst) = prop.object_value().and_then(|e| child(&e, "manifest")) else {
            report
                .skipped
                .push((id.clone(), "the manifest copy is not an object".into()));
            continue;
        };
        if let Err(why) = rewrite_manifest(copy, &m_cst, &id, &id, op, ctx, &mut report) {
            report.skipped.push((id.clone(), why));
        }
    }
    if !report.changed() {
        return unchanged(report);
    }
    let out = format!("{bom}{root}");
    let new = reparse(&out)?;
    let new_exts = new
        .get("extensions")
        .and_then(Value::as_object)
        .ok_or_else(|| internal("the extensions went missing".into()))?;
    let (mut old_rest, mut new_rest) = (value.clone(), new.clone());
    for (id, old_ext) in exts {
        let new_ext = new_exts.get(id).unwrap_or(&Value::Null);
        let (a, b) = (
            old_ext.get("manifest").unwrap_or(&Value::Null),
            new_ext.get("manifest").unwrap_or(&Value::Null),
        );
        check_manifest(a, b, id, op, ctx, &report).map_err(internal)?;
        for v in [&mut old_rest, &mut new_rest] {
            if let Some(e) = v["extensions"].get_mut(id).and_then(Value::as_object_mut) {
                e.remove("manifest");
            }
        }
    }
    if old_rest != new_rest {
        return Err(internal(
            "the rewrite changed more than the extensions' servers".into(),
        ));
    }
    Ok(Rewritten { text: out, report })
}

fn reparse(out: &str) -> Result<Value, ConfigError> {
    parse(out, false).map_err(|e| {
        ConfigError::Shape(format!(
            "internal error: the rewritten file would not parse ({e}); nothing was changed"
        ))
    })
}

fn internal(why: String) -> ConfigError {
    ConfigError::Shape(format!("internal error: {why}; nothing was changed"))
}

/// `manifest` with `command` and `args` taken out of its base and overrides.
fn mask(manifest: &Value) -> Value {
    let mut v = manifest.clone();
    if let Some(mcp) = v
        .get_mut("server")
        .and_then(|s| s.get_mut("mcp_config"))
        .and_then(Value::as_object_mut)
    {
        mcp.remove("command");
        mcp.remove("args");
        if let Some(ovs) = mcp
            .get_mut("platform_overrides")
            .and_then(Value::as_object_mut)
        {
            for ov in ovs.values_mut().filter_map(Value::as_object_mut) {
                ov.remove("command");
                ov.remove("args");
            }
        }
    }
    v
}

/// Defence in depth, after a rewrite of one manifest (`old` → `new`): nothing but `command` and
/// `args` changed; on every platform the command line after `--` is the one that ran before
/// (unless a wrapper was rebuilt because what it inherited had changed); and after a wrap with
/// nothing left alone, every platform runs through thoth (in the canonical form, strict).
fn check_manifest(
    old: &Value,
    new: &Value,
    server: &str,
    op: &Op,
    ctx: &Ctx<'_>,
    report: &Report,
) -> Result<(), String> {
    if mask(old) != mask(new) {
        return Err("the rewrite changed more than the servers' command and args".into());
    }
    for p in PLATFORMS {
        let (a, b) = (effective(old, p), effective(new, p));
        let before = run_line(&a);
        if report.rewrapped.is_empty() && before != run_line(&b) {
            return Err(format!("the command line run on {p} would change"));
        }
        if let Op::Wrap {
            thoth,
            extra,
            strict,
        } = op
            && report.skipped.is_empty()
            && before.is_some()
        {
            if !b.is_wrapped() {
                return Err(format!("on {p} the server would not run through thoth"));
            }
            let args = b.args.as_deref().unwrap_or(&[]);
            if *strict
                && (b.command.as_deref() != Some(thoth.as_str())
                    || wrapper::wrapper_difference(server, ctx.client, args, extra).is_some())
            {
                return Err(format!(
                    "on {p} the wrapper would not be in the canonical form"
                ));
            }
        }
    }
    Ok(())
}

/// The original command line of a base (`None`: it cannot be read, or has no command).
fn base_original(base: &Entry) -> Option<(String, Option<Vec<String>>)> {
    if base.malformed.is_some() {
        return None;
    }
    if base.is_wrapped() {
        return wrapper::original_of(base.args.as_deref().unwrap_or(&[])).map(|(c, a, _)| (c, a));
    }
    base.command.clone().map(|c| (c, base.args.clone()))
}

/// Applies `op` to one manifest (`value`, its syntax node `top`), as the server `server`.
/// Errors (the manifest's shape) are found before anything is edited.
fn rewrite_manifest(
    value: &Value,
    top: &CstObject,
    server: &str,
    label: &str,
    op: &Op,
    ctx: &Ctx<'_>,
    report: &mut Report,
) -> Result<(), String> {
    let Some(mcp) = mcp_config(value)? else {
        report
            .skipped
            .push((label.to_owned(), NO_MCP_CONFIG.into()));
        return Ok(());
    };
    let Some(base_cst) = child(top, "server").and_then(|s| child(&s, "mcp_config")) else {
        return Err(format!("cannot locate \"{BASE_TABLE}\""));
    };
    let overrides = match mcp.get("platform_overrides").and_then(Value::as_object) {
        None => Vec::new(),
        Some(ovs) => {
            let Some(ovs_cst) = child(&base_cst, "platform_overrides") else {
                return Err(format!("cannot locate \"{OVERRIDES_TABLE}\""));
            };
            last_props(&ovs_cst)
                .into_iter()
                .filter_map(|(os, prop)| ovs.get(&os).map(|v| (os, prop, v)))
                .collect()
        }
    };
    let base = Entry::from_json(&Value::Object(mcp.clone()));
    let original = base_original(&base);
    json::edit_entry(&base_cst, &base, server, label.to_owned(), op, ctx, report);
    for (os, prop, v) in overrides {
        let label = format!("{label} ({os})");
        match (prop.object_value(), v.as_object()) {
            (Some(obj), Some(ov)) => {
                override_one(&obj, ov, server, original.as_ref(), label, op, ctx, report)
            }
            _ if v.is_null() => {}
            _ => report
                .skipped
                .push((label, "the platform override is not an object".into())),
        }
    }
    Ok(())
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

/// Applies `op` to one platform override (`obj` its syntax node, `ov` its value); `base`: the
/// base's original command line.
#[allow(clippy::too_many_arguments)]
fn override_one(
    obj: &CstObject,
    ov: &Map<String, Value>,
    server: &str,
    base: Option<&(String, Option<Vec<String>>)>,
    label: String,
    op: &Op,
    ctx: &Ctx<'_>,
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
            json::edit_entry(obj, &entry, server, label, op, ctx, report);
        }
        Kind::CommandOnly { wrapped } => command_only(
            obj, command, &args, wrapped, server, base, label, op, ctx, report,
        ),
        Kind::ArgsOnly { wrapped } => {
            args_only(obj, &args, wrapped, server, base, label, op, ctx, report)
        }
    }
}

/// The position of `--` in a wrapper's arguments (classified as wrapped: it has one).
fn sep_of(args: &[String]) -> usize {
    args.iter().position(|a| a == "--").unwrap_or(0)
}

/// Strict drift of a wrapper's head, in words.
fn head_drift(server: &str, ctx: &Ctx<'_>, args: &[String], op: &Op) -> Option<String> {
    match op {
        Op::Wrap {
            extra,
            strict: true,
            ..
        } => wrapper::wrapper_difference(server, ctx.client, args, extra),
        _ => None,
    }
}

/// An override that sets only `command` (see the module doc).
#[allow(clippy::too_many_arguments)]
fn command_only(
    obj: &CstObject,
    command: &str,
    args: &[String],
    wrapped: bool,
    server: &str,
    base: Option<&(String, Option<Vec<String>>)>,
    label: String,
    op: &Op,
    ctx: &Ctx<'_>,
    report: &mut Report,
) {
    let inherits = || base.map(|(_, a)| a.clone().unwrap_or_default());
    match (op, wrapped) {
        (Op::Unwrap, false) => {}
        (Op::Unwrap, true) => {
            let sep = sep_of(args);
            let raw = args_array(obj)
                .and_then(|a| element(&a, sep + 1))
                .map(|l| l.raw_value());
            let Some(raw) = raw else {
                report.skipped.push((
                    label,
                    "wrapped, but its original command cannot be read".into(),
                ));
                return;
            };
            set_raw(obj, "command", &raw);
            remove_added_args(obj);
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
            let mut items = raws(&wrapper::canonical_head(server, ctx.client, extra, markers));
            items.push(raw("--"));
            items.push(raw_string(obj, "command").unwrap_or_else(|| raw(command)));
            items.extend(raws(&suffix));
            add_args(obj, thoth, &items);
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
            let head = head_drift(server, ctx, args, op);
            diffs.extend(head.clone());
            let stale = args.get(sep + 2..).unwrap_or(&[]) != want.as_slice();
            if stale {
                diffs.push("the base's arguments it inherits changed".into());
            }
            if diffs.is_empty() {
                if command == thoth {
                    report.already.push(label);
                } else {
                    set_string(obj, "command", thoth);
                    report.updated.push(label);
                }
                return;
            }
            set_string(obj, "command", thoth);
            if let Some(arr) = args_array(obj) {
                if stale {
                    replace_after(&arr, sep + 1, &raws(&want));
                }
                if head.is_some() {
                    let m = wrapper::split_wrapped(args).map(|(_, _, m)| m);
                    let mut items = raws(&wrapper::canonical_head(
                        server,
                        ctx.client,
                        extra,
                        m.unwrap_or_default(),
                    ));
                    items.push(raw("--"));
                    replace_first(&arr, sep + 1, &items);
                }
            }
            report.rewrapped.push((label, diffs.join("; ")));
        }
    }
}

/// An override that sets only `args` (see the module doc).
#[allow(clippy::too_many_arguments)]
fn args_only(
    obj: &CstObject,
    args: &[String],
    wrapped: bool,
    server: &str,
    base: Option<&(String, Option<Vec<String>>)>,
    label: String,
    op: &Op,
    ctx: &Ctx<'_>,
    report: &mut Report,
) {
    let markers = Markers {
        no_args: false,
        no_command: true,
    };
    let Some(arr) = args_array(obj) else {
        report
            .skipped
            .push((label, "cannot locate its \"args\"".into()));
        return;
    };
    match (op, wrapped) {
        (Op::Unwrap, false) => {}
        (Op::Unwrap, true) => {
            remove_first(&arr, sep_of(args) + 2);
            report.unwrapped.push(label);
        }
        (Op::Wrap { extra, .. }, wrapped) => {
            let Some((base_cmd, _)) = base else {
                report.skipped.push((
                    label,
                    "sets only \"args\", and the base's command it inherits cannot be read".into(),
                ));
                return;
            };
            let mut diffs = Vec::new();
            let head = if wrapped {
                let sep = sep_of(args);
                let head = head_drift(server, ctx, args, op);
                diffs.extend(head.clone());
                if args.get(sep + 1) != Some(base_cmd) {
                    diffs.push("the base's command it inherits changed".into());
                }
                if diffs.is_empty() {
                    report.already.push(label);
                    return;
                }
                match head {
                    Some(_) => wrapper::canonical_head(server, ctx.client, extra, markers),
                    None => args[..sep].to_vec(),
                }
            } else {
                wrapper::canonical_head(server, ctx.client, extra, markers)
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

// Text-level edits. jsonc-parser's own insertions and removals rearrange the whitespace around
// array elements; these write and erase exact text instead (raw literals), so an unwrap gives
// back every byte a wrap saw.

/// A string's JSON literal.
fn raw(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn raws(v: &[String]) -> Vec<String> {
    v.iter().map(|s| raw(s)).collect()
}

/// The array of the last `args` property (the one a reader sees).
fn args_array(obj: &CstObject) -> Option<CstArray> {
    obj.properties()
        .into_iter()
        .rev()
        .find(|p| p.decoded_name().as_deref() == Some("args"))
        .and_then(|p| p.array_value())
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

fn set_string(obj: &CstObject, key: &str, value: &str) {
    for p in obj.properties() {
        if p.decoded_name().as_deref() == Some(key) {
            p.set_value(CstInputValue::String(value.to_owned()));
        }
    }
}

fn set_raw(obj: &CstObject, key: &str, text: &str) {
    for p in obj.properties() {
        if p.decoded_name().as_deref() == Some(key)
            && let Some(lit) = p.value().and_then(|v| v.as_string_lit())
        {
            lit.set_raw_value(text.to_owned());
        }
    }
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

/// The string literal of element `n` of `arr`.
fn element(arr: &CstArray, n: usize) -> Option<jsonc_parser::cst::CstStringLit> {
    let (children, elements) = layout(arr);
    elements.get(n).and_then(|&i| children[i].as_string_lit())
}

/// What follows each comma between written elements placed before the child at `first`: a
/// space in an inline container; in a multi-line one, the line break and indentation before it.
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

/// Erases the children `from..to` from the printed text, exactly.
fn erase(children: &[CstNode], from: usize, to: usize) {
    for c in &children[from..to] {
        if let CstNode::Container(_) = c {
            let inner = c.children();
            erase(&inner, 0, inner.len());
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

/// Writes `items` (raw literals) before the first element of `arr`.
fn prepend(arr: &CstArray, items: &[String]) {
    let (children, elements) = layout(arr);
    match elements.first() {
        Some(&first) => {
            let sep = separator(&children, first);
            let Some(lit) = children[first].as_string_lit() else {
                return;
            };
            let text = format!(
                "{},{sep}{}",
                items.join(&format!(",{sep}")),
                lit.raw_value()
            );
            lit.set_raw_value(text);
        }
        None => {
            // Empty: the elements right after `[` (whatever the array held stays after them).
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

/// Erases the first `n` elements of `arr` and the text between them and the next one (the
/// inverse of [`prepend`]); with no element after them, a comma that follows the last too.
fn remove_first(arr: &CstArray, n: usize) {
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

/// Replaces the first `n` elements of `arr` by `items` (raw literals).
fn replace_first(arr: &CstArray, n: usize, items: &[String]) {
    let (children, elements) = layout(arr);
    let Some(&first) = elements.first() else {
        return;
    };
    let sep = separator(&children, first);
    match elements.get(n) {
        Some(&next) => {
            let Some(lit) = children[next].as_string_lit() else {
                return;
            };
            let text = format!(
                "{},{sep}{}",
                items.join(&format!(",{sep}")),
                lit.raw_value()
            );
            erase(&children, first, next);
            lit.set_raw_value(text);
        }
        None => {
            let Some(lit) = children[first].as_string_lit() else {
                return;
            };
            let last = elements[elements.len().min(n).saturating_sub(1)];
            erase(&children, first + 1, last + 1);
            lit.set_raw_value(items.join(&format!(",{sep}")));
        }
    }
}

/// Replaces every element after element `k` of `arr` by `items` (raw literals).
fn replace_after(arr: &CstArray, k: usize, items: &[String]) {
    let (children, elements) = layout(arr);
    let Some(&at) = elements.get(k) else {
        return;
    };
    let Some(lit) = children[at].as_string_lit() else {
        return;
    };
    let sep = separator(&children, elements[0]);
    if let Some(&last) = elements.last()
        && last > at
    {
        erase(&children, at + 1, last + 1);
    }
    let mut text = lit.raw_value();
    for i in items {
        text.push_str(&format!(",{sep}{i}"));
    }
    lit.set_raw_value(text);
}

/// `c` as the property `key`, if it is one.
fn prop_named(c: &CstNode, key: &str) -> Option<CstObjectProp> {
    c.as_object_prop()
        .filter(|p| p.decoded_name().as_deref() == Some(key))
}

/// Gives an entry without `args` the command `thoth` and `"args": [items]`, written right after
/// the command's value: on the same line in an inline object, else on a line of its own in the
/// command's indentation ([`remove_added_args`] erases exactly that text).
fn add_args(obj: &CstObject, thoth: &str, items: &[String]) {
    let children = obj.children();
    for (i, c) in children.iter().enumerate() {
        if let Some(lit) = prop_named(c, "command")
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
}

/// Removes the `args` [`add_args`] wrote: right after the command's value with only a comma and
/// spacing between, exactly that text is erased; elsewhere (moved by hand), the property.
fn remove_added_args(obj: &CstObject) {
    let children = obj.children();
    let mut spans = Vec::new();
    for (i, c) in children.iter().enumerate() {
        if prop_named(c, "command").is_none() {
            continue;
        }
        let Some(next) = children[i + 1..]
            .iter()
            .position(|c| c.as_object_prop().is_some())
            .map(|j| i + 1 + j)
        else {
            continue;
        };
        let between = &children[i + 1..next];
        if prop_named(&children[next], "args").is_some()
            && between.iter().filter(|c| c.is_comma()).count() == 1
            && between
                .iter()
                .all(|c| c.is_comma() || c.is_whitespace() || c.is_newline())
        {
            spans.push((i + 1, next + 1));
        }
    }
    if spans.is_empty() {
        for p in obj.properties() {
            if p.decoded_name().as_deref() == Some("args") {
                p.remove();
            }
        }
    }
    for (from, to) in spans {
        erase(&children, from, to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THOTH: &str = "/usr/local/bin/thoth";
    const CTX: Ctx<'static> = Ctx {
        client: "claude-extension",
        server: Some("ant.dir.files"),
    };

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    const ALL_KINDS: &str = r#"{
  "name": "files",
  "server": {
    "type": "binary",
    "mcp_config": {
      "command": "${__dirname}/bin/srv",
      "args": ["--root", "${user_config.root}"],
      "env": {"K": "v"},
      "platform_overrides": {
        "win32": {"command": "${__dirname}/bin/srv.exe", "args": ["--win"]},
        "darwin": {"command": "${__dirname}/bin/srv-mac"},
        "linux": {"args": ["--linux", "${HOME}"]},
        "freebsd": {"env": {"X": "1"}}
      }
    }
  }
}
"#;

    #[test]
    fn every_kind_of_override_runs_through_thoth_and_unwraps_to_the_bytes() {
        let w = rewrite(ALL_KINDS, &Op::wrap_strict(THOTH, vec![]), &CTX).unwrap();
        assert_eq!(
            w.report.wrapped,
            s(&[
                "ant.dir.files",
                "ant.dir.files (win32)",
                "ant.dir.files (darwin)",
                "ant.dir.files (linux)"
            ])
        );
        let v: Value = serde_json::from_str(&w.text).unwrap();
        let head = |m: &[&str]| {
            let mut h = s(&[
                "run",
                "--server",
                "ant.dir.files",
                "--client",
                "claude-extension",
            ]);
            h.extend(s(m));
            h.push("--".into());
            h
        };
        let line = |p| {
            let e = effective(&v, p);
            assert_eq!(e.command.as_deref(), Some(THOTH), "{p}");
            e.args.unwrap()
        };
        let mut want = head(&["--no-args"]);
        want.extend(s(&[
            "${__dirname}/bin/srv-mac",
            "--root",
            "${user_config.root}",
        ]));
        assert_eq!(line("darwin"), want);
        let mut want = head(&[]);
        want.extend(s(&["${__dirname}/bin/srv.exe", "--win"]));
        assert_eq!(line("win32"), want);
        let mut want = head(&["--no-command"]);
        want.extend(s(&["${__dirname}/bin/srv", "--linux", "${HOME}"]));
        assert_eq!(line("linux"), want);
        let again = rewrite(&w.text, &Op::wrap_strict(THOTH, vec![]), &CTX).unwrap();
        assert_eq!(again.text, w.text);
        assert_eq!(again.report.already.len(), 4, "{:?}", again.report);
        let u = rewrite(&w.text, &Op::Unwrap, &CTX).unwrap();
        assert_eq!(u.text, ALL_KINDS);
        assert_eq!(u.report.unwrapped.len(), 4);
    }

    #[test]
    fn a_stale_inherited_copy_is_rebuilt() {
        let w = rewrite(ALL_KINDS, &Op::wrap_strict(THOTH, vec![]), &CTX).unwrap();
        // The base's arguments and command change under the wrapper (an edit by hand).
        let edited = w
            .text
            .replacen(
                "\"--root\", \"${user_config.root}\"]",
                "\"--root\", \"/x\"]",
                1,
            )
            .replacen(
                "\"${__dirname}/bin/srv\", \"--root\"",
                "\"/opt/srv2\", \"--root\"",
                1,
            );
        assert_ne!(edited, w.text);
        let r = rewrite(&edited, &Op::wrap_strict(THOTH, vec![]), &CTX).unwrap();
        let v: Value = serde_json::from_str(&r.text).unwrap();
        let (darwin, linux) = (effective(&v, "darwin"), effective(&v, "linux"));
        let d = wrapper::inner_line(darwin.args.as_deref().unwrap()).unwrap();
        assert_eq!(d.1, s(&["--root", "/x"]), "{}", r.text);
        let l = wrapper::inner_line(linux.args.as_deref().unwrap()).unwrap();
        assert_eq!(l.0, "/opt/srv2", "{}", r.text);
        assert_eq!(r.report.rewrapped.len(), 2, "{:?}", r.report);
        let again = rewrite(&r.text, &Op::wrap_strict(THOTH, vec![]), &CTX).unwrap();
        assert_eq!(again.text, r.text);
    }

    #[test]
    fn no_mcp_config_is_reported_and_untouched() {
        let text = r#"{"name": "u", "server": {"type": "uv", "entry_point": "src/server.py"}}"#;
        let w = rewrite(text, &Op::wrap(THOTH), &CTX).unwrap();
        assert_eq!(w.text, text);
        assert_eq!(
            w.report.skipped,
            vec![("ant.dir.files".into(), NO_MCP_CONFIG.into())]
        );
        let e = entries(text).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].entry.malformed.as_deref(), Some(NO_MCP_CONFIG));
    }
}
