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

use serde_json::Value;
use serde_json::value::RawValue;
use thoth_policy::Decision;

use crate::message::{self, Message};
use thoth_proto::{
    Action, Chain, ContentLimits, Dropped, Event, EventDecision, EventType, Identity, Mode,
    render_content,
};

/// Most events held in memory before new ones are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 8192;
/// Most content bytes held in memory; past this, content is left out of queued events.
pub const QUEUE_BYTE_BUDGET: usize = 64 << 20;
/// What `content` says when it was left out to keep the queue within its byte budget.
const OMITTED: &str = "[content omitted: the event queue was over its byte budget]";
/// The writer appends to the file in pieces of about this size.
const WRITE_CHUNK: usize = 256 * 1024;
/// How often the writer wakes up to drain the queue.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// What the session knows about itself: copied into every event.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Chain owner, tenant, host and user.
    pub identity: Identity,
    /// This session's id (UUIDv7).
    pub session_id: String,
    /// The MCP server's name.
    pub server_name: String,
}

/// The decision part of an event, with the policy version it came from.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The decision; `action` may be rewritten after approval (`approved`, `denied`).
    pub action: Action,
    /// The evaluator's decision.
    pub decision: Decision,
    /// The policy version.
    pub policy_version: String,
    /// A call held for approval: the approval's id (the proxy's own, or once the agent
    /// answered, the agent's).
    pub approval_id: Option<String>,
}

/// One record pushed by the relay.
#[derive(Debug)]
pub enum Record {
    /// `TOOL_CALL_PRE`.
    Pre {
        /// When the call arrived.
        at: SystemTime,
        /// JSON-RPC id text.
        request_id: String,
        /// Tool.
        tool: String,
        /// Arguments, as the client wrote them (JSON text); `None` when left out to keep the
        /// queue within its byte budget.
        arguments: Option<String>,
        /// The decision.
        decided: Arc<Decided>,
        /// Tools already called in the session.
        session_tools: Arc<Vec<String>>,
        /// Time to decide.
        latency_us: u64,
        /// `detail` (DLP findings), if any.
        detail: Option<Value>,
    },
    /// `TOOL_CALL_POST`.
    Post {
        /// When the answer went out.
        at: SystemTime,
        /// JSON-RPC id text.
        request_id: String,
        /// Tool.
        tool: String,
        /// The answer line as sent (result, error, or the denial).
        response: Option<Arc<Vec<u8>>>,
        /// The decision that let the call through or stopped it.
        decided: Arc<Decided>,
        /// Tools already called in the session.
        session_tools: Arc<Vec<String>>,
        /// From arrival of the call to its answer.
        latency_us: u64,
        /// `detail` (DLP findings), if any.
        detail: Option<Value>,
    },
    /// `APPROVAL_REQUESTED` / `APPROVAL_DECIDED`.
    Approval {
        /// When.
        at: SystemTime,
        /// Which of the two.
        kind: EventType,
        /// JSON-RPC id text of the call.
        request_id: String,
        /// Tool.
        tool: String,
        /// The decision.
        decided: Arc<Decided>,
        /// Channel and outcome.
        detail: Value,
    },
    /// `TOOL_DEFINITION_CHANGED` / `TOOL_DEFINITION_SUSPICIOUS`, raised by the proxy.
    Integrity {
        /// When.
        at: SystemTime,
        /// Which of the two.
        kind: EventType,
        /// Tool.
        tool: String,
        /// `decision.action`.
        action: Action,
        /// `decision.rule`.
        rule: &'static str,
        /// `decision.reason`.
        reason: String,
        /// The policy version in force.
        policy_version: String,
        /// What changed or looks poisoned.
        detail: Value,
    },
}

impl Record {
    fn content_bytes(&self) -> usize {
        match self {
            Record::Post {
                response: Some(r), ..
            } => r.len(),
            Record::Pre {
                arguments: Some(a), ..
            } => a.len(),
            _ => 0,
        }
    }

    fn at(&self) -> SystemTime {
        match self {
            Record::Pre { at, .. }
            | Record::Post { at, .. }
            | Record::Approval { at, .. }
            | Record::Integrity { at, .. } => *at,
        }
    }

    fn drop_content(&mut self) {
        match self {
            Record::Post { response, .. } => *response = None,
            Record::Pre { arguments, .. } => *arguments = None,
            Record::Approval { .. } | Record::Integrity { .. } => {}
        }
    }
}

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

fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// The event's word for the policy's action.
pub(crate) fn event_action(a: thoth_policy::Action) -> Action {
    match a {
        thoth_policy::Action::Allow => Action::Allow,
        thoth_policy::Action::Warn => Action::Warn,
        thoth_policy::Action::WouldBlock => Action::WouldBlock,
        thoth_policy::Action::StepUp => Action::StepUp,
        thoth_policy::Action::Deny => Action::Deny,
    }
}

fn event_mode(m: thoth_policy::Mode) -> Mode {
    match m {
        thoth_policy::Mode::Allow => Mode::Allow,
        thoth_policy::Mode::Observe => Mode::Observe,
        thoth_policy::Mode::Progressive => Mode::Progressive,
        thoth_policy::Mode::StepUp => Mode::StepUp,
        thoth_policy::Mode::Block => Mode::Block,
    }
}

/// The fields every event of this session has.
fn base<'r>(info: &'r SessionInfo, kind: EventType, event_id: String, at: SystemTime) -> Event<'r> {
    let mut e = Event::new(kind, event_id, timestamp(at), &info.identity);
    e.session_id = Some(Cow::Borrowed(&info.session_id));
    e.server_name = Some(Cow::Borrowed(&info.server_name));
    e
}

#[allow(clippy::too_many_arguments)]
fn tool_event<'r>(
    info: &'r SessionInfo,
    kind: EventType,
    event_id: String,
    at: SystemTime,
    request_id: &'r str,
    tool: &'r str,
    d: &'r Decided,
) -> Event<'r> {
    let mut e = base(info, kind, event_id, at);
    e.source_type = Some(Cow::Borrowed("agent_tool_call"));
    e.tool_name = Some(Cow::Borrowed(tool));
    e.request_id = Some(Cow::Borrowed(request_id));
    e.decision = Some(EventDecision {
        action: d.action,
        mode: Some(event_mode(d.decision.mode)),
        rule: Some(Cow::Borrowed(&d.decision.rule)),
        reason: Some(Cow::Borrowed(&d.decision.reason)),
    });
    e.policy_version = Some(Cow::Borrowed(&d.policy_version));
    if matches!(kind, EventType::ToolCallPre | EventType::ToolCallPost) {
        e.approval_id = d.approval_id.as_deref().map(Cow::Borrowed);
    }
    e
}

fn set_content(e: &mut Event<'_>, json: &str, limits: ContentLimits) {
    let c = render_content(json, limits);
    e.content = Some(Cow::Owned(c.text));
    if c.truncated {
        e.content_truncated = Some(true);
        e.content_sha256 = c.sha256.map(Cow::Owned);
    }
}

fn render<'r>(
    info: &'r SessionInfo,
    limits: ContentLimits,
    event_id: String,
    record: &'r Record,
) -> Event<'r> {
    match record {
        Record::Pre {
            at,
            request_id,
            tool,
            arguments,
            decided,
            session_tools,
            latency_us,
            detail,
        } => {
            let mut e = tool_event(
                info,
                EventType::ToolCallPre,
                event_id,
                *at,
                request_id,
                tool,
                decided,
            );
            match arguments {
                Some(a) => set_content(&mut e, a, limits),
                None => e.content = Some(Cow::Borrowed(OMITTED)),
            }
            e.session_tool_calls = Some(Cow::Borrowed(session_tools.as_slice()));
            e.latency_us = Some(*latency_us);
            e.detail = detail.clone();
            e
        }
        Record::Post {
            at,
            request_id,
            tool,
            response,
            decided,
            session_tools,
            latency_us,
            detail,
        } => {
            let mut e = tool_event(
                info,
                EventType::ToolCallPost,
                event_id,
                *at,
                request_id,
                tool,
                decided,
            );
            match response.as_deref().map(|r| message::classify(r)) {
                Some(Ok(Message::Response { result, error, .. })) => {
                    let is_error = error.is_some() || result.is_some_and(result_is_error);
                    e.is_error = Some(is_error);
                    let body = result.or(error).map(|r| r.get()).unwrap_or("null");
                    set_content(&mut e, body, limits);
                }
                Some(_) => e.content = Some(Cow::Borrowed("[unparseable response]")),
                None => e.content = Some(Cow::Borrowed(OMITTED)),
            }
            e.session_tool_calls = Some(Cow::Borrowed(session_tools.as_slice()));
            e.latency_us = Some(*latency_us);
            e.detail = detail.clone();
            e
        }
        Record::Approval {
            at,
            kind,
            request_id,
            tool,
            decided,
            detail,
        } => {
            let mut e = tool_event(info, *kind, event_id, *at, request_id, tool, decided);
            e.detail = Some(detail.clone());
            e
        }
        Record::Integrity {
            at,
            kind,
            tool,
            action,
            rule,
            reason,
            policy_version,
            detail,
        } => {
            let mut e = base(info, *kind, event_id, *at);
            e.tool_name = Some(Cow::Borrowed(tool));
            e.decision = Some(EventDecision {
                action: *action,
                mode: None,
                rule: Some(Cow::Borrowed(rule)),
                reason: Some(Cow::Borrowed(reason)),
            });
            e.policy_version = Some(Cow::Borrowed(policy_version));
            e.detail = Some(detail.clone());
            e
        }
    }
}

/// Whether a `tools/call` result says `isError: true`.
fn result_is_error(result: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Flag {
        #[serde(rename = "isError", default)]
        is_error: Option<bool>,
    }
    serde_json::from_str::<Flag>(result.get())
        .ok()
        .and_then(|f| f.is_error)
        == Some(true)
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
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_unique_ordered_uuid_v7() {
        let mut ids = EventIds::new();
        let at = SystemTime::now();
        let a: Vec<String> = (0..1000).map(|_| ids.next(at)).collect();
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len());
        let u = uuid::Uuid::parse_str(&a[0]).unwrap();
        assert_eq!(u.get_version_num(), 7);
    }

    /// Finding 13.2: ids were a seed plus a counter, so one id gave away every later one. Now
    /// the random part of consecutive ids (same millisecond) shares nothing predictable.
    #[test]
    fn event_ids_cannot_be_derived_from_earlier_ones() {
        let mut ids = EventIds::new();
        let at = SystemTime::now();
        let rand_part = |s: &str| {
            let b = *uuid::Uuid::parse_str(s).unwrap().as_bytes();
            u64::from_be_bytes(b[8..16].try_into().unwrap()) & 0x3fff_ffff_ffff_ffff
        };
        let a: Vec<u64> = (0..64).map(|_| rand_part(&ids.next(at))).collect();
        // With seed + counter, the next id is the previous one plus one.
        let successors = a
            .windows(2)
            .filter(|w| w[1] == w[0].wrapping_add(1))
            .count();
        assert_eq!(successors, 0, "ids follow each other: {a:x?}");
        // And another session's ids share nothing with these.
        let mut other = EventIds::new();
        let b: Vec<u64> = (0..64).map(|_| rand_part(&other.next(at))).collect();
        assert!(a.iter().all(|x| !b.contains(x)));
        // Bits differ all over, not just in the low ones.
        let differing = (a[0] ^ a[1]).count_ones();
        assert!(differing > 8, "{:x} vs {:x}", a[0], a[1]);
    }
}
