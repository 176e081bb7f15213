//! The approval queue's listeners, held by the [`Controller`](crate::Controller): per-agent
//! wake-ups, the admin watch feed and the notifier queues. The queue's rules live in
//! `service::approvals`; this module names nothing of the service layer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
}

impl Default for ApprovalHub {
    fn default() -> Self {
        ApprovalHub {
            agents: Mutex::default(),
            feed: broadcast::channel(256).0,
            watches: Mutex::default(),
            notifiers: Mutex::default(),
            closed: watch::channel(false).0,
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
        for q in lock(&self.notifiers).iter() {
            q.offer(rec);
        }
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

/// A notifier's queue, held by the [`ApprovalHub`].
pub(crate) struct NotifierQueue {
    tenants: Vec<String>,
    tx: mpsc::Sender<ApprovalRecord>,
}

impl NotifierQueue {
    /// The queue of a notifier of `tenants` (empty: all) sending on `tx`.
    pub(crate) fn new(tenants: Vec<String>, tx: mpsc::Sender<ApprovalRecord>) -> NotifierQueue {
        NotifierQueue { tenants, tx }
    }

    /// Queues `rec` unless its tenant is filtered out or the queue is full (never waits).
    pub(crate) fn offer(&self, rec: &ApprovalRecord) {
        if !self.tenants.is_empty() && !self.tenants.contains(&rec.tenant) {
            return;
        }
        if self.tx.try_send(rec.clone()).is_err() {
            tracing::warn!(
                approval_id = rec.approval_id,
                "approval notifier queue full: notification dropped"
            );
        }
    }
}
