//! Event ingest, without transport (gRPC's EventUpload is `grpc/upload.rs`). A batch from an agent is read and its signed chain
//! head verified with the agent's certificate key (batch-level: a bad head or too many events
//! fail the batch). Then, in one store transaction, each event is checked against the agent's
//! chain as the controller holds it: an identical re-send is skipped; a gap, a break, a restart
//! (seq 1 from genesis after a head above 0), a rewind (a seq at or below the head with other
//! content) or a different record under a stored `eventId` becomes a CHAIN_ALERT event, and the
//! events are still stored, marked. An event that cannot be stored (not JSON, no seq or seq 0,
//! no hash, no eventId, too large, or claiming `sourceType: "controller"`) is recorded as an
//! alert (its seq, the reason and the SHA-256 of its bytes, never its content) instead of
//! failing the batch. Only after the commit is the batch
//! acknowledged, up to the signed head.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use serde_json::Value;
use sha2::{Digest, Sha256};
#[cfg(test)]
use thoth_proto::chain::check_link;
use thoth_proto::chain::{GENESIS, LinkError};
use thoth_proto::fleet as pb;

mod line;

use line::Members;

use crate::ids::{AgentId, TenantId};
use crate::service::ServiceError;
use crate::store::{
    ChainDecision, ChainView, MAX_RECORDS_PER_EVENT_ID, Store, StoreError, StoredEventRecord,
    record_digest,
};

/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 5_000;
/// Largest single event.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// Longest `eventId`.
pub const MAX_EVENT_ID: usize = 64;

pub use thoth_proto::evidence::head_message;

/// A string field of a JSON object ("" when absent or not a string); the tests read with it.
#[cfg(test)]
fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// A usable event of a batch.
#[derive(Debug)]
struct Parsed {
    seq: u64,
    event_id: String,
    hash: String,
    prev_hash: String,
    /// `hash` is the hash of the event over its own `prevHash`.
    sealed: Result<(), LinkError>,
    event_type: String,
    session_id: String,
    tool_name: String,
    timestamp: String,
    json: String,
    /// [`record_digest`] of `json`: what de-duplication compares.
    digest: String,
}

/// One line of a batch, as read before the chain is known.
#[derive(Debug)]
enum Line {
    Event(Parsed),
    /// Not storable: recorded as an alert.
    Refused {
        seq: Option<u64>,
        hash: Option<String>,
        prev_hash: Option<String>,
        reason: String,
        sha256: String,
    },
}

impl Line {
    fn position(&self) -> (Option<u64>, Option<&str>) {
        match self {
            Line::Event(p) => (Some(p.seq), Some(&p.hash)),
            Line::Refused { seq, hash, .. } => (*seq, hash.as_deref()),
        }
    }
}

/// The chain fields of an event, read without keeping anything else: serde skips every other
/// field (however large) without building it.
#[derive(serde::Deserialize)]
struct ChainFields {
    seq: Option<u64>,
    hash: Option<String>,
    #[serde(rename = "prevHash")]
    prev_hash: Option<String>,
}

fn read_line(line: &[u8]) -> Line {
    let refused = |seq, hash, prev_hash, reason: String| Line::Refused {
        seq,
        hash,
        prev_hash,
        reason,
        sha256: hex::encode(Sha256::digest(line)),
    };
    if line.len() > MAX_EVENT_BYTES {
        // Refused, but its place in the chain is still read, so the next event links to it.
        let at = serde_json::from_slice::<ChainFields>(line).ok();
        let (seq, hash, prev) = at.map_or((None, None, None), |f| (f.seq, f.hash, f.prev_hash));
        return refused(
            seq,
            hash,
            prev,
            format!(
                "{} bytes, over the {MAX_EVENT_BYTES} byte limit for an event",
                line.len()
            ),
        );
    }
    // The one parse of the line: everything below reads its members (or, for a line the
    // one-pass reader leaves, the JSON value).
    let (v, body) = match Members::read(line).and_then(|m| {
        let body = m.canonical_without("hash")?;
        Some((Object::Members(m), body))
    }) {
        Some((m, body)) => (m, Some(body)),
        None => match serde_json::from_slice(line) {
            Ok(Value::Object(m)) => (Object::Value(m), None),
            Ok(_) => return refused(None, None, None, "not a JSON object".into()),
            Err(e) => return refused(None, None, None, format!("not JSON ({e})")),
        },
    };
    let text = |key: &str| v.text(key);
    let hash = text("hash");
    let prev = text("prevHash");
    let Some(seq) = v.number("seq") else {
        return refused(None, hash, prev, "no seq".into());
    };
    // What the store holds at seq 0, and what has no hash or says it is the controller's, is
    // the controller's own record (a CHAIN_ALERT, a CHAIN_HEAD) to a verifier: an agent's line
    // must never pass for one (a forged "refused" alert would break another agent's chain).
    if seq == 0 {
        return refused(
            None,
            hash,
            prev,
            "seq 0 (an agent's chain starts at 1)".into(),
        );
    }
    let Some(hash) = hash else {
        return refused(Some(seq), None, prev, "no hash".into());
    };
    if text("sourceType").as_deref() == Some("controller") {
        return refused(
            Some(seq),
            Some(hash),
            prev,
            "sourceType \"controller\" (only the controller's own records carry it)".into(),
        );
    }
    let event_id = text("eventId").unwrap_or_default();
    if event_id.is_empty() || event_id.len() > MAX_EVENT_ID {
        return refused(
            Some(seq),
            Some(hash),
            prev,
            format!("no eventId of 1-{MAX_EVENT_ID} characters"),
        );
    }
    let (event_type, session_id, tool_name, timestamp) = (
        text("eventType").unwrap_or_default(),
        text("sessionId").unwrap_or_default(),
        text("toolName").unwrap_or_default(),
        text("timestamp").unwrap_or_default(),
    );
    let body = body.unwrap_or_else(|| v.canonical_without_hash());
    let sealed = sealed(seq, prev.as_deref(), &hash, &body);
    let json = String::from_utf8_lossy(line).into_owned();
    Line::Event(Parsed {
        seq,
        sealed,
        event_id,
        digest: record_digest(&json),
        hash,
        prev_hash: prev.unwrap_or_default(),
        event_type,
        session_id,
        tool_name,
        timestamp,
        json,
    })
}

/// An event line read as an object: its members in one pass, or (for what that reader leaves)
/// the JSON value.
enum Object<'a> {
    Members(Members<'a>),
    Value(serde_json::Map<String, Value>),
}

impl Object<'_> {
    /// The member `key` when it is a string.
    fn text(&self, key: &str) -> Option<String> {
        match self {
            Object::Members(m) => m.text(key),
            Object::Value(m) => m.get(key).and_then(Value::as_str).map(str::to_owned),
        }
    }

    /// The member `key` when it is an integer from 0 to `u64::MAX`.
    fn number(&self, key: &str) -> Option<u64> {
        match self {
            Object::Members(m) => m.number(key),
            Object::Value(m) => m.get(key).and_then(Value::as_u64),
        }
    }

    /// The canonical bytes of the object without `hash`.
    fn canonical_without_hash(self) -> Vec<u8> {
        match self {
            // Written when the line was read (read_line keeps it): not reached.
            Object::Members(m) => m.canonical_without("hash").unwrap_or_default(),
            Object::Value(mut m) => {
                m.remove("hash");
                thoth_proto::canonical::to_canonical(&Value::Object(m))
            }
        }
    }
}

/// Whether `hash` is the hash of an event over its `prevHash`, given the canonical bytes of the
/// event without `hash`: what [`thoth_proto::chain::check_link`] checks (with its words), on
/// the line as already read.
fn sealed(seq: u64, prev: Option<&str>, hash: &str, without_hash: &[u8]) -> Result<(), LinkError> {
    let prev = prev.ok_or(LinkError::NoPrevHash)?;
    let mut prev_raw = [0u8; 32];
    hex::decode_to_slice(prev, &mut prev_raw).map_err(|_| LinkError::BadPrevHash)?;
    let mut h = Sha256::new();
    h.update(prev_raw);
    h.update(without_hash);
    let mut want = [0u8; 64];
    hex::encode_to_slice(h.finalize(), &mut want).expect("64 hex digits for 32 bytes");
    if want[..] != *hash.as_bytes() {
        return Err(LinkError::HashMismatch { seq });
    }
    Ok(())
}

/// Why a batch is refused as a whole (a bad event is recorded as an alert instead).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Over [`MAX_BATCH_EVENTS`].
    #[error("{count} events in one batch, over the limit of {MAX_BATCH_EVENTS}")]
    TooManyEvents {
        /// Events in the batch.
        count: usize,
    },
    /// The batch carries no signed chain head.
    #[error("the batch has no signed chain head")]
    NoHead,
    /// The signed head does not name the batch's last event.
    #[error("the chain head does not match the batch's last event")]
    HeadMismatch,
    /// The signed head does not verify with the agent's certificate key.
    #[error("the chain head signature does not verify with this agent's key")]
    BadSignature,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<IngestError> for ServiceError {
    fn from(e: IngestError) -> ServiceError {
        match e {
            IngestError::BadSignature => ServiceError::PermissionDenied(e.to_string()),
            IngestError::Store(e) => e.into(),
            e => ServiceError::InvalidArgument(e.to_string()),
        }
    }
}

/// A batch read, with its signed head verified; what is left needs the agent's chain.
#[derive(Debug)]
pub struct Prepared {
    lines: Vec<Line>,
    /// The verified signed head (None for an empty batch).
    pub head: Option<pb::ChainHead>,
    /// The seq to acknowledge once committed (the signed head's).
    pub acked: u64,
}

impl Prepared {
    /// The (eventId, digest) of the batch's usable events.
    pub fn keys(&self) -> Vec<(String, String)> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Event(p) => Some((p.event_id.clone(), p.digest.clone())),
                Line::Refused { .. } => None,
            })
            .collect()
    }
}

/// Reads a batch and verifies its signed chain head with the agent's key. Pure: no IO. Fails
/// only for what concerns the whole batch (too many events, no head, a head that does not name
/// the batch's last event or does not verify); a bad event is kept as [`Line::Refused`].
pub fn prepare(
    agent_id: &str,
    batch: &pb::EventBatch,
    public_key: &[u8],
) -> Result<Prepared, IngestError> {
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(IngestError::TooManyEvents {
            count: batch.events.len(),
        });
    }
    let head = batch.head.as_ref().ok_or(IngestError::NoHead)?;
    let lines: Vec<Line> = batch.events.iter().map(|l| read_line(l)).collect();
    if lines.is_empty() {
        return Ok(Prepared {
            lines,
            head: None,
            acked: 0,
        });
    }
    // The signed head must name the batch's last event (as the agent read it: a hash it could
    // not read is empty), or, when even its seq is unreadable, be at or above every other one.
    let matches = match lines.last().map(Line::position) {
        Some((Some(seq), hash)) => head.seq == seq && head.hash == hash.unwrap_or(""),
        _ => lines
            .iter()
            .filter_map(|l| l.position().0)
            .all(|s| s <= head.seq),
    };
    if !matches {
        return Err(IngestError::HeadMismatch);
    }
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        public_key,
    );
    key.verify(
        &head_message(agent_id, head.seq, &head.hash),
        &head.signature,
    )
    .map_err(|_| IngestError::BadSignature)?;
    Ok(Prepared {
        lines,
        acked: head.seq,
        head: Some(head.clone()),
    })
}

/// A CHAIN_ALERT record about `seq` of the agent's chain (0: none).
#[allow(clippy::too_many_arguments)]
fn alert(
    now: SystemTime,
    tenant: &str,
    agent_id: &str,
    seq: Option<u64>,
    kind: &str,
    detail: String,
    extra: Value,
) -> StoredEventRecord {
    let id = uuid::Uuid::now_v7().to_string();
    let timestamp = humantime::format_rfc3339_micros(now).to_string();
    let mut json = serde_json::json!({
        "eventId": id,
        "eventType": "CHAIN_ALERT",
        "timestamp": timestamp,
        "tenantId": tenant,
        "agentId": agent_id,
        "sourceType": "controller",
        "seq": seq,
        "alert": kind,
        "detail": detail,
    });
    if let (Some(m), Value::Object(extra)) = (json.as_object_mut(), extra) {
        m.extend(extra);
    }
    StoredEventRecord {
        event_id: id,
        tenant: tenant.to_owned(),
        agent_id: agent_id.to_owned(),
        seq: 0,
        event_type: "CHAIN_ALERT".into(),
        timestamp,
        chain_ok: false,
        json: json.to_string(),
        ..StoredEventRecord::default()
    }
}

/// Checks a prepared batch against the agent's chain as stored, and turns it into records
/// (alerts included) and the chain state to keep, at time `now`. Pure: no IO, no clock.
pub fn check(
    tenant: &str,
    agent_id: &str,
    view: &ChainView,
    batch: &Prepared,
    now: SystemTime,
) -> ChainDecision {
    let (mut head_seq, mut head_hash) = view.state.clone().unwrap_or((0, GENESIS.to_owned()));
    let mut moved = false;
    // Per eventId: records stored (the store's count, then this batch's) and their digests.
    let mut seen: HashMap<&str, (u64, HashSet<&str>)> = view
        .seen
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                (v.records, v.digests.iter().map(String::as_str).collect()),
            )
        })
        .collect();
    let mut out = Vec::with_capacity(batch.lines.len());
    let alert = |seq, kind, detail, extra| alert(now, tenant, agent_id, seq, kind, detail, extra);
    // A refused event is not stored; an alert says so, with its seq and hash when they could be
    // read (the verifier carries the chain over it), and when it links to the chain as held, its
    // place is kept: the next event links to it.
    let refuse = |out: &mut Vec<StoredEventRecord>,
                  head: (u64, &str),
                  seq: Option<u64>,
                  hash: Option<&str>,
                  prev_hash: Option<&str>,
                  reason: &str,
                  sha256: &str|
     -> Option<(u64, String)> {
        let which = seq.map_or("an event".to_owned(), |s| format!("event {s}"));
        let mut extra = serde_json::json!({"reason": reason, "sha256": sha256});
        if let Some(h) = hash {
            extra["eventHash"] = h.into();
        }
        out.push(alert(
            seq,
            "refused",
            format!("{which} of {agent_id} was refused and not stored: {reason}"),
            extra,
        ));
        match (seq, hash) {
            (Some(s), Some(h)) if Some(s) == head.0.checked_add(1) && prev_hash == Some(head.1) => {
                Some((s, h.to_owned()))
            }
            _ => None,
        }
    };
    for line in &batch.lines {
        let p = match line {
            Line::Refused {
                seq,
                hash,
                prev_hash,
                reason,
                sha256,
            } => {
                if let Some(at) = refuse(
                    &mut out,
                    (head_seq, &head_hash),
                    *seq,
                    hash.as_deref(),
                    prev_hash.as_deref(),
                    reason,
                    sha256,
                ) {
                    (head_seq, head_hash, moved) = (at.0, at.1, true);
                }
                continue;
            }
            Line::Event(p) => p,
        };
        let stored = seen.get(p.event_id.as_str());
        if stored.is_some_and(|(_, d)| d.contains(p.digest.as_str())) {
            // An identical re-send (e.g. after a lost acknowledgement): already held.
            continue;
        }
        let held = stored.map_or(0, |(n, _)| *n);
        if held >= MAX_RECORDS_PER_EVENT_ID {
            // A flood of records under one id: the record is not stored (nor compared again).
            if let Some(at) = refuse(
                &mut out,
                (head_seq, &head_hash),
                Some(p.seq),
                Some(&p.hash),
                Some(&p.prev_hash),
                &format!(
                    "eventId {} already holds {MAX_RECORDS_PER_EVENT_ID} different records",
                    p.event_id
                ),
                &p.digest,
            ) {
                (head_seq, head_hash, moved) = (at.0, at.1, true);
            }
            continue;
        }
        let subject = || serde_json::json!({"subjectEventId": p.event_id});
        let mut ok = true;
        if held > 0 {
            ok = false;
            out.push(alert(
                Some(p.seq),
                "event_id_reused",
                format!(
                    "eventId {} of {agent_id} (seq {}) was already stored with other content ({held} record(s)); this record is stored too",
                    p.event_id, p.seq,
                ),
                subject(),
            ));
        }
        let self_check = |out: &mut Vec<StoredEventRecord>| {
            if let Err(e) = &p.sealed {
                out.push(alert(
                    Some(p.seq),
                    "bad_hash",
                    format!("event {} of {agent_id} does not hash correctly: {e}", p.seq),
                    subject(),
                ));
            }
        };
        if p.seq <= head_seq {
            ok = false;
            if p.seq == 1 && p.prev_hash == GENESIS {
                out.push(alert(
                    Some(p.seq),
                    "chain_restart",
                    format!(
                        "the chain of {agent_id} restarted at seq 1 after seq {head_seq} (its spool was lost, or its disk restored): a new chain begins, its events are stored"
                    ),
                    subject(),
                ));
            } else {
                out.push(alert(
                    Some(p.seq),
                    "chain_rewind",
                    format!(
                        "the chain of {agent_id} went back from seq {head_seq} to seq {} with events not seen before (a disk restored from a backup?): they are stored",
                        p.seq
                    ),
                    subject(),
                ));
            }
            self_check(&mut out);
        } else if p.seq != head_seq + 1 {
            ok = false;
            out.push(alert(
                Some(p.seq),
                "chain_gap",
                format!(
                    "gap in the chain of {agent_id}: events {} to {} are missing",
                    head_seq + 1,
                    p.seq - 1
                ),
                subject(),
            ));
            self_check(&mut out);
        } else if p.prev_hash != head_hash || p.sealed.is_err() {
            ok = false;
            let why = match &p.sealed {
                Err(e) if p.prev_hash == head_hash => e.to_string(),
                _ => format!("prevHash does not match the hash of seq {head_seq}"),
            };
            out.push(alert(
                Some(p.seq),
                "chain_break",
                format!("chain break at {agent_id} seq {}: {why}", p.seq),
                subject(),
            ));
        }
        (head_seq, head_hash, moved) = (p.seq, p.hash.clone(), true);
        let entry = seen.entry(p.event_id.as_str()).or_default();
        entry.0 += 1;
        entry.1.insert(p.digest.as_str());
        out.push(StoredEventRecord {
            id: 0,
            event_id: p.event_id.clone(),
            tenant: tenant.to_owned(),
            agent_id: agent_id.to_owned(),
            seq: p.seq,
            event_type: p.event_type.clone(),
            session_id: p.session_id.clone(),
            tool_name: p.tool_name.clone(),
            timestamp: p.timestamp.clone(),
            chain_ok: ok,
            json: p.json.clone(),
        });
    }
    (out, moved.then_some((head_seq, head_hash)))
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Agent events newly stored.
    pub stored: u64,
    /// CHAIN_ALERT events recorded.
    pub alerts: u64,
    /// The seq acknowledged.
    pub acked: u64,
}

/// Checks a prepared batch against the agent's chain and commits it with its signed head, in
/// one store transaction (blocking). `cert_der` is the agent's certificate; `now` stamps the
/// records the controller adds (alerts, the signed head).
pub fn commit(
    store: &dyn Store,
    tenant: &str,
    agent_id: &str,
    batch: &Prepared,
    cert_der: &[u8],
    now: SystemTime,
) -> Result<Ingested, IngestError> {
    let (mut alerts, mut controller_records) = (0, 0);
    let (t, a) = (TenantId::trusted(tenant), AgentId::trusted(agent_id));
    let new = store.commit_checked(&t, &a, &batch.keys(), &mut |view| {
        let mut decision = check(tenant, agent_id, view, batch, now);
        push_chain_head(
            now,
            &mut decision.0,
            tenant,
            agent_id,
            batch.head.as_ref(),
            cert_der,
        );
        alerts = decision
            .0
            .iter()
            .filter(|r| r.event_type == "CHAIN_ALERT")
            .count() as u64;
        // Alerts and heads (seq 0) are always new records.
        controller_records = decision.0.iter().filter(|r| r.seq == 0).count() as u64;
        decision
    })?;
    Ok(Ingested {
        stored: new.saturating_sub(controller_records),
        alerts,
        acked: batch.acked,
    })
}

/// After a batch that stores new events, the signed head it came with (verified by
/// [`prepare`]) is stored too, as a `CHAIN_HEAD` controller record carrying the signature and
/// the agent's certificate, in the same commit and after the batch's events: sinks export it like
/// any event, and `thoth events verify` / `thothctl events verify` check the chain against it
/// with nothing but the CA (the chain alone is unkeyed: it can be re-hashed after an edit).
fn push_chain_head(
    now: SystemTime,
    records: &mut Vec<StoredEventRecord>,
    tenant: &str,
    agent_id: &str,
    head: Option<&pb::ChainHead>,
    cert_der: &[u8],
) {
    let Some(head) = head else { return };
    if !records
        .iter()
        .any(|r| r.agent_id == agent_id && r.seq > 0 && r.event_type != "CHAIN_ALERT")
    {
        return;
    }
    let now = humantime::format_rfc3339_micros(now).to_string();
    let event_id = uuid::Uuid::now_v7().to_string();
    let signed = thoth_proto::evidence::SignedHead {
        tenant_id: tenant.to_owned(),
        agent_id: agent_id.to_owned(),
        seq: head.seq,
        hash: head.hash.clone(),
        signature: head.signature.clone(),
        certificate: cert_der.to_vec(),
        timestamp: now.clone(),
    };
    records.push(StoredEventRecord {
        event_id: event_id.clone(),
        tenant: tenant.to_owned(),
        agent_id: agent_id.to_owned(),
        seq: 0,
        event_type: thoth_proto::evidence::CHAIN_HEAD.into(),
        timestamp: now,
        chain_ok: true,
        json: String::from_utf8(thoth_proto::canonical::to_canonical(
            &signed.to_record(&event_id),
        ))
        .expect("canonical JSON is UTF-8"),
        ..StoredEventRecord::default()
    });
}

#[cfg(test)]
#[path = "ingest_tests.rs"]
mod tests;
