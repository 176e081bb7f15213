use serde_json::Value;

use super::encode::{authorization, body};
use crate::sinks::SinkKind;
use crate::store::StoredEventRecord;

#[test]
fn splunk_hec_sink_wraps_each_event_with_its_time_and_host() {
    let ev = r#"{"eventId":"e1","timestamp":"2026-11-24T10:00:00.5Z","hostname":"lap"}"#;
    let events = [
        StoredEventRecord {
            json: ev.into(),
            ..StoredEventRecord::default()
        },
        StoredEventRecord {
            json: "{}".into(),
            ..StoredEventRecord::default()
        },
    ];
    let body = String::from_utf8(body(&events)).unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["time"], 1_795_514_400.5);
    assert_eq!(lines[0]["host"], "lap");
    assert_eq!(lines[0]["sourcetype"], "thoth:event");
    assert_eq!(lines[0]["event"]["eventId"], "e1");
    assert_eq!(lines[1]["time"], 0.0);
    assert_eq!(
        authorization("t-1"),
        ("authorization", "Splunk t-1".to_owned())
    );
}

#[test]
fn a_splunk_hec_sink_config_needs_a_url_and_a_token() {
    let kind: SinkKind =
        toml::from_str("kind = \"splunk_hec\"\nurl = \"http://h:8088/\"\ntoken = \"t\"").unwrap();
    assert!(
        matches!(kind, SinkKind::SplunkHec(ref c) if c.token == "t"),
        "{kind:?}"
    );
    let err = toml::from_str::<SinkKind>("kind = \"splunk_hec\"\nurl = \"http://h:8088/\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `token`"), "{err}");
}
