//! The approval queue (issue 16): agents submit step-up calls waiting for a human, admins (role
//! approver or higher, tenant-scoped) list and decide them, and decisions go back to the agent
//! on its Subscribe stream. Every check lives here; the transports only translate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch};

pub use crate::approval_hub::{
    ApprovalHub, MAX_WATCHES_PER_ADMIN, SUBMITS_PER_AGENT, SUBMITS_PER_TENANT,
};
use crate::approval_hub::{SubmitLimited, WatchGuard};
use crate::controller::Controller;
use crate::ids::TenantId;
use crate::metrics::Metrics;
use crate::pki::Role;
use crate::service::{Caller, MAX_TEXT, Need, ServiceError};
use crate::store::{AgentRecord, ApprovalRecord, ApprovalSubmit};

/// Most pending requests of one tenant.
pub const MAX_PENDING_PER_TENANT: u32 = 1000;
/// Most pending requests of one agent.
pub const MAX_PENDING_PER_AGENT: u32 = 64;
/// Most requests kept per tenant (pending ones and those ended within the retention); the
/// sweep deletes the oldest ended ones past it.
pub const MAX_ROWS_PER_TENANT: u32 = 50_000;
/// Most requests in one listing.
pub const MAX_LIST: u32 = 500;
/// Farthest a request may expire ahead of now, and the longest `remember` duration.
pub const MAX_AHEAD: Duration = Duration::from_secs(24 * 3600);
/// How long a request without an expiry stays pending.
pub const DEFAULT_PENDING: Duration = Duration::from_secs(600);
/// Longest server, tool, user and client names.
pub const MAX_NAME: usize = 256;
/// Longest arguments preview.
pub const MAX_CONTENT: usize = 4096;
/// Longest approval id.
pub const MAX_ID: usize = 64;
/// Most decisions (re-)sent to an agent at once.
pub const MAX_AGENT_DECISIONS: u32 = 256;

/// Now, Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A request as an agent submits it (identity fields are ignored: they come from its
/// certificate and the registry).
#[derive(Debug, Clone, Default)]
pub struct NewApproval {
    pub approval_id: String,
    pub session_id: String,
    pub server_name: String,
    pub tool_name: String,
    pub content: String,
    pub reason: String,
    pub user: String,
    pub timeout_secs: u32,
    pub arguments_sha256: String,
    pub client_name: String,
    pub approvers: Vec<String>,
    pub remember: String,
    pub expires_unix_ms: i64,
}

/// Whether `c` is a character never stored in a shown field (controls, bidirectional and
/// invisible format characters).
fn hostile(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Refuses `value` over `max` bytes or holding a hostile character (`content` may hold line
/// breaks and tabs).
fn check_text(field: &str, value: &str, max: usize, multiline: bool) -> Result<(), ServiceError> {
    crate::service::check_len(field, value, max)?;
    if let Some(c) = value
        .chars()
        .find(|&c| hostile(c) && !(multiline && (c == '\n' || c == '\t')))
    {
        return Err(ServiceError::InvalidArgument(format!(
            "{field} holds the character U+{:04X}: control and invisible characters are refused",
            c as u32
        )));
    }
    Ok(())
}

/// Checks an approval id: 1-64 letters, digits or '-'.
pub fn check_id(id: &str) -> Result<(), ServiceError> {
    if id.is_empty()
        || id.len() > MAX_ID
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ServiceError::InvalidArgument(format!(
            "approval id {:?}: use 1-{MAX_ID} letters, digits or '-'",
            id.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// Parses `once`, `session` or a duration ("30s", "15m", "2h", at most 24 h: the policy's
/// `approval_remember` grammar); the canonical wire text.
pub fn parse_remember(text: &str) -> Result<String, ServiceError> {
    text.parse::<thoth_policy::Remember>()
        .map(|r| r.as_wire())
        .map_err(|e| {
            ServiceError::InvalidArgument(e.to_string().replace("approval_remember", "remember"))
        })
}

/// What a submitted request asks to remember: the policy's grammar, or a duration as humantime
/// writes it ("1h 30m", as an agent may send), within 1 s to 24 h; the canonical wire text.
fn submitted_remember(text: &str) -> Result<String, ServiceError> {
    parse_remember(text).or_else(|e| {
        if text.len() > 32 {
            return Err(e);
        }
        match humantime::parse_duration(text) {
            Ok(d) if d.as_secs() >= 1 && d <= MAX_AHEAD => {
                Ok(thoth_policy::Remember::For(Duration::from_secs(d.as_secs())).as_wire())
            }
            _ => Err(e),
        }
    })
}

fn check_new(r: &NewApproval) -> Result<(), ServiceError> {
    check_id(&r.approval_id)?;
    check_text("session_id", &r.session_id, MAX_NAME, false)?;
    check_text("server_name", &r.server_name, MAX_NAME, false)?;
    check_text("tool_name", &r.tool_name, MAX_NAME, false)?;
    check_text("content", &r.content, MAX_CONTENT, true)?;
    check_text("reason", &r.reason, MAX_TEXT, true)?;
    check_text("user", &r.user, MAX_NAME, false)?;
    check_text("client_name", &r.client_name, MAX_NAME, false)?;
    if r.server_name.is_empty() || r.tool_name.is_empty() {
        return Err(ServiceError::InvalidArgument(
            "server_name and tool_name are required".into(),
        ));
    }
    if r.arguments_sha256.len() != 64
        || !r
            .arguments_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ServiceError::InvalidArgument(
            "arguments_sha256 must be 64 lowercase hex digits".into(),
        ));
    }
    if r.approvers.len() > 2
        || r.approvers.iter().any(|a| a != "user" && a != "admin")
        || (r.approvers.len() == 2 && r.approvers[0] == r.approvers[1])
    {
        return Err(ServiceError::InvalidArgument(
            "approvers: \"user\" and/or \"admin\", each once".into(),
        ));
    }
    if u64::from(r.timeout_secs) > MAX_AHEAD.as_secs() {
        return Err(ServiceError::InvalidArgument(
            "timeout_secs is over 24 hours".into(),
        ));
    }
    Ok(())
}

fn state_refusal(rec: &ApprovalRecord) -> ServiceError {
    let id = &rec.approval_id;
    ServiceError::FailedPrecondition(match rec.state.as_str() {
        "expired" => format!(
            "approval {id} expired at {}: the call was not approved; it can be asked again",
            rfc3339_ms(rec.expires_ms)
        ),
        "withdrawn" => format!(
            "approval {id} was withdrawn by the agent (answered another way, or the client went away)"
        ),
        "approved" | "denied" => format!(
            "approval {id} was already {} by {} at {}",
            rec.state,
            if rec.decided_by.is_empty() {
                "another approver"
            } else {
                &rec.decided_by
            },
            rfc3339_ms(rec.decided_ms)
        ),
        other => format!("approval {id} is {other}, not pending"),
    })
}

fn rfc3339_ms(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// The approval service.
pub struct ApprovalService<'a>(pub &'a Controller);

impl ApprovalService<'_> {
    /// Expires pending requests past their time (on every read; also swept periodically).
    pub async fn expire(&self) -> Result<u64, ServiceError> {
        let now = now_ms();
        Ok(self.0.db(move |s| s.expire_approvals(now)).await?)
    }

    /// The periodic sweep: expires pending requests past their time, then deletes ended ones
    /// older than `approval_retention` and, per tenant, the oldest ended ones past
    /// [`MAX_ROWS_PER_TENANT`]. Returns (expired, deleted).
    pub async fn sweep(&self) -> Result<(u64, u64), ServiceError> {
        let expired = self.expire().await?;
        let before = now_ms().saturating_sub(
            i64::try_from(self.0.config.approval_retention.as_millis()).unwrap_or(i64::MAX),
        );
        let deleted = self
            .0
            .db(move |s| s.prune_approvals(before, MAX_ROWS_PER_TENANT))
            .await?;
        if deleted > 0 {
            tracing::info!(deleted, "old approval requests deleted");
        }
        Ok((expired, deleted))
    }

    /// An agent queues a request. Idempotent per (agent, approval id): a re-send answers with
    /// the stored request. Rate-limited per agent ([`SUBMITS_PER_AGENT`] a minute) and per
    /// tenant ([`SUBMITS_PER_TENANT`] a minute), in memory.
    pub async fn submit(
        &self,
        agent: &AgentRecord,
        r: NewApproval,
    ) -> Result<ApprovalRecord, ServiceError> {
        let ctl = self.0;
        check_new(&r)?;
        if let Err(l) =
            ctl.approvals
                .take_submit(&agent.agent_id, &agent.tenant, std::time::Instant::now())
        {
            return Err(ServiceError::ResourceExhausted(match l {
                SubmitLimited::Agent { per_minute, retry } => format!(
                    "agent {} submits approval requests too fast (at most {per_minute} a minute): retry in {} s",
                    agent.agent_id,
                    retry.as_secs() + 1
                ),
                SubmitLimited::Tenant { per_minute, retry } => format!(
                    "tenant {} receives approval requests too fast (at most {per_minute} a minute from all its agents): retry in {} s",
                    agent.tenant,
                    retry.as_secs() + 1
                ),
            }));
        }
        let remember = if r.remember.is_empty() {
            "once".to_owned()
        } else {
            submitted_remember(&r.remember)?
        };
        let now = now_ms();
        let expires_ms = if r.expires_unix_ms == 0 {
            let hold = Duration::from_secs(u64::from(r.timeout_secs)).max(DEFAULT_PENDING);
            now + hold.as_millis() as i64
        } else {
            r.expires_unix_ms
        };
        if expires_ms <= now {
            return Err(ServiceError::InvalidArgument(
                "expires_unix_ms is in the past".into(),
            ));
        }
        if expires_ms > now + MAX_AHEAD.as_millis() as i64 {
            return Err(ServiceError::InvalidArgument(
                "expires_unix_ms is more than 24 hours ahead".into(),
            ));
        }
        let rec = ApprovalRecord {
            approval_id: r.approval_id,
            tenant: agent.tenant.clone(),
            agent_id: agent.agent_id.clone(),
            hostname: agent.hostname.clone(),
            user: r.user,
            session_id: r.session_id,
            server_name: r.server_name,
            tool_name: r.tool_name,
            content: r.content,
            reason: r.reason,
            timeout_secs: r.timeout_secs,
            arguments_sha256: r.arguments_sha256,
            client_name: r.client_name,
            approvers: r.approvers,
            remember,
            requested_ms: now,
            expires_ms,
            state: "pending".into(),
            ..ApprovalRecord::default()
        };
        self.expire().await?;
        let stored = rec.clone();
        let outcome = ctl
            .db(move |s| s.submit_approval(&stored, MAX_PENDING_PER_TENANT, MAX_PENDING_PER_AGENT))
            .await?;
        match outcome {
            ApprovalSubmit::Stored => {
                tracing::info!(
                    agent_id = rec.agent_id,
                    approval_id = rec.approval_id,
                    server = rec.server_name,
                    tool = rec.tool_name,
                    "approval requested"
                );
                ctl.approvals.publish(&rec);
                ctl.approvals.notify(&rec);
                Ok(rec)
            }
            ApprovalSubmit::Existing(e) => Ok(*e),
            ApprovalSubmit::AgentFull => Err(ServiceError::ResourceExhausted(format!(
                "agent {} has {MAX_PENDING_PER_AGENT} pending approvals: wait for decisions",
                rec.agent_id
            ))),
            ApprovalSubmit::TenantFull => Err(ServiceError::ResourceExhausted(format!(
                "tenant {} has {MAX_PENDING_PER_TENANT} pending approvals: decide some first",
                rec.tenant
            ))),
            ApprovalSubmit::IdTaken => Err(ServiceError::AlreadyExists(
                "this approval id is taken: use a fresh UUIDv7".into(),
            )),
        }
    }

    /// The agent no longer wants its request (ignored unless pending).
    pub async fn withdraw(
        &self,
        agent: &AgentRecord,
        approval_id: &str,
    ) -> Result<(), ServiceError> {
        check_id(approval_id)?;
        let (agent_id, id) = (agent.agent_id.clone(), approval_id.to_owned());
        let now = now_ms();
        let withdrawn = self
            .0
            .db(move |s| s.withdraw_approval(&agent_id, &id, now))
            .await?;
        if withdrawn {
            let tenant = TenantId::trusted(agent.tenant.as_str());
            let id = approval_id.to_owned();
            if let Some(rec) = self.0.db(move |s| s.approval(Some(&tenant), &id)).await? {
                self.0.approvals.publish(&rec);
            }
        }
        Ok(())
    }

    /// Refuses a viewer (audited); approver, operator and admin may handle approvals.
    async fn approver(&self, c: &Caller, action: &str, tenant: &str) -> Result<(), ServiceError> {
        if c.role == Role::Viewer {
            let why = format!(
                "{} has role viewer; {action} needs approver or higher",
                c.name
            );
            Metrics::inc(&self.0.metrics.auth_refused);
            c.audit_refused(self.0, action, tenant, &why, serde_json::json!({}))
                .await;
            return Err(ServiceError::PermissionDenied(why));
        }
        Ok(())
    }

    /// Pending requests (`all`: every state, newest first), at most 500.
    pub async fn list(
        &self,
        c: &Caller,
        tenant: &str,
        all: bool,
    ) -> Result<Vec<ApprovalRecord>, ServiceError> {
        let ctl = self.0;
        self.approver(c, "approval.list", tenant).await?;
        let resolved = c
            .authorize(ctl, "approval.list", Need::Read, tenant)
            .await?;
        let scope = c.list_scope(tenant, resolved);
        self.expire().await?;
        Ok(ctl
            .db(move |s| s.list_approvals(scope.as_ref(), all, MAX_LIST))
            .await?)
    }

    /// One request the caller may see (another tenant's: not found).
    async fn visible(
        &self,
        c: &Caller,
        action: &str,
        approval_id: &str,
    ) -> Result<ApprovalRecord, ServiceError> {
        let ctl = self.0;
        self.approver(c, action, "").await?;
        check_id(approval_id)?;
        self.expire().await?;
        let (scope, id) = (c.scope.clone(), approval_id.to_owned());
        let rec = ctl.db(move |s| s.approval(scope.as_ref(), &id)).await?;
        let Some(rec) = rec else {
            return Err(ServiceError::NotFound(format!("no approval {approval_id}")));
        };
        c.authorize(ctl, action, Need::Read, &rec.tenant).await?;
        Ok(rec)
    }

    /// One request.
    pub async fn get(&self, c: &Caller, approval_id: &str) -> Result<ApprovalRecord, ServiceError> {
        self.visible(c, "approval.get", approval_id).await
    }

    /// Approves or denies a pending request; audited; pushed to the agent.
    pub async fn decide(
        &self,
        c: &Caller,
        approval_id: &str,
        approve: bool,
        remember: &str,
        comment: &str,
    ) -> Result<ApprovalRecord, ServiceError> {
        let ctl = self.0;
        let rec = self.visible(c, "approval.decide", approval_id).await?;
        check_text("comment", comment, MAX_TEXT, false)?;
        let remember = if !approve {
            String::new()
        } else if remember.is_empty() {
            rec.remember.clone()
        } else {
            parse_remember(remember)?
        };
        if rec.state != "pending" {
            return Err(state_refusal(&rec));
        }
        if !rec.approvers.is_empty() && !rec.approvers.iter().any(|a| a == "admin") {
            return Err(ServiceError::FailedPrecondition(format!(
                "approval {approval_id}: the policy lets only the user on the machine decide it"
            )));
        }
        let decision = ApprovalRecord {
            state: if approve { "approved" } else { "denied" }.into(),
            decided_by: c.name.clone(),
            decision_reason: comment.to_owned(),
            decision_remember: remember.clone(),
            ..ApprovalRecord::default()
        };
        let now = now_ms();
        let (tenant, id, d) = (
            rec.tenant.clone(),
            rec.approval_id.clone(),
            decision.clone(),
        );
        let won = ctl
            .db(move |s| s.decide_approval(&tenant, &id, &d, now))
            .await?;
        let (scope, id) = (
            TenantId::trusted(rec.tenant.as_str()),
            rec.approval_id.clone(),
        );
        let after = ctl
            .db(move |s| s.approval(Some(&scope), &id))
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no approval {approval_id}")))?;
        if !won {
            return Err(state_refusal(&after));
        }
        c.audit_ok(
            ctl,
            "approval.decide",
            &rec.tenant,
            serde_json::json!({
                "approvalId": rec.approval_id,
                "approved": approve,
                "remember": remember,
                "comment": comment,
                "agentId": rec.agent_id,
                "hostname": rec.hostname,
                "user": rec.user,
                "server": rec.server_name,
                "tool": rec.tool_name,
                "argumentsSha256": rec.arguments_sha256,
                "credential": c.fingerprint,
            }),
        )
        .await;
        ctl.approvals.wake_agent(&after.agent_id);
        ctl.approvals.publish(&after);
        Ok(after)
    }

    /// Opens a watch of the tenant's requests and decisions: the pending ones now, and the feed
    /// to follow (filter by the returned tenant). At most 4 per admin credential.
    pub async fn watch(&self, c: &Caller, tenant: &str) -> Result<Watch, ServiceError> {
        let ctl = self.0;
        self.approver(c, "approval.watch", tenant).await?;
        let resolved = c
            .authorize(ctl, "approval.watch", Need::Read, tenant)
            .await?;
        let scope = c.list_scope(tenant, resolved);
        let Some(guard) = ctl.approvals.open_watch(&c.fingerprint) else {
            return Err(ServiceError::ResourceExhausted(format!(
                "{} has {MAX_WATCHES_PER_ADMIN} approval watches open already",
                c.name
            )));
        };
        let feed = ctl.approvals.feed();
        let closed = ctl.approvals.closed();
        self.expire().await?;
        let s = scope.clone();
        let pending = ctl
            .db(move |st| st.list_approvals(s.as_ref(), false, MAX_LIST))
            .await?;
        Ok(Watch {
            tenant: scope,
            pending,
            feed,
            closed,
            _guard: guard,
        })
    }

    /// Decided requests of `agent_id` still to (re-)send on its Subscribe stream.
    pub async fn agent_decisions(
        &self,
        agent_id: &str,
    ) -> Result<Vec<ApprovalRecord>, ServiceError> {
        let (id, now) = (agent_id.to_owned(), now_ms());
        Ok(self
            .0
            .db(move |s| s.agent_decisions(&id, now, MAX_AGENT_DECISIONS))
            .await?)
    }
}

/// An open admin watch.
pub struct Watch {
    /// The tenant watched (None: all).
    pub tenant: Option<TenantId>,
    /// Pending requests when it opened, newest first.
    pub pending: Vec<ApprovalRecord>,
    /// New requests and decisions, of every tenant.
    pub feed: broadcast::Receiver<Arc<ApprovalRecord>>,
    closed: watch::Receiver<bool>,
    _guard: WatchGuard,
}

impl Watch {
    /// The next record of the watched tenant (None: the controller is stopping). A watcher too
    /// slow for the feed skips what it missed.
    pub async fn next(&mut self) -> Option<Arc<ApprovalRecord>> {
        if *self.closed.borrow() {
            return None;
        }
        if let Some(r) = self.pending.pop() {
            return Some(Arc::new(r));
        }
        loop {
            let got = tokio::select! {
                got = self.feed.recv() => got,
                _ = self.closed.wait_for(|c| *c) => return None,
            };
            match got {
                Ok(r) => {
                    if self.tenant.as_ref().is_none_or(|t| t.as_str() == r.tenant) {
                        return Some(r);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "approval watcher lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
#[path = "approvals_tests.rs"]
mod tests;
