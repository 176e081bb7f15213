//! `thoth status` and `thoth health`: is this laptop governed, in words or JSON.

use std::path::{Path, PathBuf};

use crate::cli::StatusArgs;
use thoth_endpoint::ipc::IpcError;
use thoth_endpoint::status::Status;

/// One MCP server entry of a Claude Desktop config.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerEntry {
    name: String,
    /// governed, not governed, or remote (no command: not launched by Claude Desktop).
    state: &'static str,
    /// Why a wrapped entry is not governed (its wrapper altered, a loader variable in its env).
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
}

/// Why the Claude Desktop config cannot be read ([`read_servers`]).
#[derive(Debug, thiserror::Error)]
enum ConfigFileError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{} is not valid JSON: {source}", path.display())]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: mcpServers is not an object", path.display())]
    NotObject { path: PathBuf },
}

/// `canonical`: the agent's thoth path and the options its canonical wrapper carries, when an
/// agent is installed or answering (then a wrapper must be exactly the canonical form to count as
/// governed); `None` for a standalone `thoth` (any `thoth run` wrapper counts).
fn read_servers(
    path: &Path,
    canonical: Option<(&str, &[String])>,
) -> Result<Vec<ServerEntry>, ConfigFileError> {
    let path_buf = || path.to_path_buf();
    let (bytes, _) =
        thoth_hosts::file::read_config(path).map_err(|source| ConfigFileError::Read {
            path: path_buf(),
            source,
        })?;
    let text =
        String::from_utf8(bytes).map_err(|_| ConfigFileError::NotUtf8 { path: path_buf() })?;
    let v: serde_json::Value =
        serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|source| {
            ConfigFileError::NotJson {
                path: path_buf(),
                source,
            }
        })?;
    let Some(servers) = v.get("mcpServers") else {
        return Ok(Vec::new());
    };
    let servers = servers
        .as_object()
        .ok_or_else(|| ConfigFileError::NotObject { path: path_buf() })?;
    Ok(servers
        .iter()
        .map(|(name, s)| {
            let mut why = None;
            let state = if s.get("command").is_none() {
                "remote"
            } else if let Some((thoth, extra)) = canonical {
                match thoth_hosts::wrapper::governed(
                    name,
                    "claude-desktop",
                    &thoth_hosts::wrapper::Entry::from_json(s),
                    thoth,
                    extra,
                ) {
                    Ok(()) => "governed",
                    Err(w) => {
                        if thoth_hosts::wrapper::Entry::from_json(s).is_wrapped() {
                            why = Some(w.to_string());
                        }
                        "not governed"
                    }
                }
            } else if thoth_hosts::wrapper::Entry::from_json(s).is_wrapped() {
                "governed"
            } else {
                "not governed"
            };
            ServerEntry {
                name: name.clone(),
                state,
                why,
            }
        })
        .collect())
}

/// Runs `thoth status` (`health` = JSON for MDM). Exit 0 when healthy, 1 when not.
pub fn status(args: &StatusArgs, health: bool) -> anyhow::Result<i32> {
    let json = health || args.json;
    let agent = thoth_endpoint::ipc::fetch_status(&args.agent_socket);
    let config = args
        .claude_config
        .clone()
        .or_else(thoth_hosts::clients::claude_desktop::default_path);
    // With an agent (answering, or installed), a wrapper counts only in its canonical form.
    let extra = match &agent {
        Ok(s) => Some(thoth_hosts::wrapper::canonical_extra(
            Path::new(&s.socket),
            Path::new(&s.state_dir),
        )),
        Err(_) => crate::source::managed()
            .map(|m| thoth_hosts::wrapper::canonical_extra(&m.socket, &m.state_dir)),
    };
    // The agent's thoth, as it reports it; else this very binary (what an installed agent runs).
    let thoth = agent
        .as_ref()
        .ok()
        .and_then(|s| s.thoth_path.clone())
        .or_else(|| {
            std::env::current_exe()
                .and_then(std::fs::canonicalize)
                .ok()
                .map(|p| p.display().to_string())
        })
        .unwrap_or_default();
    let servers = config.as_deref().map(|p| {
        if p.exists() {
            read_servers(p, extra.as_deref().map(|e| (thoth.as_str(), e)))
        } else {
            Ok(Vec::new())
        }
    });
    let mut problems: Vec<String> = Vec::new();
    match &agent {
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
    if let Some(Err(e)) = &servers {
        problems.push(format!("your Claude Desktop config cannot be read: {e}"));
    }
    let ungoverned: Vec<String> = match &servers {
        Some(Ok(list)) => list
            .iter()
            .filter(|s| s.state == "not governed")
            .map(|s| match &s.why {
                Some(why) => format!("{} ({why})", s.name),
                None => s.name.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    if !ungoverned.is_empty() {
        problems.push(format!(
            "MCP servers not running through thoth: {} (the agent re-wraps them; restart Claude Desktop afterwards)",
            ungoverned.join(", ")
        ));
    }
    let healthy = problems.is_empty();
    if json {
        let agent_json = match &agent {
            Ok(s) => serde_json::to_value(s)?,
            Err(_) => serde_json::Value::Null,
        };
        let doc = serde_json::json!({
            "healthy": healthy,
            "agentRunning": agent.is_ok(),
            "connected": agent.as_ref().is_ok_and(|s| s.connected),
            "policyVersion": agent.as_ref().ok().and_then(|s| s.policy.as_ref().map(|p| p.version)),
            "policyAgeSecs": agent.as_ref().ok().and_then(|s| s.policy.as_ref().map(|p| p.age_secs)),
            "stale": agent.as_ref().ok().and_then(|s| s.policy.as_ref().map(|p| p.stale)),
            "claudeConfig": config,
            "servers": match &servers { Some(Ok(l)) => serde_json::to_value(l)?, _ => serde_json::Value::Array(vec![]) },
            "problems": problems,
            "agent": agent_json,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_text(&agent, config.as_deref(), &servers, &problems);
    }
    Ok(if healthy { 0 } else { 1 })
}

fn print_text(
    agent: &Result<Status, IpcError>,
    config: Option<&Path>,
    servers: &Option<Result<Vec<ServerEntry>, ConfigFileError>>,
    problems: &[String],
) {
    match agent {
        Ok(s) => print!("{}", s.render_text()),
        Err(_) => println!("agent              not running"),
    }
    if let Some(p) = config {
        println!("claude config      {}", p.display());
    }
    if let Some(Ok(list)) = servers {
        if list.is_empty() {
            println!("mcp servers        none configured");
        }
        for s in list {
            match &s.why {
                Some(why) => println!("  {:<16} {} ({why})", s.name, s.state),
                None => println!("  {:<16} {}", s.name, s.state),
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
