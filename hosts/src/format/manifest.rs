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

use jsonc_parser::cst::CstObject;
use serde_json::{Map, Value};

use super::cst::{
    self, add_args, child, element, last_props, prepend, raw, raw_string, raws, remove_added_args,
    remove_first, replace_after, replace_first, set_raw, set_string,
};
use super::json::{self, parse, split_bom};
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
    let root = cst::parse_root(body, false)?;
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
    let root = cst::parse_root(body, false)?;
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
            if *strict && wrapper::drift(&b, server, ctx.client, thoth, extra).is_some() {
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
                let site = Site {
                    obj: &obj,
                    server,
                    base: original.as_ref(),
                    op,
                    ctx,
                };
                override_one(&site, ov, label, report)
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

/// Applies the rewrite to one platform override (`site`; `ov` its value).
fn override_one(site: &Site<'_>, ov: &Map<String, Value>, label: String, report: &mut Report) {
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
struct Site<'a> {
    obj: &'a CstObject,
    server: &'a str,
    base: Option<&'a (String, Option<Vec<String>>)>,
    op: &'a Op,
    ctx: &'a Ctx<'a>,
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
    fn duplicate_keys_in_an_override_edit_only_the_last_and_unwrap_to_the_bytes() {
        // A reader keeps the last of repeated keys; only that one is edited, so the earlier
        // ones stay as written and unwrapping gives back every byte.
        let text = r#"{
  "name": "dup",
  "server": {
    "mcp_config": {
      "command": "node",
      "args": ["a.js"],
      "platform_overrides": {
        "darwin": {"command": "first", "command": "second"},
        "linux": {"args": ["x"], "args": ["y", "z"]}
      }
    }
  }
}
"#;
        for op in [Op::wrap(THOTH), Op::wrap_strict(THOTH, vec![])] {
            let w = rewrite(text, &op, &CTX).unwrap();
            assert_eq!(w.report.wrapped.len(), 3, "{:?}", w.report);
            assert!(w.text.contains(r#""command": "first""#), "{}", w.text);
            assert!(w.text.contains(r#""args": ["x"]"#), "{}", w.text);
            let v: Value = serde_json::from_str(&w.text).unwrap();
            let d = effective(&v, "darwin");
            let d = wrapper::inner_line(d.args.as_deref().unwrap()).unwrap();
            assert_eq!(d, ("second".into(), s(&["a.js"])), "{}", w.text);
            let again = rewrite(&w.text, &op, &CTX).unwrap();
            assert_eq!(again.text, w.text);
            let u = rewrite(&w.text, &Op::Unwrap, &CTX).unwrap();
            assert_eq!(u.text, text);
        }
        // Another thoth's wrapper, updated (not strict): the last command only.
        let w = rewrite(text, &Op::wrap("/old/thoth"), &CTX).unwrap();
        let up = rewrite(&w.text, &Op::wrap(THOTH), &CTX).unwrap();
        assert_eq!(up.report.updated.len(), 2, "{:?}", up.report);
        let u = rewrite(&up.text, &Op::Unwrap, &CTX).unwrap();
        assert_eq!(u.text, text);
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
