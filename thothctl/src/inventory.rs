//! The MCP inventory agents report: one agent's (`agents show`), and the fleet's summary
//! (`thothctl inventory`): which servers run where, governed or not.
//!
//! Everything here comes from agents, so from machines an admin does not control: every string is
//! printed through [`safe`]/[`clip`] (no terminal escapes), and `--json` lets serde escape it.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use thoth_proto::fleet as pb;

use crate::ctx::{Ctx, Fail, Result};
use crate::render::{clip, safe, table_lines};

/// The MCP clients ("hosts") agents know, by id. Kept by hand to match `hosts::host::all()` in
/// the thoth-hosts crate (thothctl does not depend on it); an id an agent reports that is not
/// listed here is accepted too.
pub(crate) const HOSTS: &[&str] = &[
    "claude-desktop",
    "claude-extension",
    "claude-code",
    "cursor",
    "vscode",
    "windsurf",
    "codex",
];

/// Longest command line or URL shown in a table (`--json` has them whole).
const TARGET_WIDTH: usize = 80;
/// Most machines named in one row of `thothctl inventory` (`--json` names them all).
const WHERE_HOSTS: usize = 3;

#[derive(Args)]
pub(crate) struct InventoryArgs {
    /// Only servers of this MCP client (a "host": the app that runs MCP servers):
    /// claude-desktop, claude-extension, claude-code, cursor, vscode, windsurf or codex.
    /// `--client` is the same option.
    #[arg(long = "host", visible_alias = "client", value_name = "HOST")]
    pub(crate) host: Option<String>,
    /// Only servers that are not governed (remote servers never are: they run elsewhere).
    #[arg(long)]
    pub(crate) ungoverned: bool,
    /// Also the tools of those servers, with the state of their pinned definitions (pinned,
    /// pending a decision, accepted, rejected: see `thothctl pins --help`), as the tenant's
    /// agents report them.
    #[arg(long)]
    pub(crate) tools: bool,
}

/// A server that runs elsewhere (a URL), which no local wrapper can govern.
pub(crate) fn is_remote(s: &pb::McpServer) -> bool {
    !s.transport.is_empty() && s.transport != "stdio"
}

/// Governed, as an admin should read it: a remote server never is, whatever an agent says.
fn governed(s: &pb::McpServer) -> bool {
    s.governed && !is_remote(s)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The lines `thothctl agents show` adds for an agent's MCP inventory: per user, per client,
/// per file (and project), its servers; then the files that could not be read.
pub(crate) fn show_lines(inv: &pb::Inventory) -> Vec<String> {
    let mut out = Vec::new();
    let n = inv.mcp_servers.len();
    let gov = inv.mcp_servers.iter().filter(|s| governed(s)).count();
    let remote = inv.mcp_servers.iter().filter(|s| is_remote(s)).count();
    out.push(format!(
        "{:<18} {n} ({gov} governed, {} not governed, of which {remote} remote)",
        "MCP servers",
        n - gov
    ));
    type Files<'a> = BTreeMap<(&'a str, &'a str), Vec<&'a pb::McpServer>>;
    let mut by_user: BTreeMap<&str, BTreeMap<&str, Files>> = BTreeMap::new();
    for s in &inv.mcp_servers {
        by_user
            .entry(&s.user)
            .or_default()
            .entry(&s.client)
            .or_default()
            .entry((&s.file, &s.scope))
            .or_default()
            .push(s);
    }
    for (user, clients) in by_user {
        out.push(format!("  user {}", safe(user)));
        for (client, files) in clients {
            for ((file, scope), servers) in files {
                let mut head = format!("    {}  {}", safe(client), safe(file));
                if !scope.is_empty() {
                    head.push_str(&format!("  (project {})", safe(scope)));
                }
                out.push(head);
                let rows: Vec<Vec<String>> = servers
                    .iter()
                    .map(|s| {
                        let state = if is_remote(s) {
                            "remote"
                        } else {
                            yes_no(s.governed)
                        };
                        vec![
                            s.name.clone(),
                            s.transport.clone(),
                            state.to_owned(),
                            yes_no(s.enabled).to_owned(),
                            clip(&s.target, TARGET_WIDTH),
                            if governed(s) {
                                String::new()
                            } else {
                                s.reason.clone()
                            },
                        ]
                    })
                    .collect();
                let lines = table_lines(
                    &[
                        "NAME",
                        "TRANSPORT",
                        "GOVERNED",
                        "ENABLED",
                        "TARGET",
                        "WHY NOT",
                    ],
                    &rows,
                );
                out.extend(lines.into_iter().map(|l| format!("      {l}")));
            }
        }
    }
    if !inv.mcp_files.is_empty() {
        out.push(format!(
            "{:<18} {} (their servers are not governed)",
            "unreadable files",
            inv.mcp_files.len()
        ));
        for f in &inv.mcp_files {
            out.push(format!(
                "  user {}  {}  {}: {}",
                safe(&f.user),
                safe(&f.client),
                safe(&f.path),
                safe(&f.error)
            ));
        }
    }
    out
}

/// One server of the fleet: the same client, name and target on every agent that has it.
#[derive(Debug, Default)]
pub(crate) struct Row {
    pub(crate) client: String,
    pub(crate) name: String,
    pub(crate) target: String,
    pub(crate) transport: String,
    pub(crate) remote: bool,
    /// Configured this many times (per agent, user, file and project).
    pub(crate) instances: usize,
    pub(crate) governed: usize,
    pub(crate) enabled: usize,
    /// Why not governed, each reason once.
    pub(crate) reasons: BTreeSet<String>,
    /// Agent id → (hostname, users).
    pub(crate) agents: BTreeMap<String, (String, BTreeSet<String>)>,
}

/// A file an agent could not read.
#[derive(Debug)]
pub(crate) struct Unreadable {
    pub(crate) agent_id: String,
    pub(crate) hostname: String,
    pub(crate) file: pb::McpFile,
}

/// The fleet's summary, built page by page of agents (a page is dropped once added, so that
/// the fleet's inventories are never all in memory at once).
#[derive(Default)]
pub(crate) struct Summary {
    rows: BTreeMap<(String, String, String), Row>,
    files: Vec<Unreadable>,
    /// Every client id an agent reported (for `--host`).
    clients: BTreeSet<String>,
}

impl Summary {
    /// Adds agents' MCP inventories: servers of `host` only (when given), not governed only
    /// (with `ungoverned`).
    pub(crate) fn add(&mut self, agents: &[pb::AgentInfo], host: Option<&str>, ungoverned: bool) {
        let (rows, files) = (&mut self.rows, &mut self.files);
        for a in agents {
            let Some(inv) = &a.inventory else { continue };
            let hostname = if a.hostname.is_empty() {
                inv.hostname.as_str()
            } else {
                a.hostname.as_str()
            };
            for s in &inv.mcp_servers {
                if !self.clients.contains(&s.client) {
                    self.clients.insert(s.client.clone());
                }
                if host.is_some_and(|h| h != s.client) || (ungoverned && governed(s)) {
                    continue;
                }
                let r = rows
                    .entry((s.client.clone(), s.name.clone(), s.target.clone()))
                    .or_insert_with(|| Row {
                        client: s.client.clone(),
                        name: s.name.clone(),
                        target: s.target.clone(),
                        transport: s.transport.clone(),
                        ..Row::default()
                    });
                r.remote |= is_remote(s);
                r.instances += 1;
                r.governed += usize::from(governed(s));
                r.enabled += usize::from(s.enabled);
                if !governed(s) && !s.reason.is_empty() {
                    r.reasons.insert(s.reason.clone());
                }
                r.agents
                    .entry(a.agent_id.clone())
                    .or_insert_with(|| (hostname.to_owned(), BTreeSet::new()))
                    .1
                    .insert(s.user.clone());
            }
            for f in &inv.mcp_files {
                if host.is_none_or(|h| h == f.client) {
                    files.push(Unreadable {
                        agent_id: a.agent_id.clone(),
                        hostname: hostname.to_owned(),
                        file: f.clone(),
                    });
                }
            }
        }
    }

    /// Rows sorted by (client, name, target), and the unreadable files.
    pub(crate) fn finish(self) -> (Vec<Row>, Vec<Unreadable>) {
        let mut files = self.files;
        files.sort_by(|a, b| {
            (&a.agent_id, &a.file.user, &a.file.client, &a.file.path).cmp(&(
                &b.agent_id,
                &b.file.user,
                &b.file.client,
                &b.file.path,
            ))
        });
        (self.rows.into_values().collect(), files)
    }
}

/// The fleet's summary of one list of agents (tests; `inventory` adds page by page).
#[cfg(test)]
pub(crate) fn summarise(
    agents: &[pb::AgentInfo],
    host: Option<&str>,
    ungoverned: bool,
) -> (Vec<Row>, Vec<Unreadable>) {
    let mut s = Summary::default();
    s.add(agents, host, ungoverned);
    s.finish()
}

/// `thothctl inventory --json`: keys in a fixed order, lists sorted.
pub(crate) fn summary_json(rows: &[Row], files: &[Unreadable]) -> serde_json::Value {
    let servers: Vec<_> = rows
        .iter()
        .map(|r| {
            let users: BTreeSet<&String> = r.agents.values().flat_map(|(_, u)| u).collect();
            serde_json::json!({
                "client": r.client,
                "name": r.name,
                "transport": r.transport,
                "target": r.target,
                "remote": r.remote,
                "instances": r.instances,
                "governed": r.governed,
                "enabled": r.enabled,
                "reasons": r.reasons,
                "users": users,
                "agents": r.agents.iter().map(|(id, (hostname, users))| serde_json::json!({
                    "agentId": id, "hostname": hostname, "users": users,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let files: Vec<_> = files
        .iter()
        .map(|u| {
            serde_json::json!({
                "agentId": u.agent_id, "hostname": u.hostname, "user": u.file.user,
                "client": u.file.client, "path": u.file.path, "error": u.file.error,
            })
        })
        .collect();
    serde_json::json!({"servers": servers, "unreadableFiles": files})
}

/// Where a row runs, for a table: `laptop-1 (alice, bob), laptop-2 (carol) +3 more`.
fn where_text(r: &Row) -> String {
    let mut parts: Vec<String> = r
        .agents
        .iter()
        .take(WHERE_HOSTS)
        .map(|(id, (hostname, users))| {
            let who = if hostname.is_empty() { id } else { hostname };
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            format!("{} ({})", clip(who, 64), clip(&users.join(", "), 64))
        })
        .collect();
    if r.agents.len() > WHERE_HOSTS {
        parts.push(format!("+{} more", r.agents.len() - WHERE_HOSTS));
    }
    parts.join(", ")
}

/// `thothctl inventory` as text lines.
pub(crate) fn summary_lines(rows: &[Row], files: &[Unreadable], ungoverned: bool) -> Vec<String> {
    let mut out = Vec::new();
    if rows.is_empty() {
        out.push(if ungoverned {
            "no ungoverned MCP servers reported".to_owned()
        } else {
            "no MCP servers reported".to_owned()
        });
    } else {
        let mut header = vec!["CLIENT", "SERVER", "TRANSPORT", "GOVERNED", "WHERE"];
        if ungoverned {
            header.push("WHY NOT");
        }
        header.push("TARGET");
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let mut gov = format!("{}/{}", r.governed, r.instances);
                if r.remote {
                    gov.push_str(" remote");
                }
                let mut row = vec![
                    clip(&r.client, 32),
                    clip(&r.name, 48),
                    clip(&r.transport, 16),
                    gov,
                    where_text(r),
                ];
                if ungoverned {
                    let why: Vec<&str> = r.reasons.iter().map(String::as_str).collect();
                    row.push(clip(&why.join("; "), 60));
                }
                row.push(clip(&r.target, TARGET_WIDTH));
                row
            })
            .collect();
        out.extend(table_lines(&header, &table));
        let instances: usize = rows.iter().map(|r| r.instances).sum();
        let gov: usize = rows.iter().map(|r| r.governed).sum();
        let remote: usize = rows.iter().filter(|r| r.remote).map(|r| r.instances).sum();
        let machines: BTreeSet<&String> = rows.iter().flat_map(|r| r.agents.keys()).collect();
        out.push(format!(
            "{} servers, configured {instances} times on {} agents: {gov} governed, {} not ({remote} remote)",
            rows.len(),
            machines.len(),
            instances - gov
        ));
    }
    if !files.is_empty() {
        out.push(String::new());
        out.push(format!(
            "{} host files could not be read (their servers are not governed):",
            files.len()
        ));
        let table: Vec<Vec<String>> = files
            .iter()
            .map(|u| {
                vec![
                    clip(&u.hostname, 64),
                    clip(&u.file.user, 64),
                    clip(&u.file.client, 32),
                    clip(&u.file.path, TARGET_WIDTH),
                    clip(&u.file.error, 120),
                ]
            })
            .collect();
        out.extend(table_lines(
            &["HOST", "USER", "CLIENT", "FILE", "ERROR"],
            &table,
        ));
    }
    out
}

/// Refuses a `--host` that is not a client id agents know (the built-in ones, and any an agent
/// of this fleet reported).
#[cfg(test)]
pub(crate) fn check_host(host: &str, agents: &[pb::AgentInfo]) -> Result<()> {
    let reported = agents
        .iter()
        .filter_map(|a| a.inventory.as_ref())
        .flat_map(|i| i.mcp_servers.iter().map(|s| s.client.as_str()));
    check_reported(host, reported)
}

/// [`check_host`] against the client ids agents reported.
fn check_reported<'a>(host: &str, reported: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut known: BTreeSet<&str> = HOSTS.iter().copied().collect();
    known.extend(reported);
    if known.contains(host) {
        return Ok(());
    }
    let mut ids: Vec<&str> = HOSTS.to_vec();
    ids.extend(known.iter().filter(|k| !HOSTS.contains(k)));
    Err(Fail::new(
        2,
        format!(
            "unknown host {:?}: known hosts (MCP clients) are {}",
            clip(host, 40),
            ids.iter().map(|i| safe(i)).collect::<Vec<_>>().join(", ")
        ),
    ))
}

/// `thothctl inventory`: the agents' MCP inventories, page by page.
pub(crate) async fn inventory(ctx: &Ctx, args: InventoryArgs) -> Result<()> {
    let mut sum = Summary::default();
    crate::fleet::each_agent_page(ctx, true, |agents| {
        sum.add(&agents, args.host.as_deref(), args.ungoverned);
        Ok(())
    })
    .await?;
    if let Some(h) = &args.host {
        check_reported(h, sum.clients.iter().map(String::as_str))?;
    }
    let (rows, files) = sum.finish();
    let tools = if args.tools {
        let servers: BTreeSet<(&str, &str)> = rows
            .iter()
            .map(|r| (r.client.as_str(), r.name.as_str()))
            .collect();
        Some(crate::pins::server_tools(ctx, &servers).await?)
    } else {
        None
    };
    if ctx.global.json {
        let mut v = summary_json(&rows, &files);
        if let Some(t) = &tools {
            v["tools"] = t.iter().map(crate::pins::pin_json).collect();
        }
        ctx.print_json(v);
    } else {
        for l in summary_lines(&rows, &files, args.ungoverned) {
            println!("{l}");
        }
        if let Some(t) = &tools {
            for l in crate::pins::tools_lines(t) {
                println!("{l}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "inventory_tests.rs"]
mod tests;
