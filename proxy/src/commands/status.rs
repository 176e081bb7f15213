//! `thoth status` and `thoth health`: is this laptop governed, in words or JSON. The config
//! section covers every MCP client of this user ([`thoth_hosts::host::all`]).

use std::path::PathBuf;

use crate::cli::StatusArgs;
use thoth_endpoint::ipc::IpcError;
use thoth_endpoint::status::Status;
use thoth_hosts::host::{self, Host};
use thoth_hosts::inventory::{self, FileInfo, State};

use super::clients::{WrapperForm, printable, wrapper_form};

/// The files `status` checks: `--claude-config FILE` (deprecated), `--config FILE [--client
/// HOST]`, else every file of `--client` (or of every host) under this user's home.
fn files_to_check(args: &StatusArgs) -> anyhow::Result<Vec<(&'static dyn Host, PathBuf)>> {
    let home = super::config::home();
    if let Some(f) = &args.claude_config {
        return Ok(vec![(
            &thoth_hosts::clients::claude_desktop::ClaudeDesktop,
            f.clone(),
        )]);
    }
    let named = args
        .client
        .as_deref()
        .map(super::config::host_by_id)
        .transpose()?;
    if let Some(f) = &args.config {
        let h = match named {
            Some(h) => h,
            None => super::config::guess_host(f, home.as_deref()).ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot tell which MCP client {} belongs to: say it with --client ({})",
                    f.display(),
                    host::ids()
                )
            })?,
        };
        return Ok(vec![(h, f.clone())]);
    }
    let hosts: Vec<&'static dyn Host> = match named {
        Some(h) => vec![h],
        None => host::all().to_vec(),
    };
    Ok(match &home {
        Some(home) => super::clients::files_of(&hosts, home),
        None => Vec::new(),
    })
}

/// Scans each file (a missing one has no servers).
fn scan(files: &[(&'static dyn Host, PathBuf)], form: &WrapperForm) -> Vec<FileInfo> {
    files
        .iter()
        .filter(|(_, p)| std::fs::symlink_metadata(p).is_ok())
        .map(|(h, p)| inventory::scan_file(*h, p, &form.thoth, &form.extra))
        .collect()
}

/// Runs `thoth status` (`health` = JSON for MDM). Exit 0 when healthy, 1 when not.
pub fn status(args: &StatusArgs, health: bool) -> anyhow::Result<i32> {
    let json = health || args.json;
    let files = files_to_check(args)?;
    // With an agent (answering, or installed), a wrapper counts only in its canonical form.
    let form = wrapper_form(&args.agent_socket);
    let scanned = scan(&files, &form);
    let agent = &form.agent;
    let mut problems: Vec<String> = Vec::new();
    match agent {
        Err(why) => problems.push(format!(
            "the Thoth agent is not running ({why}); proxies enforce the last policy saved on disk. Ask IT, or start the thoth-agent service"
        )),
        Ok(s) => {
            if s.revoked {
                problems.push("this laptop was revoked by the controller; it keeps its last policy. Ask IT to re-enroll it".into());
            } else if !s.connected {
                problems.push(format!(
                    "the agent cannot reach the controller ({}); the last policy stays in force",
                    s.last_error.clone().unwrap_or_else(|| "no details".into())
                ));
            }
            if let Some(e) = &s.events.error {
                problems.push(format!(
                    "{e}; governed calls are recorded on this laptop but do not reach the controller"
                ));
            }
            match &s.policy {
                None => problems.push("no policy has arrived yet: every tool call is denied until one does".into()),
                Some(p) if p.stale => problems.push(format!(
                    "policy version {} expired at {}; it stays in force until a newer one arrives",
                    p.version, p.expires_at
                )),
                Some(_) => {}
            }
        }
    }
    for f in &scanned {
        if let Some(e) = &f.error {
            problems.push(format!(
                "your {} config cannot be read: {}: {e}",
                host_name(f.host),
                f.path.display()
            ));
        }
    }
    // Servers the host runs that are not governed (a disabled one is wrapped when enabled).
    let ungoverned: Vec<String> = scanned
        .iter()
        .flat_map(|f| f.servers.iter().map(move |s| (f, s)))
        .filter(|(_, s)| s.enabled && matches!(s.state, State::NotGoverned(_)))
        .map(|(f, s)| {
            let why: String = printable(&s.state.reason());
            let name: String = printable(&s.name);
            let client = if f.host == "claude-desktop" {
                String::new()
            } else {
                format!(" [{}]", f.host)
            };
            if why == "not wrapped by thoth" {
                format!("{name}{client}")
            } else {
                format!("{name} ({why}){client}")
            }
        })
        .collect();
    if !ungoverned.is_empty() {
        problems.push(format!(
            "MCP servers not running through thoth: {} (the agent re-wraps them; restart the MCP client afterwards)",
            ungoverned.join(", ")
        ));
    }
    let healthy = problems.is_empty();
    // The Claude Desktop file (kept for MDM scripts that read `claudeConfig`).
    let claude_config: Option<PathBuf> = match &args.claude_config {
        Some(p) => Some(p.clone()),
        None => files
            .iter()
            .find(|(h, _)| h.id() == "claude-desktop")
            .map(|(_, p)| p.clone())
            .or_else(thoth_hosts::clients::claude_desktop::default_path),
    };
    if json {
        let agent_json = match agent {
            Ok(s) => serde_json::to_value(s)?,
            Err(_) => serde_json::Value::Null,
        };
        let servers: Vec<serde_json::Value> = scanned
            .iter()
            .flat_map(|f| {
                f.servers.iter().map(move |s| {
                    let mut v = serde_json::json!({
                        "name": s.name,
                        "state": s.state.word(),
                        "client": f.host,
                        "file": f.path,
                        "enabled": s.enabled,
                    });
                    if let State::NotGoverned(why) = &s.state
                        && why != "not wrapped by thoth"
                    {
                        v["why"] = why.clone().into();
                    }
                    v
                })
            })
            .collect();
        let doc = serde_json::json!({
            "healthy": healthy,
            "agentRunning": agent.is_ok(),
            "connected": agent.as_ref().is_ok_and(|s| s.connected),
            "policyVersion": agent.as_ref().ok().and_then(|s| s.policy.as_ref().map(|p| p.version)),
            "policyAgeSecs": agent.as_ref().ok().and_then(|s| s.policy.as_ref().map(|p| p.age_secs)),
            "stale": agent.as_ref().ok().and_then(|s| s.policy.as_ref().map(|p| p.stale)),
            "claudeConfig": claude_config,
            "servers": servers,
            "clients": per_host(&scanned),
            "problems": problems,
            "agent": agent_json,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_text(agent, &scanned, &problems);
    }
    Ok(if healthy { 0 } else { 1 })
}

fn host_name(id: &str) -> &'static str {
    host::by_id(id).map_or("MCP client", |h| h.name())
}

/// Counts per host (only hosts with a file), for JSON.
fn per_host(scanned: &[FileInfo]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for h in host::all() {
        let files: Vec<FileInfo> = scanned
            .iter()
            .filter(|f| f.host == h.id())
            .cloned()
            .collect();
        if files.is_empty() {
            continue;
        }
        let (servers, governed) = inventory::counts(&files);
        out.push(serde_json::json!({
            "id": h.id(),
            "name": h.name(),
            "files": files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            "servers": servers,
            "governed": governed,
            "unreadable": files.iter().filter(|f| f.error.is_some()).count(),
        }));
    }
    out
}

fn print_text(agent: &Result<Status, IpcError>, scanned: &[FileInfo], problems: &[String]) {
    match agent {
        Ok(s) => print!("{}", s.render_text()),
        Err(_) => println!("agent              not running"),
    }
    if scanned.is_empty() {
        println!("mcp clients        none found");
    }
    for h in host::all() {
        let files: Vec<&FileInfo> = scanned.iter().filter(|f| f.host == h.id()).collect();
        if files.is_empty() {
            continue;
        }
        let all: Vec<FileInfo> = files.iter().map(|f| (*f).clone()).collect();
        let (servers, governed) = inventory::counts(&all);
        println!("{:<18} {governed} of {servers} servers governed", h.name());
        for f in files {
            println!("  {}", f.path.display());
            if f.error.is_some() {
                println!("    cannot be read (see below)");
                continue;
            }
            for s in &f.servers {
                let name: String = printable(&s.name);
                let off = if s.enabled { "" } else { " (disabled)" };
                match &s.state {
                    State::NotGoverned(why) if why != "not wrapped by thoth" => {
                        let why: String = printable(why);
                        println!("    {name:<16} {} ({why}){off}", s.state.word())
                    }
                    st => println!("    {name:<16} {}{off}", st.word()),
                }
            }
        }
    }
    if problems.is_empty() {
        println!("\nAll good: this laptop is governed.");
    } else {
        println!();
        for p in problems {
            println!("problem: {p}");
        }
    }
}
