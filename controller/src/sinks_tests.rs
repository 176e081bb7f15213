use super::*;

#[test]
fn rfc5424_messages_carry_structured_data_escaped() {
    let ev = r#"{"eventId":"e1","eventType":"TOOL_CALL_PRE","timestamp":"2026-11-24T10:00:00.000001Z","hostname":"lap top","tenantId":"acme","agentId":"agt-1","toolName":"write\"]file","decision":{"action":"deny"},"seq":7}"#;
    let m = rfc5424(ev, "thoth");
    assert!(m.starts_with("<132>1 2026-11-24T10:00:00.000001Z laptop thoth - TOOL_CALL_PRE [thoth@32473 eventId=\"e1\""), "{m}");
    assert!(m.contains(r#"toolName="write\"\]file""#), "{m}");
    assert!(m.contains(" seq=\"7\""), "{m}");
    assert!(m.ends_with(ev));
    assert_eq!(hmac_header("k", b"x").len(), 7 + 64);
}

use crate::store::sqlite::SqliteStore;
use std::sync::atomic::AtomicU32;

fn ev(i: u64, ty: &str) -> StoredEventRecord {
    StoredEventRecord {
        event_id: format!("e{i}"),
        tenant: "acme".into(),
        agent_id: "agt-1".into(),
        seq: i,
        event_type: ty.into(),
        json: format!(r#"{{"eventId":"e{i}","eventType":"{ty}"}}"#),
        ..StoredEventRecord::default()
    }
}

fn jsonl_sink(dir: &std::path::Path, event_types: &[&str]) -> SinkConfig {
    SinkConfig {
        name: "siem".into(),
        kind: "jsonl".into(),
        tenants: vec![],
        event_types: event_types.iter().map(|t| t.to_string()).collect(),
        path: Some(dir.join("events.jsonl")),
        max_bytes: default_max_bytes(),
        keep: 1,
        address: None,
        tls: false,
        ca_file: None,
        server_name: None,
        url: None,
        token: None,
        secret: None,
        batch: 7,
    }
}

fn delivered(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["eventId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Waits until the sink wrote `want` events (or the deadline passed), then returns them.
async fn wait_delivered(dir: &std::path::Path, want: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = delivered(dir);
        if got.len() >= want || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A store where another writer commits a batch right after each of the sink's first reads
/// (of the high-water mark and of events): commits racing the sink.
struct Racing {
    store: SqliteStore,
    tick: tokio::sync::watch::Sender<u64>,
    rounds: AtomicU32,
    next: AtomicU64,
}

const RACING_ROUNDS: u32 = 8;

impl Racing {
    /// Commits 3 events the sink ignores and 2 it wants.
    fn race(&self) {
        if self.rounds.fetch_add(1, Ordering::SeqCst) >= RACING_ROUNDS {
            return;
        }
        let batch: Vec<_> = [
            "AGENT_STARTED",
            "TOOL_CALL_PRE",
            "CONFIG_WRAPPED",
            "TOOL_CALL_PRE",
            "AGENT_STARTED",
        ]
        .iter()
        .map(|t| ev(self.next.fetch_add(1, Ordering::SeqCst), t))
        .collect();
        self.store.commit_events("agt-1", &batch, None).unwrap();
        self.tick.send_modify(|n| *n += 1);
    }
}

impl EventSource for Racing {
    fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        self.store.sink_cursor(sink)
    }
    fn set_cursor(&self, sink: &str, id: u64) -> Result<(), StoreError> {
        self.store.set_sink_cursor(sink, id)
    }
    fn high_water(&self) -> Result<u64, StoreError> {
        let r = self.store.max_event_id();
        self.race();
        r
    }
    fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEventRecord>, StoreError> {
        let r = self.store.query_events(filter);
        self.race();
        r
    }
}

#[tokio::test]
async fn a_sink_never_skips_events_committed_while_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::in_memory().unwrap();
    // Events the sink filters out: its first reads come back empty.
    let seed: Vec<_> = (1..=4).map(|i| ev(1000 + i, "AGENT_STARTED")).collect();
    store.commit_events("agt-1", &seed, None).unwrap();
    let (tick, rx) = tokio::sync::watch::channel(0);
    let source = Arc::new(Racing {
        store,
        tick,
        rounds: AtomicU32::new(0),
        next: AtomicU64::new(1),
    });
    let stats = Arc::new(SinkStats::default());
    let task = tokio::spawn(run(
        Arc::clone(&source) as Arc<dyn EventSource>,
        rx,
        jsonl_sink(dir.path(), &["TOOL_CALL_PRE"]),
        Arc::clone(&stats),
    ));
    // The racing writer is done once RACING_ROUNDS reads happened; then every wanted event
    // must arrive, once, in commit order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while source.rounds.load(Ordering::SeqCst) < RACING_ROUNDS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink stopped reading"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let want_all: Vec<String> = source
        .store
        .query_events(&EventFilter {
            limit: 10_000,
            event_types: vec!["TOOL_CALL_PRE".into()],
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(want_all.len(), 2 * RACING_ROUNDS as usize);
    let got = wait_delivered(dir.path(), want_all.len()).await;
    assert_eq!(got, want_all, "events committed during a read were skipped");
    // Nothing pending: the cursor reached the last event, the lag is 0.
    let max = source.store.max_event_id().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while source.store.sink_cursor("siem").unwrap() != max {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cursor never reached {max}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.lag.load(Ordering::Relaxed), 0);
    task.abort();
}

/// A store whose first cursor read, first event read and first cursor write fail.
struct Failing {
    store: SqliteStore,
    fail_cursor: AtomicU32,
    fail_events: AtomicU32,
    fail_set: AtomicU32,
}

fn fail_once(n: &AtomicU32) -> Result<(), StoreError> {
    if n.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(StoreError::backend("disk I/O error"));
    }
    Ok(())
}

impl EventSource for Failing {
    fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        fail_once(&self.fail_cursor)?;
        self.store.sink_cursor(sink)
    }
    fn set_cursor(&self, sink: &str, id: u64) -> Result<(), StoreError> {
        fail_once(&self.fail_set)?;
        self.store.set_sink_cursor(sink, id)
    }
    fn high_water(&self) -> Result<u64, StoreError> {
        self.store.max_event_id()
    }
    fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEventRecord>, StoreError> {
        fail_once(&self.fail_events)?;
        self.store.query_events(filter)
    }
}

#[tokio::test]
async fn store_errors_move_no_cursor_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::in_memory().unwrap();
    // The sink already delivered up to event 3 before a restart.
    let events: Vec<_> = (1..=20).map(|i| ev(i, "TOOL_CALL_PRE")).collect();
    store.commit_events("agt-1", &events, None).unwrap();
    store.set_sink_cursor("siem", 3).unwrap();
    let source = Arc::new(Failing {
        store,
        fail_cursor: AtomicU32::new(0),
        fail_events: AtomicU32::new(0),
        fail_set: AtomicU32::new(0),
    });
    let stats = Arc::new(SinkStats::default());
    let (_tick, rx) = tokio::sync::watch::channel(0);
    let task = tokio::spawn(run(
        Arc::clone(&source) as Arc<dyn EventSource>,
        rx,
        jsonl_sink(dir.path(), &[]),
        Arc::clone(&stats),
    ));
    let want: Vec<String> = (4..=20).map(|i| format!("e{i}")).collect();
    let got = wait_delivered(dir.path(), want.len()).await;
    assert_eq!(got, want, "a failed read skipped or re-sent events");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while source.store.sink_cursor("siem").unwrap() != 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cursor was never saved"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.store_errors.load(Ordering::Relaxed), 3);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 17);
    task.abort();
}

#[tokio::test]
async fn a_batch_setting_above_the_store_limit_skips_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::in_memory().unwrap();
    let n = MAX_EVENTS_PER_QUERY as u64 + 5;
    let events: Vec<_> = (1..=n).map(|i| ev(i, "TOOL_CALL_PRE")).collect();
    store.commit_events("agt-1", &events, None).unwrap();
    let mut cfg = jsonl_sink(dir.path(), &[]);
    cfg.batch = 2 * MAX_EVENTS_PER_QUERY;
    let (_tick, rx) = tokio::sync::watch::channel(0);
    let task = tokio::spawn(run(
        Arc::new(StoreSource(Arc::new(store))),
        rx,
        cfg,
        Arc::new(SinkStats::default()),
    ));
    let got = wait_delivered(dir.path(), n as usize).await;
    assert_eq!(got.len() as u64, n);
    assert_eq!(got.last().unwrap(), &format!("e{n}"));
    task.abort();
}

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
        sink.write(&[format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100))])
            .unwrap();
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
