//! Admission of a proxy's events: each is checked on its own (only the types a proxy may send,
//! their fields and types, size and JSON shape), the fields the agent owns are forced (identity
//! from the agent and the caller's OS user), the proxy's id is kept as `proxyEventId`, and clock
//! skew is flagged. Pure: no IO.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The field of a proxy record naming whose spool quota it counts against, when that is not its
/// `user` (a subordinate uid's record counts against the login user owning the uid). The
/// agent's: whatever a proxy puts there is removed.
pub const QUOTA_OWNER: &str = "quotaOwner";

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

/// A proxy's event as the agent will chain it, with its de-duplication key and digest.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The normalised event (no `eventId` yet: the agent assigns it).
    pub event: Map<String, Value>,
    /// The caller and the proxy's own event id.
    pub(super) key: String,
    /// What makes two records identical.
    pub(super) digest: [u8; 32],
    /// Whose spool quota the record counts against (the caller's owning login user).
    pub(crate) owner: String,
    /// About what the record takes in the spool.
    pub(super) size: u64,
}

/// Fields the agent owns: whatever a proxy puts there is replaced or removed.
const AGENT_FIELDS: [&str; 12] = [
    "agentId",
    QUOTA_OWNER,
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
const NOT_DIGESTED: [&str; 9] = [
    "eventId",
    QUOTA_OWNER,
    "agentId",
    "tenantId",
    "seq",
    "prevHash",
    "hash",
    "clockSkewSecs",
    "eventIdReused",
];

pub(super) fn dedup_key(user: &str, proxy_id: &str) -> String {
    format!("{user}\u{0}{proxy_id}")
}

pub(super) fn digest(event: &Map<String, Value>) -> [u8; 32] {
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
/// [`MAX_EVENT_VALUES`] allows, before it is parsed into a `Value`: serde_json reads it once
/// into nothing ([`Shape`] keeps no content), so what a parsed event takes stays within a few
/// times its size. Syntax errors are left to the real parse that follows.
fn json_shape(raw: &[u8]) -> Result<(), String> {
    use serde::de::DeserializeSeed;
    let count = std::cell::Cell::new(0usize);
    let mut de = serde_json::Deserializer::from_slice(raw);
    let shaped = Shape {
        depth: 0,
        values: &count,
    }
    .deserialize(&mut de);
    match shaped {
        Err(e) if e.is_data() => return Err(e.to_string()),
        _ => {}
    }
    let values = count.get();
    if values > raw.len() / 4 + 64 {
        return Err(format!(
            "an event of {values} JSON values in {} bytes (at most one per 4 bytes)",
            raw.len()
        ));
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
