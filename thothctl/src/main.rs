//! `thothctl`: see `thothctl --help`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use thoth_proto::fleet as pb;

mod admins;
mod approvals;
mod ctx;
mod fleet;
mod inventory;
mod pins;
mod render;
use ctx::{Ctx, Fail, Global, Result};
use fleet::{AgentsCmd, EventsCmd, TokenCmd, agents, events, token};
use render::{iso, table, version_json, when};

/// Administer a Thoth controller: policy, enrollment tokens, agents, approvals, audit.
///
/// thothctl talks to the controller over mutual TLS with an admin credential: a directory holding
/// ca.crt, client.crt and client.key (`thoth-controller init` writes the first one to DATA/admin;
/// `thoth-controller issue-admin` makes more, each with a role and optional tenant).
///
/// Examples:
///   thothctl policy validate policy/examples/read-only-files.yaml
///   thothctl policy push policy/examples/read-only-files.yaml --comment "first rollout"
///   thothctl policy history
///   thothctl policy diff 1 2
///   thothctl token create --uses 50 --ttl 7d --label team=finance
///   thothctl agents list --json
///   thothctl inventory --ungoverned
///   thothctl approvals list
///   thothctl approvals approve 0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b --remember session
///   thothctl pins list --pending
///
/// Exit status: 0 success, 1 other error, 2 bad usage, 3 controller unreachable,
/// 4 refused (authentication or permission), 5 invalid input (e.g. a policy that does not validate).
#[derive(Parser)]
#[command(name = "thothctl", version, verbatim_doc_comment)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Policy: validate, push, show, history, diff, rollback.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Enrollment tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Enrolled agents: list, show, revoke.
    #[command(subcommand)]
    Agents(AgentsCmd),
    /// The fleet's MCP servers: which run where (client, name, command or URL), on which
    /// machines and for which users, and how many are governed. Remote servers (a URL) are never
    /// governed. Filter with --host (an MCP client id; --client is the same) and --ungoverned.
    Inventory(inventory::InventoryArgs),
    /// The audit log of admin actions (admin role).
    Audit {
        /// How many entries (newest).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only entries after this id (for paging).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Behavioral events stored by the controller: query, or follow live.
    #[command(subcommand)]
    Events(EventsCmd),
    /// Show who your credential says you are.
    Whoami,
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Admin credentials: list, revoke (admin role).
    #[command(subcommand)]
    Admins(admins::AdminsCmd),
    /// Human approval of step_up calls: list, show, approve, deny, watch (role approver or
    /// higher).
    ///
    /// A policy in step_up mode holds a call (say write_file) on the laptop until a human
    /// answers: the laptop's user in a dialog, or an admin here, whichever answers first (the
    /// policy's `approvers`). The held call goes through the moment it is approved; a request
    /// nobody answers in time is denied, and stays in the queue until it expires: approved
    /// later, the identical call goes through when retried. An approval covers only the
    /// identical call (same agent, user, server, tool and arguments).
    ///
    /// Examples:
    ///   thothctl approvals list                       # pending requests of your tenant
    ///   thothctl approvals show ID                    # the whole argument preview, and why
    ///   thothctl approvals approve ID --remember session --comment "ticket OPS-42"
    ///   thothctl approvals deny ID --reason "not on a production host"
    ///   thothctl approvals watch                      # live, until Ctrl-C
    ///
    /// Deciding a request that expired, was withdrawn (the client went away) or was already
    /// decided is refused (exit 1); a credential without the approver role, or of another
    /// tenant, is refused (exit 4, or "no approval" for another tenant's id).
    #[command(subcommand, verbatim_doc_comment)]
    Approvals(approvals::ApprovalsCmd),
    /// Tool integrity: the tool definitions pinned on the tenant's laptops; accept or reject a
    /// changed one (list: viewer and up; accept, reject: role operator or admin).
    ///
    /// The first time a laptop sees an MCP server's tools, it pins each tool's definition (its
    /// description, input schema and annotations, as a digest). When the server later offers a
    /// different definition under the same name, the change is reported here as pending and
    /// the policy's on_tool_change says what happens meanwhile (allow, warn, block, step_up).
    /// Accepting makes the new definition the trusted one for the whole tenant (its
    /// annotations may then be used by the policy); rejecting hides the tool wherever the
    /// server offers exactly that definition. A definition that looks poisoned stays blocked
    /// under on_suspicious_tool: block even once accepted: only a pin in the policy lets it
    /// through.
    ///
    /// Examples:
    ///   thothctl pins list --pending                  # changes waiting for a decision
    ///   thothctl pins show 3f9a1c                     # read the new description first
    ///   thothctl pins accept 3f9a1c0b2d4e --reason "files 1.4.0 release notes"
    ///   thothctl pins reject 3f9a1c --reason "asks the model to read ~/.ssh"
    ///   thothctl events query --integrity             # what changed, where, when
    ///
    /// An unknown id is refused (exit 1: see thothctl pins list); an ambiguous prefix, with
    /// the candidates (exit 5); a credential without the operator role, or of another tenant,
    /// is refused (exit 4, or not found for another tenant's id).
    #[command(subcommand, verbatim_doc_comment)]
    Pins(pins::PinsCmd),
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Check policy files locally (no controller needed); errors give file:line:column.
    Validate {
        /// Policy files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate, then publish a file as the tenant's next version; subscribed agents get it at once.
    Push {
        /// Policy file (YAML or JSON).
        file: PathBuf,
        /// A note kept in the history.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Print a version's document (default: the latest).
    Show {
        /// Version (default: latest).
        #[arg(long)]
        version: Option<u64>,
        /// Print the signed bundle envelope instead of the document.
        #[arg(long)]
        bundle: bool,
    },
    /// List versions, newest first.
    History {
        /// How many (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Unified diff between two versions (TO defaults to the latest).
    Diff {
        /// Older version.
        from: u64,
        /// Newer version (default: latest).
        to: Option<u64>,
    },
    /// Re-issue an old version's document as a new, higher version.
    Rollback {
        /// The version to return to.
        version: u64,
        /// A note kept in the history.
        #[arg(long, default_value = "")]
        comment: String,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Make a new policy-signing key (certified by the root key) and re-sign every tenant's
    /// latest bundle with it. Agents need no change.
    Rotate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    thoth_proto::stdout::quiet_on_closed_stdout();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("thothctl: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("thothctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn read_policy_file(path: &PathBuf) -> Result<String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Fail::new(5, format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > thoth_policy::MAX_POLICY_BYTES as u64 {
        return Err(Fail::new(
            5,
            format!(
                "{}: {} bytes, over the {} byte limit for a policy",
                path.display(),
                meta.len(),
                thoth_policy::MAX_POLICY_BYTES
            ),
        ));
    }
    std::fs::read_to_string(path)
        .map_err(|e| Fail::new(5, format!("cannot read {}: {e}", path.display())))
}

fn validate_local(path: &PathBuf) -> Result<String> {
    let text = read_policy_file(path)?;
    let name = path.display().to_string();
    let format = thoth_policy::Format::detect(&name, &text);
    thoth_policy::parse_policy(&text, &name, format)
        .map_err(|e| Fail::new(5, format!("policy does not validate: {e}")))?;
    Ok(text)
}

async fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx { global: cli.global };
    match cli.command {
        Command::Policy(cmd) => policy(&ctx, cmd).await,
        Command::Token(cmd) => token(&ctx, cmd).await,
        Command::Agents(cmd) => agents(&ctx, cmd).await,
        Command::Inventory(args) => inventory::inventory(&ctx, args).await,
        Command::Audit { limit, after } => {
            let r = ctx
                .admin()
                .await?
                .list_audit(pb::ListAuditRequest {
                    tenant: ctx.tenant(),
                    limit,
                    after_id: after,
                })
                .await?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(serde_json::Value::Array(
                    r.entries
                        .iter()
                        .map(|e| {
                            serde_json::json!({
                                "id": e.id,
                                "at": humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(e.at_unix_ms.max(0) as u64)).to_string(),
                                "actor": e.actor, "role": e.role, "action": e.action,
                                "tenant": e.tenant, "outcome": e.outcome,
                                "detail": serde_json::from_str::<serde_json::Value>(&e.detail).unwrap_or(serde_json::Value::Null),
                            })
                        })
                        .collect(),
                ));
            } else {
                let rows: Vec<Vec<String>> = r
                    .entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.to_string(),
                            humantime::format_rfc3339_seconds(
                                SystemTime::UNIX_EPOCH
                                    + Duration::from_millis(e.at_unix_ms.max(0) as u64),
                            )
                            .to_string(),
                            format!("{} ({})", e.actor, e.role),
                            e.action.clone(),
                            e.tenant.clone(),
                            e.outcome.clone(),
                            e.detail.clone(),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "WHEN", "WHO", "ACTION", "TENANT", "OUTCOME", "DETAIL"],
                    &rows,
                );
            }
            Ok(())
        }
        Command::Events(cmd) => events(&ctx, cmd).await,
        Command::Admins(cmd) => admins::admins(&ctx, cmd).await,
        Command::Approvals(cmd) => approvals::approvals(&ctx, cmd).await,
        Command::Pins(cmd) => pins::pins(&ctx, cmd).await,
        Command::Whoami => {
            let me = ctx
                .admin()
                .await?
                .who_am_i(pb::WhoAmIRequest {})
                .await?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(
                    serde_json::json!({"name": me.name, "role": me.role, "tenantScope": me.tenant_scope}),
                );
            } else {
                println!(
                    "{} (role {}, tenants: {})",
                    me.name,
                    me.role,
                    if me.tenant_scope == "*" {
                        "all".to_owned()
                    } else {
                        me.tenant_scope
                    }
                );
            }
            Ok(())
        }
        Command::Keys(KeysCmd::Rotate) => {
            let k = ctx
                .admin()
                .await?
                .rotate_signing_key(pb::RotateSigningKeyRequest {})
                .await?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(serde_json::json!({
                    "keyId": k.key_id, "notBefore": iso(k.not_before_unix),
                    "notAfter": iso(k.not_after_unix), "resignedTenants": k.resigned_tenants,
                }));
            } else {
                println!(
                    "new signing key {} (valid until {}); re-signed the latest bundle of: {}",
                    k.key_id,
                    when(k.not_after_unix),
                    if k.resigned_tenants.is_empty() {
                        "no tenant yet".to_owned()
                    } else {
                        k.resigned_tenants.join(", ")
                    }
                );
            }
            Ok(())
        }
    }
}

async fn get_document(ctx: &Ctx, version: u64) -> Result<pb::PolicyDocument> {
    Ok(ctx
        .admin()
        .await?
        .get_policy(pb::GetPolicyRequest {
            tenant: ctx.tenant(),
            version,
        })
        .await?
        .into_inner())
}

async fn policy(ctx: &Ctx, cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Validate { files } => {
            let mut failed = Vec::new();
            for f in &files {
                match validate_local(f) {
                    Ok(_) => {
                        if !ctx.global.json {
                            println!("{}: ok", f.display());
                        }
                    }
                    Err(e) => {
                        eprintln!("{}", e.message);
                        failed.push(f.display().to_string());
                    }
                }
            }
            if ctx.global.json {
                ctx.print_json(serde_json::json!({"checked": files.len(), "failed": failed}));
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Fail::new(
                    5,
                    format!("{} of {} files do not validate", failed.len(), files.len()),
                ))
            }
        }
        PolicyCmd::Push { file, comment } => {
            let document = validate_local(&file)?;
            let v = ctx
                .admin()
                .await?
                .push_policy(pb::PushPolicyRequest {
                    tenant: ctx.tenant(),
                    document,
                    source: file.display().to_string(),
                    comment,
                })
                .await?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(version_json(&v));
            } else {
                println!(
                    "pushed {} as version {} of tenant {} (sha256 {}, expires {})",
                    file.display(),
                    v.version,
                    v.tenant,
                    &v.sha256[..12.min(v.sha256.len())],
                    when(v.expires_at_unix)
                );
            }
            Ok(())
        }
        PolicyCmd::Show { version, bundle } => {
            let doc = get_document(ctx, version.unwrap_or(0)).await?;
            let v = doc.version.unwrap_or_default();
            if ctx.global.json {
                let mut j = version_json(&v);
                j["document"] = doc.document.into();
                if bundle {
                    j["bundle"] = String::from_utf8_lossy(&doc.bundle).into_owned().into();
                }
                ctx.print_json(j);
            } else if bundle {
                println!("{}", String::from_utf8_lossy(&doc.bundle));
            } else {
                eprintln!(
                    "# tenant {}, version {}, pushed by {}, issued {}, expires {}",
                    v.tenant,
                    v.version,
                    v.pushed_by,
                    when(v.issued_at_unix),
                    when(v.expires_at_unix)
                );
                print!("{}", doc.document);
                if !doc.document.ends_with('\n') {
                    println!();
                }
            }
            Ok(())
        }
        PolicyCmd::History { limit } => {
            let h = ctx
                .admin()
                .await?
                .policy_history(pb::PolicyHistoryRequest {
                    tenant: ctx.tenant(),
                    limit,
                })
                .await?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(serde_json::Value::Array(
                    h.versions.iter().map(version_json).collect(),
                ));
            } else if h.versions.is_empty() {
                println!("no policy yet: push one with `thothctl policy push FILE`");
            } else {
                let rows: Vec<Vec<String>> = h
                    .versions
                    .iter()
                    .map(|v| {
                        let mut comment = v.comment.clone();
                        if v.rollback_of != 0 && comment.is_empty() {
                            comment = format!("rollback to {}", v.rollback_of);
                        }
                        vec![
                            v.version.to_string(),
                            when(v.issued_at_unix),
                            v.pushed_by.clone(),
                            v.sha256[..12.min(v.sha256.len())].to_owned(),
                            v.agents_applied.to_string(),
                            comment,
                        ]
                    })
                    .collect();
                table(
                    &["VERSION", "SIGNED", "BY", "SHA256", "AGENTS", "COMMENT"],
                    &rows,
                );
            }
            Ok(())
        }
        PolicyCmd::Diff { from, to } => {
            let a = get_document(ctx, from).await?;
            let b = get_document(ctx, to.unwrap_or(0)).await?;
            let bv = b.version.as_ref().map_or(0, |v| v.version);
            let diff = similar::TextDiff::from_lines(&a.document, &b.document);
            let text = diff
                .unified_diff()
                .context_radius(3)
                .header(&format!("version {from}"), &format!("version {bv}"))
                .to_string();
            if ctx.global.json {
                ctx.print_json(serde_json::json!({"from": from, "to": bv, "identical": text.is_empty(), "diff": text}));
            } else if text.is_empty() {
                println!("versions {from} and {bv} have the same document");
            } else {
                print!("{text}");
            }
            Ok(())
        }
        PolicyCmd::Rollback { version, comment } => {
            let v = ctx
                .admin()
                .await?
                .rollback_policy(pb::RollbackPolicyRequest {
                    tenant: ctx.tenant(),
                    to_version: version,
                    comment,
                })
                .await?
                .into_inner();
            if ctx.global.json {
                ctx.print_json(version_json(&v));
            } else {
                println!(
                    "re-issued version {version} as version {} of tenant {}",
                    v.version, v.tenant
                );
            }
            Ok(())
        }
    }
}
