//! Sends a proxy's events to the agent over its local socket, off the hot path: a bounded
//! in-memory queue (overflow counted and sent as `EVENTS_DROPPED`) drained by a thread that
//! retries with backoff while the agent is unreachable. Tool calls never wait for it.
//!
//! What the agent has not acknowledged when the proxy exits (the agent down or restarting, or
//! too slow to make them durable within the exit deadline) is kept in the user's pending
//! directory (`~/.local/state/thoth/pending`, 0600 files of at most 8 MiB); the next proxy
//! that starts takes those files over (renamed `.taken-PID`) and sends their events first; the
//! files go once the agent has them, or once the proxy kept them again at its exit. The agent
//! drops an identical re-send from the same OS user (by the proxy's `eventId` and the record's
//! content), so an event sent twice is stored once. Events the agent refuses (invalid, or of a
//! type a proxy may not send) are counted there and not sent again.

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
/// Largest batch in bytes: with one event of at most 256 KiB past it, well under the agent's
/// `MAX_MESSAGE_BYTES` (`thoth_agent::daemon::local`).
pub const BATCH_BYTES: usize = 2 << 20;

struct Shared {
    queue: Mutex<(VecDeque<Vec<u8>>, usize)>,
    /// The batch being sent (kept on exit if the send does not finish).
    inflight: Mutex<Vec<Vec<u8>>>,
    /// Pending files this proxy took over (deleted once their events are delivered or kept).
    taken: Mutex<Vec<PathBuf>>,
    dropped: AtomicU64,
    stop: AtomicBool,
    pending: Option<PathBuf>,
    /// Who the proxy's events are from (for its own `EVENTS_DROPPED`; the agent forces them).
    identity: thoth_proto::Identity,
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
    /// Events are sent as they are given: unchained (the agent chains them).
    pub fn start(
        socket: PathBuf,
        pending: Option<PathBuf>,
        identity: thoth_proto::Identity,
    ) -> std::io::Result<Forwarder> {
        let shared = Arc::new(Shared {
            queue: Mutex::new((VecDeque::new(), 0)),
            inflight: Mutex::new(Vec::new()),
            taken: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            pending,
            identity,
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
            let _ = crate::join::join_within(t, deadline);
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
            // At most BATCH events and BATCH_BYTES (at least one event): a batch always fits
            // the agent's message limit.
            let mut n = 0;
            let mut bytes = 0;
            while n < q.0.len().min(BATCH) && (n == 0 || bytes + q.0[n].len() <= BATCH_BYTES) {
                bytes += q.0[n].len();
                n += 1;
            }
            let b: Vec<Vec<u8>> = q.0.drain(..n).collect();
            q.1 -= b.iter().map(Vec::len).sum::<usize>();
            b
        };
        let dropped = s.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            batch.insert(0, dropped_event(&s.identity, dropped));
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
                let ch = thoth_endpoint::tls::local_channel(&socket)?;
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
            .map_err(|_| SendError::Timeout)?
            .map_err(SendError::Agent)
        });
        s.inflight.lock().unwrap_or_else(|p| p.into_inner()).clear();
        match sent {
            Ok(r) => {
                failures = 0;
                let empty = s.queue.lock().map(|q| q.0.is_empty()).unwrap_or(false);
                if empty {
                    // Everything taken from earlier proxies went before what is queued now.
                    release_taken(&s);
                }
                let r = r.into_inner();
                if r.refused > 0 {
                    // Refused events are invalid: sending them again would not help.
                    tracing::warn!(
                        refused = r.refused,
                        "the agent refused some events (counted there): {}",
                        r.refusal
                    );
                }
                let dropped = r.dropped;
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
                let wait = thoth_endpoint::backoff::backoff(
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

/// Largest pending file written (larger undelivered backlogs are split).
const PENDING_FILE_BYTES: usize = 8 << 20;

/// Whether process `pid` is alive (a proxy that took pending files and may still send them).
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // Signal 0 only checks that the process exists (EPERM: it does, as another user).
        let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return false;
        };
        match rustix::process::test_kill_process(pid) {
            Ok(()) => true,
            Err(e) => e == rustix::io::Errno::PERM,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// The events earlier proxies could not deliver, put first in the queue. Each file is taken by
/// renaming it to `NAME.taken-PID`: it is deleted once its events reached the agent, or once
/// this proxy kept them again at exit; a taken file whose proxy died is taken over again. Lines
/// that are not JSON objects are skipped.
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
            let meta = e.metadata().ok()?; // does not follow symlinks
            if !meta.is_file() {
                return None;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let takeable = name.ends_with(".jsonl")
                || name
                    .rsplit_once(".jsonl.taken-")
                    .and_then(|(_, pid)| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !alive(pid));
            takeable.then_some((e.path(), meta.len()))
        })
        .collect();
    files.sort();
    let mut lines = Vec::new();
    let mut bytes = 0u64;
    let mut taken = Vec::new();
    for (f, len) in files {
        if len > (MAX_BYTES / 2) as u64 {
            tracing::warn!(file = %f.display(), bytes = len, "a pending events file too large to send; removed");
            let _ = std::fs::remove_file(&f);
            continue;
        }
        if bytes + len > (MAX_BYTES / 2) as u64 || lines.len() >= MAX_EVENTS / 2 {
            break; // the rest waits for the next proxy
        }
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let base = name.split(".taken-").next().unwrap_or(&name).to_owned();
        let mine = f.with_file_name(format!("{base}.taken-{}", std::process::id()));
        if std::fs::rename(&f, &mine).is_err() {
            continue; // another proxy took it first
        }
        let Ok(text) = std::fs::read(&mine) else {
            continue;
        };
        bytes += len;
        for line in text.split(|b| *b == b'\n') {
            if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line).is_ok() {
                lines.push(line.to_vec());
            }
        }
        taken.push(mine);
    }
    if !lines.is_empty() {
        tracing::info!(
            events = lines.len(),
            "sending events an earlier proxy could not deliver"
        );
    }
    requeue(s, lines);
    *s.taken.lock().unwrap_or_else(|p| p.into_inner()) = taken;
}

/// Deletes the taken pending files (their events are with the agent, or kept again).
fn release_taken(s: &Shared) {
    for f in std::mem::take(&mut *s.taken.lock().unwrap_or_else(|p| p.into_inner())) {
        let _ = std::fs::remove_file(f);
    }
}

/// Writes what is still queued or in flight to new files in the pending directory.
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
        lines.push(dropped_event(&s.identity, dropped));
    }
    if lines.is_empty() {
        release_taken(s);
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
        Ok(n) => {
            // Only now: until these files exist, the taken ones are the only copy.
            release_taken(s);
            tracing::warn!(
                events = lines.len(),
                files = n,
                dir = %dir.display(),
                "the agent did not take every event before exit; kept for the next proxy"
            );
        }
        Err(e) => tracing::warn!(
            lost = lines.len(),
            "events not delivered to the agent before exit: {e}"
        ),
    }
}

/// Why a batch did not reach the agent.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// The agent's socket cannot be connected to.
    #[error(transparent)]
    Channel(#[from] thoth_endpoint::tls::TlsError),
    /// No answer in time.
    #[error("timeout")]
    Timeout,
    /// The agent answered with an error status.
    #[error("{}", .0.message())]
    Agent(tonic::Status),
}

/// Why events cannot be left in the pending directory ([`write_pending`]).
#[derive(Debug, thiserror::Error)]
enum PendingError {
    /// A directory or file cannot be written.
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The directory is full.
    #[error("{} already holds {used} bytes (limit {MAX_PENDING_BYTES})", dir.display())]
    Full { dir: std::path::PathBuf, used: u64 },
}

/// Writes `lines` as files of at most [`PENDING_FILE_BYTES`]; returns how many.
fn write_pending(dir: &std::path::Path, lines: &[Vec<u8>]) -> Result<usize, PendingError> {
    std::fs::create_dir_all(dir).map_err(|source| PendingError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let used: u64 = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let size: usize = lines.iter().map(|l| l.len() + 1).sum();
    if used + size as u64 > MAX_PENDING_BYTES {
        return Err(PendingError::Full {
            dir: dir.to_owned(),
            used,
        });
    }
    let stamp = humantime::format_rfc3339_micros(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let mut n = 0;
    let mut body = Vec::new();
    let flush = |body: &mut Vec<u8>, n: &mut usize| -> Result<(), PendingError> {
        let path = dir.join(format!("{stamp}-{}-{:04}.jsonl", std::process::id(), *n));
        if let Err(source) = thoth_endpoint::state::write_atomic(&path, body, 0o600) {
            return Err(PendingError::Io { path, source });
        }
        *n += 1;
        body.clear();
        Ok(())
    };
    for l in lines {
        if !body.is_empty() && body.len() + l.len() + 1 > PENDING_FILE_BYTES {
            flush(&mut body, &mut n)?;
        }
        body.extend_from_slice(l);
        body.push(b'\n');
    }
    if !body.is_empty() {
        flush(&mut body, &mut n)?;
    }
    Ok(n)
}

/// The proxy's `EVENTS_DROPPED` for the agent (unchained, as every event it hands over).
fn dropped_event(identity: &thoth_proto::Identity, dropped: u64) -> Vec<u8> {
    let mut e = thoth_proto::Event::events_dropped(
        uuid::Uuid::now_v7().to_string(),
        humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        identity,
        &thoth_proto::Dropped::new(dropped, "the proxy's queue for the agent was full"),
    );
    e.source_type = Some("proxy".into());
    serde_json::to_vec(&e).expect("an event is always valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(dir: &std::path::Path) -> Shared {
        Shared {
            queue: Mutex::new((VecDeque::new(), 0)),
            inflight: Mutex::new(Vec::new()),
            taken: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            pending: Some(dir.to_path_buf()),
            identity: thoth_proto::Identity {
                tenant_id: "t".into(),
                agent_id: "a".into(),
                hostname: "h".into(),
                user: "u".into(),
            },
        }
    }

    fn event(i: usize, pad: usize) -> Vec<u8> {
        format!("{{\"eventId\":\"e{i}\",\"pad\":\"{}\"}}", "x".repeat(pad)).into_bytes()
    }

    #[test]
    fn a_large_backlog_is_split_and_taken_files_of_dead_proxies_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = shared(dir.path());
        // 12 MiB of events: two files of at most 8 MiB.
        let lines: Vec<Vec<u8>> = (0..12).map(|i| event(i, 1 << 20)).collect();
        assert_eq!(write_pending(dir.path(), &lines).unwrap(), 2);
        for e in std::fs::read_dir(dir.path()).unwrap() {
            assert!(e.unwrap().metadata().unwrap().len() <= PENDING_FILE_BYTES as u64 + (2 << 20));
        }
        // A file taken by a proxy that died, and one taken by a live one (this process).
        std::fs::write(dir.path().join("a.jsonl.taken-999999999"), event(100, 1)).unwrap();
        let live = dir
            .path()
            .join(format!("b.jsonl.taken-{}", std::process::id()));
        std::fs::write(&live, event(200, 1)).unwrap();
        std::fs::write(dir.path().join("c.jsonl"), b"not json\n").unwrap();
        load_pending(&s);
        let q = s.queue.lock().unwrap();
        let ids: Vec<String> = q
            .0
            .iter()
            .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap()["eventId"].to_string())
            .collect();
        assert!(
            ids.contains(&"\"e100\"".to_owned()),
            "the dead proxy's file is taken over"
        );
        assert!(
            !ids.contains(&"\"e200\"".to_owned()),
            "a live proxy's file is left to it"
        );
        assert!(live.exists());
        drop(q);
        // Kept again at exit: new files, and the taken ones are gone.
        keep_undelivered(&s);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.contains(".taken-999999999")),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.starts_with("b.jsonl.taken-")));
    }
}
