//! Approval notifiers (`[[approval_notifiers]]`): each new approval request is POSTed to a chat
//! or a webhook, so that approvers learn of it. Each notifier has a bounded queue and its own
//! task with retries: a full queue drops (and logs), Submit never waits on it. At most one
//! notification per agent per 10 s: the requests in between are counted into the next one
//! ("and N more"), sent when the window ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::approval_hub::{ApprovalHub, Notice, NotifierQueue};
pub use crate::config::{ApprovalNotifierConfig, NotifierKind};
use crate::sinks::http::HttpTarget;
use crate::store::ApprovalRecord;

/// Requests waiting per notifier; more are dropped.
pub const QUEUE: usize = 256;
/// Attempts per request.
pub const ATTEMPTS: u32 = 4;

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
    )
}

/// The thothctl commands that decide `rec`.
fn how_to_decide(rec: &ApprovalRecord) -> String {
    format!(
        "thothctl approvals approve {id} [--remember once|session|15m]   or   thothctl approvals deny {id} --reason \"…\"",
        id = rec.approval_id,
    )
}

/// The body posted for `rec`, with `more` requests of the same agent collapsed into it. Strings
/// are JSON-escaped by serde; the Slack text escapes its markup characters so that requested
/// text cannot format the message or mention anyone.
pub fn body(kind: NotifierKind, rec: &ApprovalRecord, more: u32) -> Vec<u8> {
    let v = match kind {
        NotifierKind::Slack => {
            let esc = |s: &str| {
                s.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            };
            serde_json::json!({
                "text": format!(
                    "Approval needed: {user} on {host} (agent {agent}, tenant {tenant}) wants to call {tool} on server {server}{also}.\nReason: {reason}\nArguments SHA-256: {sha}\nDecide: {how}",
                    also = if more == 0 {
                        String::new()
                    } else {
                        format!(", and {more} more from this agent (thothctl approvals list)")
                    },
                    user = esc(&rec.user),
                    host = esc(&rec.hostname),
                    agent = esc(&rec.agent_id),
                    tenant = esc(&rec.tenant),
                    tool = esc(&rec.tool_name),
                    server = esc(&rec.server_name),
                    reason = esc(&rec.reason),
                    sha = rec.arguments_sha256,
                    how = how_to_decide(rec),
                )
            })
        }
        NotifierKind::Json => serde_json::json!({
            "request": {
                "approvalId": rec.approval_id,
                "sessionId": rec.session_id,
                "serverName": rec.server_name,
                "toolName": rec.tool_name,
                "content": rec.content,
                "reason": rec.reason,
                "user": rec.user,
                "timeoutSecs": rec.timeout_secs,
                "argumentsSha256": rec.arguments_sha256,
                "clientName": rec.client_name,
                "approvers": rec.approvers,
                "remember": rec.remember,
                "expiresUnixMs": rec.expires_ms,
                "hostname": rec.hostname,
                "agentId": rec.agent_id,
                "requestedUnixMs": rec.requested_ms,
                "tenant": rec.tenant,
            },
            "state": rec.state,
            "more": more,
            "decide": how_to_decide(rec),
        }),
    };
    serde_json::to_vec(&v).expect("JSON values serialize")
}

/// Starts one task per notifier and registers its queue with `hub`. A notifier whose secret
/// variable is unset, or whose URL cannot be used, is refused here (by its URL).
pub fn start(
    hub: &ApprovalHub,
    configs: &[ApprovalNotifierConfig],
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    for cfg in configs {
        cfg.check()?;
        let secret = match &cfg.secret_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                format!(
                    "approval notifier {}: the environment variable {var} is not set",
                    cfg.url
                )
            })?),
            None => None,
        };
        let target = HttpTarget::new(&cfg.url, cfg.ca_file.as_deref())
            .map_err(|e| format!("approval notifier {}: {e}", cfg.url))?;
        let (tx, mut rx) = mpsc::channel::<Notice>(QUEUE);
        let queue = NotifierQueue::new(cfg.tenants.clone(), tx);
        hub.add_notifier(queue.clone());
        let (kind, url, target) = (cfg.kind, cfg.url.clone(), Arc::new(target));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let Notice { rec, more } = tokio::select! {
                    n = rx.recv() => match n {
                        Some(n) => n,
                        None => return,
                    },
                    _ = tick.tick() => {
                        queue.flush(std::time::Instant::now());
                        continue;
                    }
                };
                let body = body(kind, &rec, more);
                let mut delay = Duration::from_millis(500);
                for attempt in 1..=ATTEMPTS {
                    let headers = secret
                        .as_deref()
                        .map(|s| vec![("x-thoth-signature", signature(s, &body))])
                        .unwrap_or_default();
                    match target.post(body.clone(), headers).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(
                                url,
                                approval_id = rec.approval_id,
                                attempt,
                                "approval notification failed: {e}"
                            );
                            if attempt < ATTEMPTS {
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                            }
                        }
                    }
                }
            }
        }));
    }
    Ok(tasks)
}
