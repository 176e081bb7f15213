//! thothctl's token, agents and events commands.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use thoth_client as client;
use thoth_proto::fleet as pb;

use crate::ctx::{Ctx, Fail, Result};
use crate::render::{agent_json, labels_text, safe, short, table, token_json, when};

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
    /// Create an enrollment token (printed once; the controller keeps only its hash).
    Create {
        /// Lifetime, e.g. 1h, 7d (default: the controller's token_ttl, 24h).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Label given to agents enrolled with it, KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A note.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List tokens (active ones unless --all).
    List {
        /// Include revoked, expired and used-up tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// Token id (tok-…).
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AgentsCmd {
    /// List agents with their applied policy version and last contact.
    List,
    /// Show one agent, with its inventory: its machine, and every MCP server of every client
    /// of every user (governed or not, and why), and the files it could not read.
    Show {
        /// Agent id (agt-…).
        id: String,
    },
    /// Revoke an agent: its next call is refused and its subscription closes.
    Revoke {
        /// Agent id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Args, Clone)]
pub(crate) struct EventFilterArgs {
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only this session.
    #[arg(long)]
    session: Option<String>,
    /// Only this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Only these event types (TOOL_CALL_PRE, TOOL_CALL_POST, CHAIN_ALERT, …): repeat the
    /// flag or separate them with commas.
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    event_type: Vec<String>,
    /// Only tool integrity events: TOOL_DEFINITION_CHANGED, TOOL_DEFINITION_SUSPICIOUS,
    /// TOOL_NAME_SHADOWED (added to any --type).
    #[arg(long)]
    integrity: bool,
    /// Only tool calls with a DLP finding (a secret or personal data in the arguments or the
    /// result: `detail.dlp`).
    #[arg(long)]
    dlp: bool,
    /// Only events with a DLP finding of this detector (aws_secret_key, github_token, …;
    /// implies --dlp).
    #[arg(long, value_name = "ID")]
    detector: Option<String>,
    /// From this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Until this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum EventsCmd {
    /// The newest matching events (oldest first).
    Query {
        #[command(flatten)]
        filter: EventFilterArgs,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Follow matching events as they arrive (Ctrl-C to stop).
    Tail {
        #[command(flatten)]
        filter: EventFilterArgs,
    },
    /// Verify the stored events: recompute every hash chain and check each signed chain head
    /// (its signature, and that the agent's certificate chains to the CA and names the agent).
    /// Exit 0: every event is covered by a valid signed head; 1: broken; 6: intact but some
    /// events are unsigned.
    Verify {
        /// Only this agent's chain.
        #[arg(long)]
        agent: Option<String>,
        /// The CA the agents' certificates must chain to (default: the credential's ca.crt).
        #[arg(long, value_name = "CA.pem")]
        ca: Option<PathBuf>,
    },
}

pub(crate) async fn token(ctx: &Ctx, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create {
            ttl,
            uses,
            labels,
            comment,
        } => {
            let mut map = std::collections::HashMap::new();
            for l in labels {
                let Some((k, v)) = l.split_once('=') else {
                    return Err(Fail::new(5, format!("label {l:?} is not KEY=VALUE")));
                };
                map.insert(k.to_owned(), v.to_owned());
            }
            if uses == 0 {
                return Err(Fail::new(5, "--uses must be at least 1"));
            }
            let t = ctx
                .admin()
                .await?
                .create_token(pb::CreateTokenRequest {
                    tenant: ctx.tenant(),
                    ttl_secs: ttl.map_or(0, |d| Duration::from(d).as_secs().max(1)),
                    max_uses: uses,
                    labels: map,
                    comment,
                })
                .await?
                .into_inner();
            let info = t.info.unwrap_or_default();
            if ctx.global.json {
                let mut j = token_json(&info);
                j["token"] = t.token.into();
                ctx.print_json(j);
            } else {
                println!("{}", t.token);
                eprintln!(
                    "token {} for tenant {}: {} enrollment(s), expires {}. It is shown only once.",
                    info.id,
                    info.tenant,
                    info.max_uses,
                    when(info.expires_at_unix)
                );
            }
            Ok(())
        }
        TokenCmd::List { all } => {
            let r = ctx
                .admin()
                .await?
                .list_tokens(pb::ListTokensRequest {
                    tenant: ctx.global.tenant.clone().unwrap_or_default(),
                    include_inactive: all,
                })
                .await?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(serde_json::Value::Array(
                    r.tokens.iter().map(token_json).collect(),
                ));
            } else {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let rows: Vec<Vec<String>> = r
                    .tokens
                    .iter()
                    .map(|t| {
                        let state = if t.revoked {
                            "revoked"
                        } else if t.expires_at_unix <= now {
                            "expired"
                        } else if t.uses >= t.max_uses {
                            "used up"
                        } else {
                            "active"
                        };
                        vec![
                            t.id.clone(),
                            t.tenant.clone(),
                            format!("{}/{}", t.uses, t.max_uses),
                            when(t.expires_at_unix),
                            state.to_owned(),
                            labels_text(&t.labels),
                            t.created_by.clone(),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "TENANT", "USES", "EXPIRES", "STATE", "LABELS", "BY"],
                    &rows,
                );
            }
            Ok(())
        }
        TokenCmd::Revoke { id } => {
            let t = ctx
                .admin()
                .await?
                .revoke_token(pb::RevokeTokenRequest { id })
                .await?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(token_json(&t));
            } else {
                println!("revoked token {} (tenant {})", t.id, t.tenant);
            }
            Ok(())
        }
    }
}

/// Agents asked per page without their MCP inventories (a few KiB each at most).
const PAGE: u32 = 500;
/// Agents asked per page with their MCP inventories (up to 512 KiB of text each; the
/// controller also ends a page before 16 MiB).
const PAGE_MCP: u32 = 20;

/// Calls `each` with every page of the agents of `--tenant` (or all the caller may see), with
/// their MCP inventories when `mcp`, until the last page.
pub(crate) async fn each_agent_page(
    ctx: &Ctx,
    mcp: bool,
    mut each: impl FnMut(Vec<pb::AgentInfo>) -> Result<()>,
) -> Result<()> {
    let mut admin = ctx.admin().await?;
    let mut page_token = String::new();
    loop {
        let r = admin
            .list_agents(pb::ListAgentsRequest {
                tenant: ctx.global.tenant.clone().unwrap_or_default(),
                page_size: if mcp { PAGE_MCP } else { PAGE },
                page_token: page_token.clone(),
                include_mcp: mcp,
            })
            .await?
            .into_inner();
        each(r.agents)?;
        if r.next_page_token.is_empty() {
            return Ok(());
        }
        if r.next_page_token == page_token {
            return Err(Fail::new(
                1,
                "the controller gave the same page token twice: stopping".to_owned(),
            ));
        }
        page_token = r.next_page_token;
    }
}

/// Prints a JSON array one element at a time, exactly as [`Ctx::print_json`] prints the whole
/// array (pretty, two-space indent), so that a long list is never all in memory.
struct JsonArrayOut {
    first: bool,
}

impl JsonArrayOut {
    fn push(&mut self, v: &serde_json::Value) {
        print!("{}", self.piece(v));
    }

    fn finish(self) {
        println!("{}", self.end());
    }

    /// What `v` adds to the output.
    fn piece(&mut self, v: &serde_json::Value) -> String {
        let text = serde_json::to_string_pretty(v).expect("JSON values serialize");
        let mut out = String::with_capacity(text.len() + text.len() / 16 + 4);
        out.push_str(if self.first { "[\n" } else { ",\n" });
        self.first = false;
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str("  ");
            out.push_str(line);
        }
        out
    }

    /// The end of the output (before its newline).
    fn end(&self) -> &'static str {
        if self.first { "[]" } else { "\n]" }
    }
}

pub(crate) async fn agents(ctx: &Ctx, cmd: AgentsCmd) -> Result<()> {
    match cmd {
        AgentsCmd::List if ctx.global.json => {
            // Page by page, each agent whole (its MCP inventory too), printed as it comes.
            let mut out = JsonArrayOut { first: true };
            each_agent_page(ctx, true, |agents| {
                for a in &agents {
                    out.push(&agent_json(a));
                }
                Ok(())
            })
            .await?;
            out.finish();
            Ok(())
        }
        AgentsCmd::List => {
            let mut agents = Vec::new();
            each_agent_page(ctx, false, |page| {
                agents.extend(page);
                Ok(())
            })
            .await?;
            // Pages come by (tenant, agent id); the table reads better by host.
            agents.sort_by(|a, b| {
                (&a.tenant, &a.hostname, &a.agent_id).cmp(&(&b.tenant, &b.hostname, &b.agent_id))
            });
            if agents.is_empty() {
                println!("no agents enrolled yet: create a token with `thothctl token create`");
            } else {
                let rows: Vec<Vec<String>> = agents
                    .iter()
                    .map(|a| {
                        // An agent's reported error (a stalled event upload, a refused
                        // policy…) shows here too, not only in `agents show`.
                        let state = if a.revoked {
                            "revoked"
                        } else if a.connected && !a.last_error.is_empty() {
                            "connected, ERROR"
                        } else if a.connected {
                            "connected"
                        } else {
                            "offline"
                        };
                        let mut policy = a.applied_version.to_string();
                        if a.stale {
                            policy.push_str(" (stale)");
                        }
                        let inv = a.inventory.clone().unwrap_or_default();
                        vec![
                            a.agent_id.clone(),
                            a.tenant.clone(),
                            a.hostname.clone(),
                            if inv.os_name.is_empty() {
                                "-".into()
                            } else {
                                format!("{} {}", inv.os_name, inv.os_version)
                            },
                            policy,
                            state.to_owned(),
                            when(a.last_seen_unix),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "AGENT",
                        "TENANT",
                        "HOST",
                        "OS",
                        "POLICY",
                        "STATE",
                        "LAST SEEN",
                    ],
                    &rows,
                );
            }
            Ok(())
        }
        AgentsCmd::Show { id } => {
            let a = ctx
                .admin()
                .await?
                .get_agent(pb::GetAgentRequest { agent_id: id })
                .await?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(agent_json(&a));
            } else {
                let inv = a.inventory.clone().unwrap_or_default();
                let rows = [
                    ("agent", a.agent_id.clone()),
                    ("tenant", a.tenant.clone()),
                    ("hostname", a.hostname.clone()),
                    ("labels", labels_text(&a.labels)),
                    ("enrolled", when(a.enrolled_at_unix)),
                    ("last seen", when(a.last_seen_unix)),
                    ("connected", a.connected.to_string()),
                    ("policy version", a.applied_version.to_string()),
                    ("stale", a.stale.to_string()),
                    ("last error", a.last_error.clone()),
                    ("revoked", a.revoked.to_string()),
                    ("certificate until", when(a.cert_not_after_unix)),
                    ("agent version", a.agent_version.clone()),
                    (
                        "os",
                        format!("{} {} ({})", inv.os_name, inv.os_version, inv.arch),
                    ),
                    (
                        "cpus / memory",
                        format!("{} / {} MiB", inv.cpus, inv.memory_bytes >> 20),
                    ),
                    ("uptime", short(Duration::from_secs(inv.uptime_secs))),
                    ("config dirs", inv.config_dirs.join(", ")),
                    (
                        "governed",
                        format!(
                            "{} servers in {} configs",
                            inv.governed_servers, inv.governed_configs
                        ),
                    ),
                ];
                for (k, v) in rows {
                    println!("{k:<18} {}", safe(&v));
                }
                if let Some(inv) = &a.inventory {
                    for l in crate::inventory::show_lines(inv) {
                        println!("{l}");
                    }
                }
            }
            Ok(())
        }
        AgentsCmd::Revoke { id, reason } => {
            let a = ctx
                .admin()
                .await?
                .revoke_agent(pb::RevokeAgentRequest {
                    agent_id: id,
                    reason,
                })
                .await?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(agent_json(&a));
            } else {
                println!(
                    "revoked agent {} ({}, tenant {}): its next call is refused",
                    a.agent_id, a.hostname, a.tenant
                );
            }
            Ok(())
        }
    }
}

pub(crate) fn event_query(
    ctx: &Ctx,
    f: &EventFilterArgs,
    limit: u32,
    after: u64,
) -> pb::EventQuery {
    let types = event_types(f);
    pb::EventQuery {
        tenant: ctx.global.tenant.clone().unwrap_or_default(),
        agent_id: f.agent.clone().unwrap_or_default(),
        session_id: f.session.clone().unwrap_or_default(),
        tool_name: f.tool.clone().unwrap_or_default(),
        event_type: match types.as_slice() {
            // One type also as the older field, which controllers before the list understand.
            [one] => one.clone(),
            _ => String::new(),
        },
        event_types: types,
        dlp_only: f.dlp,
        dlp_detector: f.detector.clone().unwrap_or_default(),
        since: f.since.clone().unwrap_or_default(),
        until: f.until.clone().unwrap_or_default(),
        limit,
        after_id: after,
        oldest_first: false,
    }
}

/// The tool integrity event types (`--integrity`).
pub(crate) const INTEGRITY_TYPES: [&str; 3] = [
    "TOOL_DEFINITION_CHANGED",
    "TOOL_DEFINITION_SUSPICIOUS",
    "TOOL_NAME_SHADOWED",
];

/// The event types asked for: each --type (trimmed, once), then the integrity ones.
pub(crate) fn event_types(f: &EventFilterArgs) -> Vec<String> {
    let mut types: Vec<String> = Vec::new();
    let integrity = INTEGRITY_TYPES
        .iter()
        .filter(|_| f.integrity)
        .map(|t| t.to_string());
    for t in f
        .event_type
        .iter()
        .map(|t| t.trim().to_owned())
        .chain(integrity)
    {
        if !t.is_empty() && !types.contains(&t) {
            types.push(t);
        }
    }
    types
}

pub(crate) fn print_events(ctx: &Ctx, events: &[pb::StoredEvent], header: bool) {
    if ctx.global.json {
        for e in events {
            println!("{}", e.json);
        }
        return;
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.json).unwrap_or_default();
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
            let action = v
                .get("decision")
                .and_then(|d| d.get("action"))
                .and_then(|a| a.as_str())
                .unwrap_or("")
                .to_owned();
            vec![
                s("timestamp"),
                s("eventType"),
                s("agentId"),
                s("user"),
                s("serverName"),
                s("toolName"),
                action,
                v.get("seq").map(|x| x.to_string()).unwrap_or_default(),
                // What ingest saw, stored with the row: not proof (`events verify` is).
                if e.chain_ok {
                    "linked".into()
                } else {
                    "ALERT".into()
                },
            ]
        })
        .collect();
    if header {
        table(
            &[
                "TIME",
                "TYPE",
                "AGENT",
                "USER",
                "SERVER",
                "TOOL",
                "ACTION",
                "SEQ",
                "AT INGEST",
            ],
            &rows,
        );
    } else {
        for r in rows {
            println!("{}", r.join("  "));
        }
    }
}

pub(crate) async fn events(ctx: &Ctx, cmd: EventsCmd) -> Result<()> {
    match cmd {
        EventsCmd::Verify { agent, ca } => {
            let ca = ca.unwrap_or_else(|| {
                ctx.global
                    .credentials
                    .clone()
                    .unwrap_or_else(client::default_credentials_dir)
                    .join("ca.crt")
            });
            let pem = std::fs::read(&ca)
                .map_err(|e| Fail::new(5, format!("cannot read the CA {}: {e}", ca.display())))?;
            let anchors = thoth_proto::evidence::TrustAnchors::from_pem(&pem)
                .map_err(|e| Fail::new(5, format!("CA {}: {e}", ca.display())))?;
            let mut admin = ctx.admin().await?;
            let verdict = thoth_client::evidence::verify_stored(
                &mut admin,
                &ctx.tenant(),
                agent.as_deref().unwrap_or(""),
                &anchors,
            )
            .await?;
            match verdict {
                thoth_client::evidence::StoredVerdict::Broken { id, report, .. } => {
                    // Every break, and what was verified around them.
                    if ctx.global.json {
                        let mut j = report.to_json();
                        j["id"] = id.into();
                        println!("{j}");
                    } else {
                        for b in &report.breaks {
                            println!("BROKEN: stored event {}: {}", b.line, b.reason);
                        }
                        for line in report.describe("the controller's store") {
                            println!("{line}");
                        }
                    }
                    Err(Fail::new(1, "the stored events do not verify"))
                }
                thoth_client::evidence::StoredVerdict::Intact(report) => {
                    if ctx.global.json {
                        println!("{}", report.to_json());
                    } else {
                        for line in report.describe("the controller's store") {
                            println!("{line}");
                        }
                    }
                    if report.verdict() == thoth_proto::Verdict::Ok {
                        Ok(())
                    } else {
                        Err(Fail::new(
                            6,
                            "not every stored event is covered by a signed chain head",
                        ))
                    }
                }
            }
        }
        EventsCmd::Query { filter, limit } => {
            let r = ctx
                .admin()
                .await?
                .query_events(event_query(ctx, &filter, limit, 0))
                .await?
                .into_inner();
            if r.events.is_empty() && !ctx.global.json {
                println!("no matching events");
            } else {
                print_events(ctx, &r.events, true);
            }
            Ok(())
        }
        EventsCmd::Tail { filter } => {
            let mut admin = ctx.admin().await?;
            let first = admin
                .query_events(event_query(ctx, &filter, 10, 0))
                .await?
                .into_inner();
            print_events(ctx, &first.events, true);
            let mut after = first.events.last().map_or(0, |e| e.id);
            if after == 0 {
                // Start from the newest stored event, whatever matches.
                let latest = admin
                    .query_events(pb::EventQuery {
                        tenant: ctx.global.tenant.clone().unwrap_or_default(),
                        limit: 1,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                after = latest.events.last().map_or(0, |e| e.id);
            }
            loop {
                let r = admin
                    .query_events(event_query(ctx, &filter, 1000, after))
                    .await?
                    .into_inner();
                if let Some(last) = r.events.last() {
                    after = last.id;
                    print_events(ctx, &r.events, false);
                } else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JsonArrayOut;

    #[test]
    fn event_types_repeat_split_and_add_the_integrity_ones() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            f: super::EventFilterArgs,
        }
        let t = T::parse_from([
            "t",
            "--type",
            "TOOL_CALL_PRE,TOOL_CALL_POST",
            "--type",
            "TOOL_NAME_SHADOWED",
            "--integrity",
            "--detector",
            "jwt",
        ]);
        assert_eq!(
            super::event_types(&t.f),
            [
                "TOOL_CALL_PRE",
                "TOOL_CALL_POST",
                "TOOL_NAME_SHADOWED",
                "TOOL_DEFINITION_CHANGED",
                "TOOL_DEFINITION_SUSPICIOUS"
            ]
        );
        assert_eq!(t.f.detector.as_deref(), Some("jwt"));
        let t = T::parse_from(["t", "--dlp"]);
        assert!(super::event_types(&t.f).is_empty() && t.f.dlp);
    }

    #[test]
    fn a_json_array_printed_piece_by_piece_is_the_pretty_array() {
        let items = [
            serde_json::json!({"agentId": "agt-1", "labels": {}, "inventory": {
                "mcpServers": [{"name": "a\nb", "target": "x  y"}], "mcpFiles": []}}),
            serde_json::json!({"agentId": "agt-2", "inventory": null, "list": [1, [2, []]]}),
        ];
        for n in 0..=items.len() {
            let mut out = JsonArrayOut { first: true };
            let mut text: String = items[..n].iter().map(|v| out.piece(v)).collect();
            text.push_str(out.end());
            let whole = serde_json::Value::Array(items[..n].to_vec());
            assert_eq!(text, serde_json::to_string_pretty(&whole).unwrap(), "{n}");
        }
    }
}
