//! The broker: one pending request per identical call, asked on the channels the policy allows
//! (the user's dialog, the controller's queue); the first decisive answer wins, the other
//! channels are withdrawn, and an approval leaves a grant for the identical call.
//!
//! A proxy's call is held until a decision or its deadline (`timeout_secs`); at the deadline it
//! is answered `timed_out`, but the request stays pending until it expires (at least 10 minutes
//! after it was made), so a late approval becomes a grant that lets the retry through. A proxy
//! that goes away (its RPC dropped) withdraws a request no other call waits on.
//!
//! Identical calls coalesce on one request. A `session` or duration approval releases every
//! one of them; a `once` approval releases exactly one, and the others are denied
//! ([`ONCE_USED`]) so the caller retries and asks again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde_json::Value;
use thoth_proto::EventType;
use thoth_proto::fleet as pb;
use tokio::sync::watch;
use tokio::time::Instant;

pub use super::channels::{AdminChannel, Evidence, NoAdminChannel, NoEvidence};
use super::detail;
use super::grants::{CallKey, Grants, Remember};
pub use super::request::{
    Caller, DEFAULT_TIMEOUT, MAX_CONTENT, MAX_NAME, MAX_PENDING_PER_USER, MAX_PENDING_TOTAL,
    MAX_REASON, MAX_TIMEOUT, MIN_PENDING, clean,
};
use super::request::{denial, sanitize};
use super::types::{CancelToken, NoUserChannel, Prompt, UserAnswer, UserChannel};

/// A decisive answer (or the end of a request).
#[derive(Debug, Clone)]
struct Outcome {
    approved: bool,
    decided_by: String,
    reason: String,
    channel: String,
    remember: String,
    /// For evidence: approved, denied, expired, unreachable.
    decision: &'static str,
    /// A `once` approval with calls held on it: only the first held call to take this goes on;
    /// the other coalesced identical calls are denied (one approval, one use).
    once: Option<Arc<AtomicBool>>,
}

/// The denial of a coalesced identical call whose `once` approval another call used.
pub const ONCE_USED: &str = "approved once: another identical call used it; retry to ask again";

struct Pending {
    req: pb::ApprovalRequest,
    key: CallKey,
    channels: Vec<&'static str>,
    tx: watch::Sender<Option<Outcome>>,
    /// Proxy calls held on it now.
    waiters: usize,
    /// A held call was answered `timed_out`: the request stays for a late decision.
    kept: bool,
    cancel: CancelToken,
    admin_submitted: bool,
    unreachable: Vec<(&'static str, String)>,
    started: Instant,
    expires: Instant,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    by_key: HashMap<CallKey, String>,
    grants: Grants,
}

impl State {
    fn pending_of(&self, uid: u32) -> usize {
        self.pending.values().filter(|p| p.key.uid == uid).count()
    }
}

/// The agent's approval broker.
pub struct Broker {
    state: Mutex<State>,
    user: RwLock<Arc<dyn UserChannel>>,
    admin: RwLock<Arc<dyn AdminChannel>>,
    evidence: Arc<dyn Evidence>,
    /// One dialog at a time per user.
    dialogs: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends a held call's wait: when the call is dropped (the proxy went away) before it was
/// answered, the request is withdrawn unless another call still waits on it or it was already
/// kept past a deadline.
struct Waiter {
    broker: Arc<Broker>,
    id: String,
    done: bool,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.done {
            self.broker.waiter_gone(&self.id);
        }
    }
}

impl Broker {
    /// A broker with no user channel yet (see [`Broker::set_user_channel`]).
    pub fn new(admin: Arc<dyn AdminChannel>, evidence: Arc<dyn Evidence>) -> Arc<Broker> {
        Arc::new(Broker {
            state: Mutex::new(State::default()),
            user: RwLock::new(Arc::new(NoUserChannel)),
            admin: RwLock::new(admin),
            evidence,
            dialogs: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the user channel (the desktop dialog).
    pub fn set_user_channel(&self, ch: Arc<dyn UserChannel>) {
        *self.user.write().unwrap_or_else(|p| p.into_inner()) = ch;
    }

    /// Sets the admin channel.
    pub fn set_admin_channel(&self, ch: Arc<dyn AdminChannel>) {
        *self.admin.write().unwrap_or_else(|p| p.into_inner()) = ch;
    }

    fn admin(&self) -> Arc<dyn AdminChannel> {
        Arc::clone(&self.admin.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Pending requests now (all users).
    pub fn pending(&self) -> usize {
        lock(&self.state).pending.len()
    }

    /// The pending requests, as the controller would queue them (for status and tests).
    pub fn pending_requests(&self) -> Vec<pb::ApprovalRequest> {
        let st = lock(&self.state);
        let mut v: Vec<_> = st.pending.values().map(|p| p.req.clone()).collect();
        v.sort_by(|a, b| a.approval_id.cmp(&b.approval_id));
        v
    }

    /// Answers a proxy's `RequestApproval` for `caller`: at once from a grant ("remembered"),
    /// else once a channel decides, else `timed_out` at the proxy's deadline.
    pub async fn request(
        self: &Arc<Self>,
        caller: Caller,
        req: pb::ApprovalRequest,
    ) -> pb::ApprovalDecision {
        let now = Instant::now();
        let (req, timeout) = match sanitize(req, &caller, SystemTime::now()) {
            Ok(r) => r,
            Err(why) => return denial("", why),
        };
        let key = CallKey {
            uid: caller.uid,
            session: req.session_id.clone(),
            server: req.server_name.clone(),
            tool: req.tool_name.clone(),
            args_sha256: req.arguments_sha256.clone(),
        };
        let (id, mut rx, new) = {
            let mut st = lock(&self.state);
            if let Some(g) = st.grants.take(&key, now) {
                drop(st);
                self.evidence.record(
                    EventType::ApprovalDecided,
                    &req,
                    detail::remembered(&req, &g),
                );
                return pb::ApprovalDecision {
                    approval_id: g.approval_id,
                    approved: true,
                    decided_by: g.decided_by,
                    reason: format!("approved earlier ({})", g.remember.as_text()),
                    channel: "remembered".into(),
                    remember: g.remember.as_text(),
                    timed_out: false,
                };
            }
            if let Some(id) = st.by_key.get(&key).cloned()
                && let Some(p) = st.pending.get_mut(&id)
            {
                p.waiters += 1;
                (id, p.tx.subscribe(), None)
            } else {
                if st.pending_of(caller.uid) >= MAX_PENDING_PER_USER {
                    return denial(
                        "",
                        format!(
                            "too many pending approvals: {} has {MAX_PENDING_PER_USER} waiting \
                             for an answer",
                            req.user
                        ),
                    );
                }
                if st.pending.len() >= MAX_PENDING_TOTAL {
                    return denial(
                        "",
                        format!(
                            "too many pending approvals: {MAX_PENDING_TOTAL} on this machine are \
                             waiting for an answer"
                        ),
                    );
                }
                let (tx, rx) = watch::channel(None);
                let id = req.approval_id.clone();
                let channels: Vec<&'static str> = req
                    .approvers
                    .iter()
                    .filter_map(|a| match a.as_str() {
                        "user" => Some("user"),
                        "admin" => Some("admin"),
                        _ => None,
                    })
                    .collect();
                let expires = now + timeout.max(MIN_PENDING);
                st.pending.insert(
                    id.clone(),
                    Pending {
                        req: req.clone(),
                        key: key.clone(),
                        channels: channels.clone(),
                        tx,
                        waiters: 1,
                        kept: false,
                        cancel: CancelToken::new(),
                        admin_submitted: false,
                        unreachable: Vec::new(),
                        started: now,
                        expires,
                    },
                );
                st.by_key.insert(key.clone(), id.clone());
                (id, rx, Some((channels, expires)))
            }
        };
        let mut waiter = Waiter {
            broker: Arc::clone(self),
            id: id.clone(),
            done: false,
        };
        if let Some((channels, expires)) = new {
            self.evidence.record(
                EventType::ApprovalRequested,
                &req,
                detail::requested(&req, caller.uid, &channels),
            );
            self.start(&id, caller.uid, &req, &channels, expires);
        }
        let decided = tokio::select! {
            r = rx.wait_for(Option::is_some) => r.ok().and_then(|o| o.clone()),
            () = tokio::time::sleep_until(now + timeout) => None,
        };
        waiter.done = true;
        match decided {
            Some(o)
                if o.approved
                    && o.once
                        .as_ref()
                        .is_some_and(|t| t.swap(true, Ordering::SeqCst)) =>
            {
                self.waiter_left(&id, false);
                self.evidence.record(
                    EventType::ApprovalDecided,
                    &req,
                    detail::once_used(
                        &id,
                        &req,
                        &o.channel,
                        &o.decided_by,
                        &o.remember,
                        ONCE_USED,
                        now.elapsed().as_millis() as u64,
                    ),
                );
                pb::ApprovalDecision {
                    approval_id: id,
                    approved: false,
                    decided_by: o.decided_by,
                    reason: ONCE_USED.into(),
                    channel: o.channel,
                    remember: o.remember,
                    timed_out: false,
                }
            }
            Some(o) => {
                self.waiter_left(&id, false);
                pb::ApprovalDecision {
                    approval_id: id,
                    approved: o.approved,
                    decided_by: o.decided_by,
                    reason: o.reason,
                    channel: o.channel,
                    remember: o.remember,
                    timed_out: false,
                }
            }
            None => {
                let still = self.waiter_left(&id, true);
                if let Some(p) = still {
                    self.evidence.record(
                        EventType::ApprovalDecided,
                        &p.0,
                        detail::decided(
                            &p.0,
                            &p.1,
                            "",
                            "",
                            "timed_out",
                            &p.0.remember,
                            now.elapsed().as_millis() as u64,
                        ),
                    );
                }
                pb::ApprovalDecision {
                    approval_id: id.clone(),
                    approved: false,
                    decided_by: String::new(),
                    reason: format!(
                        "no approver answered within {}s: approval {id} stays pending; the \
                         identical call will go through if it is retried once approved",
                        timeout.as_secs()
                    ),
                    channel: String::new(),
                    remember: req.remember.clone(),
                    timed_out: true,
                }
            }
        }
    }

    /// A held call was answered; `kept`: at its deadline (the request stays). The request and
    /// its channels when it is still pending.
    fn waiter_left(
        &self,
        id: &str,
        kept: bool,
    ) -> Option<(pb::ApprovalRequest, Vec<&'static str>)> {
        let mut st = lock(&self.state);
        let p = st.pending.get_mut(id)?;
        p.waiters = p.waiters.saturating_sub(1);
        p.kept |= kept;
        Some((p.req.clone(), p.channels.clone()))
    }

    /// A held call was dropped unanswered (the proxy went away).
    fn waiter_gone(self: &Arc<Self>, id: &str) {
        let p = {
            let mut st = lock(&self.state);
            let Some(p) = st.pending.get_mut(id) else {
                return;
            };
            p.waiters = p.waiters.saturating_sub(1);
            if p.waiters > 0 || p.kept {
                return;
            }
            let p = st.pending.remove(id).expect("present");
            st.by_key.remove(&p.key);
            p
        };
        p.cancel.cancel();
        if p.admin_submitted {
            self.withdraw_admin(id.to_owned());
        }
        self.evidence.record(
            EventType::ApprovalDecided,
            &p.req,
            self.decided_detail(&p, "", "", "withdrawn", ""),
        );
    }

    fn withdraw_admin(&self, id: String) {
        let admin = self.admin();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(admin.withdraw(id));
        }
    }

    fn decided_detail(
        &self,
        p: &Pending,
        channel: &str,
        by: &str,
        decision: &str,
        remember: &str,
    ) -> Value {
        detail::decided(
            &p.req,
            &p.channels,
            channel,
            by,
            decision,
            remember,
            p.started.elapsed().as_millis() as u64,
        )
    }

    /// Starts the channels of a new request, and its expiry.
    fn start(
        self: &Arc<Self>,
        id: &str,
        uid: u32,
        req: &pb::ApprovalRequest,
        channels: &[&'static str],
        expires: Instant,
    ) {
        if channels.contains(&"user") {
            let (me, id) = (Arc::clone(self), id.to_owned());
            let prompt = Prompt {
                approval_id: id.clone(),
                client_name: req.client_name.clone(),
                server: req.server_name.clone(),
                tool: req.tool_name.clone(),
                content: req.content.clone(),
                reason: req.reason.clone(),
                arguments_sha256: req.arguments_sha256.clone(),
                remember: req.remember.clone(),
                requested_unix_ms: u64::try_from(req.requested_unix_ms).unwrap_or(0),
                expires_unix_ms: u64::try_from(req.expires_unix_ms).unwrap_or(0),
            };
            tokio::spawn(async move { me.ask_user(id, uid, prompt, expires).await });
        }
        if channels.contains(&"admin") {
            let (me, id, req) = (Arc::clone(self), id.to_owned(), req.clone());
            tokio::spawn(async move {
                match me.admin().submit(req).await {
                    Ok(()) => {
                        let gone = {
                            let mut st = lock(&me.state);
                            match st.pending.get_mut(&id) {
                                Some(p) => {
                                    p.admin_submitted = true;
                                    false
                                }
                                None => true,
                            }
                        };
                        // Decided (by the user) or withdrawn while it was being queued.
                        if gone {
                            me.admin().withdraw(id).await;
                        }
                    }
                    Err(why) => me.unreachable(&id, "admin", why),
                }
            });
        }
        let (me, id) = (Arc::clone(self), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep_until(expires).await;
            me.finish(
                &id,
                Outcome {
                    approved: false,
                    decided_by: String::new(),
                    reason: "the approval request expired with no answer".into(),
                    channel: String::new(),
                    remember: String::new(),
                    decision: "expired",
                    once: None,
                },
            );
        });
    }

    async fn ask_user(self: Arc<Self>, id: String, uid: u32, prompt: Prompt, expires: Instant) {
        let turn = Arc::clone(lock(&self.dialogs).entry(uid).or_default());
        let _mine = turn.lock_owned().await;
        let Some((cancel, remember)) = lock(&self.state)
            .pending
            .get(&id)
            .map(|p| (p.cancel.clone(), p.req.remember.clone()))
        else {
            return;
        };
        let user = Arc::clone(&self.user.read().unwrap_or_else(|p| p.into_inner()));
        let deadline = expires.into_std();
        let answer = tokio::task::spawn_blocking(move || user.ask(uid, &prompt, deadline, cancel))
            .await
            .unwrap_or_else(|e| UserAnswer::Unavailable(format!("the dialog failed: {e}")));
        let (approved, by) = match answer {
            UserAnswer::Allowed { by } => (true, by),
            UserAnswer::Denied { by } => (false, by),
            UserAnswer::NoAnswer => return,
            UserAnswer::Unavailable(why) => return self.unreachable(&id, "user", why),
        };
        self.finish(
            &id,
            Outcome {
                approved,
                decided_by: clean(&by, MAX_NAME, false),
                reason: if approved {
                    "approved by the user".into()
                } else {
                    "denied by the user".into()
                },
                channel: "user".into(),
                remember,
                decision: if approved { "approved" } else { "denied" },
                once: None,
            },
        );
    }

    /// A channel cannot answer `id`; when none can, the request is denied at once.
    fn unreachable(self: &Arc<Self>, id: &str, channel: &'static str, why: String) {
        let why = clean(&why, MAX_REASON, false);
        tracing::info!(
            approval = id,
            channel,
            "approval channel unavailable: {why}"
        );
        let all = {
            let mut st = lock(&self.state);
            let Some(p) = st.pending.get_mut(id) else {
                return;
            };
            p.unreachable.push((channel, why));
            (p.unreachable.len() >= p.channels.len()).then(|| {
                p.unreachable
                    .iter()
                    .map(|(c, w)| format!("{c}: {w}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        };
        if let Some(whys) = all {
            self.finish(
                id,
                Outcome {
                    approved: false,
                    decided_by: String::new(),
                    reason: format!("no approver is reachable ({whys})"),
                    channel: String::new(),
                    remember: String::new(),
                    decision: "unreachable",
                    once: None,
                },
            );
        }
    }

    /// An admin's decision from the controller (the Subscribe stream). Ignored unless it is
    /// for a pending request that was asked of admins; a `remember` the admin chose replaces
    /// the request's (capped at 24 h; an invalid one keeps the request's).
    pub fn admin_decision(self: &Arc<Self>, d: pb::ApprovalDecision) {
        if d.timed_out {
            return; // The controller's queue expired it: expiry is kept here too.
        }
        let remember = {
            let st = lock(&self.state);
            match st.pending.get(&d.approval_id) {
                Some(p) if p.channels.contains(&"admin") => p.req.remember.clone(),
                _ => {
                    tracing::info!(
                        approval = %clean(&d.approval_id, 64, false),
                        "an admin decision for no pending request of this agent: ignored"
                    );
                    return;
                }
            }
        };
        let remember = Remember::parse(&d.remember).map_or(remember, Remember::as_text);
        let by = clean(&d.decided_by, MAX_NAME, false);
        let comment = clean(&d.reason, MAX_REASON, false);
        let what = if d.approved { "approved" } else { "denied" };
        self.finish(
            &d.approval_id,
            Outcome {
                approved: d.approved,
                reason: if comment.is_empty() {
                    format!("{what} by admin {by}")
                } else {
                    format!("{what} by admin {by}: {comment}")
                },
                decided_by: by,
                channel: "admin".into(),
                remember,
                decision: what,
                once: None,
            },
        );
    }

    /// The first end of request `id` wins: held calls are released, a grant is made for an
    /// approval (a `once` one only when no call was held on it: then exactly one held call uses
    /// it and the other coalesced identical calls are denied, [`ONCE_USED`]), the
    /// dialog is closed and the admin queue entry withdrawn. False when it had already ended.
    fn finish(self: &Arc<Self>, id: &str, mut o: Outcome) -> bool {
        let now = Instant::now();
        let p = {
            let mut st = lock(&self.state);
            let Some(p) = st.pending.remove(id) else {
                return false;
            };
            st.by_key.remove(&p.key);
            if o.approved {
                let remember = Remember::parse(&o.remember).unwrap_or(Remember::Once);
                if remember == Remember::Once && p.waiters > 0 {
                    // One approval, one use: the held calls race for it (see `request`).
                    o.once = Some(Arc::new(AtomicBool::new(false)));
                } else {
                    let at_least = p.expires.saturating_duration_since(now);
                    st.grants.add(
                        p.key.clone(),
                        remember,
                        now,
                        at_least,
                        super::grants::From {
                            approval_id: id,
                            decided_by: &o.decided_by,
                            channel: &o.channel,
                        },
                    );
                }
            }
            p
        };
        // The evidence first: it is on the chain before the held call goes on.
        self.evidence.record(EventType::ApprovalDecided, &p.req, {
            let mut d = self.decided_detail(&p, &o.channel, &o.decided_by, o.decision, &o.remember);
            // The approver's comment or reason (an admin's, as they wrote it; cut).
            if !o.reason.is_empty() {
                d["reason"] = Value::from(o.reason.chars().take(1024).collect::<String>());
            }
            d["heldCalls"] = Value::from(p.waiters);
            if o.once.is_some() {
                // Said here too: only one of the held identical calls goes on.
                d["releases"] = Value::from("one held call (approved once)");
            }
            d
        });
        // An approval of a call held because its tool changed lets the user use that definition
        // (never admin-accepted, whoever approved), before the held call goes on (its next list
        // check sees it).
        if o.approved
            && let Some(pin) = &p.req.pin
        {
            self.evidence
                .pin_approved(p.key.uid, &p.req.server_name, pin, &o.channel);
        }
        p.cancel.cancel();
        if p.admin_submitted && o.channel != "admin" && o.decision != "expired" {
            self.withdraw_admin(id.to_owned());
        }
        p.tx.send_replace(Some(o));
        true
    }

    /// Drops every grant (a new policy was applied: what was approved under the old one is
    /// asked again). The number dropped.
    pub fn clear_grants(&self) -> usize {
        lock(&self.state).grants.clear()
    }

    /// Queues again, with the controller, the pending requests for admins that could not be
    /// queued (the agent was not connected); called once the agent is connected again.
    pub fn resubmit(self: &Arc<Self>) {
        let todo: Vec<pb::ApprovalRequest> = {
            let mut st = lock(&self.state);
            st.pending
                .values_mut()
                .filter(|p| {
                    p.channels.contains(&"admin")
                        && !p.admin_submitted
                        && p.unreachable.iter().any(|(c, _)| *c == "admin")
                })
                .map(|p| {
                    p.unreachable.retain(|(c, _)| *c != "admin");
                    p.req.clone()
                })
                .collect()
        };
        for req in todo {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                let id = req.approval_id.clone();
                match me.admin().submit(req).await {
                    Ok(()) => {
                        if let Some(p) = lock(&me.state).pending.get_mut(&id) {
                            p.admin_submitted = true;
                        }
                    }
                    Err(why) => me.unreachable(&id, "admin", why),
                }
            });
        }
    }
}

// What the tests take from here (`use super::*`) that the broker itself no longer names.
#[cfg(test)]
use {futures_util::future::BoxFuture, serde_json::json, std::time::Duration};

#[cfg(test)]
#[path = "broker_tests.rs"]
mod tests;
