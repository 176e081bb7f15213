//! The spool thread (chain, append, group commit) and the handle the agent and the uploader
//! use to reach it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use thoth_proto::{Dropped, Event, EventType};
use tokio::sync::{oneshot, watch};

use crate::daemon::spool::Spool;

use super::admit::{Admitted, dedup_key, digest};
use super::owed::{Displace, Owed, displace};

/// Commands waiting for the spool thread (past this, emits are refused and counted). A proxy's
/// batch is one command, so this holds far more events; the channel's slots are allocated up
/// front, so it is kept small (65,536 slots cost ~5 MiB of resident memory).
pub const CHANNEL: usize = 4_096;
/// Longest wait before an appended event is made durable.
pub const GROUP_COMMIT: Duration = Duration::from_millis(50);
/// Events per upload batch.
pub const BATCH: usize = 500;
/// Bytes per upload batch, at most (one record more when a single record is larger). Far under
/// the controller's limits (1 MiB per event, 5,000 events and a 64 MiB message per batch).
pub const BATCH_BYTES: usize = 4 << 20;
/// Events sent but not yet acknowledged, at most.
pub const IN_FLIGHT: u64 = 5_000;
/// Upload attempts ending without progress while events wait, before the upload counts as
/// stalled (an error in every status).
pub const STALL_ATTEMPTS: u32 = 2;
/// No acknowledgement for this long while events wait: stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(300);
/// Refusals of a batch with no progress before records are sent one at a time to find the one
/// the controller refuses.
pub(super) const ISOLATE_AFTER: u32 = 2;
/// Refusals of a single record before it is quarantined (kept aside, reported, skipped).
pub(super) const QUARANTINE_AFTER: u32 = 2;
/// How long a proxy waits, at most, for its events to become durable before it is told to retry.
const DURABLE_WAIT: Duration = Duration::from_secs(4);
/// (caller, proxy event id) keys remembered for de-duplication.
const SEEN_MAX: usize = 200_000;

/// Durable events as (seq, canonical bytes).
pub type Records = Vec<(u64, Vec<u8>)>;

/// What the spool thread answers a proxy's batch: (accepted, duplicates, last seq), or why the
/// spool cannot take events now.
type BatchReply = Result<(u32, u32, u64), SpoolUnavailable>;

pub(super) enum Cmd {
    /// Appends one of the agent's own events (boxed: the channel's slots stay small).
    Append(Box<Event<'static>>),
    /// Appends a batch of admitted proxy events.
    Batch(Vec<Admitted>, oneshot::Sender<BatchReply>),
    Ack(u64),
    /// Sets a record the controller keeps refusing aside, and reports it.
    Quarantine {
        seq: u64,
        reason: String,
    },
    Read {
        after: u64,
        max: usize,
        max_bytes: usize,
        reply: oneshot::Sender<std::io::Result<Records>>,
    },
}

/// Counters shown in the status.
#[derive(Debug, Default, Clone)]
pub struct SpoolStats {
    /// Last sequence number given out.
    pub seq: u64,
    /// Durable up to.
    pub durable: u64,
    /// Acknowledged by the controller up to.
    pub acked: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Lost to the size bound (reported as EVENTS_DROPPED).
    pub lost: u64,
    /// Refused because the spool thread was behind or could not write (counted, reported).
    pub refused: u64,
    /// Corrupt records found at start.
    pub corrupt: u64,
    /// Proxy events kept although their id was already used by the same caller for a
    /// different record (flagged `eventIdReused`).
    pub id_reused: u64,
    /// The spool cannot write (disk full, IO error): events are refused until it can.
    pub write_error: Option<String>,
    /// Since when events have been waiting for the controller (none while all are acknowledged).
    pub waiting_since: Option<Instant>,
}

/// The uploader's progress, kept across reconnects: what makes an upload "stalled", and the
/// search for a record the controller refuses.
#[derive(Debug)]
pub struct UploadState {
    /// Upload attempts that ended in an error without any acknowledgement progress.
    pub failures: u32,
    /// Why the last attempt ended.
    pub last_error: Option<String>,
    /// Last acknowledgement progress (or the last time nothing was waiting).
    pub progress_at: Instant,
    /// Records quarantined (refused by the controller, skipped).
    pub quarantined: u64,
    /// `acked` when the current run of refusals began.
    pub(super) stuck_at: u64,
    pub(super) refusals: u32,
    /// Send one record per batch until `acked` reaches this.
    pub(super) isolate_until: u64,
    /// Refusals per single record.
    pub(super) strikes: HashMap<u64, u32>,
    /// Quarantined records still on the spool: never sent again.
    pub(super) skip: BTreeSet<u64>,
}

impl Default for UploadState {
    fn default() -> Self {
        UploadState {
            failures: 0,
            last_error: None,
            progress_at: Instant::now(),
            quarantined: 0,
            stuck_at: 0,
            refusals: 0,
            isolate_until: 0,
            strikes: HashMap::new(),
            skip: BTreeSet::new(),
        }
    }
}

impl UploadState {
    /// The stall, in words, when `held` events wait (since `waiting_since`) and the upload
    /// makes no progress.
    pub fn stalled(&self, held: u64, waiting_since: Option<Instant>) -> Option<String> {
        let since = waiting_since.filter(|_| held > 0)?;
        if self.failures >= STALL_ATTEMPTS {
            return Some(format!(
                "event upload stalled: {} attempts without progress, {held} events waiting on this laptop (last: {})",
                self.failures,
                self.last_error.as_deref().unwrap_or("no details")
            ));
        }
        let quiet = self.progress_at.elapsed().min(since.elapsed());
        (quiet > STALL_AFTER).then(|| {
            format!(
                "event upload stalled: no acknowledgement from the controller for {} while {held} events wait on this laptop{}",
                humantime::format_duration(Duration::from_secs(quiet.as_secs())),
                self.last_error
                    .as_deref()
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default()
            )
        })
    }

    pub(super) fn progressed(&mut self) {
        self.failures = 0;
        self.refusals = 0;
        self.last_error = None;
        self.progress_at = Instant::now();
    }
}

/// Refused proxy events, summarised into at most one `EVENTS_REFUSED` event a minute.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    pending: u64,
    by: std::collections::BTreeMap<String, u64>,
    last_reason: String,
    raised_at: Option<Instant>,
}

/// A handle to the spool thread.
#[derive(Clone)]
pub struct SpoolHandle {
    pub(super) tx: SyncSender<Cmd>,
    /// The agent id and tenant stamped on every event (events wait until it is known).
    pub identity: Arc<Mutex<Option<(String, String)>>>,
    /// The durable sequence number.
    pub durable: watch::Receiver<u64>,
    /// The spool's write error, while it cannot write.
    pub health: watch::Receiver<Option<String>>,
    /// Counters.
    pub stats: Arc<Mutex<SpoolStats>>,
    /// The uploader's progress.
    pub upload: Arc<Mutex<UploadState>>,
    pub(super) refusals: Arc<Mutex<Refusals>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a proxy's batch was not taken (the proxy keeps the events and re-sends them).
#[derive(Debug, thiserror::Error)]
pub enum SpoolUnavailable {
    /// The spool cannot write (its health message).
    #[error("{0}")]
    Unhealthy(String),
    /// The spool thread's queue is full.
    #[error("the agent's event spool is busy; keep the events and re-send them")]
    Busy,
    /// The spool thread is gone.
    #[error("the spool thread stopped")]
    Stopped,
    /// Written, but not synced in time.
    #[error("the events were not durable within {DURABLE_WAIT:?}")]
    NotDurable,
    /// `owner` holds its whole share of the spool.
    #[error("{owner} already has {} MiB of events waiting for the controller in the agent's spool (the limit per user is {} MiB); keep the events and re-send them later", held >> 20, quota >> 20)]
    OverQuota {
        owner: String,
        held: u64,
        quota: u64,
    },
    /// Appending failed.
    #[error("cannot append to the event spool: {0}")]
    Append(std::io::Error),
}

impl SpoolHandle {
    /// Queues one of the agent's own events; false (and counted) when the spool is behind.
    pub fn append(&self, event: Event<'static>) -> bool {
        match self.tx.try_send(Cmd::Append(Box::new(event))) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                lock(&self.stats).refused += 1;
                false
            }
        }
    }

    /// Appends a batch of admitted proxy events and waits until it is durable. Returns
    /// (accepted, dropped), where accepted counts identical re-sends already held; an error when
    /// the spool cannot write now (the proxy keeps the events and re-sends them).
    pub async fn append_durable(
        &self,
        events: Vec<Admitted>,
    ) -> Result<(u32, u32), SpoolUnavailable> {
        let n = events.len() as u32;
        if n == 0 {
            return Ok((0, 0));
        }
        if let Some(e) = self.health.borrow().clone() {
            return Err(SpoolUnavailable::Unhealthy(e));
        }
        let (reply, rx) = oneshot::channel();
        if self.tx.try_send(Cmd::Batch(events, reply)).is_err() {
            // Behind: the proxy keeps the events and re-sends them (never counted as dropped).
            lock(&self.stats).refused += u64::from(n);
            return Err(SpoolUnavailable::Busy);
        }
        let (accepted, dups, last) = match rx.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SpoolUnavailable::Stopped),
        };
        let mut durable = self.durable.clone();
        let mut health = self.health.clone();
        let wait = async {
            tokio::select! {
                r = durable.wait_for(|d| *d >= last) => r.map(|_| ()).map_err(|_| SpoolUnavailable::Stopped),
                r = health.wait_for(Option::is_some) => Err(SpoolUnavailable::Unhealthy(r.ok().and_then(|h| h.clone()).unwrap_or_default())),
            }
        };
        match tokio::time::timeout(DURABLE_WAIT, wait).await {
            Ok(Ok(())) => Ok((accepted + dups, n - accepted - dups)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SpoolUnavailable::NotDurable),
        }
    }

    /// Counts refused proxy events; returns the detail of an `EVENTS_REFUSED` event to raise
    /// (at most one a minute, summing what was refused since the last one).
    pub fn note_refused(&self, user: &str, n: u64, reason: &str) -> Option<Value> {
        let mut r = lock(&self.refusals);
        r.pending += n;
        if r.by.len() < 64 || r.by.contains_key(user) {
            *r.by.entry(user.to_owned()).or_default() += n;
        }
        r.last_reason = reason.chars().take(512).collect();
        if r.raised_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return None;
        }
        r.raised_at = Some(Instant::now());
        let detail = serde_json::json!({
            "refused": std::mem::take(&mut r.pending),
            "byUser": std::mem::take(&mut r.by),
            "lastReason": r.last_reason,
        });
        Some(detail)
    }

    /// Records an acknowledgement.
    pub fn ack(&self, seq: u64) {
        let _ = self.tx.send(Cmd::Ack(seq));
    }

    /// Reads durable events after `after`: at most `max` of them and about `max_bytes` (always
    /// at least one).
    pub async fn read(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Read {
                after,
                max,
                max_bytes,
                reply,
            })
            .map_err(|_| std::io::Error::other("the spool thread stopped"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the spool thread stopped"))?
    }
}

/// Proxy (caller, id) keys already on the chain with the digests of their records, bounded.
struct Seen {
    map: HashMap<String, Vec<[u8; 32]>>,
    order: VecDeque<String>,
}

impl Seen {
    /// Whether the record is new, a re-send of a held one (`None`), or a different record with
    /// an id this caller already used (`Some(true)`).
    fn classify(&self, key: &str, digest: &[u8; 32]) -> Option<bool> {
        match self.map.get(key) {
            Some(ds) if ds.contains(digest) => None,
            Some(_) => Some(true),
            None => Some(false),
        }
    }

    /// Remembers a record put on the chain.
    fn remember(&mut self, key: &str, digest: [u8; 32]) {
        match self.map.get_mut(key) {
            Some(ds) => {
                if ds.len() < 8 && !ds.contains(&digest) {
                    ds.push(digest);
                }
            }
            None => {
                self.map.insert(key.to_owned(), vec![digest]);
                self.order.push_back(key.to_owned());
                if self.order.len() > SEEN_MAX
                    && let Some(old) = self.order.pop_front()
                {
                    self.map.remove(&old);
                }
            }
        }
    }
}

/// Opens the spool and starts its thread. `agent_event` builds the agent's own events.
pub fn start(
    dir: &std::path::Path,
    max_bytes: u64,
    agent_event: impl Fn(EventType, Value) -> Event<'static> + Send + 'static,
) -> std::io::Result<(SpoolHandle, crate::daemon::spool::Recovery)> {
    let (spool, recovery) = Spool::open(dir, max_bytes)?;
    let corrupt = recovery.corrupt.len() as u64;
    Ok((spawn(spool, corrupt, agent_event)?, recovery))
}

/// Writes that keep failing are logged at most this often (with a count of the others).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A spool that cannot write: retried with backoff, logged at a bounded rate.
struct Failing {
    attempts: u32,
    retry_at: Instant,
    logged_at: Instant,
    suppressed: u64,
}

/// Starts the spool thread over an open spool.
pub(crate) fn spawn(
    mut spool: Spool,
    corrupt: u64,
    agent_event: impl Fn(EventType, Value) -> Event<'static> + Send + 'static,
) -> std::io::Result<SpoolHandle> {
    // Proxy records already on the chain (from the unacknowledged spool, then as appended), so
    // a proxy re-sending after a lost answer does not put an event on the chain twice.
    let mut seen = Seen {
        map: HashMap::new(),
        order: VecDeque::new(),
    };
    let mut owed = Owed::default();
    // A user holding more than this much of the spool unacknowledged may not make the size
    // bound delete another user's evidence: while the spool has room anyone may use it (a
    // laptop with one user keeps its whole outage tolerance), and a user may always displace
    // their own oldest records.
    let quota = spool.max_bytes() / 4;
    for (seq, r) in spool.read_after(spool.acked(), usize::MAX)? {
        let Ok(mut e) = serde_json::from_slice::<Event<'_>>(&r) else {
            // Not a record this agent writes: nobody's to displace.
            owed.add_agent(seq, Displace::Nobody);
            continue;
        };
        let pid = match &e.proxy_event_id {
            Some(pid) if !e.user.is_empty() => pid.to_string(),
            _ => {
                owed.add_agent(seq, displace(&e));
                continue;
            }
        };
        seen.remember(&dedup_key(&e.user, &pid), digest(&mut e));
        // A sub-uid's record names the sub-uid; its quota is its owner's.
        let owner = e.quota_owner.as_deref().unwrap_or(&e.user);
        owed.add(seq, owner, r.len() as u64);
    }
    let identity: Arc<Mutex<Option<(String, String)>>> = Arc::new(Mutex::new(None));
    let ident = Arc::clone(&identity);
    let (tx, rx) = mpsc::sync_channel::<Cmd>(CHANNEL);
    let (durable_tx, durable) = watch::channel(spool.synced());
    let (health_tx, health) = watch::channel::<Option<String>>(None);
    let stats = Arc::new(Mutex::new(SpoolStats {
        seq: spool.seq(),
        durable: spool.synced(),
        acked: spool.acked(),
        bytes: spool.bytes(),
        corrupt,
        ..SpoolStats::default()
    }));
    let st = Arc::clone(&stats);
    std::thread::Builder::new()
        .name("thoth-spool".into())
        .spawn(move || {
            let mut last_sync = Instant::now();
            let mut failing: Option<Failing> = None;
            let mut waiting: VecDeque<Cmd> = VecDeque::new();
            loop {
                let who = lock(&ident).clone();
                let wait = if let Some(f) = &failing {
                    f.retry_at.saturating_duration_since(Instant::now())
                } else if spool.seq() > spool.synced() {
                    GROUP_COMMIT.saturating_sub(last_sync.elapsed())
                } else if !waiting.is_empty() {
                    Duration::from_millis(100)
                } else {
                    Duration::from_secs(3600)
                };
                let cmd = match rx.recv_timeout(wait) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        let _ = spool.sync();
                        return;
                    }
                };
                // Until the agent knows who it is, events wait (bounded; overflow counted).
                let cmd = match (cmd, &who) {
                    (Some(c @ (Cmd::Append(_) | Cmd::Batch(..))), None) => {
                        if waiting.len() < CHANNEL {
                            waiting.push_back(c);
                        } else {
                            lock(&st).refused += 1;
                        }
                        None
                    }
                    (None, Some(_)) if !waiting.is_empty() => waiting.pop_front(),
                    (c, Some(_)) if !waiting.is_empty() => {
                        if let Some(c) = c {
                            waiting.push_back(c);
                        }
                        waiting.pop_front()
                    }
                    (c, _) => c,
                };
                let stamp = |e: &mut Event<'static>| {
                    if let Some((agent, tenant)) = &who {
                        e.agent_id = agent.clone().into();
                        e.tenant_id = tenant.clone().into();
                    }
                };
                match cmd {
                    Some(Cmd::Batch(events, reply)) => {
                        let mut want: HashMap<&str, u64> = HashMap::new();
                        for a in &events {
                            *want.entry(a.owner.as_str()).or_default() += a.size;
                        }
                        let total: u64 = want.values().sum();
                        let need = (spool.bytes() + total).saturating_sub(spool.max_bytes());
                        let over = want
                            .iter()
                            .find(|(o, n)| {
                                need > 0
                                    && owed.held(o) + **n > quota
                                    && owed.evicts_other(
                                        o,
                                        need,
                                        spool.acked(),
                                        spool.segment_spans(),
                                    )
                            })
                            .map(|(o, _)| (*o).to_owned());
                        if let Some(e) = health_tx.borrow().clone() {
                            // Nothing is taken that cannot be written: the proxy keeps it.
                            let _ = reply.send(Err(SpoolUnavailable::Unhealthy(e)));
                        } else if let Some(owner) = over {
                            // Over quota: refused now, kept by the proxy, re-sent when the
                            // controller has taken this user's earlier events.
                            lock(&st).refused += events.len() as u64;
                            let held = owed.held(&owner);
                            let _ = reply.send(Err(SpoolUnavailable::OverQuota {
                                owner,
                                held,
                                quota,
                            }));
                        } else {
                            let (mut accepted, mut dups, mut reused) = (0u32, 0u32, 0u64);
                            let mut failed = None;
                            for a in events {
                                let Some(conflict) = seen.classify(&a.key, &a.digest) else {
                                    dups += 1;
                                    continue;
                                };
                                let mut e = a.event;
                                if conflict {
                                    // Never silently dropped: kept, and flagged.
                                    e.event_id_reused = Some(true);
                                    reused += 1;
                                }
                                e.event_id = uuid::Uuid::now_v7().to_string().into();
                                stamp(&mut e);
                                if e.user != a.owner.as_str() {
                                    // So a restart counts it against the same owner.
                                    e.quota_owner = Some(a.owner.clone().into());
                                }
                                match spool.append(&mut e) {
                                    Ok(seq) => {
                                        seen.remember(&a.key, a.digest);
                                        owed.add(seq, &a.owner, a.size);
                                        accepted += 1;
                                    }
                                    Err(err) => {
                                        failed = Some(SpoolUnavailable::Append(err));
                                        break;
                                    }
                                }
                            }
                            lock(&st).id_reused += reused;
                            let _ = reply.send(match failed {
                                Some(e) => Err(e),
                                None => Ok((accepted, dups, spool.seq())),
                            });
                        }
                    }
                    Some(Cmd::Append(mut e)) => {
                        stamp(&mut e);
                        let who = displace(&e);
                        match failing.is_none().then(|| spool.append(&mut e)) {
                            Some(Ok(seq)) => owed.add_agent(seq, who),
                            _ => lock(&st).refused += 1,
                        }
                    }
                    Some(Cmd::Ack(seq)) => {
                        if let Err(e) = spool.ack(seq) {
                            tracing::error!("cannot record an acknowledgement: {e}");
                        }
                        owed.release(spool.acked());
                    }
                    Some(Cmd::Quarantine { seq, reason }) => {
                        let detail = match spool.quarantine(seq) {
                            Ok(Some(q)) => serde_json::json!({
                                "seq": seq,
                                "eventId": q.event_id,
                                "eventType": q.event_type,
                                "bytes": q.bytes,
                                "file": q.file.map(|f| f.display().to_string()),
                                "rotatedOut": q.rotated_out,
                                "reason": reason,
                            }),
                            Ok(None) => serde_json::json!({"seq": seq, "reason": reason, "file": null}),
                            Err(e) => serde_json::json!({"seq": seq, "reason": reason, "file": null, "error": e.to_string()}),
                        };
                        let mut ev = agent_event(EventType::EventQuarantined, detail);
                        stamp(&mut ev);
                        match failing.is_none().then(|| spool.append(&mut ev)) {
                            Some(Ok(seq)) => owed.add_agent(seq, Displace::Nobody),
                            _ => lock(&st).refused += 1,
                        }
                    }
                    Some(Cmd::Read {
                        after,
                        max,
                        max_bytes,
                        reply,
                    }) => {
                        let _ = reply.send(spool.read_after_bytes(after, max, max_bytes));
                    }
                    None => {}
                }
                if spool.lost_pending > 0 && failing.is_none() {
                    let lost = std::mem::take(&mut spool.lost_pending);
                    // Whose events were deleted (proxy events by user; the rest are the agent's).
                    let upto = spool.first_held().saturating_sub(1);
                    let agent_gone: Vec<Displace> = owed
                        .agent
                        .iter()
                        .take_while(|a| a.0 <= upto)
                        .map(|a| a.1.clone())
                        .collect();
                    let by_user = owed.release(upto);
                    let sole = (by_user.len() == 1)
                        .then(|| by_user.keys().next().map(String::as_str))
                        .flatten();
                    let evidence = agent_gone
                        .iter()
                        .filter(|d| match d {
                            Displace::Anyone => false,
                            Displace::Owner(o) => Some(&**o) != sole,
                            Displace::Nobody => true,
                        })
                        .count();
                    tracing::warn!(lost, ?by_user, evidence, "the event spool was full: the oldest events were dropped");
                    let dropped = Dropped {
                        dropped: lost,
                        by_user: Some(by_user),
                        agent_evidence_lost: Some(evidence as u64),
                        reason: "the agent's event spool reached its size limit; the oldest events were deleted".into(),
                    };
                    let mut ev = agent_event(EventType::EventsDropped, dropped.to_detail());
                    stamp(&mut ev);
                    let who = displace(&ev);
                    if let Ok(seq) = spool.append(&mut ev) {
                        owed.add_agent(seq, who);
                    }
                }
                let due = match &failing {
                    Some(f) => Instant::now() >= f.retry_at,
                    None => last_sync.elapsed() >= GROUP_COMMIT,
                };
                if spool.seq() > spool.synced() && due {
                    match spool.sync() {
                        Ok(()) => {
                            last_sync = Instant::now();
                            if let Some(f) = failing.take() {
                                tracing::info!(
                                    attempts = f.attempts,
                                    "the event spool can write again"
                                );
                                health_tx.send_replace(None);
                            }
                        }
                        Err(e) => {
                            let msg = format!("cannot write the event spool: {e}");
                            let f = failing.get_or_insert_with(|| {
                                tracing::error!("{msg}; retrying with backoff, events from proxies are refused until it can");
                                Failing {
                                    attempts: 0,
                                    retry_at: Instant::now(),
                                    logged_at: Instant::now(),
                                    suppressed: 0,
                                }
                            });
                            f.attempts += 1;
                            let backoff = Duration::from_millis(100)
                                .saturating_mul(1 << f.attempts.min(6))
                                .min(Duration::from_secs(5));
                            f.retry_at = Instant::now() + backoff;
                            if f.attempts > 1 {
                                if f.logged_at.elapsed() >= LOG_EVERY {
                                    tracing::error!(
                                        attempts = f.attempts,
                                        suppressed = f.suppressed,
                                        "{msg}"
                                    );
                                    f.logged_at = Instant::now();
                                    f.suppressed = 0;
                                } else {
                                    f.suppressed += 1;
                                }
                            }
                            if health_tx.borrow().as_deref() != Some(msg.as_str()) {
                                health_tx.send_replace(Some(msg));
                            }
                        }
                    }
                }
                // A segment rotation also syncs: publish whatever is durable now.
                if *durable_tx.borrow() != spool.synced() {
                    durable_tx.send_replace(spool.synced());
                }
                let mut s = lock(&st);
                s.seq = spool.seq();
                s.durable = spool.synced();
                s.acked = spool.acked();
                s.bytes = spool.bytes();
                s.lost = spool.lost_total;
                s.write_error = health_tx.borrow().clone();
                if s.seq <= s.acked {
                    s.waiting_since = None;
                } else if s.waiting_since.is_none() {
                    s.waiting_since = Some(Instant::now());
                }
            }
        })?;
    Ok(SpoolHandle {
        tx,
        identity,
        durable,
        health,
        stats,
        upload: Arc::new(Mutex::new(UploadState::default())),
        refusals: Arc::new(Mutex::new(Refusals::default())),
    })
}

pub use thoth_proto::evidence::head_message;

/// What the agent answers a proxy's `EmitEvents`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmitOutcome {
    /// Held (durable), identical re-sends included.
    pub accepted: u32,
    /// Not held: the spool was behind (counted, reported).
    pub dropped: u32,
    /// Refused as invalid or not a proxy's to send (counted, reported); never retried.
    pub refused: u32,
    /// Why the first refused one was refused.
    pub reason: String,
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
