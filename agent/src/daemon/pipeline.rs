//! The event pipeline on the agent: events from proxies and from the agent itself go through a
//! bounded channel to the spool thread (chain, append, group commit every ~50 ms), and an
//! uploader streams durable events to the controller, deleting them once acknowledged.

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use thoth_proto::fleet::{self as pb, event_upload_client::EventUploadClient};
use tokio::sync::{oneshot, watch};

use super::spool::Spool;

/// Commands waiting for the spool thread (past this, emits are refused and counted). A proxy's
/// batch is one command, so this holds far more events; the channel's slots are allocated up
/// front, so it is kept small (65,536 slots cost ~5 MiB of resident memory).
pub const CHANNEL: usize = 4_096;
/// Longest wait before an appended event is made durable.
pub const GROUP_COMMIT: Duration = Duration::from_millis(50);
/// Events per upload batch.
pub const BATCH: usize = 500;
/// Events sent but not yet acknowledged, at most.
pub const IN_FLIGHT: u64 = 5_000;

/// Durable events as (seq, canonical bytes).
pub type Records = Vec<(u64, Vec<u8>)>;

enum Cmd {
    Append(Map<String, Value>),
    /// Appends a batch, answering (accepted, duplicates, last seq) once appended.
    Batch(Vec<Map<String, Value>>, oneshot::Sender<(u32, u32, u64)>),
    Ack(u64),
    Read {
        after: u64,
        max: usize,
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
    /// Refused because the spool thread was behind (counted, reported).
    pub refused: u64,
    /// Corrupt records found at start.
    pub corrupt: u64,
}

/// A handle to the spool thread.
#[derive(Clone)]
pub struct SpoolHandle {
    tx: SyncSender<Cmd>,
    /// The agent id and tenant stamped on every event (events wait until it is known).
    pub identity: Arc<Mutex<Option<(String, String)>>>,
    /// The durable sequence number.
    pub durable: watch::Receiver<u64>,
    /// Counters.
    pub stats: Arc<Mutex<SpoolStats>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SpoolHandle {
    /// Queues an event; false (and counted) when the spool is behind.
    pub fn append(&self, event: Map<String, Value>) -> bool {
        match self.tx.try_send(Cmd::Append(event)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                lock(&self.stats).refused += 1;
                false
            }
        }
    }

    /// Appends a batch from a proxy and waits until it is durable. Returns (accepted, dropped).
    pub async fn append_durable(&self, events: Vec<Map<String, Value>>) -> (u32, u32) {
        let n = events.len() as u32;
        let (reply, rx) = oneshot::channel();
        if self.tx.try_send(Cmd::Batch(events, reply)).is_err() {
            lock(&self.stats).refused += u64::from(n);
            return (0, n);
        }
        let Ok((accepted, dups, last)) = rx.await else {
            return (0, n);
        };
        let mut durable = self.durable.clone();
        let _ = durable.wait_for(|d| *d >= last).await;
        (accepted + dups, n - accepted - dups)
    }

    /// Records an acknowledgement.
    pub fn ack(&self, seq: u64) {
        let _ = self.tx.send(Cmd::Ack(seq));
    }

    /// Reads durable events after `after`.
    pub async fn read(&self, after: u64, max: usize) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Read { after, max, reply })
            .map_err(|_| std::io::Error::other("the spool thread stopped"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the spool thread stopped"))?
    }
}

/// Opens the spool and starts its thread. `on_start` receives the recovery report.
pub fn start(
    dir: &std::path::Path,
    max_bytes: u64,
    agent_event: impl Fn(&str, Value) -> Map<String, Value> + Send + 'static,
) -> std::io::Result<(SpoolHandle, super::spool::Recovery)> {
    let (mut spool, recovery) = Spool::open(dir, max_bytes)?;
    // Event ids already on the chain (from the unacknowledged spool, then as appended), so a
    // proxy re-sending after a lost answer does not put an event on the chain twice.
    let mut seen: std::collections::HashSet<String> = spool
        .read_after(spool.acked(), usize::MAX)?
        .iter()
        .filter_map(|(_, r)| serde_json::from_slice::<Value>(r).ok())
        .filter_map(|v| v.get("eventId").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let mut seen_order: std::collections::VecDeque<String> = seen.iter().cloned().collect();
    let identity: Arc<Mutex<Option<(String, String)>>> = Arc::new(Mutex::new(None));
    let ident = Arc::clone(&identity);
    let (tx, rx) = mpsc::sync_channel::<Cmd>(CHANNEL);
    let (durable_tx, durable) = watch::channel(spool.synced());
    let stats = Arc::new(Mutex::new(SpoolStats {
        seq: spool.seq(),
        durable: spool.synced(),
        acked: spool.acked(),
        bytes: spool.bytes(),
        corrupt: recovery.corrupt.len() as u64,
        ..SpoolStats::default()
    }));
    let st = Arc::clone(&stats);
    std::thread::Builder::new()
        .name("thoth-spool".into())
        .spawn(move || {
            let mut last_sync = Instant::now();
            let mut waiting: std::collections::VecDeque<Cmd> = std::collections::VecDeque::new();
            loop {
                let who = lock(&ident).clone();
                let wait = if spool.seq() > spool.synced() {
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
                let stamp = |m: &mut Map<String, Value>| {
                    if let Some((agent, tenant)) = &who {
                        m.insert("agentId".into(), Value::from(agent.clone()));
                        m.insert("tenantId".into(), Value::from(tenant.clone()));
                    }
                };
                let mut remember = |id: Option<String>| -> bool {
                    let Some(id) = id else { return true };
                    if seen.contains(&id) {
                        return false;
                    }
                    seen.insert(id.clone());
                    seen_order.push_back(id);
                    if seen_order.len() > 200_000
                        && let Some(old) = seen_order.pop_front()
                    {
                        seen.remove(&old);
                    }
                    true
                };
                match cmd {
                    Some(Cmd::Batch(events, reply)) => {
                        let (mut accepted, mut dups) = (0u32, 0u32);
                        for mut e in events {
                            let id = e.get("eventId").and_then(Value::as_str).map(str::to_owned);
                            if !remember(id) {
                                dups += 1;
                                continue;
                            }
                            stamp(&mut e);
                            match spool.append(e) {
                                Ok(_) => accepted += 1,
                                Err(err) => tracing::error!("cannot append to the event spool: {err}"),
                            }
                        }
                        let _ = reply.send((accepted, dups, spool.seq()));
                    }
                    Some(Cmd::Append(mut e)) => {
                        stamp(&mut e);
                        let id = e.get("eventId").and_then(Value::as_str).map(str::to_owned);
                        remember(id);
                        if let Err(e) = spool.append(e) {
                            tracing::error!("cannot append to the event spool: {e}");
                        }
                    }
                    Some(Cmd::Ack(seq)) => {
                        if let Err(e) = spool.ack(seq) {
                            tracing::error!("cannot record an acknowledgement: {e}");
                        }
                    }
                    Some(Cmd::Read { after, max, reply }) => {
                        let _ = reply.send(spool.read_after(after, max));
                    }
                    None => {}
                }
                if spool.lost_pending > 0 {
                    let lost = std::mem::take(&mut spool.lost_pending);
                    tracing::warn!(lost, "the event spool was full: the oldest events were dropped");
                    let mut ev = agent_event(
                        "EVENTS_DROPPED",
                        serde_json::json!({"dropped": lost, "reason": "the agent's event spool reached its size limit; the oldest events were deleted"}),
                    );
                    stamp(&mut ev);
                    let _ = spool.append(ev);
                }
                if spool.seq() > spool.synced() && last_sync.elapsed() >= GROUP_COMMIT {
                    match spool.sync() {
                        Ok(()) => last_sync = Instant::now(),
                        Err(e) => tracing::error!("cannot sync the event spool: {e}"),
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
            }
        })?;
    Ok((
        SpoolHandle {
            tx,
            identity,
            durable,
            stats,
        },
        recovery,
    ))
}

/// The message a chain head signature covers.
pub fn head_message(agent_id: &str, seq: u64, hash: &str) -> Vec<u8> {
    format!("thoth-chain-head:v1:{agent_id}:{seq}:{hash}").into_bytes()
}

/// Streams durable events to the controller over `channel` until the stream fails.
pub async fn upload(
    spool: &SpoolHandle,
    channel: tonic::transport::Channel,
    agent_id: &str,
    key_pem: &str,
) -> Result<(), String> {
    use rcgen::SigningKey as _;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("agent key: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::EventBatch>(4);
    let mut acks = EventUploadClient::new(channel)
        .max_encoding_message_size(64 << 20)
        .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("event upload refused: {}", s.message()))?
        .into_inner();
    let mut acked = lock(&spool.stats).acked;
    let mut sent = acked;
    let mut durable = spool.durable.clone();
    let mut empty_reads = 0u32;
    loop {
        let have = *durable.borrow_and_update();
        if have > sent && sent - acked < IN_FLIGHT {
            let events = spool.read(sent, BATCH).await.map_err(|e| e.to_string())?;
            if let Some((first, _)) = events.first()
                && *first != sent + 1
            {
                tracing::warn!(
                    expected = sent + 1,
                    got = first,
                    "the spool skipped records (corrupt); the controller will report the gap"
                );
            }
            if let Some((last_seq, last)) = events.last() {
                empty_reads = 0;
                let hash = serde_json::from_slice::<Value>(last)
                    .ok()
                    .and_then(|v| v.get("hash").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_default();
                let signature = key
                    .sign(&head_message(agent_id, *last_seq, &hash))
                    .map_err(|e| format!("signing the chain head: {e}"))?;
                let batch = pb::EventBatch {
                    events: events.iter().map(|(_, e)| e.clone()).collect(),
                    head: Some(pb::ChainHead {
                        seq: *last_seq,
                        hash,
                        signature,
                    }),
                };
                sent = *last_seq;
                tx.send(batch)
                    .await
                    .map_err(|_| "the upload stream closed".to_owned())?;
                continue;
            }
            // Nothing readable although durable: corrupt records (reported at recovery). Make
            // sure before moving on, so that a transient empty read can never skip events.
            empty_reads += 1;
            if empty_reads < 3 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            tracing::warn!(
                from = sent + 1,
                to = have,
                "unreadable spool records skipped"
            );
            empty_reads = 0;
            sent = have;
            continue;
        }
        tokio::select! {
            ack = acks.message() => match ack {
                Ok(Some(a)) => {
                    acked = acked.max(a.acked_seq);
                    spool.ack(acked);
                }
                Ok(None) => return Err("the controller closed the upload stream".into()),
                Err(s) => return Err(format!("event upload: {}", s.message())),
            },
            r = durable.changed() => if r.is_err() { return Err("the spool stopped".into()) },
        }
    }
}
