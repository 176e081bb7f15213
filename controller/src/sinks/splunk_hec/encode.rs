use serde_json::Value;

use crate::store::StoredEventRecord;

/// The HEC body: one `{"time", "host", "source", "sourcetype", "event"}` object a line.
pub(super) fn body(events: &[StoredEventRecord]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in events {
        let v: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
        let time = v
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        let obj = serde_json::json!({
            "time": time,
            "host": v.get("hostname").cloned().unwrap_or(Value::Null),
            "source": "thoth",
            "sourcetype": "thoth:event",
            "event": v,
        });
        body.extend_from_slice(obj.to_string().as_bytes());
        body.push(b'\n');
    }
    body
}

/// The header that carries the token.
pub(super) fn authorization(token: &str) -> (&'static str, String) {
    ("authorization", format!("Splunk {token}"))
}
