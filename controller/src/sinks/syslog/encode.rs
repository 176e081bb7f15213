use serde_json::Value;

use crate::store::StoredEventRecord;

/// Events as RFC 5424 messages, each framed by octet counting (`LEN SP MSG`).
pub(super) fn frames(events: &[StoredEventRecord]) -> Vec<u8> {
    let mut buf = Vec::new();
    for e in events {
        let msg = rfc5424(&e.json, "thoth");
        buf.extend_from_slice(format!("{} {msg}", msg.len()).as_bytes());
    }
    buf
}

/// An RFC 5424 message for an event: `<PRI>1 TIMESTAMP HOST APP - MSGID [thoth@32473 …] JSON`.
pub(super) fn rfc5424(event_json: &str, app: &str) -> String {
    let v: Value = serde_json::from_str(event_json).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let action = v
        .get("decision")
        .and_then(|d| d.get("action"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let event_type = s("eventType");
    // local0; warning for refusals and alerts, info otherwise.
    let severity = if matches!(action.as_str(), "deny" | "denied" | "block")
        || event_type.contains("ALERT")
        || event_type.contains("REJECTED")
        || event_type.contains("INVALID")
    {
        4
    } else {
        6
    };
    let pri = 16 * 8 + severity;
    let header_field = |x: String| {
        let x: String = x
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        if x.is_empty() { "-".to_owned() } else { x }
    };
    let esc = |x: &str| {
        x.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace(']', "\\]")
    };
    let mut sd = String::from("[thoth@32473");
    for (k, val) in [
        ("eventId", s("eventId")),
        ("eventType", event_type.clone()),
        ("tenantId", s("tenantId")),
        ("agentId", s("agentId")),
        ("user", s("user")),
        ("serverName", s("serverName")),
        ("toolName", s("toolName")),
        ("action", action),
        (
            "seq",
            v.get("seq").map(|x| x.to_string()).unwrap_or_default(),
        ),
    ] {
        if !val.is_empty() {
            sd.push_str(&format!(" {k}=\"{}\"", esc(&val)));
        }
    }
    sd.push(']');
    format!(
        "<{pri}>1 {} {} {} - {} {sd} {event_json}",
        header_field(s("timestamp")),
        header_field(s("hostname")),
        header_field(app.to_owned()),
        header_field(event_type.chars().take(32).collect()),
    )
}
