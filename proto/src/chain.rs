//! The tamper-evident hash chain over events.
//!
//! `hash = SHA-256(prevHash as 32 raw bytes ‖ canonical bytes of the event without "hash")`, and
//! the event is written as the canonical bytes of the whole event (hash included). Verification
//! recomputes both, so changing any byte of a line, dropping a line, or reordering lines breaks
//! the chain at a line that is reported.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::to_canonical;
use crate::event::{Event, Hash};

/// `prevHash` of the first event of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest event line accepted when verifying.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// The raw hash before the first event of a chain ([`GENESIS`] in hex).
pub const GENESIS_HASH: Hash = [0u8; 32];

pub use crate::event::parse_hash;

/// The head of one chain.
#[derive(Debug, Clone)]
pub struct Chain {
    seq: u64,
    head: Hash,
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// A new chain; its first event gets `seq` 1 and `prevHash` [`GENESIS`].
    pub fn new() -> Self {
        Self {
            seq: 0,
            head: GENESIS_HASH,
        }
    }

    /// The last sequence number given out.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Puts `event` on the chain (sets `seq`, `prevHash`, `hash`) and returns the line to write
    /// (without its newline): its canonical bytes, serialized once.
    pub fn seal(&mut self, event: &mut Event<'_>) -> Vec<u8> {
        event.seq = Some(self.seq + 1);
        event.prev_hash = Some(self.head);
        event.hash = None;
        let body = canonical_event(event);
        let hash = hash_bytes(&self.head, &body);
        // `detail` is free-form and sorts before `hostname`: an object in it may hold a
        // `"hostname"` key of its own, so only an event without one is spliced.
        let spliced = if event.detail.is_none() {
            with_hash(body, &hash)
        } else {
            None
        };
        let line = spliced.unwrap_or_else(|| {
            event.hash = Some(hash);
            canonical_event(event)
        });
        event.hash = Some(hash);
        self.seq += 1;
        self.head = hash;
        line
    }

    /// A chain that continues after `seq` whose last hash is `head` (e.g. recovered from disk).
    pub fn resume(seq: u64, head: Hash) -> Self {
        Self { seq, head }
    }

    /// The last hash (the next event's `prevHash`).
    pub fn head(&self) -> Hash {
        self.head
    }

    /// The last hash in hex, as records and signed heads carry it.
    pub fn head_hex(&self) -> String {
        hex::encode(self.head)
    }

    /// Puts an event given as a JSON object on the chain: sets `seq` and `prevHash`, computes
    /// `hash` over the canonical bytes without it, and returns the canonical line (hash included).
    /// For records that are not [`Event`]s (tests, tools); the agent and the proxy seal typed
    /// events.
    pub fn seal_value(&mut self, event: &mut serde_json::Map<String, Value>) -> Vec<u8> {
        event.insert("seq".into(), Value::from(self.seq + 1));
        event.insert("prevHash".into(), Value::from(hex::encode(self.head)));
        event.remove("hash");
        let v = Value::Object(std::mem::take(event));
        let body = to_canonical(&v);
        let hash = hash_bytes(&self.head, &body);
        let Value::Object(mut m) = v else {
            unreachable!("built from an object")
        };
        m.insert("hash".into(), Value::from(hex::encode(hash)));
        // Serialized again rather than spliced: a nested object may hold a `"hostname"` key too.
        drop(body);
        let line = to_canonical(&Value::Object(m.clone()));
        *event = m;
        self.seq += 1;
        self.head = hash;
        line
    }
}

/// Why an event line does not link to the previous hash ([`check_link`]).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The line is not JSON.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// `seq` is missing or not a number.
    #[error("no seq")]
    NoSeq,
    /// `prevHash` is missing or not a string.
    #[error("no prevHash")]
    NoPrevHash,
    /// `hash` is missing or not a string.
    #[error("no hash")]
    NoHash,
    /// `prevHash` is not the previous event's hash.
    #[error("seq {seq}: prevHash does not match the previous event's hash")]
    PrevHashMismatch {
        /// The event's sequence number.
        seq: u64,
    },
    /// The previous hash is not 32 bytes of hex.
    #[error("bad prevHash")]
    BadPrevHash,
    /// `hash` is not the hash of the event's content.
    #[error("seq {seq}: hash does not match the event's content")]
    HashMismatch {
        /// The event's sequence number.
        seq: u64,
    },
}

/// Checks one event line against the previous hash: its `prevHash` must be `prev` and its
/// `hash` must be the hash of its canonical bytes without `hash`. Returns (seq, hash).
pub fn check_link(line: &[u8], prev: &str) -> Result<(u64, String), LinkError> {
    let v: Value = serde_json::from_slice(line).map_err(LinkError::NotJson)?;
    let seq = v
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or(LinkError::NoSeq)?;
    let prev_hash = v
        .get("prevHash")
        .and_then(Value::as_str)
        .ok_or(LinkError::NoPrevHash)?;
    let hash = v
        .get("hash")
        .and_then(Value::as_str)
        .ok_or(LinkError::NoHash)?
        .to_owned();
    if prev_hash != prev {
        return Err(LinkError::PrevHashMismatch { seq });
    }
    let mut without = v.clone();
    if let Some(m) = without.as_object_mut() {
        m.remove("hash");
    }
    let want = hash_of(prev, &without).ok_or(LinkError::BadPrevHash)?;
    if want != hash {
        return Err(LinkError::HashMismatch { seq });
    }
    Ok((seq, hash))
}

/// Inserts `"hash"` into the canonical bytes of an event at its sorted place: right before
/// `"hostname"`, which every event has and which follows `"hash"` in byte order. String values
/// cannot contain an unescaped `"`, and the only object before `hostname` that is not
/// free-form is `decision` (fixed keys), so for an event without `detail` the first
/// `,"hostname":` is the key itself. Never call it for an event with `detail`.
fn with_hash(body: Vec<u8>, hash: &Hash) -> Option<Vec<u8>> {
    const KEY: &[u8] = b",\"hostname\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)?;
    let mut line = Vec::with_capacity(body.len() + 64 + 10);
    line.extend_from_slice(&body[..at]);
    line.extend_from_slice(b",\"hash\":\"");
    let mut hex_buf = [0u8; 64];
    hex::encode_to_slice(hash, &mut hex_buf).expect("64 bytes for 32");
    line.extend_from_slice(&hex_buf);
    line.push(b'"');
    line.extend_from_slice(&body[at..]);
    Some(line)
}

/// The canonical bytes of an event (without `hash` while it is empty). Events without `detail`
/// serialize canonically as they are (their fields are declared in order); `detail` is free-form
/// JSON and takes the general path.
pub fn canonical_event(event: &Event<'_>) -> Vec<u8> {
    if event.detail.is_none() {
        let mut out = Vec::with_capacity(1024);
        serde_json::to_writer(&mut out, event).expect("an event is always valid JSON");
        out
    } else {
        to_canonical(&serde_json::to_value(event).expect("an event is always valid JSON"))
    }
}

/// `SHA-256(prev ‖ canonical)`: the one hash of the chain.
pub fn hash_bytes(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

pub(crate) fn hash_of(prev_hex: &str, without_hash: &Value) -> Option<String> {
    let prev = parse_hash(prev_hex)?;
    Some(hex::encode(hash_bytes(&prev, &to_canonical(without_hash))))
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
