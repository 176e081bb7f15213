//! The event pipeline on the agent: events from proxies and from the agent itself go through a
//! bounded channel to the spool thread (chain, append, group commit every ~50 ms), and an
//! uploader streams durable events to the controller, deleting them once acknowledged.
//!
//! The agent owns event identity: each proxy event is checked on its own ([`admit`]: only the
//! types a proxy may send, their fields and types, a size cap; identity fields forced from the
//! agent and the caller's OS user; clock skew flagged), gets an `eventId` from the agent (the
//! proxy's is kept as `proxyEventId`), and is de-duplicated only against an identical record
//! from the same caller. Uploads are capped by count and bytes; a record the controller keeps
//! refusing is quarantined rather than retried forever, and a stalled upload or a spool that
//! cannot write (disk full: backoff, bounded logs, proxies told to keep their events) is an
//! error in the status.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
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
/// Bytes per upload batch, at most (one record more when a single record is larger). Far under
/// the controller's limits (1 MiB per event, 5,000 events and a 64 MiB message per batch).
pub const BATCH_BYTES: usize = 4 << 20;
/// Events sent but not yet acknowledged, at most.
pub const IN_FLIGHT: u64 = 5_000;
/// Largest event a proxy may send (its content is capped far lower; the controller takes 1 MiB).
pub const MAX_PROXY_EVENT_BYTES: usize = 256 << 10;
/// A proxy event whose timestamp is further than this from the agent's clock is flagged
/// (`clockSkewSecs`), not refused: pending events of an earlier proxy are legitimately old.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// The only event types a proxy may send; every other type is the agent's or the controller's.
pub const PROXY_EVENT_TYPES: [&str; 5] = [
    "TOOL_CALL_PRE",
    "TOOL_CALL_POST",
    "APPROVAL_REQUESTED",
    "APPROVAL_DECIDED",
    "EVENTS_DROPPED",
];
/// Upload attempts ending without progress while events wait, before the upload counts as
/// stalled (an error in every status).
pub const STALL_ATTEMPTS: u32 = 2;
/// No acknowledgement for this long while events wait: stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(300);
/// Refusals of a batch with no progress before records are sent one at a time to find the one
/// the controller refuses.
const ISOLATE_AFTER: u32 = 2;
/// Refusals of a single record before it is quarantined (kept aside, reported, skipped).
const QUARANTINE_AFTER: u32 = 2;
/// How long a proxy waits, at most, for its events to become durable before it is told to retry.
const DURABLE_WAIT: Duration = Duration::from_secs(4);
/// (caller, proxy event id) keys remembered for de-duplication.
const SEEN_MAX: usize = 200_000;

/// Durable events as (seq, canonical bytes).
pub type Records = Vec<(u64, Vec<u8>)>;

/// What the spool thread answers a proxy's batch: (accepted, duplicates, last seq), or why the
/// spool cannot take events now.
type BatchReply = Result<(u32, u32, u64), String>;

enum Cmd {
    Append(Map<String, Value>),
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
    stuck_at: u64,
    refusals: u32,
    /// Send one record per batch until `acked` reaches this.
    isolate_until: u64,
    /// Refusals per single record.
    strikes: HashMap<u64, u32>,
    /// Quarantined records still on the spool: never sent again.
    skip: BTreeSet<u64>,
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

    fn progressed(&mut self) {
        self.failures = 0;
        self.refusals = 0;
        self.last_error = None;
        self.progress_at = Instant::now();
    }
}

/// Refused proxy events, summarised into at most one `EVENTS_REFUSED` event a minute.
#[derive(Debug, Default)]
struct Refusals {
    pending: u64,
    by: std::collections::BTreeMap<String, u64>,
    last_reason: String,
    raised_at: Option<Instant>,
}

/// A handle to the spool thread.
#[derive(Clone)]
pub struct SpoolHandle {
    tx: SyncSender<Cmd>,
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
    refusals: Arc<Mutex<Refusals>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A proxy's event as the agent will chain it, with its de-duplication key and digest.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The normalised event (no `eventId` yet: the agent assigns it).
    pub event: Map<String, Value>,
    /// The caller and the proxy's own event id.
    key: String,
    /// What makes two records identical.
    digest: [u8; 32],
    /// Whose spool quota the record counts against (the caller's owning login user).
    pub(crate) owner: String,
    /// About what the record takes in the spool.
    size: u64,
}

/// Unacknowledged proxy records per owner, as runs of one owner's records: what each user holds
/// of the spool (their quota), and whose records the size bound deleted.
#[derive(Default)]
struct Owed {
    /// (first seq, last seq, owner, bytes, records), oldest first.
    runs: VecDeque<(u64, u64, Arc<str>, u64, u64)>,
    by: HashMap<Arc<str>, u64>,
}

impl Owed {
    fn add(&mut self, seq: u64, owner: &str, bytes: u64) {
        *self.by.entry(Arc::from(owner)).or_default() += bytes;
        match self.runs.back_mut() {
            Some(r) if &*r.2 == owner => {
                r.1 = seq;
                r.3 += bytes;
                r.4 += 1;
            }
            _ => self.runs.push_back((seq, seq, Arc::from(owner), bytes, 1)),
        }
    }

    fn held(&self, owner: &str) -> u64 {
        self.by.get(owner).copied().unwrap_or(0)
    }

    /// Forgets records at or before `upto` (a run cut in two is shared out in proportion);
    /// returns how many records per owner.
    fn release(&mut self, upto: u64) -> std::collections::BTreeMap<String, u64> {
        let mut gone = std::collections::BTreeMap::new();
        while let Some(r) = self.runs.front_mut() {
            if r.0 > upto {
                break;
            }
            let (n, bytes) = if r.1 <= upto {
                (r.4, r.3)
            } else {
                let n = (upto - r.0 + 1).min(r.4 - 1);
                let bytes = r.3 / r.4 * n;
                r.0 = upto + 1;
                r.3 -= bytes;
                r.4 -= n;
                (n, bytes)
            };
            let owner = Arc::clone(&r.2);
            if r.1 <= upto {
                self.runs.pop_front();
            }
            if n > 0 {
                *gone.entry(owner.to_string()).or_default() += n;
            }
            if let Some(b) = self.by.get_mut(&owner) {
                *b = b.saturating_sub(bytes);
                if *b == 0 {
                    self.by.remove(&owner);
                }
            }
            if n == 0 {
                break;
            }
        }
        gone
    }
}

/// Fields the agent owns: whatever a proxy puts there is replaced or removed.
const AGENT_FIELDS: [&str; 11] = [
    "agentId",
    "tenantId",
    "hostname",
    "user",
    "sourceType",
    "seq",
    "prevHash",
    "hash",
    "proxyEventId",
    "clockSkewSecs",
    "eventIdReused",
];
/// Fields left out of a record's identity digest: assigned when it is appended, or relative to
/// the time it arrived (a re-send of the same record must compare equal).
const NOT_DIGESTED: [&str; 8] = [
    "eventId",
    "agentId",
    "tenantId",
    "seq",
    "prevHash",
    "hash",
    "clockSkewSecs",
    "eventIdReused",
];

fn dedup_key(user: &str, proxy_id: &str) -> String {
    format!("{user}\u{0}{proxy_id}")
}

fn digest(event: &Map<String, Value>) -> [u8; 32] {
    let mut m = event.clone();
    for k in NOT_DIGESTED {
        m.remove(k);
    }
    Sha256::digest(thoth_proto::canonical::to_canonical(&Value::Object(m))).into()
}

fn text_field<'a>(m: &'a Map<String, Value>, key: &str, max: usize) -> Result<&'a str, String> {
    match m.get(key) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(s),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{key} is empty")),
        Some(Value::String(_)) => Err(format!("{key} is longer than {max} bytes")),
        Some(_) => Err(format!("{key} is not a string")),
        None => Err(format!("{key} is missing")),
    }
}

fn optional(
    m: &Map<String, Value>,
    key: &str,
    ok: impl Fn(&Value) -> bool,
    what: &str,
) -> Result<(), String> {
    match m.get(key) {
        None => Ok(()),
        Some(v) if ok(v) => Ok(()),
        Some(_) => Err(format!("{key} is not {what}")),
    }
}

/// Deepest nesting of a proxy event's JSON.
pub const MAX_EVENT_DEPTH: usize = 16;
/// Most values (array elements, object keys and members, counted together) in a proxy event's
/// JSON, and at most one per 4 of its bytes (plus 64): parsed, each value takes 32 bytes or more,
/// so `[0,0,…]` would grow ~16 times; real events (long strings, names) are far below either.
pub const MAX_EVENT_VALUES: usize = 16_384;

/// Refuses JSON nested deeper than [`MAX_EVENT_DEPTH`] or with more values than
/// [`MAX_EVENT_VALUES`] allows, before it is parsed (a scan of the bytes: strings skipped,
/// escapes honoured), so what a parsed event takes stays within a few times its size.
fn json_shape(raw: &[u8]) -> Result<(), String> {
    let (mut depth, mut values, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in raw {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                values += 1;
                if depth > MAX_EVENT_DEPTH {
                    return Err(format!("an event nested deeper than {MAX_EVENT_DEPTH}"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' | b':' => values += 1,
            _ => {}
        }
        if values > MAX_EVENT_VALUES {
            return Err(format!(
                "an event of more than {MAX_EVENT_VALUES} JSON values"
            ));
        }
    }
    if values > raw.len() / 4 + 64 {
        return Err(format!(
            "an event of {values} JSON values in {} bytes (at most one per 4 bytes)",
            raw.len()
        ));
    }
    Ok(())
}

/// Checks one event from a proxy and makes it the agent's: only the types a proxy may send, the
/// fields each must have with the right types, at most [`MAX_PROXY_EVENT_BYTES`]; identity fields
/// (`user`, `hostname`, `sourceType`, chain fields) come from the agent and the caller's OS user,
/// never from the proxy; the proxy's `eventId` is kept as `proxyEventId` (the agent assigns the
/// exported one); a timestamp far from the agent's clock is flagged with `clockSkewSecs`.
pub fn admit(raw: &[u8], user: &str, hostname: &str, now: SystemTime) -> Result<Admitted, String> {
    if raw.len() > MAX_PROXY_EVENT_BYTES {
        return Err(format!(
            "an event of {} bytes, over the limit of {MAX_PROXY_EVENT_BYTES}",
            raw.len()
        ));
    }
    json_shape(raw)?;
    let mut m = match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("an event is not a JSON object".into()),
        Err(e) => return Err(format!("an event is not JSON: {e}")),
    };
    let kind = match m.get("eventType") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err("eventType is not a string".into()),
        None => return Err("eventType is missing".into()),
    };
    if !PROXY_EVENT_TYPES.contains(&kind.as_str()) {
        return Err(format!(
            "a proxy may not send {} events (only {})",
            kind.chars().take(64).collect::<String>(),
            PROXY_EVENT_TYPES.join(", ")
        ));
    }
    let proxy_id = text_field(&m, "eventId", 64)?.to_owned();
    let ts = text_field(&m, "timestamp", 64)?;
    let at = humantime::parse_rfc3339(ts)
        .map_err(|e| format!("timestamp {ts:?} is not RFC 3339 UTC: {e}"))?;
    let skew_secs = match at.duration_since(now) {
        Ok(ahead) => (ahead > MAX_CLOCK_SKEW).then_some(ahead.as_secs() as i64),
        Err(e) => (e.duration() > MAX_CLOCK_SKEW).then(|| -(e.duration().as_secs() as i64)),
    };
    let is_str = |v: &Value| v.is_string();
    let is_bool = |v: &Value| v.is_boolean();
    if kind == "EVENTS_DROPPED" {
        let dropped = m
            .get("detail")
            .and_then(|d| d.get("dropped"))
            .and_then(Value::as_u64);
        if dropped.is_none() {
            return Err("an EVENTS_DROPPED event without detail.dropped".into());
        }
    } else {
        text_field(&m, "sessionId", 256)?;
        text_field(&m, "serverName", 1024)?;
        text_field(&m, "toolName", 1024)?;
        if let Some(d) = m.get("decision") {
            let Some(d) = d.as_object() else {
                return Err("decision is not an object".into());
            };
            text_field(d, "action", 64)?;
            for k in ["mode", "rule", "reason"] {
                optional(d, k, is_str, "a string")?;
            }
        }
        optional(&m, "latencyUs", Value::is_u64, "a non-negative integer")?;
        optional(
            &m,
            "sessionToolCalls",
            |v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            "an array of strings",
        )?;
    }
    for k in [
        "content",
        "contentSha256",
        "policyVersion",
        "requestId",
        "clientName",
    ] {
        optional(&m, k, is_str, "a string")?;
    }
    for k in ["contentTruncated", "isError"] {
        optional(&m, k, is_bool, "true or false")?;
    }
    for k in AGENT_FIELDS {
        m.remove(k);
    }
    m.remove("eventId");
    m.insert("proxyEventId".into(), Value::from(proxy_id.clone()));
    m.insert("user".into(), Value::from(user.to_owned()));
    m.insert("hostname".into(), Value::from(hostname.to_owned()));
    let source = if kind == "EVENTS_DROPPED" {
        "proxy"
    } else {
        "agent_tool_call"
    };
    m.insert("sourceType".into(), Value::from(source));
    if let Some(s) = skew_secs {
        m.insert("clockSkewSecs".into(), Value::from(s));
    }
    let digest = digest(&m);
    Ok(Admitted {
        event: m,
        key: dedup_key(user, &proxy_id),
        digest,
        owner: user.to_owned(),
        size: raw.len() as u64 + 512,
    })
}

/// Why a proxy's batch was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolUnavailable(pub String);

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
            return Err(SpoolUnavailable(e));
        }
        let (reply, rx) = oneshot::channel();
        if self.tx.try_send(Cmd::Batch(events, reply)).is_err() {
            // Behind: the proxy keeps the events and re-sends them (never counted as dropped).
            lock(&self.stats).refused += u64::from(n);
            return Err(SpoolUnavailable(
                "the agent's event spool is busy; keep the events and re-send them".into(),
            ));
        }
        let (accepted, dups, last) = match rx.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(SpoolUnavailable(e)),
            Err(_) => return Err(SpoolUnavailable("the spool thread stopped".into())),
        };
        let mut durable = self.durable.clone();
        let mut health = self.health.clone();
        let wait = async {
            tokio::select! {
                r = durable.wait_for(|d| *d >= last) => r.map(|_| ()).map_err(|_| "the spool thread stopped".to_owned()),
                r = health.wait_for(Option::is_some) => Err(r.ok().and_then(|h| h.clone()).unwrap_or_default()),
            }
        };
        match tokio::time::timeout(DURABLE_WAIT, wait).await {
            Ok(Ok(())) => Ok((accepted + dups, n - accepted - dups)),
            Ok(Err(e)) => Err(SpoolUnavailable(e)),
            Err(_) => Err(SpoolUnavailable(format!(
                "the events were not durable within {DURABLE_WAIT:?}"
            ))),
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
    agent_event: impl Fn(&str, Value) -> Map<String, Value> + Send + 'static,
) -> std::io::Result<(SpoolHandle, super::spool::Recovery)> {
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
    agent_event: impl Fn(&str, Value) -> Map<String, Value> + Send + 'static,
) -> std::io::Result<SpoolHandle> {
    // Proxy records already on the chain (from the unacknowledged spool, then as appended), so
    // a proxy re-sending after a lost answer does not put an event on the chain twice.
    let mut seen = Seen {
        map: HashMap::new(),
        order: VecDeque::new(),
    };
    let mut owed = Owed::default();
    // Each user may hold at most this much of the spool unacknowledged: one user cannot fill
    // it and make the size bound delete another user's evidence.
    let quota = spool.max_bytes() / 4;
    for (seq, r) in spool.read_after(spool.acked(), usize::MAX)? {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&r) else {
            continue;
        };
        let (Some(user), Some(pid)) = (
            m.get("user").and_then(Value::as_str),
            m.get("proxyEventId").and_then(Value::as_str),
        ) else {
            continue;
        };
        seen.remember(&dedup_key(user, pid), digest(&m));
        owed.add(seq, user, r.len() as u64);
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
                let stamp = |m: &mut Map<String, Value>| {
                    if let Some((agent, tenant)) = &who {
                        m.insert("agentId".into(), Value::from(agent.clone()));
                        m.insert("tenantId".into(), Value::from(tenant.clone()));
                    }
                };
                match cmd {
                    Some(Cmd::Batch(events, reply)) => {
                        let mut want: HashMap<&str, u64> = HashMap::new();
                        for a in &events {
                            *want.entry(a.owner.as_str()).or_default() += a.size;
                        }
                        let over = want
                            .iter()
                            .find(|(o, n)| owed.held(o) + **n > quota)
                            .map(|(o, _)| (*o).to_owned());
                        if let Some(e) = health_tx.borrow().clone() {
                            // Nothing is taken that cannot be written: the proxy keeps it.
                            let _ = reply.send(Err(e));
                        } else if let Some(owner) = over {
                            // Over quota: refused now, kept by the proxy, re-sent when the
                            // controller has taken this user's earlier events.
                            lock(&st).refused += events.len() as u64;
                            let _ = reply.send(Err(format!(
                                "{owner} already has {} MiB of events waiting for the controller in the agent's spool (the limit per user is {} MiB); keep the events and re-send them later",
                                owed.held(&owner) >> 20,
                                quota >> 20
                            )));
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
                                    e.insert("eventIdReused".into(), Value::Bool(true));
                                    reused += 1;
                                }
                                e.insert(
                                    "eventId".into(),
                                    Value::from(uuid::Uuid::now_v7().to_string()),
                                );
                                stamp(&mut e);
                                match spool.append(e) {
                                    Ok(seq) => {
                                        seen.remember(&a.key, a.digest);
                                        owed.add(seq, &a.owner, a.size);
                                        accepted += 1;
                                    }
                                    Err(err) => {
                                        failed = Some(format!("cannot append to the event spool: {err}"));
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
                        if failing.is_some() || spool.append(e).is_err() {
                            lock(&st).refused += 1;
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
                        let mut ev = agent_event("EVENT_QUARANTINED", detail);
                        stamp(&mut ev);
                        if failing.is_some() || spool.append(ev).is_err() {
                            lock(&st).refused += 1;
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
                    let by_user = owed.release(spool.first_held().saturating_sub(1));
                    tracing::warn!(lost, ?by_user, "the event spool was full: the oldest events were dropped");
                    let mut ev = agent_event(
                        "EVENTS_DROPPED",
                        serde_json::json!({"dropped": lost, "byUser": by_user, "reason": "the agent's event spool reached its size limit; the oldest events were deleted"}),
                    );
                    stamp(&mut ev);
                    let _ = spool.append(ev);
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

/// Whether a status from the controller refuses the batch's content (as opposed to a broken
/// connection or a server fault): the same batch would be refused again.
fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::ResourceExhausted
            | tonic::Code::OutOfRange
            | tonic::Code::FailedPrecondition
    )
}

/// Streams durable events to the controller over `channel` until the stream fails. Progress,
/// failures and the search for a record the controller keeps refusing are kept in
/// `spool.upload` across calls: after [`ISOLATE_AFTER`] refusals without progress, records go one
/// per batch; a single record refused [`QUARANTINE_AFTER`] times is quarantined (kept aside in
/// the spool's `quarantine` directory, reported as `EVENT_QUARANTINED`, never sent again), so one
/// bad record cannot hold back every later one.
pub async fn upload(
    spool: &SpoolHandle,
    channel: tonic::transport::Channel,
    agent_id: &str,
    key_pem: &str,
) -> Result<(), String> {
    let r = upload_inner(spool, channel, agent_id, key_pem).await;
    if let Err((msg, _)) = &r {
        let mut u = lock(&spool.upload);
        u.failures = u.failures.saturating_add(1);
        u.last_error = Some(msg.clone());
    }
    r.map_err(|(m, _)| m)
}

async fn upload_inner(
    spool: &SpoolHandle,
    channel: tonic::transport::Channel,
    agent_id: &str,
    key_pem: &str,
) -> Result<(), (String, bool)> {
    use rcgen::SigningKey as _;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| (format!("agent key: {e}"), false))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::EventBatch>(4);
    let mut acks = EventUploadClient::new(channel)
        .max_encoding_message_size(64 << 20)
        .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| {
            (
                format!("event upload refused: {}", s.message()),
                is_refusal(s.code()),
            )
        })?
        .into_inner();
    let mut acked = lock(&spool.stats).acked;
    let mut sent = acked;
    let mut durable = spool.durable.clone();
    let mut empty_reads = 0u32;
    loop {
        let have = *durable.borrow_and_update();
        let (isolate, skip) = {
            let mut u = lock(&spool.upload);
            u.skip.retain(|s| *s > acked);
            (acked < u.isolate_until, u.skip.clone())
        };
        while skip.contains(&(sent + 1)) && sent < have {
            sent += 1;
        }
        // Quarantined records are never acknowledged by themselves: not in flight.
        let in_flight = if sent > acked {
            sent - acked - skip.range(acked + 1..=sent).count() as u64
        } else {
            0
        };
        let window = if isolate { 1 } else { IN_FLIGHT };
        if have > sent && in_flight < window {
            let max = if isolate { 1 } else { BATCH };
            let mut events = spool
                .read(sent, max, BATCH_BYTES)
                .await
                .map_err(|e| (e.to_string(), false))?;
            if let Some((first, _)) = events.first()
                && *first != sent + 1
            {
                tracing::warn!(
                    expected = sent + 1,
                    got = first,
                    "the spool skipped records (corrupt); the controller will report the gap"
                );
            }
            let last_read = events.last().map(|(s, _)| *s);
            events.retain(|(s, _)| !skip.contains(s));
            if let Some((last_seq, last)) = events.last() {
                empty_reads = 0;
                let hash = serde_json::from_slice::<Value>(last)
                    .ok()
                    .and_then(|v| v.get("hash").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_default();
                let signature = key
                    .sign(&head_message(agent_id, *last_seq, &hash))
                    .map_err(|e| (format!("signing the chain head: {e}"), false))?;
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
                    .map_err(|_| ("the upload stream closed".to_owned(), false))?;
                continue;
            }
            if let Some(l) = last_read {
                // Only quarantined records: nothing to send.
                sent = l;
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
                    if a.acked_seq > acked {
                        acked = a.acked_seq;
                        spool.ack(acked);
                        lock(&spool.upload).progressed();
                    }
                }
                Ok(None) => return Err(("the controller closed the upload stream".into(), false)),
                Err(s) => {
                    let msg = format!("event upload: {}", s.message());
                    if is_refusal(s.code()) {
                        refused(spool, acked, sent, isolate, &msg);
                    }
                    return Err((msg, is_refusal(s.code())));
                }
            },
            r = durable.changed() => if r.is_err() { return Err(("the spool stopped".into(), false)) },
        }
    }
}

/// The controller refused what was sent after `acked` (up to `sent`): after repeated refusals
/// without progress, isolate the record it refuses; quarantine a single record refused again.
fn refused(spool: &SpoolHandle, acked: u64, sent: u64, isolating: bool, why: &str) {
    let mut u = lock(&spool.upload);
    if u.refusals == 0 || acked > u.stuck_at {
        u.stuck_at = acked;
        u.refusals = 0;
    }
    u.refusals += 1;
    let single = sent > acked && (acked + 1..sent).all(|s| u.skip.contains(&s));
    if isolating && single {
        let strikes = {
            let n = u.strikes.entry(sent).or_default();
            *n += 1;
            *n
        };
        if strikes >= QUARANTINE_AFTER {
            u.strikes.remove(&sent);
            u.skip.insert(sent);
            u.quarantined += 1;
            u.refusals = 0;
            drop(u);
            tracing::error!(
                seq = sent,
                "the controller refuses event {sent} again and again: quarantined, the upload goes on without it ({why})"
            );
            let _ = spool.tx.send(Cmd::Quarantine {
                seq: sent,
                reason: why.chars().take(1024).collect(),
            });
        }
    } else if u.refusals >= ISOLATE_AFTER {
        tracing::warn!(
            from = acked + 1,
            to = sent,
            "the controller keeps refusing a batch: sending its records one at a time to find the bad one"
        );
        u.isolate_until = u.isolate_until.max(sent);
    }
}

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
mod tests {
    use super::*;
    use crate::daemon::spool::TestDisk;
    use std::sync::atomic::Ordering;

    fn now_text() -> String {
        humantime::format_rfc3339_micros(SystemTime::now()).to_string()
    }

    fn pre(id: &str, ts: &str, content: &str) -> Value {
        serde_json::json!({
            "eventId": id,
            "eventType": "TOOL_CALL_PRE",
            "timestamp": ts,
            "sessionId": "s1",
            "serverName": "fs",
            "sourceType": "agent_tool_call",
            "toolName": "write_file",
            "content": content,
            "decision": {"action": "allow", "mode": "block", "rule": "r", "reason": "ok"},
        })
    }

    fn bytes(v: &Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn agent_event(t: &str, d: Value) -> Map<String, Value> {
        crate::daemon::agent_event_map("default", Some("agent-1"), t, d)
    }

    fn handle(dir: &std::path::Path, disk: Option<Arc<TestDisk>>) -> SpoolHandle {
        #[allow(unused_mut)]
        let (mut spool, _) = Spool::open(dir, 1 << 30).unwrap();
        spool.space = disk;
        let sp = spawn(spool, 0, agent_event).unwrap();
        *lock(&sp.identity) = Some(("agent-1".into(), "default".into()));
        sp
    }

    async fn records(sp: &SpoolHandle) -> Vec<Value> {
        sp.read(0, usize::MAX, usize::MAX)
            .await
            .unwrap()
            .iter()
            .map(|(_, r)| serde_json::from_slice(r).unwrap())
            .collect()
    }

    async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A Shared agent over a temp dir, its spool open and its identity known.
    fn shared(dir: &std::path::Path) -> Arc<super::super::Shared> {
        let text = include_str!("../../thoth-agent.example.toml");
        let mut c: super::super::config::AgentConfig = toml::from_str(text).unwrap();
        c.state_dir = dir.join("state");
        c.socket_path = dir.join("agent.sock");
        c.wrap_configs = false;
        let sh = super::super::Shared::new(c).unwrap();
        let _ = sh.spool.set(handle(&dir.join("spool"), None));
        sh.set_spool_identity("agent-1");
        sh
    }

    /// Findings 13.1 and 13.15, through the local socket: one bad event (no eventId, too large,
    /// a type only the agent or controller may raise) is refused on its own and counted; the
    /// rest of the batch is kept; identity fields are the agent's; a backdated timestamp is
    /// flagged. Before, one bad event made the agent refuse the whole call (or, worse, take a
    /// forged CHAIN_ALERT / CONFIG_WRAPPED as it came).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_events_are_refused_one_by_one_and_the_rest_is_kept_as_the_agents() {
        let dir = tempfile::tempdir().unwrap();
        let sh = shared(dir.path());
        let server = crate::daemon::local::serve(Arc::clone(&sh)).await.unwrap();
        let ch = crate::daemon::tls::local_channel(&sh.config.socket_path).unwrap();
        let mut c = pb::local_agent_client::LocalAgentClient::new(ch);
        let day_ago =
            humantime::format_rfc3339_micros(SystemTime::now() - Duration::from_secs(86_400))
                .to_string();
        let mut forged = pre("ok-2", &day_ago, "{}");
        for (k, v) in [
            ("sourceType", "controller"),
            ("user", "root"),
            ("hostname", "elsewhere"),
            ("agentId", "another-agent"),
            ("tenantId", "another-tenant"),
        ] {
            forged[k] = Value::from(v);
        }
        forged["seq"] = Value::from(7);
        let mut no_id = pre("x", &now_text(), "{}");
        no_id.as_object_mut().unwrap().remove("eventId");
        let events = vec![
            bytes(&pre("ok-1", &now_text(), "{\"path\":\"/tmp/a\"}")),
            bytes(
                &serde_json::json!({"eventId": "f1", "eventType": "CHAIN_ALERT", "sourceType": "controller", "timestamp": now_text(), "detail": "chain break (forged)"}),
            ),
            bytes(
                &serde_json::json!({"eventId": "f2", "eventType": "CONFIG_WRAPPED", "timestamp": now_text(), "detail": "forged"}),
            ),
            bytes(&no_id),
            bytes(&pre("big", &now_text(), &"x".repeat(300 << 10))),
            bytes(&forged),
        ];
        let ack = c
            .emit_events(pb::LocalEvents { events })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (ack.accepted, ack.dropped, ack.refused),
            (2, 0, 4),
            "{ack:?}"
        );
        assert!(ack.refusal.contains("CHAIN_ALERT"), "{}", ack.refusal);
        let sp = sh.spool.get().unwrap();
        let recs = records(sp).await;
        let from_proxy: Vec<&Value> = recs
            .iter()
            .filter(|r| r.get("proxyEventId").is_some())
            .collect();
        assert_eq!(from_proxy.len(), 2, "{recs:#?}");
        assert!(
            recs.iter()
                .all(|r| r["eventType"] != "CHAIN_ALERT" && r["eventType"] != "CONFIG_WRAPPED")
        );
        let me = crate::daemon::local::user_name(unsafe { libc::getuid() }).unwrap();
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let f = from_proxy
            .iter()
            .find(|r| r["proxyEventId"] == "ok-2")
            .unwrap();
        assert_eq!(f["sourceType"], "agent_tool_call");
        assert_eq!(f["user"], me.as_str());
        assert_eq!(f["hostname"], host.as_str());
        assert_eq!(
            (f["agentId"].as_str(), f["tenantId"].as_str()),
            (Some("agent-1"), Some("default"))
        );
        assert_ne!(f["seq"], 7);
        assert!(f["clockSkewSecs"].as_i64().unwrap() < -86_000, "{f}");
        let ok1 = from_proxy
            .iter()
            .find(|r| r["proxyEventId"] == "ok-1")
            .unwrap();
        assert!(ok1.get("clockSkewSecs").is_none());
        // The exported ids are the agent's (UUIDv7), not the proxy's.
        for r in &from_proxy {
            let id = uuid::Uuid::parse_str(r["eventId"].as_str().unwrap()).unwrap();
            assert_eq!(id.get_version_num(), 7);
        }
        // Counted and visible, and reported to the controller.
        let st = sh.status();
        assert_eq!(st.events.refused, 4);
        assert!(st.events.last_refusal.unwrap().contains(&me));
        wait_until("an EVENTS_REFUSED event", 10, || {
            let sp = sp.clone();
            let recs = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(records(&sp))
            })
            .join()
            .unwrap();
            recs.iter()
                .any(|r| r["eventType"] == "EVENTS_REFUSED" && r["detail"]["refused"] == 4)
        })
        .await;
        server.stop().await;
    }

    /// Finding 13.1, status side: a stalled upload said "connected, no error" everywhere. Now
    /// it is the status's error (`thoth-agent status`, `thoth status`) and its `last_error`,
    /// which the heartbeat carries to the controller (`thothctl agents list/show`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_upload_is_an_error_in_the_status_and_the_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let sh = shared(dir.path());
        sh.update_status(|s| s.connected = true);
        let sp = sh.spool.get().unwrap();
        assert!(sp.append(agent_event("TEST", Value::from(1))));
        wait_until("the event durable", 10, || *sp.durable.borrow() >= 1).await;
        assert!(sh.status().last_error.is_none(), "nothing failed yet");
        {
            let mut u = lock(&sp.upload);
            u.failures = STALL_ATTEMPTS;
            u.last_error = Some("event upload: an event has no usable eventId".into());
        }
        let st = sh.status();
        let err = st.last_error.clone().unwrap();
        assert!(
            err.contains("stalled") && err.contains("no usable eventId"),
            "{err}"
        );
        assert_eq!(st.events.error.as_deref(), Some(err.as_str()));
        assert!(st.render_text().contains("ERROR: event upload stalled"));
        // Waiting longer than STALL_AFTER without an acknowledgement is a stall too.
        {
            let mut u = lock(&sp.upload);
            u.failures = 0;
            u.progress_at = Instant::now() - STALL_AFTER - Duration::from_secs(1);
        }
        lock(&sp.stats).waiting_since = Some(Instant::now() - STALL_AFTER - Duration::from_secs(1));
        assert!(
            sh.status()
                .last_error
                .unwrap()
                .contains("no acknowledgement")
        );
        // Acknowledged: no error.
        sp.ack(1);
        wait_until("the ack recorded", 10, || lock(&sp.stats).acked == 1).await;
        lock(&sp.upload).progressed();
        assert!(sh.status().last_error.is_none());
    }

    /// Finding 13.2: de-duplication was by the caller-supplied eventId across all users, so a
    /// user who pre-sent another's next id made that user's real event vanish. Now it is per
    /// caller and only for an identical record; the exported id is the agent's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_user_cannot_suppress_another_users_events() {
        let dir = tempfile::tempdir().unwrap();
        let sh = shared(dir.path());
        let ts = now_text();
        let decoy = bytes(&pre("victim-next", &ts, "{\"decoy\":true}"));
        let real = bytes(&pre("victim-next", &ts, "{\"path\":\"/etc/secret\"}"));
        let ok = |r: Result<EmitOutcome, String>| r.unwrap().accepted;
        assert_eq!(ok(sh.spool_events(vec![decoy], "mallory").await), 1);
        assert_eq!(ok(sh.spool_events(vec![real.clone()], "alice").await), 1);
        let sp = sh.spool.get().unwrap();
        let n = records(sp).await.len();
        // A re-send of the identical record (a lost answer) is held once.
        assert_eq!(ok(sh.spool_events(vec![real.clone()], "alice").await), 1);
        assert_eq!(records(sp).await.len(), n);
        // The same caller re-using an id for a different record: kept, and flagged.
        let other = bytes(&pre("victim-next", &ts, "{\"path\":\"/etc/other\"}"));
        assert_eq!(ok(sh.spool_events(vec![other], "alice").await), 1);
        let recs = records(sp).await;
        let proxy: Vec<&Value> = recs
            .iter()
            .filter(|r| r["proxyEventId"] == "victim-next")
            .collect();
        assert_eq!(proxy.len(), 3, "{recs:#?}");
        assert!(
            proxy
                .iter()
                .any(|r| r["user"] == "alice" && r["content"] == "{\"path\":\"/etc/secret\"}")
        );
        assert!(proxy.iter().any(|r| r["user"] == "mallory"));
        let flagged: Vec<_> = proxy
            .iter()
            .filter(|r| r["eventIdReused"] == true)
            .collect();
        assert_eq!(flagged.len(), 1);
        assert_eq!(flagged[0]["content"], "{\"path\":\"/etc/other\"}");
        let ids: std::collections::HashSet<&str> = recs
            .iter()
            .map(|r| r["eventId"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), recs.len(), "exported ids collide");
        assert_eq!(sh.status().events.id_reused, 1);
    }

    /// Finding 13.12, in the pipeline: a full disk made the spool thread spin (no backoff) and
    /// `EmitEvents` wait forever for durability. Now the proxy is answered (an error, so it
    /// keeps its events), writes are retried with backoff, and nothing is lost or doubled once
    /// the disk has room again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_answers_proxies_backs_off_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(TestDisk::default());
        disk.space.store(2_000, Ordering::SeqCst);
        let sp = handle(dir.path(), Some(Arc::clone(&disk)));
        let now = SystemTime::now();
        let ts = now_text();
        let batch = |from: usize| -> Vec<Admitted> {
            (from..from + 20)
                .map(|i| admit(&bytes(&pre(&format!("e{i}"), &ts, "{}")), "u", "h", now).unwrap())
                .collect()
        };
        let t0 = Instant::now();
        let first = tokio::time::timeout(Duration::from_secs(10), sp.append_durable(batch(0)))
            .await
            .expect("EmitEvents hangs on a full disk");
        assert!(first.is_err(), "{first:?}");
        let second = tokio::time::timeout(Duration::from_secs(1), sp.append_durable(batch(20)))
            .await
            .expect("EmitEvents hangs on a full disk");
        assert!(second.unwrap_err().0.contains("cannot write"));
        // Retried with backoff, not in a loop: four attempts take over a second.
        wait_until("four write attempts", 30, || {
            disk.refused.load(Ordering::SeqCst) >= 4
        })
        .await;
        assert!(
            t0.elapsed() >= Duration::from_millis(1000),
            "{:?}",
            t0.elapsed()
        );
        disk.space.store(u64::MAX / 2, Ordering::SeqCst);
        let mut health = sp.health.clone();
        tokio::time::timeout(Duration::from_secs(30), health.wait_for(Option::is_none))
            .await
            .unwrap()
            .unwrap();
        // The proxy re-sends both batches: the first was held (de-duplicated), the second new.
        let mut again = batch(0);
        again.extend(batch(20));
        assert_eq!(sp.append_durable(again).await.unwrap(), (40, 0));
        let recs = sp.read(0, usize::MAX, usize::MAX).await.unwrap();
        assert_eq!(recs.len(), 40);
        assert!(
            recs.iter()
                .all(|(_, r)| !String::from_utf8_lossy(r).contains("eventIdReused"))
        );
        let mut prev = thoth_proto::chain::GENESIS.to_owned();
        for (seq, line) in &recs {
            let (s, h) = thoth_proto::chain::check_link(line, &prev).unwrap();
            assert_eq!(s, *seq);
            prev = h;
        }
    }

    /// A controller stand-in: acknowledges each batch, refuses (and ends the stream on) any
    /// batch holding a record marked POISON, as ingest did for an event without `eventId`.
    #[derive(Clone, Default)]
    struct FakeIngest {
        got: Arc<Mutex<Vec<Value>>>,
        max_batch: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[tonic::async_trait]
    impl pb::event_upload_server::EventUpload for FakeIngest {
        type UploadStream = std::pin::Pin<
            Box<dyn futures_util::Stream<Item = Result<pb::EventAck, tonic::Status>> + Send>,
        >;

        async fn upload(
            &self,
            req: tonic::Request<tonic::Streaming<pb::EventBatch>>,
        ) -> Result<tonic::Response<Self::UploadStream>, tonic::Status> {
            let mut input = req.into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let me = self.clone();
            tokio::spawn(async move {
                while let Ok(Some(b)) = input.message().await {
                    let size: usize = b.events.iter().map(Vec::len).sum();
                    me.max_batch.fetch_max(size, Ordering::SeqCst);
                    if b.events
                        .iter()
                        .any(|e| String::from_utf8_lossy(e).contains("POISON"))
                    {
                        let _ = tx
                            .send(Err(tonic::Status::invalid_argument(
                                "an event has no usable eventId",
                            )))
                            .await;
                        return;
                    }
                    lock(&me.got).extend(
                        b.events
                            .iter()
                            .map(|e| serde_json::from_slice::<Value>(e).unwrap()),
                    );
                    let seq = b.head.map_or(0, |h| h.seq);
                    if tx.send(Ok(pb::EventAck { acked_seq: seq })).await.is_err() {
                        return;
                    }
                }
            });
            Ok(tonic::Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        }
    }

    /// Finding 13.1, upload side: a record the controller refuses used to be re-sent in the same
    /// batch forever (every later event stuck on the laptop, status "no error"), and batches were
    /// capped by count only. Now batches are capped by bytes, the refused record is isolated and
    /// quarantined (reported), everything after it is delivered, and the stall shows meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_the_controller_refuses_is_quarantined_and_the_rest_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let sp = handle(dir.path(), None);
        let fake = FakeIngest::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = pb::event_upload_server::EventUploadServer::new(fake.clone())
            .max_decoding_message_size(64 << 20);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let ev = |i: usize, pad: usize| {
            let mut m = agent_event("TEST", Value::from(i));
            m.insert("pad".into(), Value::from("x".repeat(pad)));
            m
        };
        for i in 0..5 {
            assert!(sp.append(ev(i, 10)));
        }
        let mut poison = ev(5, 10);
        poison.insert("marker".into(), Value::from("POISON"));
        assert!(sp.append(poison));
        // 40 events of 200 KB: one count-capped batch would be 8 MB.
        for i in 6..46 {
            assert!(sp.append(ev(i, 200_000)));
        }
        wait_until("46 durable", 10, || *sp.durable.borrow() >= 46).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut saw_stall = None;
        loop {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                upload(&sp, ch.clone(), "agent-1", &key),
            )
            .await;
            let st = lock(&sp.stats).clone();
            if let Some(s) = lock(&sp.upload).stalled(st.seq - st.acked, st.waiting_since) {
                saw_stall.get_or_insert(s);
            }
            let got = lock(&fake.got).clone();
            let tests = got.iter().filter(|e| e["eventType"] == "TEST").count();
            if tests == 45 && got.iter().any(|e| e["eventType"] == "EVENT_QUARANTINED") {
                let q = got
                    .iter()
                    .find(|e| e["eventType"] == "EVENT_QUARANTINED")
                    .unwrap();
                assert_eq!(q["detail"]["seq"], 6, "{q}");
                break;
            }
            assert!(Instant::now() < deadline, "stuck: {tests} of 45 delivered");
        }
        let stall = saw_stall.expect("the stall was never reported");
        assert!(
            stall.contains("stalled") && stall.contains("no usable eventId"),
            "{stall}"
        );
        assert_eq!(lock(&sp.upload).quarantined, 1);
        assert!(
            dir.path()
                .join("quarantine")
                .join(format!("{:020}.json", 6))
                .exists()
        );
        let max = fake.max_batch.load(Ordering::SeqCst);
        assert!(max <= BATCH_BYTES + 250_000, "a batch of {max} bytes");
        // Progress again: no stall.
        let st = lock(&sp.stats).clone();
        assert!(
            lock(&sp.upload)
                .stalled(st.seq - st.acked, st.waiting_since)
                .is_none()
        );
        server.abort();
    }

    /// Review L14: a 256 KiB event of `[0,0,0,…]` (or deep nesting) parsed into a Value takes
    /// ~16 times its size; now such shapes are refused before parsing, real events still pass.
    #[test]
    fn events_with_too_many_values_or_too_deep_are_refused_before_parsing() {
        let now = SystemTime::now();
        let ts = now_text();
        let mut ev = pre("e1", &ts, "{\"a\": [1, 2, 3]}");
        ev["sessionToolCalls"] = serde_json::json!(["read_file", "write_file"]);
        assert!(admit(&bytes(&ev), "u", "h", now).is_ok());
        // A session that called a thousand one-letter tools is still an event.
        let mut many = pre("e5", &ts, "{}");
        let tools: Vec<String> = (0..1000u32)
            .map(|i| char::from(b'a' + (i % 26) as u8).to_string())
            .collect();
        many["sessionToolCalls"] = serde_json::json!(tools);
        assert!(admit(&bytes(&many), "u", "h", now).is_ok());
        // Small values packed densely are refused even when few.
        let mut dense = pre("e6", &ts, "{}");
        dense["extra"] = Value::Array(vec![Value::from(0); 3_000]);
        let err = admit(&bytes(&dense), "u", "h", now).unwrap_err();
        assert!(err.contains("values"), "{err}");
        let mut wide = pre("e2", &ts, "{}");
        wide["extra"] = Value::Array(vec![Value::from(0); 100_000]);
        let raw = bytes(&wide);
        assert!(raw.len() < MAX_PROXY_EVENT_BYTES);
        let err = admit(&raw, "u", "h", now).unwrap_err();
        assert!(err.contains("values"), "{err}");
        let mut deep = pre("e3", &ts, "{}");
        let mut v = Value::from(0);
        for _ in 0..64 {
            v = Value::Array(vec![v]);
        }
        deep["extra"] = v;
        let err = admit(&bytes(&deep), "u", "h", now).unwrap_err();
        assert!(err.contains("deeper"), "{err}");
        // Commas and brackets inside strings (escaped quotes too) are not counted.
        let text = format!("\\\"[{}", ",".repeat(100_000));
        assert!(admit(&bytes(&pre("e4", &ts, &text)), "u", "h", now).is_ok());
    }

    /// Review M2: a spool thread behind (its channel full) answered `Ok((0, n))`, which the
    /// proxy counts as dropped and never re-sends. Now it is "unavailable": the proxy keeps them.
    #[tokio::test]
    async fn a_full_spool_channel_answers_unavailable_so_the_proxy_keeps_its_events() {
        let (tx, rx) = mpsc::sync_channel::<Cmd>(1);
        tx.try_send(Cmd::Ack(0)).unwrap();
        let sp = SpoolHandle {
            tx,
            identity: Arc::new(Mutex::new(None)),
            durable: watch::channel(0).1,
            health: watch::channel(None).1,
            stats: Arc::default(),
            upload: Arc::new(Mutex::new(UploadState::default())),
            refusals: Arc::default(),
        };
        let now = SystemTime::now();
        let ev = admit(&bytes(&pre("e1", &now_text(), "{}")), "alice", "h", now).unwrap();
        let got = sp.append_durable(vec![ev]).await;
        assert!(got.is_err(), "a full channel answered {got:?}");
        drop(rx);
    }

    fn quota_spool(dir: &std::path::Path) -> SpoolHandle {
        let (spool, _) = Spool::open(dir, 1 << 20).unwrap();
        let sp = spawn(spool, 0, agent_event).unwrap();
        *lock(&sp.identity) = Some(("agent-1".into(), "default".into()));
        sp
    }

    /// Sends `user`'s events (8 KiB each, four a call) until the spool refuses a call; returns
    /// how many were taken.
    async fn fill(sp: &SpoolHandle, user: &str, max: usize) -> usize {
        let now = SystemTime::now();
        let ts = now_text();
        let content = "x".repeat(8 << 10);
        let mut taken = 0;
        while taken < max {
            let batch: Vec<Admitted> = (taken..max.min(taken + 4))
                .map(|i| {
                    let raw = bytes(&pre(&format!("{user}-{i}"), &ts, &content));
                    admit(&raw, user, "h", now).unwrap()
                })
                .collect();
            let n = batch.len() as u32;
            match sp.append_durable(batch).await {
                Ok((a, 0)) if a == n => taken += n as usize,
                Ok(other) => panic!("{other:?}"),
                Err(e) => {
                    assert!(e.0.contains("per user"), "{}", e.0);
                    return taken;
                }
            }
        }
        taken
    }

    /// Review M4: one user flooding the shared spool made its size bound delete other users'
    /// unsent events. Now each user may hold a quarter of it unacknowledged; past that their
    /// events are refused as unavailable (their proxy keeps them), and nobody else's are lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_user_over_quota_is_refused_and_cannot_evict_another_users_events() {
        let dir = tempfile::tempdir().unwrap();
        let sp = quota_spool(dir.path());
        assert_eq!(fill(&sp, "alice", 4).await, 4);
        // 400 events of 8 KiB = over three times the whole spool.
        let taken = fill(&sp, "mallory", 400).await;
        assert!(
            taken < 40,
            "mallory put {taken} events of 8 KiB in a 1 MiB spool"
        );
        assert_eq!(lock(&sp.stats).lost, 0, "events were deleted");
        let recs = records(&sp).await;
        assert_eq!(recs.iter().filter(|r| r["user"] == "alice").count(), 4);
        // Alice is not refused; and once mallory's events are acknowledged, mallory is taken again.
        assert_eq!(fill(&sp, "alice", 1).await, 1);
        sp.ack(lock(&sp.stats).seq);
        wait_until("the ack", 10, || lock(&sp.stats).acked > 0).await;
        assert_eq!(fill(&sp, "mallory", 1).await, 1);
    }

    /// Review M4: if the size bound still deletes events (many users at their quota), the
    /// EVENTS_DROPPED event says whose events were lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_dropped_names_whose_events_the_size_bound_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let sp = quota_spool(dir.path());
        for u in ["u1", "u2", "u3", "u4", "u5", "u6"] {
            fill(&sp, u, 400).await;
        }
        wait_until("lost events", 10, || lock(&sp.stats).lost > 0).await;
        let recs = records(&sp).await;
        let dropped = recs
            .iter()
            .find(|r| r["eventType"] == "EVENTS_DROPPED")
            .expect("an EVENTS_DROPPED event");
        let by = dropped["detail"]["byUser"].as_object().expect("byUser");
        assert!(
            by.get("u1").and_then(Value::as_u64).unwrap_or(0) > 0,
            "{dropped}"
        );
    }
}
