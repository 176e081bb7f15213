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

mod overrides;

use jsonc_parser::cst::CstObject;
use serde_json::{Map, Value};

use self::overrides::{Site, override_one, truthy};
use super::cst::{self, child, last_props};
use super::json::{self, parse, split_bom};
use super::model::{ConfigError, Ctx, Found, Op, Report, Rewritten};
use crate::wrapper::{self, Entry};

/// Why a manifest without `server.mcp_config` is not wrapped.
pub const NO_MCP_CONFIG: &str =
    "no mcp_config: Claude builds the command line itself; not governed";

/// The platforms Claude Desktop runs on, as manifests name them.
pub const PLATFORMS: [&str; 3] = ["darwin", "win32", "linux"];

/// The base server's table in a manifest.
pub const BASE_TABLE: &str = "server.mcp_config";

/// The platform overrides' table in a manifest.
pub const OVERRIDES_TABLE: &str = "server.mcp_config.platform_overrides";

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

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
