//! Behavioral events, written off the hot path.
//!
//! The relay threads push small records into a bounded in-memory queue (a mutex-protected
//! deque: no syscall, no thread wake-up on the hot path). A writer thread wakes every few
//! milliseconds and renders each event once, typed (redaction, size cap, UUIDv7, timestamp).
//! With an events file (`--events`, standalone) it puts them on the hash chain and appends them
//! to the file under an advisory lock, so several proxies can share one file. Events for an agent
//! alone are handed over unchained: the agent owns the chain and chains them itself (no SHA-256
//! here). When the queue is full, events are dropped and counted, and the count is written as an
//! `EVENTS_DROPPED` event: loss is never silent.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

pub(crate) use crate::event_record::event_action;
pub use crate::event_record::{Decided, Record, SessionInfo};
use crate::event_record::{render, timestamp};
use thoth_proto::{Chain, ContentLimits, Dropped, Event};

/// Most events held in memory before new ones are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 8192;
/// Most content bytes held in memory; past this, content is left out of queued events.
pub const QUEUE_BYTE_BUDGET: usize = 64 << 20;
/// The writer appends to the file in pieces of about this size.
const WRITE_CHUNK: usize = 256 * 1024;
/// How often the writer wakes up to drain the queue.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

struct Queue {
    items: Mutex<VecDeque<Record>>,
    bytes: AtomicUsize,
    dropped: AtomicU64,
    stop: AtomicBool,
}

/// The relay's handle on the event writer. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    queue: Option<Arc<Queue>>,
    writer: Option<Arc<Mutex<Option<JoinHandle<()>>>>>,
    /// The MCP client (`clientName`), once known: `--client`, else the `initialize` request's
    /// `clientInfo.name`. Set once; events written before it is known do not carry it.
    client: Arc<OnceLock<String>>,
}

/// Longest `clientName` kept, in characters.
pub const MAX_CLIENT_NAME_CHARS: usize = 128;

/// A client name as events carry it: control characters removed, surrounding space trimmed,
/// at most [`MAX_CLIENT_NAME_CHARS`]; `None` when nothing is left.
pub fn clean_client_name(name: &str) -> Option<String> {
    let kept: String = name
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_CLIENT_NAME_CHARS)
        .collect();
    let kept = kept.trim_end().to_owned();
    (!kept.is_empty()).then_some(kept)
}

impl EventSink {
    /// A sink that discards everything (no `--events` file).
    pub fn disabled() -> Self {
        Self {
            queue: None,
            writer: None,
            client: Arc::new(OnceLock::new()),
        }
    }

    /// Opens (creating, mode 0600) `path` for appending and starts the writer thread.
    pub fn to_file(
        path: &Path,
        info: SessionInfo,
        limits: ContentLimits,
        agent: Option<std::path::PathBuf>,
    ) -> std::io::Result<Self> {
        let mut opts = OpenOptions::new();
        opts.create(true).append(true).read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(path)?;
        Self::start(Some(file), agent, info, limits)
    }

    /// Events to the agent only (no file).
    pub fn to_agent(
        socket: std::path::PathBuf,
        info: SessionInfo,
        limits: ContentLimits,
    ) -> std::io::Result<Self> {
        Self::start(None, Some(socket), info, limits)
    }

    fn start(
        file: Option<File>,
        agent: Option<std::path::PathBuf>,
        info: SessionInfo,
        limits: ContentLimits,
    ) -> std::io::Result<Self> {
        let forwarder = match agent {
            Some(socket) => Some(Arc::new(crate::forward::Forwarder::start(
                socket,
                crate::forward::pending_dir(),
                info.identity.clone(),
            )?)),
            None => None,
        };
        let queue = Arc::new(Queue {
            items: Mutex::new(VecDeque::with_capacity(256)),
            bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let q = queue.clone();
        let client = Arc::new(OnceLock::new());
        let writer_client = client.clone();
        let handle = thread::Builder::new()
            .name("thoth-events".into())
            .spawn(move || {
                Writer {
                    ids: EventIds::new(),
                    // Only a file's events are chained here; an agent chains what it is given.
                    chain: file.as_ref().map(|_| Chain::new()),
                    file,
                    forwarder,
                    info,
                    client: writer_client,
                    limits,
                    queue: q,
                }
                .run()
            })?;
        Ok(Self {
            queue: Some(queue),
            writer: Some(Arc::new(Mutex::new(Some(handle)))),
            client,
        })
    }

    /// Names the MCP client every later event carries (`clientName`), if it is not named yet
    /// (the first name wins: `--client` is set before the client speaks). The name is cleaned
    /// ([`clean_client_name`]); a name with nothing left is ignored.
    pub fn set_client(&self, name: &str) {
        if self.client.get().is_none()
            && let Some(n) = clean_client_name(name)
        {
            let _ = self.client.set(n);
        }
    }

    /// The MCP client's name, once known.
    pub fn client(&self) -> Option<&str> {
        self.client.get().map(String::as_str)
    }

    /// Whether events are recorded at all (callers skip building records when not).
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues a record. Never blocks on IO; drops (and counts) when the queue is full.
    pub fn push(&self, mut record: Record) {
        let Some(q) = &self.queue else { return };
        let size = record.content_bytes();
        if size > 0 && q.bytes.fetch_add(size, Ordering::Relaxed) + size > QUEUE_BYTE_BUDGET {
            q.bytes.fetch_sub(size, Ordering::Relaxed);
            record.drop_content();
        }
        let mut items = q.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.len() >= QUEUE_CAPACITY {
            drop(items);
            q.bytes.fetch_sub(record.content_bytes(), Ordering::Relaxed);
            q.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        items.push_back(record);
    }

    /// Writes what is queued and stops the writer, waiting at most `deadline`.
    pub fn shutdown(&self, deadline: Duration) {
        let (Some(q), Some(w)) = (&self.queue, &self.writer) else {
            return;
        };
        q.stop.store(true, Ordering::SeqCst);
        let handle = w.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            h.thread().unpark();
            if !crate::join::join_within(h, deadline) {
                tracing::warn!(
                    "event writer did not finish within {deadline:?}; some events may be unwritten"
                );
            }
        }
    }
}

/// UUIDv7 event ids without a system call per id: the 74 "random" bits are a keyed hash
/// (SHA-256 under a secret key drawn once from the OS) of a counter, so ids stay unique but no
/// one can derive the next ids from earlier ones (ids seen in a shared file or a SIEM do not
/// give away a session's future ids).
struct EventIds {
    key: [u8; 32],
    counter: u64,
}

impl EventIds {
    fn new() -> Self {
        let mut key = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
        Self { key, counter: 0 }
    }

    fn next(&mut self, at: SystemTime) -> String {
        use sha2::Digest as _;
        self.counter = self.counter.wrapping_add(1);
        let mut h = sha2::Sha256::new();
        h.update(self.key);
        h.update(self.counter.to_le_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 10];
        bytes.copy_from_slice(&digest[..10]);
        let millis = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(millis, &bytes)
            .into_uuid()
            .to_string()
    }
}

struct Writer {
    ids: EventIds,
    file: Option<File>,
    forwarder: Option<Arc<crate::forward::Forwarder>>,
    /// The file's chain (none when events only go to an agent).
    chain: Option<Chain>,
    info: SessionInfo,
    /// The MCP client's name, once known (shared with the [`EventSink`]).
    client: Arc<OnceLock<String>>,
    limits: ContentLimits,
    queue: Arc<Queue>,
}

impl Writer {
    fn run(mut self) {
        lower_priority();
        let mut batch: Vec<Record> = Vec::new();
        let mut out: Vec<u8> = Vec::with_capacity(WRITE_CHUNK + 64 * 1024);
        loop {
            let stopping = self.queue.stop.load(Ordering::SeqCst);
            {
                let mut items = self.queue.items.lock().unwrap_or_else(|p| p.into_inner());
                batch.extend(items.drain(..));
            }
            let dropped = self.queue.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "the event queue was full; events were dropped (recorded as EVENTS_DROPPED)"
                );
                let now = SystemTime::now();
                let mut e = Event::events_dropped(
                    self.ids.next(now),
                    timestamp(now),
                    &self.info.identity,
                    &Dropped::new(dropped, "the in-memory event queue was full"),
                );
                e.session_id = Some(Cow::Borrowed(&self.info.session_id));
                e.server_name = Some(Cow::Borrowed(&self.info.server_name));
                e.client_name = self.client.get().map(|c| Cow::Borrowed(c.as_str()));
                seal_into(self.chain.as_mut(), &mut e, &mut out);
            }
            for record in batch.drain(..) {
                self.write_record(&record, &mut out);
                self.queue
                    .bytes
                    .fetch_sub(record.content_bytes(), Ordering::Relaxed);
                if out.len() >= WRITE_CHUNK {
                    self.flush(&mut out);
                }
            }
            self.flush(&mut out);
            if stopping {
                if let Some(f) = &self.forwarder {
                    f.shutdown(Duration::from_secs(2));
                }
                return;
            }
            thread::park_timeout(DRAIN_EVERY);
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            return;
        }
        if let Some(f) = &self.forwarder {
            for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                f.push(line.to_vec());
            }
        }
        if self.file.is_none() {
            out.clear();
            return;
        }
        if let Err(e) = self.write(out) {
            tracing::error!(error = %e, "cannot write events; {} bytes of events lost", out.len());
        }
        out.clear();
    }

    fn write(&mut self, out: &[u8]) -> std::io::Result<()> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        file.lock()?;
        let r = self.start_on_a_fresh_line().and_then(|_| {
            let mut f = self.file.as_ref().expect("checked");
            f.write_all(out)?;
            f.flush()
        });
        let _ = self.file.as_ref().expect("checked").unlock();
        r
    }

    /// A writer that died mid-line (killed, disk full) leaves a partial last line; appending to
    /// it would glue our first event onto it. Start on a new line instead, so the damage stays
    /// one line that `thoth events verify` reports, and every chain after it stays readable.
    #[cfg(unix)]
    fn start_on_a_fresh_line(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(mut file) = self.file.as_ref() else {
            return Ok(());
        };
        let len = file.metadata()?.len();
        if len == 0 {
            return Ok(());
        }
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            tracing::warn!("the events file ends in a partial line; starting on a new line");
            file.write_all(b"\n")?;
        }
        Ok(())
    }

    #[cfg(not(unix))]
    fn start_on_a_fresh_line(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// Renders (and, for a file, seals) one record. The event borrows from the record and the
    /// session info (no copies of their strings); only the chain is mutated.
    fn write_record(&mut self, record: &Record, out: &mut Vec<u8>) {
        let event_id = self.ids.next(record.at());
        let mut event = render(&self.info, self.limits, event_id, record);
        event.client_name = self.client.get().map(|c| Cow::Borrowed(c.as_str()));
        seal_into(self.chain.as_mut(), &mut event, out);
    }
}

/// Appends `event`'s line to `out`: put on `chain` first when there is one (a file's), else
/// serialized as it is, off any chain (for an agent, which chains it).
fn seal_into(chain: Option<&mut Chain>, event: &mut Event<'_>, out: &mut Vec<u8>) {
    match chain {
        Some(c) => out.extend_from_slice(&c.seal(event)),
        None => serde_json::to_writer(&mut *out, event).expect("an event is always valid JSON"),
    }
    out.push(b'\n');
}

/// The writer yields the CPU to the relay threads when both want it (a 2-core laptop running the
/// client, the proxy and the server is the common case).
#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value; failure is harmless.
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
