use serde_json::Value;

use super::encode::{body, hmac_header};
use crate::sinks::SinkKind;
use crate::store::StoredEventRecord;

#[test]
fn webhook_sink_signs_a_json_array_of_the_events() {
    assert_eq!(hmac_header("k", b"x").len(), 7 + 64);
    // RFC 4231 test case 2.
    assert_eq!(
        hmac_header("Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let events = [
        StoredEventRecord {
            json: r#"{"eventId":"e1"}"#.into(),
            ..StoredEventRecord::default()
        },
        StoredEventRecord {
            json: r#"{"eventId":"e2"}"#.into(),
            ..StoredEventRecord::default()
        },
    ];
    let v: Value = serde_json::from_slice(&body(&events)).unwrap();
    assert_eq!(v, serde_json::json!([{"eventId": "e1"}, {"eventId": "e2"}]));
}

#[test]
fn a_webhook_sink_config_needs_a_url_and_a_secret() {
    let kind: SinkKind =
        toml::from_str("kind = \"webhook\"\nurl = \"http://h/\"\nsecret = \"s\"").unwrap();
    assert!(
        matches!(kind, SinkKind::Webhook(ref c) if c.secret == "s"),
        "{kind:?}"
    );
    let err = toml::from_str::<SinkKind>("kind = \"webhook\"\nurl = \"http://h/\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `secret`"), "{err}");
}
