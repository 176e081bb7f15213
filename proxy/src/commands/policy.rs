//! `thoth policy validate` and `thoth policy explain`.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::Value;
use thoth_policy::{Action, Policy, Remember, ServerView, SessionState, ToolCall, evaluate};

use crate::cli::ExplainArgs;
use crate::policy::read_policy_file;

pub fn validate(files: &[PathBuf]) -> anyhow::Result<i32> {
    let mut failed = 0;
    for f in files {
        match read_policy_file(f) {
            Ok((policy, version)) => println!(
                "ok: {} (version {version}, {} server entr{})",
                f.display(),
                policy.servers.len(),
                if policy.servers.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            ),
            Err(e) => {
                failed += 1;
                println!("error: {e}");
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} policy file(s) invalid", files.len());
        return Ok(1);
    }
    Ok(0)
}

pub fn explain(a: &ExplainArgs) -> anyhow::Result<i32> {
    let (policy, version) =
        read_policy_file(&a.file).map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let args: Value = serde_json::from_str(&a.args)
        .map_err(|e| anyhow::anyhow!("--args is not valid JSON: {e}"))?;
    if !args.is_object() {
        anyhow::bail!("--args must be a JSON object, like '{{\"path\": \"/tmp/x\"}}'");
    }
    let argv: Vec<String> = a.command.split_whitespace().map(str::to_owned).collect();
    let server = policy.resolve(&a.server, &argv);
    let now = Instant::now();
    let mut session = SessionState::new();
    let empty = Value::Object(Default::default());
    for earlier in &a.after {
        let d = evaluate(
            &policy,
            &server,
            &session,
            &ToolCall {
                tool: earlier,
                arguments: (&empty).into(),
                hints: None,
            },
            now,
        );
        session.record(
            earlier,
            &d,
            d.action.forwards() || d.action == Action::StepUp,
            now,
        );
    }
    let d = evaluate(
        &policy,
        &server,
        &session,
        &ToolCall {
            tool: &a.tool,
            arguments: (&args).into(),
            hints: None,
        },
        now,
    );
    let entry = match server.entry {
        Some(i) => format!("servers[{i}]"),
        None => "none (defaults.unknown_servers applies)".into(),
    };
    let approval = (d.action == Action::StepUp).then(|| Approval::of(&policy, &server));
    if a.json {
        let mut v = serde_json::json!({
            "action": d.action, "mode": d.mode, "rule": d.rule, "reason": d.reason,
            "policyVersion": version, "entry": server.entry,
        });
        if let Some(ap) = &approval {
            v["approval"] = serde_json::json!({
                "approvers": ap.approvers, "timeoutSecs": ap.timeout_secs,
                "remember": ap.remember.to_string(),
            });
        }
        println!("{v}");
    } else {
        println!("decision: {}", d.action.as_str());
        println!("mode:     {}", d.mode.as_str());
        println!("rule:     {}", d.rule);
        println!("reason:   {}", d.reason);
        println!("entry:    {entry}");
        println!("policy:   {version}");
        if let Some(ap) = &approval {
            let who = ap.approvers.join(" or ");
            let first = if ap.approvers.len() > 1 {
                " (the first decisive answer wins)"
            } else {
                ""
            };
            println!("ask:      {who}{first}");
            println!(
                "timeout:  {}s (the call is held this long, then denied naming the approval id)",
                ap.timeout_secs
            );
            println!("remember: {}", describe(ap.remember));
        }
    }
    Ok(0)
}

/// Who is asked to approve a `step_up` call, how long it is held, what an approval covers.
struct Approval {
    approvers: Vec<String>,
    timeout_secs: u64,
    remember: Remember,
}

impl Approval {
    fn of(policy: &Policy, server: &ServerView) -> Self {
        Approval {
            approvers: policy
                .approvers(server)
                .iter()
                .map(ToString::to_string)
                .collect(),
            timeout_secs: policy.approval_timeout(server).as_secs(),
            remember: policy.approval_remember(server),
        }
    }
}

fn describe(r: Remember) -> String {
    match r {
        Remember::Once => "once (the approval covers this one call)".into(),
        Remember::Session => {
            "session (the identical call again in the same MCP session, at most 24h)".into()
        }
        Remember::For(_) => format!("{r} (the identical call of the same user, any session)"),
    }
}
