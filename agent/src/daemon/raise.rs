//! The bounds of an agent-raised event: its detail's size caps, and the event itself as the
//! agent raises it about the machine (no user), ready for the chain.

use std::time::SystemTime;

use serde_json::Value;
use thoth_proto::{Event, EventType};

/// Longest string an agent-raised event's detail keeps whole.
pub const MAX_DETAIL_TEXT: usize = 8 << 10;
/// Largest detail an agent-raised event carries (the controller refuses events over 1 MiB).
pub const MAX_DETAIL_BYTES: usize = 64 << 10;

/// `text` if at most [`MAX_DETAIL_TEXT`] bytes; else its start, its length and the SHA-256 of
/// the whole.
pub fn bound_text(text: &str) -> String {
    if text.len() <= MAX_DETAIL_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_DETAIL_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    format!(
        "{}… [truncated: {} bytes in all, sha256 {sha}]",
        &text[..end],
        text.len()
    )
}

/// An agent event's detail, bounded: long strings cut ([`bound_text`]); a detail still over
/// [`MAX_DETAIL_BYTES`] replaced by its start, length and SHA-256.
pub fn bound_detail(detail: Value) -> Value {
    fn cut(v: Value) -> Value {
        match v {
            Value::String(s) if s.len() > MAX_DETAIL_TEXT => Value::String(bound_text(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(cut).collect()),
            Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, cut(v))).collect()),
            v => v,
        }
    }
    let whole = detail.to_string();
    if whole.len() <= MAX_DETAIL_BYTES {
        return detail;
    }
    let cut = cut(detail);
    if cut.to_string().len() <= MAX_DETAIL_BYTES {
        return cut;
    }
    Value::String(bound_text(&whole))
}

/// An agent-raised event (no `user`: it is about the machine); its detail bounded
/// ([`bound_detail`]).
pub fn agent_event(
    tenant: &str,
    agent_id: Option<&str>,
    event_type: EventType,
    detail: Value,
) -> Event<'static> {
    let identity = thoth_proto::Identity {
        tenant_id: tenant.to_owned(),
        agent_id: agent_id.unwrap_or("unenrolled").to_owned(),
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        user: String::new(),
    };
    let mut e = Event::new(
        event_type,
        uuid::Uuid::now_v7().to_string(),
        humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        &identity,
    );
    e.source_type = Some("agent".into());
    e.detail = Some(bound_detail(detail));
    e.into_owned()
}
