//! `thothctl approvals list|show|approve|deny|watch`: the controller's queue of `step_up` calls
//! waiting for a human (role approver or higher, tenant-scoped).
//!
//! Everything in an approval request comes from a laptop (the agent, the OS user, the MCP
//! client, a tool's arguments): every such string is escaped before it reaches the terminal
//! ([`shown`]), in tables, in `show`, in `watch` lines, in JSON text and in the controller's
//! error messages.

use std::time::Duration;

use clap::Subcommand;
use thoth_proto::fleet as pb;

use crate::ctx::{Ctx, Fail, Result};
mod render;

use crate::render::short;
#[cfg(test)]
use render::{PREVIEW_CHARS, SHOW_CHARS, invisible, iso_ms, rel, stamp};
use render::{cut, json_text, now_ms, print_json};
pub(crate) use render::{decided_lines, info_json, list_lines, show_lines, shown, watch_line};

#[derive(Subcommand)]
pub(crate) enum ApprovalsCmd {
    /// The pending requests of the tenant (with --all: decided, expired and withdrawn ones too,
    /// newest first).
    ///
    /// Columns: ID (give it to show, approve, deny), AGENT, HOST, USER (the OS user whose MCP
    /// client made the call), SERVER, TOOL, ARGUMENTS (a redacted preview, cut: `show` prints
    /// it whole), REQUESTED, EXPIRES, STATE.
    ///
    /// Examples:
    ///   thothctl approvals list
    ///   thothctl approvals list --all --json
    ///   thothctl --tenant acme approvals list
    #[command(verbatim_doc_comment)]
    List {
        /// Also decided, expired and withdrawn requests.
        #[arg(long)]
        all: bool,
    },
    /// One request in full: who asks, on which machine, for which call (the whole argument
    /// preview), why the policy wants a human, and its decision.
    ///
    /// Example:
    ///   thothctl approvals show 0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b
    #[command(verbatim_doc_comment)]
    Show {
        /// The approval id (from `thothctl approvals list`).
        id: String,
    },
    /// Approve a pending request: the agent releases the held call at once (or, when the
    /// proxy has already answered "not approved in time", lets the identical call through when
    /// it is retried).
    ///
    /// --remember says how long the approval covers the identical call (same agent, user,
    /// server, tool and arguments) again: `once` (this call; a retry within 5 minutes),
    /// `session` (every identical call in that MCP session), or a duration up to 24h such as
    /// 30s, 15m, 2h (identical calls of that user, in any session). Default: what the policy
    /// asked for (`approval_remember`).
    ///
    /// Examples:
    ///   thothctl approvals approve 0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b
    ///   thothctl approvals approve 0193a2b4-… --remember session --comment "ticket OPS-42"
    ///   thothctl approvals approve 0193a2b4-… --remember 15m
    #[command(verbatim_doc_comment)]
    Approve {
        /// The approval id (from `thothctl approvals list`).
        id: String,
        /// once, session, or a duration up to 24h (30s, 15m, 2h). Default: the policy's.
        #[arg(long, value_name = "once|session|DURATION", value_parser = remember_arg)]
        remember: Option<String>,
        /// A note kept with the decision and in the audit log (at most 1024 bytes).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Deny a pending request: the held call fails with your reason (the model and the user see
    /// it).
    ///
    /// Example:
    ///   thothctl approvals deny 0193a2b4-… --reason "writes to /etc are never approved"
    #[command(verbatim_doc_comment)]
    Deny {
        /// The approval id (from `thothctl approvals list`).
        id: String,
        /// Why: shown to the user and the model, kept in the audit log (at most 1024 bytes).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Follow the tenant's queue live: one line per new request and per decision, until
    /// interrupted (Ctrl-C). With --json: one JSON object per line. Reconnects when the
    /// controller goes away.
    ///
    /// Examples:
    ///   thothctl approvals watch
    ///   thothctl approvals watch --json | jq -r 'select(.state == "pending") | .approvalId'
    #[command(verbatim_doc_comment)]
    Watch,
}

/// The longest comment or reason the controller keeps.
const MAX_NOTE_BYTES: usize = 1024;

/// `--remember`: once, session or a duration, as the policy writes it (checked by the policy
/// crate, so thothctl and the policy agree); sent in its wire form (`120m` → `2h`).
fn remember_arg(s: &str) -> std::result::Result<String, String> {
    s.parse::<thoth_policy::Remember>()
        .map(|r| r.as_wire())
        .map_err(|e| {
            e.to_string()
                .replace("approval_remember", "--remember")
                .to_string()
        })
}

/// The controller's refusal of an approval call, said plainly (its message escaped: it may
/// quote what a laptop sent).
pub(crate) fn refusal(s: tonic::Status, id: Option<&str>) -> Fail {
    use tonic::Code;
    let msg = shown(s.message());
    let id = id.map(shown).unwrap_or_default();
    match s.code() {
        Code::Unimplemented => Fail::new(
            1,
            "this controller does not serve approvals (it is older than thothctl): upgrade \
             thoth-controller",
        ),
        Code::NotFound => Fail::new(
            1,
            format!(
                "no approval {id}: unknown, or of a tenant your credential cannot see ({msg})\n  \
                 hint: thothctl approvals list --all"
            ),
        ),
        Code::FailedPrecondition => Fail::new(
            1,
            format!("refused: {msg}\n  hint: thothctl approvals show {id}"),
        ),
        Code::ResourceExhausted => Fail::new(1, format!("refused: {msg}")),
        Code::PermissionDenied => Fail::new(
            4,
            format!(
                "permission denied: {msg}\n  hint: approvals need an admin credential with role \
                 approver, operator or admin, for this tenant (thoth-controller issue-admin \
                 --role approver …)"
            ),
        ),
        code => Fail::from(tonic::Status::new(code, msg)),
    }
}

/// An approval id as typed: refused before asking the controller when it cannot be one.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Fail::new(
            2,
            format!(
                "{} is not an approval id (an id looks like 0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b: \
                 see thothctl approvals list)",
                cut(&format!("{id:?}"), 80)
            ),
        ));
    }
    Ok(())
}

fn check_note(what: &str, note: &str) -> Result<()> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(Fail::new(
            2,
            format!(
                "{what} is {} bytes, over the {MAX_NOTE_BYTES}-byte limit",
                note.len()
            ),
        ));
    }
    Ok(())
}

pub(crate) async fn approvals(ctx: &Ctx, cmd: ApprovalsCmd) -> Result<()> {
    match cmd {
        ApprovalsCmd::List { all } => {
            let r = ctx
                .admin()
                .await?
                .list_approvals(pb::ListApprovalsRequest {
                    tenant: ctx.tenant(),
                    all,
                })
                .await
                .map_err(|s| refusal(s, None))?
                .into_inner();
            if ctx.global.json {
                print_json(&serde_json::Value::Array(
                    r.approvals.iter().map(info_json).collect(),
                ));
            } else if r.approvals.is_empty() {
                println!(
                    "{}",
                    if all {
                        "no approval requests"
                    } else {
                        "no pending approval requests (--all: decided and expired ones too)"
                    }
                );
            } else {
                for l in list_lines(&r.approvals, now_ms()) {
                    println!("{l}");
                }
            }
        }
        ApprovalsCmd::Show { id } => {
            check_id(&id)?;
            let i = ctx
                .admin()
                .await?
                .get_approval(pb::GetApprovalRequest {
                    approval_id: id.clone(),
                })
                .await
                .map_err(|s| refusal(s, Some(&id)))?
                .into_inner();
            if ctx.global.json {
                print_json(&info_json(&i));
            } else {
                for l in show_lines(&i, now_ms()) {
                    println!("{l}");
                }
            }
        }
        ApprovalsCmd::Approve {
            id,
            remember,
            comment,
        } => {
            check_id(&id)?;
            check_note("--comment", &comment)?;
            decide(ctx, id, true, remember.unwrap_or_default(), comment).await?;
        }
        ApprovalsCmd::Deny { id, reason } => {
            check_id(&id)?;
            check_note("--reason", &reason)?;
            decide(ctx, id, false, String::new(), reason).await?;
        }
        ApprovalsCmd::Watch => watch(ctx).await?,
    }
    Ok(())
}

async fn decide(
    ctx: &Ctx,
    id: String,
    approve: bool,
    remember: String,
    comment: String,
) -> Result<()> {
    let i = ctx
        .admin()
        .await?
        .decide_approval(pb::DecideApprovalRequest {
            approval_id: id.clone(),
            approve,
            remember,
            comment,
        })
        .await
        .map_err(|s| refusal(s, Some(&id)))?
        .into_inner();
    if ctx.global.json {
        print_json(&info_json(&i));
    } else {
        for l in decided_lines(&i) {
            println!("{l}");
        }
    }
    Ok(())
}

/// Follows WatchApprovals until interrupted; once connected, when the stream ends or the
/// controller is unreachable, says so on stderr and reconnects (1 s, doubling to 30 s).
async fn watch(ctx: &Ctx) -> Result<()> {
    let mut backoff = Duration::from_secs(1);
    let mut connected_once = false;
    loop {
        let outcome = async {
            let mut stream = ctx
                .admin()
                .await?
                .watch_approvals(pb::WatchApprovalsRequest {
                    tenant: ctx.tenant(),
                })
                .await
                .map_err(|s| refusal(s, None))?
                .into_inner();
            if !ctx.global.json {
                eprintln!(
                    "thothctl: {} approval requests and decisions (Ctrl-C to stop)",
                    if connected_once {
                        "watching again (what happened meanwhile: thothctl approvals list \
                         --all):"
                    } else {
                        "watching"
                    }
                );
            }
            connected_once = true;
            backoff = Duration::from_secs(1);
            loop {
                match stream.message().await {
                    Ok(Some(i)) => {
                        if ctx.global.json {
                            println!("{}", json_text(&info_json(&i), false));
                        } else {
                            println!("{}", watch_line(&i, now_ms()));
                        }
                    }
                    Ok(None) => return Ok::<_, Fail>("the controller ended the watch".to_owned()),
                    Err(s) => return Err(refusal(s, None)),
                }
            }
        }
        .await;
        let why = match outcome {
            Ok(why) => why,
            // Once connected, an unreachable controller (3) or a broken stream: try again. A
            // refusal, or a first connection that fails, is final.
            Err(f) if connected_once && (f.code == 3 || f.code == 1) => f.message,
            Err(f) => return Err(f),
        };
        eprintln!(
            "thothctl: {}; reconnecting in {}",
            why.lines().next().unwrap_or_default(),
            short(backoff)
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
#[path = "approvals_tests.rs"]
mod tests;
