//! Admission of a proxy's events: each is checked on its own (size and JSON shape, then parsed
//! once into the typed [`Event`]: only the types a proxy may send, their fields and types), the
//! fields the agent owns are forced (identity from the agent and the caller's OS user), the
//! proxy's id is kept as `proxyEventId`, and clock skew is flagged. Pure: no IO.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use thoth_proto::{Event, EventType};

/// The field of a proxy record naming whose spool quota it counts against, when that is not its
/// `user` (a subordinate uid's record counts against the login user owning the uid). The
/// agent's: whatever a proxy puts there is removed.
pub const QUOTA_OWNER: &str = "quotaOwner";

/// Largest event a proxy may send (its content is capped far lower; the controller takes 1 MiB).
pub const MAX_PROXY_EVENT_BYTES: usize = 256 << 10;
/// A proxy event whose timestamp is further than this from the agent's clock is flagged
/// (`clockSkewSecs`), not refused: pending events of an earlier proxy are legitimately old.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Longest `clientName` kept, in bytes (the proxy keeps 128 characters; a longer name is cut on
/// a character boundary, not refused: the event is evidence, its client's name is a label).
pub const MAX_CLIENT_NAME_BYTES: usize = 128;
/// The only event types a proxy may send; every other type is the agent's or the controller's.
pub const PROXY_EVENT_TYPES: [EventType; 7] = EventType::FROM_PROXY;

/// A proxy's event as the agent will chain it, with its de-duplication key and digest.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The normalised event (no `eventId` yet: the agent assigns it).
    pub event: Event<'static>,
    /// The caller and the proxy's own event id.
    pub(super) key: String,
    /// What makes two records identical.
    pub(super) digest: [u8; 32],
    /// Whose spool quota the record counts against (the caller's owning login user).
    pub(crate) owner: String,
    /// About what the record takes in the spool.
    pub(super) size: u64,
}

pub(super) fn dedup_key(user: &str, proxy_id: &str) -> String {
    format!("{user}\u{0}{proxy_id}")
}

/// What makes two records identical: the canonical bytes of the event without the fields
/// assigned when it is appended or relative to the time it arrived (`eventId`, `agentId`,
/// `tenantId`, the chain fields, `clockSkewSecs`, `eventIdReused`, `quotaOwner`), so a re-send
/// of the same record compares equal. The event is left as it was.
pub(super) fn digest(e: &mut Event<'_>) -> [u8; 32] {
    let event_id = std::mem::take(&mut e.event_id);
    let agent_id = std::mem::take(&mut e.agent_id);
    let tenant_id = std::mem::take(&mut e.tenant_id);
    let chain = (e.seq.take(), e.prev_hash.take(), e.hash.take());
    let skew = e.clock_skew_secs.take();
    let reused = e.event_id_reused.take();
    let owner = e.quota_owner.take();
    let d = Sha256::digest(thoth_proto::chain::canonical_event(e)).into();
    e.event_id = event_id;
    e.agent_id = agent_id;
    e.tenant_id = tenant_id;
    (e.seq, e.prev_hash, e.hash) = chain;
    e.clock_skew_secs = skew;
    e.event_id_reused = reused;
    e.quota_owner = owner;
    d
}

/// Why a proxy's event was refused; its text goes into the `EmitEvents` reply (`reason`), the
/// agent's status and the `EVENTS_REFUSED` event.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Over [`MAX_PROXY_EVENT_BYTES`].
    #[error("an event of {0} bytes, over the limit of {MAX_PROXY_EVENT_BYTES}")]
    TooLarge(usize),
    /// Nested too deep or too many values, found while counting them.
    #[error("{0}")]
    Shape(serde_json::Error),
    /// More values than one per 4 bytes (plus 64).
    #[error("an event of {values} JSON values in {bytes} bytes (at most one per 4 bytes)")]
    Dense { values: usize, bytes: usize },
    /// JSON, but not an event (a field missing or of the wrong type).
    #[error("not an event: {0}")]
    NotAnEvent(serde_json::Error),
    /// Not JSON.
    #[error("an event is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// A type only the agent or the controller may send.
    #[error("a proxy may not send {0} events (only {list})", list = PROXY_EVENT_TYPES.map(EventType::as_str).join(", "))]
    NotFromProxy(EventType),
    /// A required text field is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A text field is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// A text field is over its length.
    #[error("{key} is longer than {max} bytes")]
    TooLong { key: &'static str, max: usize },
    /// The timestamp is not RFC 3339.
    #[error("timestamp {0:?} is not RFC 3339 UTC: {1}")]
    Timestamp(String, humantime::TimestampError),
    /// An `EVENTS_DROPPED` event without its count.
    #[error("an EVENTS_DROPPED event without detail.dropped")]
    DroppedWithoutDetail,
}

fn text_field(value: &str, key: &'static str, max: usize) -> Result<(), Refusal> {
    if value.is_empty() {
        Err(Refusal::Empty(key))
    } else if value.len() > max {
        Err(Refusal::TooLong { key, max })
    } else {
        Ok(())
    }
}

/// A proxy's `clientName` as the agent keeps it: control characters removed, surrounding space
/// trimmed, at most [`MAX_CLIENT_NAME_BYTES`] (cut on a character boundary); `None` when nothing
/// is left. A proxy writes it from the client's `initialize` request, which the client (any
/// program on the machine) chooses.
pub(super) fn client_name(name: &str) -> Option<String> {
    // Control characters, and the invisible format characters that reorder or hide text
    // (bidirectional overrides and isolates, zero-width characters, the BOM): a client name is
    // shown to admins as written.
    let invisible = |c: char| {
        matches!(c as u32,
            0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064
            | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB)
    };
    let kept: String = name
        .chars()
        .filter(|c| !c.is_control() && !invisible(*c))
        .collect();
    let mut kept = kept.trim().to_owned();
    if kept.len() > MAX_CLIENT_NAME_BYTES {
        let mut end = MAX_CLIENT_NAME_BYTES;
        while !kept.is_char_boundary(end) {
            end -= 1;
        }
        kept.truncate(end);
        kept.truncate(kept.trim_end().len());
    }
    (!kept.is_empty()).then_some(kept)
}

fn required(value: Option<&str>, key: &'static str, max: usize) -> Result<(), Refusal> {
    text_field(value.ok_or(Refusal::Missing(key))?, key, max)
}

/// Deepest nesting of a proxy event's JSON.
pub const MAX_EVENT_DEPTH: usize = 16;
/// Most values (array elements, object keys and members, counted together) in a proxy event's
/// JSON, and at most one per 4 of its bytes (plus 64): parsed, each value takes 32 bytes or more,
/// so `[0,0,…]` would grow ~16 times; real events (long strings, names) are far below either.
pub const MAX_EVENT_VALUES: usize = 16_384;

/// Refuses JSON nested deeper than [`MAX_EVENT_DEPTH`] or with more values than
/// [`MAX_EVENT_VALUES`] allows, before it is parsed into a `Value`: serde_json reads it once
/// into nothing ([`Shape`] keeps no content), so what a parsed event takes stays within a few
/// times its size. Syntax errors are left to the real parse that follows.
fn json_shape(raw: &[u8]) -> Result<(), Refusal> {
    use serde::de::DeserializeSeed;
    let count = std::cell::Cell::new(0usize);
    let mut de = serde_json::Deserializer::from_slice(raw);
    let shaped = Shape {
        depth: 0,
        values: &count,
    }
    .deserialize(&mut de);
    match shaped {
        Err(e) if e.is_data() => return Err(Refusal::Shape(e)),
        _ => {}
    }
    let values = count.get();
    if values > raw.len() / 4 + 64 {
        return Err(Refusal::Dense {
            values,
            bytes: raw.len(),
        });
    }
    Ok(())
}

/// Counts a JSON document's values and depth while serde_json reads it, keeping nothing.
struct Shape<'a> {
    depth: usize,
    values: &'a std::cell::Cell<usize>,
}

impl Shape<'_> {
    fn take<E: serde::de::Error>(&self) -> Result<(), E> {
        let n = self.values.get() + 1;
        self.values.set(n);
        if n > MAX_EVENT_VALUES {
            return Err(E::custom(format!(
                "an event of more than {MAX_EVENT_VALUES} JSON values"
            )));
        }
        Ok(())
    }

    fn inner<E: serde::de::Error>(&self) -> Result<Shape<'_>, E> {
        self.take()?;
        if self.depth + 1 > MAX_EVENT_DEPTH {
            return Err(E::custom(format!(
                "an event nested deeper than {MAX_EVENT_DEPTH}"
            )));
        }
        Ok(Shape {
            depth: self.depth + 1,
            values: self.values,
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Shape<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Shape<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.take()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while seq
            .next_element_seed(Shape {
                depth: inner.depth,
                values: inner.values,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while map
            .next_key_seed(Shape {
                depth: inner.depth,
                values: inner.values,
            })?
            .is_some()
        {
            map.next_value_seed(Shape {
                depth: inner.depth,
                values: inner.values,
            })?;
        }
        Ok(())
    }
}

/// Checks one event from a proxy and makes it the agent's: at most [`MAX_PROXY_EVENT_BYTES`] and
/// of a bounded JSON shape, then parsed once into the typed event (the fields' types checked
/// there); only the types a proxy may send, with the fields each must have; identity fields
/// (`user`, `hostname`, `sourceType`, chain fields) come from the agent and the caller's OS user,
/// never from the proxy; the proxy's `eventId` is kept as `proxyEventId` (the agent assigns the
/// exported one); a timestamp far from the agent's clock is flagged with `clockSkewSecs`.
pub fn admit(raw: &[u8], user: &str, hostname: &str, now: SystemTime) -> Result<Admitted, Refusal> {
    if raw.len() > MAX_PROXY_EVENT_BYTES {
        return Err(Refusal::TooLarge(raw.len()));
    }
    json_shape(raw)?;
    let mut e: Event<'static> = match serde_json::from_slice(raw) {
        Ok(e) => e,
        Err(e) if e.is_data() => return Err(Refusal::NotAnEvent(e)),
        Err(e) => return Err(Refusal::NotJson(e)),
    };
    let kind = e.event_type;
    if !kind.from_proxy() {
        return Err(Refusal::NotFromProxy(kind));
    }
    text_field(&e.event_id, "eventId", 64)?;
    text_field(&e.timestamp, "timestamp", 64)?;
    let at = humantime::parse_rfc3339(&e.timestamp)
        .map_err(|err| Refusal::Timestamp(e.timestamp.to_string(), err))?;
    let skew_secs = match at.duration_since(now) {
        Ok(ahead) => (ahead > MAX_CLOCK_SKEW).then_some(ahead.as_secs() as i64),
        Err(e) => (e.duration() > MAX_CLOCK_SKEW).then(|| -(e.duration().as_secs() as i64)),
    };
    if kind == EventType::EventsDropped {
        if e.detail
            .as_ref()
            .and_then(thoth_proto::Dropped::from_detail)
            .is_none()
        {
            return Err(Refusal::DroppedWithoutDetail);
        }
    } else {
        required(e.session_id.as_deref(), "sessionId", 256)?;
        required(e.server_name.as_deref(), "serverName", 1024)?;
        required(e.tool_name.as_deref(), "toolName", 1024)?;
    }
    if let Some(name) = e.client_name.take() {
        e.client_name = client_name(&name).map(Cow::Owned);
    }
    // The agent's fields: whatever the proxy put there is replaced or removed.
    let proxy_id = std::mem::take(&mut e.event_id);
    e.agent_id = Cow::Borrowed("");
    e.tenant_id = Cow::Borrowed("");
    (e.seq, e.prev_hash, e.hash) = (None, None, None);
    e.clock_skew_secs = None;
    e.event_id_reused = None;
    e.quota_owner = None;
    e.proxy_event_id = Some(Cow::Owned(proxy_id.clone().into_owned()));
    e.user = Cow::Owned(user.to_owned());
    e.hostname = Cow::Owned(hostname.to_owned());
    e.source_type = Some(Cow::Borrowed(if kind == EventType::EventsDropped {
        "proxy"
    } else {
        "agent_tool_call"
    }));
    let digest = digest(&mut e);
    e.clock_skew_secs = skew_secs;
    Ok(Admitted {
        event: e,
        key: dedup_key(user, &proxy_id),
        digest,
        owner: user.to_owned(),
        size: raw.len() as u64 + 512,
    })
}
