//! The approval queue's listeners, held by the [`Controller`](crate::Controller): per-agent
//! wake-ups, the admin watch feed and the notifier queues. The queue's rules live in
//! `service::approvals`; this module names nothing of the service layer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, watch};

use crate::store::ApprovalRecord;

/// Most admin watch streams open at once per admin credential.
pub const MAX_WATCHES_PER_ADMIN: u32 = 4;

/// What moves between the queue and its listeners: per-agent wake-ups (a decision to push on the
/// agent's Subscribe stream), the admin watch feed, and the notifier queues.
pub struct ApprovalHub {
    agents: Mutex<HashMap<String, watch::Sender<u64>>>,
    feed: broadcast::Sender<Arc<ApprovalRecord>>,
    watches: Mutex<HashMap<String, u32>>,
    notifiers: Mutex<Vec<NotifierQueue>>,
    closed: watch::Sender<bool>,
    submits: Mutex<SubmitLimiter>,
}

impl Default for ApprovalHub {
    fn default() -> Self {
        ApprovalHub {
            agents: Mutex::default(),
            feed: broadcast::channel(256).0,
            watches: Mutex::default(),
            notifiers: Mutex::default(),
            closed: watch::channel(false).0,
            submits: Mutex::new(SubmitLimiter::new(SUBMITS_PER_AGENT, SUBMITS_PER_TENANT)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ApprovalHub {
    /// Wakes when a decision for `agent_id` is made (its Subscribe stream then reads them).
    pub fn agent(&self, agent_id: &str) -> watch::Receiver<u64> {
        let mut agents = lock(&self.agents);
        if agents.len() > 4096 {
            agents.retain(|_, s| s.receiver_count() > 0);
        }
        agents
            .entry(agent_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub(crate) fn wake_agent(&self, agent_id: &str) {
        let mut agents = lock(&self.agents);
        if let Some(s) = agents.get(agent_id) {
            if s.receiver_count() == 0 {
                agents.remove(agent_id);
            } else {
                s.send_modify(|n| *n += 1);
            }
        }
    }

    /// The server is stopping: admin watches end (their clients reconnect to the next one).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Ends when the server stops (see [`ApprovalHub::close`]).
    pub(crate) fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Every new request and decision (all tenants: watchers filter).
    pub fn feed(&self) -> broadcast::Receiver<Arc<ApprovalRecord>> {
        self.feed.subscribe()
    }

    pub(crate) fn publish(&self, rec: &ApprovalRecord) {
        let _ = self.feed.send(Arc::new(rec.clone()));
    }

    /// Adds a notifier's queue (see `service::approval_notify::start`).
    pub(crate) fn add_notifier(&self, q: NotifierQueue) {
        lock(&self.notifiers).push(q);
    }

    pub(crate) fn notify(&self, rec: &ApprovalRecord) {
        let now = Instant::now();
        for q in lock(&self.notifiers).iter() {
            q.offer(rec, now);
        }
    }

    /// Takes one Submit of `agent_id` (tenant `tenant`) from the rate limits at `now`.
    pub(crate) fn take_submit(
        &self,
        agent_id: &str,
        tenant: &str,
        now: Instant,
    ) -> Result<(), SubmitLimited> {
        lock(&self.submits).take(agent_id, tenant, now)
    }

    /// Replaces the Submit rate limits (per minute, burst the same); tests only.
    #[cfg(test)]
    pub(crate) fn set_submit_rates(&self, per_agent: u32, per_tenant: u32) {
        *lock(&self.submits) = SubmitLimiter::new(per_agent, per_tenant);
    }

    pub(crate) fn open_watch(self: &Arc<Self>, fingerprint: &str) -> Option<WatchGuard> {
        let mut w = lock(&self.watches);
        let n = w.entry(fingerprint.to_owned()).or_default();
        if *n >= MAX_WATCHES_PER_ADMIN {
            return None;
        }
        *n += 1;
        Some(WatchGuard {
            hub: Arc::clone(self),
            fingerprint: fingerprint.to_owned(),
        })
    }
}

/// An open admin watch; counted until dropped.
pub struct WatchGuard {
    hub: Arc<ApprovalHub>,
    fingerprint: String,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut w = lock(&self.hub.watches);
        if let Some(n) = w.get_mut(&self.fingerprint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                w.remove(&self.fingerprint);
            }
        }
    }
}

/// At most one notification per agent in this long; the others are counted into the next one.
pub const NOTIFY_EVERY: Duration = Duration::from_secs(10);
/// Most agents a notifier keeps collapsing state for; past this a notification is dropped
/// (and logged) until windows pass.
const MAX_NOTIFY_AGENTS: usize = 10_000;

/// One notification: a request, and how many more of its agent were collapsed into it.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub(crate) rec: ApprovalRecord,
    pub(crate) more: u32,
}

/// An agent's collapsing window: when its last notification went, the first request held
/// since, and how many more came.
#[derive(Debug)]
struct Window {
    sent: Instant,
    held: Option<ApprovalRecord>,
    more: u32,
}

/// A notifier's queue, held by the [`ApprovalHub`] (and by its task, which flushes it).
#[derive(Clone)]
pub(crate) struct NotifierQueue {
    tenants: Vec<String>,
    tx: mpsc::Sender<Notice>,
    windows: Arc<Mutex<HashMap<String, Window>>>,
}

impl NotifierQueue {
    /// The queue of a notifier of `tenants` (empty: all) sending on `tx`.
    pub(crate) fn new(tenants: Vec<String>, tx: mpsc::Sender<Notice>) -> NotifierQueue {
        NotifierQueue {
            tenants,
            tx,
            windows: Arc::default(),
        }
    }

    fn send(&self, n: Notice) {
        let id = n.rec.approval_id.clone();
        if self.tx.try_send(n).is_err() {
            tracing::warn!(
                approval_id = id,
                "approval notifier queue full: notification dropped"
            );
        }
    }

    /// Queues `rec` unless its tenant is filtered out (never waits): at once when its agent had
    /// no notification in the last [`NOTIFY_EVERY`], else held and counted into the next (sent
    /// by [`NotifierQueue::flush`] when the window ends). A full queue drops (and logs).
    pub(crate) fn offer(&self, rec: &ApprovalRecord, now: Instant) {
        if !self.tenants.is_empty() && !self.tenants.contains(&rec.tenant) {
            return;
        }
        let mut windows = lock(&self.windows);
        if !windows.contains_key(&rec.agent_id) && windows.len() >= MAX_NOTIFY_AGENTS {
            windows.retain(|_, w| {
                w.held.is_some() || now.saturating_duration_since(w.sent) < NOTIFY_EVERY
            });
            if windows.len() >= MAX_NOTIFY_AGENTS {
                tracing::warn!(
                    approval_id = rec.approval_id,
                    "approval notifier: too many agents notifying: notification dropped"
                );
                return;
            }
        }
        match windows.get_mut(&rec.agent_id) {
            Some(w) if now.saturating_duration_since(w.sent) < NOTIFY_EVERY => {
                if w.held.is_none() {
                    w.held = Some(rec.clone());
                } else {
                    w.more = w.more.saturating_add(1);
                }
            }
            Some(w) => {
                // The window is over: this request goes now, with whatever was held counted in.
                let more = w.more + u32::from(w.held.is_some());
                *w = Window {
                    sent: now,
                    held: None,
                    more: 0,
                };
                self.send(Notice {
                    rec: rec.clone(),
                    more,
                });
            }
            None => {
                windows.insert(
                    rec.agent_id.clone(),
                    Window {
                        sent: now,
                        held: None,
                        more: 0,
                    },
                );
                self.send(Notice {
                    rec: rec.clone(),
                    more: 0,
                });
            }
        }
    }

    /// Sends what was held for agents whose window has ended, and forgets idle agents.
    pub(crate) fn flush(&self, now: Instant) {
        let mut windows = lock(&self.windows);
        windows.retain(|_, w| {
            if now.saturating_duration_since(w.sent) < NOTIFY_EVERY {
                return true;
            }
            match w.held.take() {
                Some(rec) => {
                    self.send(Notice { rec, more: w.more });
                    w.sent = now;
                    w.more = 0;
                    true
                }
                None => false,
            }
        });
    }
}

/// Submits one agent may make per minute (and at once).
pub const SUBMITS_PER_AGENT: u32 = 30;
/// Submits all the agents of one tenant may make per minute (and at once).
pub const SUBMITS_PER_TENANT: u32 = 600;
/// Most agents (and tenants) whose Submit buckets are remembered; full buckets are forgotten
/// first, and past this a new key is refused until some refill.
const MAX_BUCKETS: usize = 100_000;

/// Which Submit rate limit refused, and in how long one more is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitLimited {
    Agent { per_minute: u32, retry: Duration },
    Tenant { per_minute: u32, retry: Duration },
}

/// A token bucket: `per_minute` tokens a minute, holding at most `per_minute`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The Submit rate limits, per agent and per tenant: token buckets in memory (they restart full
/// with the controller; the pending caps in the store still hold across restarts).
#[derive(Debug)]
struct SubmitLimiter {
    per_agent: u32,
    per_tenant: u32,
    agents: HashMap<String, Bucket>,
    tenants: HashMap<String, Bucket>,
}

/// Refills the bucket of `key` in `map` to `now`; None when the map is full of busy buckets.
fn refill<'m>(
    map: &'m mut HashMap<String, Bucket>,
    key: &str,
    per_minute: u32,
    now: Instant,
) -> Option<&'m mut Bucket> {
    let cap = f64::from(per_minute);
    let rate = cap / 60.0;
    let level =
        |b: &Bucket| (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(cap);
    if !map.contains_key(key) && map.len() >= MAX_BUCKETS {
        map.retain(|_, b| level(b) < cap);
        if map.len() >= MAX_BUCKETS {
            return None;
        }
    }
    let b = map.entry(key.to_owned()).or_insert(Bucket {
        tokens: cap,
        at: now,
    });
    b.tokens = level(b);
    b.at = now;
    Some(b)
}

/// How long until `tokens` reaches one at `per_minute`.
fn retry_in(tokens: f64, per_minute: u32) -> Duration {
    let rate = f64::from(per_minute.max(1)) / 60.0;
    Duration::from_secs_f64(((1.0 - tokens).max(0.0) / rate).min(60.0))
}

impl SubmitLimiter {
    fn new(per_agent: u32, per_tenant: u32) -> SubmitLimiter {
        SubmitLimiter {
            per_agent,
            per_tenant,
            agents: HashMap::new(),
            tenants: HashMap::new(),
        }
    }

    fn take(&mut self, agent_id: &str, tenant: &str, now: Instant) -> Result<(), SubmitLimited> {
        let (pa, pt) = (self.per_agent, self.per_tenant);
        let agent_tokens = match refill(&mut self.agents, agent_id, pa, now) {
            Some(b) => b.tokens,
            None => 0.0,
        };
        if agent_tokens < 1.0 {
            return Err(SubmitLimited::Agent {
                per_minute: pa,
                retry: retry_in(agent_tokens, pa),
            });
        }
        let tenant_tokens = match refill(&mut self.tenants, tenant, pt, now) {
            Some(b) => b.tokens,
            None => 0.0,
        };
        if tenant_tokens < 1.0 {
            return Err(SubmitLimited::Tenant {
                per_minute: pt,
                retry: retry_in(tenant_tokens, pt),
            });
        }
        if let Some(b) = self.agents.get_mut(agent_id) {
            b.tokens -= 1.0;
        }
        if let Some(b) = self.tenants.get_mut(tenant) {
            b.tokens -= 1.0;
        }
        Ok(())
    }
}
