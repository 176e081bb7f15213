//! Sends a proxy's events to the agent over its local socket, off the hot path: a bounded
//! in-memory queue (overflow counted and sent as `EVENTS_DROPPED`) drained by a thread that
//! retries with backoff while the agent is unreachable. Tool calls never wait for it.
//!
//! What the agent has not acknowledged when the proxy exits (the agent down or restarting, or
//! too slow to make them durable within the exit deadline) is kept in the user's pending
//! directory (`~/.local/state/thoth/pending`, one 0600 file per exit); the next proxy that
//! starts takes those files (reads, then removes them) and sends their events first, keeping
//! them again at its own exit if the agent is still away. The agent drops duplicates by
//! `eventId`, so an event sent twice is stored once.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most events waiting for the agent.
pub const MAX_EVENTS: usize = 20_000;
/// Most bytes waiting for the agent.
pub const MAX_BYTES: usize = 32 << 20;
const BATCH: usize = 500;

struct Shared {
    queue: Mutex<(VecDeque<Vec<u8>>, usize)>,
    /// The batch being sent (kept on exit if the send does not finish).
    inflight: Mutex<Vec<Vec<u8>>>,
    dropped: AtomicU64,
    stop: AtomicBool,
    pending: Option<PathBuf>,
}

/// Most bytes kept in the pending directory (beyond it, events are dropped with a warning).
const MAX_PENDING_BYTES: u64 = 64 << 20;

/// Where this user's undelivered events are kept: `$XDG_STATE_HOME/thoth/pending`, else
/// `~/.local/state/thoth/pending` (`%LOCALAPPDATA%\thoth\pending` on Windows).
pub fn pending_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("thoth/pending"));
    }
    if cfg!(windows) {
        return std::env::var_os("LOCALAPPDATA").map(|d| PathBuf::from(d).join("thoth\\pending"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/thoth/pending"))
}

/// The forwarder.
pub struct Forwarder {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Forwarder {
    /// Starts forwarding to the agent at `socket`; `pending` is where undelivered events are
    /// kept at exit and picked up from at start (none: they are lost at exit, with a warning).
    pub fn start(socket: PathBuf, pending: Option<PathBuf>) -> std::io::Result<Forwarder> {
        let shared = Arc::new(Shared {
            queue: Mutex::new((VecDeque::new(), 0)),
            inflight: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            pending,
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("thoth-forward".into())
            .spawn(move || run(socket, s))?;
        Ok(Forwarder {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues one event line (a JSON object); counts it dropped when the queue is full.
    pub fn push(&self, line: Vec<u8>) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.0.len() >= MAX_EVENTS || q.1 + line.len() > MAX_BYTES {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.1 += line.len();
        q.0.push_back(line);
    }

    /// Tries to deliver what is queued within `deadline`, then stops.
    pub fn shutdown(&self, deadline: Duration) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.thread().unpark();
            // Whether or not the thread finished, what it did not deliver is kept.
            let _ = super::join_within(t, deadline);
            keep_undelivered(&self.shared);
        }
    }
}

fn run(socket: PathBuf, s: Arc<Shared>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut client: Option<
        thoth_proto::fleet::local_agent_client::LocalAgentClient<tonic::transport::Channel>,
    > = None;
    let mut failures = 0u32;
    let mut retry_at = Instant::now();
    load_pending(&s);
    loop {
        let stopping = s.stop.load(Ordering::SeqCst);
        let mut batch: Vec<Vec<u8>> = {
            let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
            let n = q.0.len().min(BATCH);
            let b: Vec<Vec<u8>> = q.0.drain(..n).collect();
            q.1 -= b.iter().map(Vec::len).sum::<usize>();
            b
        };
        let dropped = s.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            batch.insert(0, dropped_event(dropped).into_bytes());
        }
        if batch.is_empty() {
            if stopping {
                return;
            }
            std::thread::park_timeout(Duration::from_millis(50));
            continue;
        }
        if Instant::now() < retry_at && !stopping {
            requeue(&s, batch);
            std::thread::park_timeout(Duration::from_millis(50));
            continue;
        }
        *s.inflight.lock().unwrap_or_else(|p| p.into_inner()) = batch.clone();
        let sent = rt.block_on(async {
            if client.is_none() {
                let ch = crate::daemon::tls::local_channel(&socket)?;
                client = Some(thoth_proto::fleet::local_agent_client::LocalAgentClient::new(ch));
            }
            let c = client.as_mut().expect("set above");
            tokio::time::timeout(
                Duration::from_secs(5),
                c.emit_events(thoth_proto::fleet::LocalEvents {
                    events: batch.clone(),
                }),
            )
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|s| s.message().to_owned())
        });
        s.inflight.lock().unwrap_or_else(|p| p.into_inner()).clear();
        match sent {
            Ok(r) => {
                failures = 0;
                let dropped = r.into_inner().dropped;
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "the agent could not keep some events (counted there)"
                    );
                }
            }
            Err(e) => {
                if stopping {
                    tracing::warn!("the agent did not take the events at exit: {e}");
                    requeue(&s, batch);
                    return;
                }
                client = None;
                failures = failures.saturating_add(1);
                let wait = crate::daemon::backoff(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                );
                tracing::debug!("agent unreachable for events ({e}); retrying in {wait:?}");
                retry_at = Instant::now() + wait;
                requeue(&s, batch);
            }
        }
    }
}

fn requeue(s: &Shared, batch: Vec<Vec<u8>>) {
    let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
    for line in batch.into_iter().rev() {
        if q.0.len() >= MAX_EVENTS || q.1 + line.len() > MAX_BYTES {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        q.1 += line.len();
        q.0.push_front(line);
    }
}

/// The events earlier proxies could not deliver, put first in the queue. Each file is removed
/// once read: from then on its events are this proxy's to deliver, or to keep again at exit
/// (so they are never kept twice). Lines that are not JSON objects are skipped.
fn load_pending(s: &Shared) {
    let Some(dir) = &s.pending else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(PathBuf, u64)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let meta = e.metadata().ok()?;
            let p = e.path();
            (meta.is_file() && p.extension().is_some_and(|x| x == "jsonl"))
                .then_some((p, meta.len()))
        })
        .collect();
    files.sort();
    let mut lines = Vec::new();
    let mut budget = MAX_BYTES as u64 / 2;
    for (f, len) in files {
        if len > MAX_BYTES as u64 {
            tracing::warn!(file = %f.display(), bytes = len, "a pending events file too large to send; removed");
            let _ = std::fs::remove_file(&f);
            continue;
        }
        if len > budget {
            continue; // for the next proxy
        }
        let Ok(text) = std::fs::read(&f) else {
            continue;
        };
        if std::fs::remove_file(&f).is_err() {
            continue; // another proxy took it
        }
        budget -= len;
        for line in text.split(|b| *b == b'\n') {
            if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line).is_ok() {
                lines.push(line.to_vec());
            }
        }
    }
    if !lines.is_empty() {
        tracing::info!(
            events = lines.len(),
            "sending events an earlier proxy could not deliver"
        );
    }
    requeue(s, lines);
}

/// Writes what is still queued or in flight to a new file in the pending directory.
fn keep_undelivered(s: &Shared) {
    let mut lines: Vec<Vec<u8>> =
        std::mem::take(&mut *s.inflight.lock().unwrap_or_else(|p| p.into_inner()));
    {
        let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
        lines.extend(q.0.drain(..));
        q.1 = 0;
    }
    let dropped = s.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        lines.push(dropped_event(dropped).into_bytes());
    }
    if lines.is_empty() {
        return;
    }
    let Some(dir) = &s.pending else {
        tracing::warn!(
            lost = lines.len(),
            "events not delivered to the agent before exit (no pending directory)"
        );
        return;
    };
    match write_pending(dir, &lines) {
        Ok(path) => tracing::warn!(
            events = lines.len(),
            file = %path.display(),
            "the agent did not take every event before exit; kept for the next proxy"
        ),
        Err(e) => tracing::warn!(
            lost = lines.len(),
            "events not delivered to the agent before exit: {e}"
        ),
    }
}

fn write_pending(dir: &std::path::Path, lines: &[Vec<u8>]) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let used: u64 = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let size: usize = lines.iter().map(|l| l.len() + 1).sum();
    if used + size as u64 > MAX_PENDING_BYTES {
        return Err(format!(
            "{} already holds {used} bytes (limit {MAX_PENDING_BYTES})",
            dir.display()
        ));
    }
    let name = format!(
        "{}-{}.jsonl",
        humantime::format_rfc3339_micros(std::time::SystemTime::now())
            .to_string()
            .replace(':', ""),
        std::process::id()
    );
    let path = dir.join(name);
    let mut body = Vec::with_capacity(size);
    for l in lines {
        body.extend_from_slice(l);
        body.push(b'\n');
    }
    crate::daemon::state::write_atomic(&path, &body, 0o600)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn dropped_event(dropped: u64) -> String {
    serde_json::json!({
        "eventId": uuid::Uuid::now_v7().to_string(),
        "eventType": "EVENTS_DROPPED",
        "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "sourceType": "proxy",
        "detail": {"dropped": dropped, "reason": "the proxy's queue for the agent was full"},
    })
    .to_string()
}
