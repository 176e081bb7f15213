use super::encode::{frames, rfc5424};
use crate::sinks::SinkKind;
use crate::store::StoredEventRecord;

#[test]
fn rfc5424_messages_carry_structured_data_escaped() {
    let ev = r#"{"eventId":"e1","eventType":"TOOL_CALL_PRE","timestamp":"2026-11-24T10:00:00.000001Z","hostname":"lap top","tenantId":"acme","agentId":"agt-1","toolName":"write\"]file","decision":{"action":"deny"},"seq":7}"#;
    let m = rfc5424(ev, "thoth");
    assert!(m.starts_with("<132>1 2026-11-24T10:00:00.000001Z laptop thoth - TOOL_CALL_PRE [thoth@32473 eventId=\"e1\""), "{m}");
    assert!(m.contains(r#"toolName="write\"\]file""#), "{m}");
    assert!(m.contains(" seq=\"7\""), "{m}");
    assert!(m.ends_with(ev));
}

#[test]
fn syslog_sink_frames_are_octet_counted() {
    let events: Vec<_> = ["{\"eventId\":\"a\"}", "{\"eventId\":\"bé\"}"]
        .iter()
        .map(|j| StoredEventRecord {
            json: (*j).to_owned(),
            ..StoredEventRecord::default()
        })
        .collect();
    let buf = frames(&events);
    let mut rest = &buf[..];
    for e in &events {
        let sp = rest.iter().position(|b| *b == b' ').unwrap();
        let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
        let msg = std::str::from_utf8(&rest[sp + 1..sp + 1 + len]).unwrap();
        assert_eq!(msg, rfc5424(&e.json, "thoth"));
        rest = &rest[sp + 1 + len..];
    }
    assert!(rest.is_empty());
}

#[test]
fn a_syslog_sink_config_needs_an_address_and_takes_tls_settings() {
    let kind: SinkKind = toml::from_str(
        "kind = \"syslog\"\naddress = \"h:6514\"\ntls = true\nca_file = \"/ca.pem\"\nserver_name = \"h\"",
    )
    .unwrap();
    let SinkKind::Syslog(cfg) = kind else {
        panic!("{kind:?}")
    };
    assert!(cfg.tls && cfg.server_name.as_deref() == Some("h"));
    let err = toml::from_str::<SinkKind>("kind = \"syslog\"\ntls = true")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `address`"), "{err}");
}
