use super::config::default_max_bytes;
use super::deliver::{JsonlSink, rotated};
use super::encode::lines;
use crate::sinks::SinkKind;
use crate::store::StoredEventRecord;

#[test]
fn the_jsonl_sink_rotates_and_keeps_the_newest_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let sink = JsonlSink {
        path: path.clone(),
        max_bytes: 1000,
        keep: 2,
    };
    for i in 0..30 {
        let event = StoredEventRecord {
            json: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100)),
            ..StoredEventRecord::default()
        };
        sink.write(&lines(&[event])).unwrap();
    }
    assert!(path.exists());
    assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
    assert!(
        !rotated(&path, 3).exists(),
        "more than `keep` rotated files"
    );
    let last = std::fs::read_to_string(&path).unwrap();
    assert!(
        last.contains("\"n\":29"),
        "the newest event is in the current file"
    );
    assert!(std::fs::metadata(&path).unwrap().len() <= 1000 + 120);
}

#[test]
fn jsonl_sink_lines_are_the_events_as_stored() {
    let events: Vec<_> = ["{\"a\":1}", "{\"b\":2}"]
        .iter()
        .map(|j| StoredEventRecord {
            json: (*j).to_owned(),
            ..StoredEventRecord::default()
        })
        .collect();
    assert_eq!(lines(&events), b"{\"a\":1}\n{\"b\":2}\n");
}

#[test]
fn a_jsonl_sink_config_has_defaults_and_needs_a_path() {
    let kind: SinkKind = toml::from_str("kind = \"jsonl\"\npath = \"/tmp/x.jsonl\"").unwrap();
    let SinkKind::Jsonl(cfg) = kind else {
        panic!("{kind:?}")
    };
    assert_eq!((cfg.max_bytes, cfg.keep), (default_max_bytes(), 5));
    let err = toml::from_str::<SinkKind>("kind = \"jsonl\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `path`"), "{err}");
}
