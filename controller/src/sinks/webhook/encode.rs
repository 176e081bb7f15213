use serde_json::Value;

use crate::store::StoredEventRecord;

/// The body: the events as one JSON array.
pub(super) fn body(events: &[StoredEventRecord]) -> Vec<u8> {
    let arr: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.json).unwrap_or(Value::Null))
        .collect();
    serde_json::to_vec(&arr).expect("values serialize")
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub(super) fn hmac_header(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
    )
}
