//! `thothctl pins list|show|accept|reject`: tool definitions pinned on the tenant's laptops (tool
//! integrity), and the admin decision that accepts or rejects one for the whole tenant.
//!
//! Everything in a pin comes from a laptop (the user, the MCP client, the server's name and
//! command, the tool's name, its description): every such string is escaped before it reaches
//! the terminal (`render::safe`, through `table_lines`).

use clap::Subcommand;
use thoth_proto::fleet as pb;

use crate::ctx::{Ctx, Fail, Result};
use crate::render::{clip, safe, table_lines};

#[derive(Subcommand)]
pub(crate) enum PinsCmd {
    /// The tool definitions the tenant's agents report, one row per definition (a server's
    /// tool at one digest), the changes waiting for a decision first.
    ///
    /// STATE: pending (a server changed this tool's definition: description, schema or
    /// annotations; the laptops hold the change back or warn, as the policy's on_tool_change
    /// says, until an admin decides), pinned (the definition in force, trusted on first use),
    /// accepted, rejected (an admin decided).
    ///
    /// Columns: ID (give it to show, accept or reject; a unique prefix of 6 or more digits will
    /// do), STATE, CLIENT (the MCP client), SERVER, TOOL, CHANGES (what a pending definition
    /// changes against the pinned one, all reporters' together), AGENTS and USERS (how many
    /// report it), DIGEST (its first 12 hex digits).
    ///
    /// A `*` after the server name: the agents reporting this definition disagree about its
    /// server name, command, client, pinned digest, changes or description (one of them is
    /// wrong, or lying); the row shows one of them. Run `thothctl pins show ID`.
    ///
    /// Examples:
    ///   thothctl pins list --pending
    ///   thothctl pins list --agent agt-0193a2b4 --json
    #[command(verbatim_doc_comment)]
    List {
        /// Only definitions waiting for a decision.
        #[arg(long)]
        pending: bool,
        /// Only what this agent reports.
        #[arg(long, value_name = "AGENT_ID")]
        agent: Option<String>,
    },
    /// Everything about one definition: its server, command, digests, what changed, who
    /// reports it, the decision if any, and the new description as the laptops received it
    /// (untrusted text from the MCP server, escaped: read it before you accept).
    ///
    /// Examples:
    ///   thothctl pins show 3f9a1c0b2d4e
    ///   thothctl pins show 3f9a1c --json
    #[command(verbatim_doc_comment)]
    Show {
        /// The pin id (from `thothctl pins list`), or a unique prefix of 6 or more digits.
        id: String,
    },
    /// Accept a definition for every agent of the tenant: it becomes the pinned, trusted one
    /// (its annotations, such as readOnlyHint, may then be trusted by the policy), and calls
    /// held back because it changed go through again.
    ///
    /// Accept a change only after reading it: a tool whose description or schema changed
    /// under the same name is how a server smuggles instructions to the model ("tool
    /// poisoning"). Run `thothctl pins show ID` first to read the new description; look at
    /// the server's release notes, or run it and read its tools/list, and compare with what
    /// CHANGES names.
    ///
    /// Example:
    ///   thothctl pins accept 3f9a1c0b2d4e --reason "files 1.4.0: documented new parameter"
    #[command(verbatim_doc_comment)]
    Accept {
        /// The pin id (from `thothctl pins list`), or a unique prefix of 6 or more digits.
        id: String,
        /// Why: kept with the decision and in the audit log (at most 1024 bytes).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reject a definition for every agent of the tenant: the tool is hidden and its calls
    /// denied wherever the server offers exactly this definition, whatever on_tool_change says.
    ///
    /// Example:
    ///   thothctl pins reject 3f9a1c0b2d4e --reason "description tells the model to read ~/.ssh"
    #[command(verbatim_doc_comment)]
    Reject {
        /// The pin id (from `thothctl pins list`), or a unique prefix of 6 or more digits.
        id: String,
        /// Why: kept with the decision and in the audit log (at most 1024 bytes).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// The longest reason the controller keeps.
const MAX_REASON_BYTES: usize = 1024;

/// The controller's refusal of a pins call, said plainly (its message escaped: it may quote
/// what a laptop sent).
fn refusal(s: tonic::Status) -> Fail {
    use tonic::Code;
    let msg = safe(s.message());
    match s.code() {
        Code::Unimplemented => Fail::new(
            1,
            "this controller does not serve tool pins (it is older than thothctl): upgrade \
             thoth-controller",
        ),
        Code::NotFound => Fail::new(1, format!("not found: {msg}")),
        Code::InvalidArgument => Fail::new(5, format!("invalid request: {msg}")),
        Code::PermissionDenied => Fail::new(
            4,
            format!(
                "permission denied: {msg}\n  hint: deciding pins needs an admin credential with \
                 role operator or admin, for this tenant"
            ),
        ),
        code => Fail::from(tonic::Status::new(code, msg)),
    }
}

/// A pin id as typed: refused before asking the controller when it cannot be one.
fn check_id(id: &str) -> Result<()> {
    if !(6..=12).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Fail::new(
            2,
            format!(
                "{} is not a pin id (12 hex digits such as 3f9a1c0b2d4e, or a prefix of at \
                 least 6: see thothctl pins list)",
                clip(&format!("{id:?}"), 40)
            ),
        ));
    }
    Ok(())
}

fn short_digest(d: &str) -> String {
    d.chars().take(12).collect()
}

/// The `list` table.
pub(crate) fn list_lines(pins: &[pb::PinInfo]) -> Vec<String> {
    let rows: Vec<Vec<String>> = pins
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.state.clone(),
                clip(&shown(&p.client), 24),
                // Invisible characters shown too: `read_file` and `read_file\u{200b}` are two
                // tools and must not print alike.
                if p.reports_differ {
                    format!("{}*", clip(&shown(&p.server_name), 31))
                } else {
                    clip(&shown(&p.server_name), 32)
                },
                clip(&shown(&p.tool), 40),
                if p.changes.is_empty() {
                    "-".into()
                } else {
                    p.changes.join(",")
                },
                p.agents.to_string(),
                p.users.to_string(),
                short_digest(&p.digest),
            ]
        })
        .collect();
    table_lines(
        &[
            "ID", "STATE", "CLIENT", "SERVER", "TOOL", "CHANGES", "AGENTS", "USERS", "DIGEST",
        ],
        &rows,
    )
}

fn ms_iso(ms: i64) -> serde_json::Value {
    if ms <= 0 {
        return serde_json::Value::Null;
    }
    humantime::format_rfc3339_seconds(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
    )
    .to_string()
    .into()
}

pub(crate) fn pin_json(p: &pb::PinInfo) -> serde_json::Value {
    let decision = p.decision.as_ref().map(|d| {
        serde_json::json!({
            "accepted": d.accepted, "decidedBy": d.decided_by, "reason": d.reason,
            "decidedAt": ms_iso(d.decided_unix_ms),
        })
    });
    serde_json::json!({
        "id": p.id, "state": p.state, "serverKey": p.server_key, "client": p.client,
        "serverName": p.server_name, "command": p.command, "tool": p.tool, "digest": p.digest,
        "pinnedDigest": (!p.pinned_digest.is_empty()).then_some(&p.pinned_digest),
        "changes": p.changes, "agents": p.agents, "users": p.users, "decision": decision,
        "lastSeen": ms_iso(p.last_seen_unix_ms),
        "description": p.description, "reportsDiffer": p.reports_differ,
    })
}

/// What reporters may disagree about (`PinInfo.reports_differ`).
const DIFFER: &str = "reporters disagree about this definition's server name, command, client, \
     pinned digest, changes or description: the fields shown are one reporter's (CHANGES is \
     all of theirs together); one of the laptops is wrong or lying, check with thothctl \
     inventory before deciding";

/// `s` made safe for a terminal ([`safe`]) with invisible characters written as `\u{…}` too:
/// zero-width and word-joiner characters, the soft hyphen, the byte-order mark, variation
/// selectors and Unicode tags (which can spell hidden text a model reads and a person does not).
fn shown(s: &str) -> String {
    let invisible = |c: char| {
        matches!(c,
            '\u{ad}' | '\u{180e}' | '\u{200b}'..='\u{200d}' | '\u{2060}'..='\u{2064}'
            | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{e0000}'..='\u{e007f}'
            | '\u{e0100}'..='\u{e01ef}')
    };
    let s = safe(s);
    if !s.chars().any(invisible) {
        return s;
    }
    s.chars()
        .map(|c| {
            if invisible(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What `show` prints: every field escaped, the description line by line, indented.
pub(crate) fn show_lines(p: &pb::PinInfo) -> Vec<String> {
    let field = |k: &str, v: &str| format!("  {k:<13}{}", shown(v));
    let mut out = vec![format!("{} {}", shown(&p.id), shown(&p.state))];
    out.push(field("tool:", &p.tool));
    out.push(field("server:", &p.server_name));
    out.push(field(
        "client:",
        if p.client.is_empty() { "-" } else { &p.client },
    ));
    out.push(field("command:", &p.command));
    out.push(field("server key:", &p.server_key));
    out.push(field("digest:", &p.digest));
    if !p.pinned_digest.is_empty() {
        out.push(field("replaces:", &p.pinned_digest));
    }
    out.push(field(
        "changes:",
        &if p.changes.is_empty() {
            "-".to_owned()
        } else {
            p.changes.join(", ")
        },
    ));
    out.push(format!(
        "  {:<13}{} agents, {} users",
        "reported by:", p.agents, p.users
    ));
    if let Some(at) = ms_iso(p.last_seen_unix_ms).as_str() {
        out.push(field("last seen:", at));
    }
    match &p.decision {
        Some(d) => {
            let verb = if d.accepted { "accepted" } else { "rejected" };
            let at = ms_iso(d.decided_unix_ms);
            let mut line = format!("{verb} by {}", d.decided_by);
            if let Some(at) = at.as_str() {
                line.push_str(&format!(" at {at}"));
            }
            if !d.reason.is_empty() {
                line.push_str(&format!(": {}", d.reason));
            }
            out.push(field("decision:", &line));
        }
        None => out.push(field("decision:", "none")),
    }
    if p.reports_differ {
        out.push(format!("  warning: {DIFFER}"));
    }
    if p.description.is_empty() {
        out.push(format!(
            "  {:<13}{}",
            "description:",
            if p.state == "pending" {
                "(none reported: empty, or the agents are older than this controller)"
            } else {
                "(reported only for a definition that waits for a decision)"
            }
        ));
    } else {
        out.push(
            "  description (the MCP server's text, untrusted; escaped, line breaks kept):".into(),
        );
        out.extend(
            p.description
                .split('\n')
                .map(|l| format!("    | {}", shown(l))),
        );
    }
    out
}

/// The one definition of the tenant `id` names (a full id or a unique prefix).
fn pick(pins: Vec<pb::PinInfo>, id: &str) -> Result<pb::PinInfo> {
    let id = id.to_ascii_lowercase();
    let mut found: Vec<pb::PinInfo> = pins.into_iter().filter(|p| p.id.starts_with(&id)).collect();
    match found.len() {
        0 => Err(Fail::new(
            1,
            format!("not found: no tool definition {id}: run thothctl pins list for the ids"),
        )),
        1 => Ok(found.remove(0)),
        n => Err(Fail::new(
            5,
            format!(
                "pin id {id} is ambiguous: {n} definitions match ({}{}); give more digits",
                found
                    .iter()
                    .take(10)
                    .map(|p| format!(
                        "{} ({} {})",
                        p.id,
                        clip(&p.server_name, 32),
                        clip(&p.tool, 40)
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                if n > 10 { ", …" } else { "" }
            ),
        )),
    }
}

/// What `accept` / `reject` print.
pub(crate) fn decided_lines(p: &pb::PinInfo) -> Vec<String> {
    vec![
        format!(
            "{} {}: {} of {} ({}), digest {}",
            safe(&p.id),
            p.state,
            safe(&p.tool),
            safe(&p.server_name),
            safe(&p.client),
            short_digest(&p.digest)
        ),
        "  every agent of the tenant applies it at once (those offline when they reconnect)".into(),
    ]
}

/// The tenant's tool definitions of these servers, by (client, server name), for `thothctl
/// inventory --tools`.
pub(crate) async fn server_tools(
    ctx: &Ctx,
    servers: &std::collections::BTreeSet<(&str, &str)>,
) -> Result<Vec<pb::PinInfo>> {
    let r = ctx
        .admin()
        .await?
        .list_pins(pb::ListPinsRequest {
            tenant: ctx.tenant(),
            ..Default::default()
        })
        .await
        .map_err(refusal)?
        .into_inner();
    let mut pins: Vec<pb::PinInfo> = r
        .pins
        .into_iter()
        .filter(|p| servers.contains(&(p.client.as_str(), p.server_name.as_str())))
        .collect();
    pins.sort_by(|a, b| {
        (&a.client, &a.server_name, &a.tool, &a.state).cmp(&(
            &b.client,
            &b.server_name,
            &b.tool,
            &b.state,
        ))
    });
    Ok(pins)
}

/// The tools section of `thothctl inventory --tools`.
pub(crate) fn tools_lines(pins: &[pb::PinInfo]) -> Vec<String> {
    let mut out = vec![String::new()];
    if pins.is_empty() {
        out.push("Tools: none reported for these servers (agents report the tools their users' servers list)".into());
        return out;
    }
    let pending = pins.iter().filter(|p| p.state == "pending").count();
    out.push(format!(
        "Tools ({} definitions, {pending} pending a decision: thothctl pins list --pending):",
        pins.len()
    ));
    let rows: Vec<Vec<String>> = pins
        .iter()
        .map(|p| {
            vec![
                clip(&p.client, 24),
                clip(&p.server_name, 32),
                clip(&p.tool, 40),
                p.state.clone(),
                p.agents.to_string(),
                p.users.to_string(),
                p.id.clone(),
            ]
        })
        .collect();
    out.extend(table_lines(
        &[
            "CLIENT", "SERVER", "TOOL", "STATE", "AGENTS", "USERS", "PIN",
        ],
        &rows,
    ));
    out
}

pub(crate) async fn pins(ctx: &Ctx, cmd: PinsCmd) -> Result<()> {
    match cmd {
        PinsCmd::List { pending, agent } => {
            let r = ctx
                .admin()
                .await?
                .list_pins(pb::ListPinsRequest {
                    tenant: ctx.tenant(),
                    pending_only: pending,
                    agent_id: agent.unwrap_or_default(),
                })
                .await
                .map_err(refusal)?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(serde_json::Value::Array(
                    r.pins.iter().map(pin_json).collect(),
                ));
            } else if r.pins.is_empty() {
                println!(
                    "{}",
                    if pending {
                        "no tool definition waits for a decision"
                    } else {
                        "no tool definitions reported (agents report them once their users' MCP servers list tools)"
                    }
                );
            } else {
                for l in list_lines(&r.pins) {
                    println!("{l}");
                }
            }
        }
        PinsCmd::Show { id } => {
            check_id(&id)?;
            let r = ctx
                .admin()
                .await?
                .list_pins(pb::ListPinsRequest {
                    tenant: ctx.tenant(),
                    ..Default::default()
                })
                .await
                .map_err(refusal)?
                .into_inner();
            let p = pick(r.pins, &id)?;
            if ctx.global.json {
                ctx.print_json(pin_json(&p));
            } else {
                for l in show_lines(&p) {
                    println!("{l}");
                }
            }
        }
        PinsCmd::Accept { id, reason } => decide(ctx, id, true, reason).await?,
        PinsCmd::Reject { id, reason } => decide(ctx, id, false, reason).await?,
    }
    Ok(())
}

async fn decide(ctx: &Ctx, id: String, accept: bool, reason: String) -> Result<()> {
    check_id(&id)?;
    if reason.len() > MAX_REASON_BYTES {
        return Err(Fail::new(
            2,
            format!(
                "--reason is {} bytes, over the {MAX_REASON_BYTES}-byte limit",
                reason.len()
            ),
        ));
    }
    let p = ctx
        .admin()
        .await?
        .decide_pin(pb::DecidePinRequest {
            tenant: ctx.tenant(),
            id,
            accept,
            reason,
        })
        .await
        .map_err(refusal)?
        .into_inner();
    if ctx.global.json {
        ctx.print_json(pin_json(&p));
    } else {
        for l in decided_lines(&p) {
            println!("{l}");
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "pins_tests.rs"]
mod tests;
