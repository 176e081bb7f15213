use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::{AgentId, EventStore, SinkCursorStore, Store};

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
        tenants: vec![],
        event_types: event_types.iter().map(|t| t.to_string()).collect(),
        batch: 7,
        kind: SinkKind::Jsonl(JsonlConfig {
            path: dir.join("events.jsonl"),
            max_bytes: 100 << 20,
            keep: 1,
        }),
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
        self.store
            .commit_events(&AgentId::trusted("agt-1"), &batch, None)
            .unwrap();
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
    store
        .commit_events(&AgentId::trusted("agt-1"), &seed, None)
        .unwrap();
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
    // ... and nothing was sent twice once it got there.
    assert_eq!(
        delivered(dir.path()),
        want_all,
        "events were delivered twice"
    );
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
    store
        .commit_events(&AgentId::trusted("agt-1"), &events, None)
        .unwrap();
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
    store
        .commit_events(&AgentId::trusted("agt-1"), &events, None)
        .unwrap();
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

/// Waits until the sink's saved cursor is `want`.
async fn wait_cursor(store: &SqliteStore, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while store.sink_cursor("siem").unwrap() != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cursor never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store that is both racing and failing: another writer commits a batch after each of the
/// sink's first high-water reads, and some of every kind of call fail (the high-water read too).
struct FlakyRacing {
    store: SqliteStore,
    tick: tokio::sync::watch::Sender<u64>,
    calls: AtomicU32,
    rounds: AtomicU32,
    next: AtomicU64,
}

const FLAKY_ROUNDS: u32 = 6;

impl FlakyRacing {
    /// Every fifth call among the first 30 fails.
    fn flake(&self) -> Result<(), StoreError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < 30 && n % 5 == 2 {
            return Err(StoreError::Busy("database is locked".into()));
        }
        Ok(())
    }

    /// Commits 2 events the sink wants and 1 it ignores.
    fn race(&self) {
        if self.rounds.fetch_add(1, Ordering::SeqCst) >= FLAKY_ROUNDS {
            return;
        }
        let batch: Vec<_> = ["TOOL_CALL_PRE", "AGENT_STARTED", "TOOL_CALL_PRE"]
            .iter()
            .map(|t| ev(self.next.fetch_add(1, Ordering::SeqCst), t))
            .collect();
        self.store
            .commit_events(&AgentId::trusted("agt-1"), &batch, None)
            .unwrap();
        self.tick.send_modify(|n| *n += 1);
    }
}

impl EventSource for FlakyRacing {
    fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        self.flake()?;
        self.store.sink_cursor(sink)
    }
    fn set_cursor(&self, sink: &str, id: u64) -> Result<(), StoreError> {
        self.flake()?;
        self.store.set_sink_cursor(sink, id)
    }
    fn high_water(&self) -> Result<u64, StoreError> {
        self.flake()?;
        let r = self.store.max_event_id();
        self.race();
        r
    }
    fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEventRecord>, StoreError> {
        self.flake()?;
        self.store.query_events(filter)
    }
}

#[tokio::test]
async fn a_sink_on_a_failing_racing_store_delivers_each_event_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (tick, rx) = tokio::sync::watch::channel(0);
    let source = Arc::new(FlakyRacing {
        store: SqliteStore::in_memory().unwrap(),
        tick,
        calls: AtomicU32::new(0),
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while source.rounds.load(Ordering::SeqCst) < FLAKY_ROUNDS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink stopped reading"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let want: Vec<String> = (0..FLAKY_ROUNDS as u64)
        .flat_map(|r| [format!("e{}", 3 * r + 1), format!("e{}", 3 * r + 3)])
        .collect();
    let got = wait_delivered(dir.path(), want.len()).await;
    assert_eq!(got, want, "events were skipped or reordered");
    wait_cursor(&source.store, source.store.max_event_id().unwrap()).await;
    assert_eq!(delivered(dir.path()), want, "events were delivered twice");
    assert!(stats.store_errors.load(Ordering::Relaxed) >= 3);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), want.len() as u64);
    assert_eq!(stats.lag.load(Ordering::Relaxed), 0);
    task.abort();
}

#[tokio::test]
async fn a_sink_whose_delivery_fails_moves_no_cursor_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // The file's directory cannot be made while a file sits at its name.
    let blocker = dir.path().join("out");
    std::fs::write(&blocker, "").unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let events: Vec<_> = (1..=5).map(|i| ev(i, "TOOL_CALL_PRE")).collect();
    store
        .commit_events(&AgentId::trusted("agt-1"), &events, None)
        .unwrap();
    let stats = Arc::new(SinkStats::default());
    let (_tick, rx) = tokio::sync::watch::channel(0);
    let task = tokio::spawn(run(
        Arc::new(StoreSource(Arc::clone(&store) as Arc<dyn Store>)),
        rx,
        jsonl_sink(&blocker, &[]),
        Arc::clone(&stats),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while stats.delivery_failures.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery never failed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.sink_cursor("siem").unwrap(),
        0,
        "a failed delivery moved the cursor"
    );
    std::fs::remove_file(&blocker).unwrap();
    let want: Vec<String> = (1..=5).map(|i| format!("e{i}")).collect();
    let got = wait_delivered(&blocker, want.len()).await;
    assert_eq!(got, want);
    wait_cursor(&store, 5).await;
    assert_eq!(delivered(&blocker), want, "events were delivered twice");
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 5);
    task.abort();
}

/// `[[sinks]]` tables as controller.toml holds them, parsed and checked.
fn sinks_of(toml: &str) -> Result<Vec<SinkConfig>, String> {
    #[derive(serde::Deserialize)]
    struct File {
        sinks: Vec<SinkConfig>,
    }
    let f: File = toml::from_str(toml).map_err(|e| e.to_string())?;
    for s in &f.sinks {
        s.check().map_err(|e| e.to_string())?;
    }
    Ok(f.sinks)
}

#[test]
fn sink_configs_parse_by_kind_with_the_common_fields() {
    let sinks = sinks_of(
        r#"
[[sinks]]
name = "file"
kind = "jsonl"
path = "/var/log/thoth/events.jsonl"
keep = 2
tenants = ["acme"]

[[sinks]]
name = "rsyslog"
kind = "syslog"
address = "127.0.0.1:6514"
event_types = ["TOOL_CALL_PRE"]
batch = 50
"#,
    )
    .unwrap();
    assert_eq!(sinks.len(), 2);
    assert_eq!(sinks[0].name, "file");
    assert_eq!(sinks[0].tenants, ["acme"]);
    assert_eq!(sinks[0].batch, 500);
    assert!(
        matches!(&sinks[0].kind, SinkKind::Jsonl(c) if c.keep == 2 && c.max_bytes == 100 << 20)
    );
    assert_eq!(sinks[1].event_types, ["TOOL_CALL_PRE"]);
    assert_eq!(sinks[1].batch, 50);
    assert!(
        matches!(&sinks[1].kind, SinkKind::Syslog(c) if c.address == "127.0.0.1:6514" && !c.tls)
    );
    assert_eq!(sinks[1].kind.name(), "syslog");
}

#[test]
fn a_sink_field_of_another_kind_is_refused_by_name() {
    let err = sinks_of(
        "[[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"/tmp/e.jsonl\"\nurl = \"http://h/\"\n",
    )
    .unwrap_err();
    assert!(err.contains("unknown field `url`"), "{err}");
    assert!(
        err.contains("sink \"file\" (jsonl): unknown field `url`, expected one of `path`"),
        "{err}"
    );
    assert!(err.contains("line 1"), "{err}");
    // A syslog setting on an HTTP sink, too.
    let err = sinks_of(
        "[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://h/\"\nsecret = \"s\"\ntls = true\n",
    )
    .unwrap_err();
    assert!(err.contains("unknown field `tls`"), "{err}");
}

#[test]
fn a_sink_field_misspelt_is_refused_by_name() {
    // A kind's own field ...
    let err = sinks_of(
        "[[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"/tmp/e.jsonl\"\nmax_byte = 10\n",
    )
    .unwrap_err();
    assert!(err.contains("unknown field `max_byte`"), "{err}");
    // ... a common one (which would otherwise silently filter nothing) ...
    let err = sinks_of(
        "[[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"/tmp/e.jsonl\"\nevent_type = [\"X\"]\n",
    )
    .unwrap_err();
    assert!(err.contains("unknown field `event_type`"), "{err}");
    // ... and the kind itself.
    let err =
        sinks_of("[[sinks]]\nname = \"s\"\nkind = \"jsonlines\"\npath = \"/tmp/e\"\n").unwrap_err();
    assert!(err.contains("unknown variant `jsonlines`"), "{err}");
    assert!(err.contains("`splunk_hec`"), "{err}");
    let err = sinks_of("[[sinks]]\nname = \"s\"\npath = \"/tmp/e\"\n").unwrap_err();
    assert!(err.contains("missing field `kind`"), "{err}");
    let err = sinks_of("[[sinks]]\nkind = \"jsonl\"\npath = \"/tmp/e\"\n").unwrap_err();
    assert!(err.contains("missing field `name`"), "{err}");
    let err =
        sinks_of("[[sinks]]\nname = \"\"\nkind = \"jsonl\"\npath = \"/tmp/e\"\n").unwrap_err();
    assert!(err.contains("1-64 characters"), "{err}");
}
