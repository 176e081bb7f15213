use super::super::{MAX_CLIENT_NAME_BYTES, MAX_PROXY_EVENT_BYTES, QUOTA_OWNER, admit, upload};
use super::*;
use crate::daemon::spool::TestDisk;
use std::sync::atomic::Ordering;
use std::time::SystemTime;
use thoth_proto::fleet as pb;

fn now_text() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

fn pre(id: &str, ts: &str, content: &str) -> Value {
    serde_json::json!({
        "eventId": id,
        "eventType": "TOOL_CALL_PRE",
        "timestamp": ts,
        "sessionId": "s1",
        "serverName": "fs",
        "sourceType": "agent_tool_call",
        "toolName": "write_file",
        "content": content,
        "decision": {"action": "allow", "mode": "block", "rule": "r", "reason": "ok"},
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn agent_event(t: EventType, d: Value) -> Event<'static> {
    crate::daemon::agent_event("default", Some("agent-1"), t, d)
}

fn handle(dir: &std::path::Path, disk: Option<Arc<TestDisk>>) -> SpoolHandle {
    #[allow(unused_mut)]
    let (mut spool, _) = Spool::open(dir, 1 << 30).unwrap();
    spool.space = disk;
    let sp = spawn(spool, 0, agent_event).unwrap();
    *lock(&sp.identity) = Some(("agent-1".into(), "default".into()));
    sp
}

async fn records(sp: &SpoolHandle) -> Vec<Value> {
    sp.read(0, usize::MAX, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|(_, r)| serde_json::from_slice(r).unwrap())
        .collect()
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A Shared agent over a temp dir, its spool open and its identity known.
fn shared(dir: &std::path::Path) -> Arc<crate::daemon::Shared> {
    let text = include_str!("../../../thoth-agent.example.toml");
    let mut c: thoth_endpoint::config::AgentConfig = toml::from_str(text).unwrap();
    c.state_dir = dir.join("state");
    c.socket_path = dir.join("agent.sock");
    c.wrap_configs = false;
    let sh = crate::daemon::Shared::new(c).unwrap();
    let _ = sh.spool.set(handle(&dir.join("spool"), None));
    sh.set_spool_identity("agent-1");
    sh
}

/// Findings 13.1 and 13.15, through the local socket: one bad event (no eventId, too large,
/// a type only the agent or controller may raise) is refused on its own and counted; the
/// rest of the batch is kept; identity fields are the agent's; a backdated timestamp is
/// flagged. Before, one bad event made the agent refuse the whole call (or, worse, take a
/// forged CHAIN_ALERT / CONFIG_WRAPPED as it came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_refused_one_by_one_and_the_rest_is_kept_as_the_agents() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(dir.path());
    let server = crate::daemon::local::serve(Arc::clone(&sh)).await.unwrap();
    let ch = thoth_endpoint::tls::local_channel(&sh.config.socket_path).unwrap();
    let mut c = pb::local_agent_client::LocalAgentClient::new(ch);
    let day_ago = humantime::format_rfc3339_micros(SystemTime::now() - Duration::from_secs(86_400))
        .to_string();
    let mut forged = pre("ok-2", &day_ago, "{}");
    for (k, v) in [
        ("sourceType", "controller"),
        ("user", "root"),
        ("hostname", "elsewhere"),
        ("agentId", "another-agent"),
        ("tenantId", "another-tenant"),
    ] {
        forged[k] = Value::from(v);
    }
    forged["seq"] = Value::from(7);
    let mut no_id = pre("x", &now_text(), "{}");
    no_id.as_object_mut().unwrap().remove("eventId");
    let events = vec![
        bytes(&pre("ok-1", &now_text(), "{\"path\":\"/tmp/a\"}")),
        bytes(
            &serde_json::json!({"eventId": "f1", "eventType": "CHAIN_ALERT", "sourceType": "controller", "timestamp": now_text(), "detail": "chain break (forged)"}),
        ),
        bytes(
            &serde_json::json!({"eventId": "f2", "eventType": "CONFIG_WRAPPED", "timestamp": now_text(), "detail": "forged"}),
        ),
        bytes(&no_id),
        bytes(&pre("big", &now_text(), &"x".repeat(300 << 10))),
        bytes(&forged),
    ];
    let ack = c
        .emit_events(pb::LocalEvents { events })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ack.accepted, ack.dropped, ack.refused),
        (2, 0, 4),
        "{ack:?}"
    );
    assert!(ack.refusal.contains("CHAIN_ALERT"), "{}", ack.refusal);
    let sp = sh.spool.get().unwrap();
    let recs = records(sp).await;
    let from_proxy: Vec<&Value> = recs
        .iter()
        .filter(|r| r.get("proxyEventId").is_some())
        .collect();
    assert_eq!(from_proxy.len(), 2, "{recs:#?}");
    assert!(
        recs.iter()
            .all(|r| r["eventType"] != "CHAIN_ALERT" && r["eventType"] != "CONFIG_WRAPPED")
    );
    let me = crate::daemon::local::user_name(rustix::process::getuid().as_raw()).unwrap();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let f = from_proxy
        .iter()
        .find(|r| r["proxyEventId"] == "ok-2")
        .unwrap();
    assert_eq!(f["sourceType"], "agent_tool_call");
    assert_eq!(f["user"], me.as_str());
    assert_eq!(f["hostname"], host.as_str());
    assert_eq!(
        (f["agentId"].as_str(), f["tenantId"].as_str()),
        (Some("agent-1"), Some("default"))
    );
    assert_ne!(f["seq"], 7);
    assert!(f["clockSkewSecs"].as_i64().unwrap() < -86_000, "{f}");
    let ok1 = from_proxy
        .iter()
        .find(|r| r["proxyEventId"] == "ok-1")
        .unwrap();
    assert!(ok1.get("clockSkewSecs").is_none());
    // The exported ids are the agent's (UUIDv7), not the proxy's.
    for r in &from_proxy {
        let id = uuid::Uuid::parse_str(r["eventId"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }
    // Counted and visible, and reported to the controller.
    let st = sh.status();
    assert_eq!(st.events.refused, 4);
    assert!(st.events.last_refusal.unwrap().contains(&me));
    wait_until("an EVENTS_REFUSED event", 10, || {
        let sp = sp.clone();
        let recs = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(records(&sp))
        })
        .join()
        .unwrap();
        recs.iter()
            .any(|r| r["eventType"] == "EVENTS_REFUSED" && r["detail"]["refused"] == 4)
    })
    .await;
    server.stop().await;
}

/// Finding 13.1, status side: a stalled upload said "connected, no error" everywhere. Now
/// it is the status's error (`thoth-agent status`, `thoth status`) and its `last_error`,
/// which the heartbeat carries to the controller (`thothctl agents list/show`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_an_error_in_the_status_and_the_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(dir.path());
    sh.update_status(|s| s.connected = true);
    let sp = sh.spool.get().unwrap();
    assert!(sp.append(agent_event(EventType::ConfigWrapped, Value::from(1))));
    wait_until("the event durable", 10, || *sp.durable.borrow() >= 1).await;
    assert!(sh.status().last_error.is_none(), "nothing failed yet");
    {
        let mut u = lock(&sp.upload);
        u.failures = STALL_ATTEMPTS;
        u.last_error = Some("event upload: an event has no usable eventId".into());
    }
    let st = sh.status();
    let err = st.last_error.clone().unwrap();
    assert!(
        err.contains("stalled") && err.contains("no usable eventId"),
        "{err}"
    );
    assert_eq!(st.events.error.as_deref(), Some(err.as_str()));
    assert!(st.render_text().contains("ERROR: event upload stalled"));
    // Waiting longer than STALL_AFTER without an acknowledgement is a stall too.
    {
        let mut u = lock(&sp.upload);
        u.failures = 0;
        u.progress_at = Instant::now() - STALL_AFTER - Duration::from_secs(1);
    }
    lock(&sp.stats).waiting_since = Some(Instant::now() - STALL_AFTER - Duration::from_secs(1));
    assert!(
        sh.status()
            .last_error
            .unwrap()
            .contains("no acknowledgement")
    );
    // Acknowledged: no error.
    sp.ack(1);
    wait_until("the ack recorded", 10, || lock(&sp.stats).acked == 1).await;
    lock(&sp.upload).progressed();
    assert!(sh.status().last_error.is_none());
}

/// Finding 13.2: de-duplication was by the caller-supplied eventId across all users, so a
/// user who pre-sent another's next id made that user's real event vanish. Now it is per
/// caller and only for an identical record; the exported id is the agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_suppress_another_users_events() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(dir.path());
    let ts = now_text();
    let decoy = bytes(&pre("victim-next", &ts, "{\"decoy\":true}"));
    let real = bytes(&pre("victim-next", &ts, "{\"path\":\"/etc/secret\"}"));
    let ok = |r: Result<EmitOutcome, crate::daemon::shared::EmitError>| r.unwrap().accepted;
    assert_eq!(ok(sh.spool_events(vec![decoy], "mallory").await), 1);
    assert_eq!(ok(sh.spool_events(vec![real.clone()], "alice").await), 1);
    let sp = sh.spool.get().unwrap();
    let n = records(sp).await.len();
    // A re-send of the identical record (a lost answer) is held once.
    assert_eq!(ok(sh.spool_events(vec![real.clone()], "alice").await), 1);
    assert_eq!(records(sp).await.len(), n);
    // The same caller re-using an id for a different record: kept, and flagged.
    let other = bytes(&pre("victim-next", &ts, "{\"path\":\"/etc/other\"}"));
    assert_eq!(ok(sh.spool_events(vec![other], "alice").await), 1);
    let recs = records(sp).await;
    let proxy: Vec<&Value> = recs
        .iter()
        .filter(|r| r["proxyEventId"] == "victim-next")
        .collect();
    assert_eq!(proxy.len(), 3, "{recs:#?}");
    assert!(
        proxy
            .iter()
            .any(|r| r["user"] == "alice" && r["content"] == "{\"path\":\"/etc/secret\"}")
    );
    assert!(proxy.iter().any(|r| r["user"] == "mallory"));
    let flagged: Vec<_> = proxy
        .iter()
        .filter(|r| r["eventIdReused"] == true)
        .collect();
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0]["content"], "{\"path\":\"/etc/other\"}");
    let ids: std::collections::HashSet<&str> = recs
        .iter()
        .map(|r| r["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), recs.len(), "exported ids collide");
    assert_eq!(sh.status().events.id_reused, 1);
}

/// Finding 13.12, in the pipeline: a full disk made the spool thread spin (no backoff) and
/// `EmitEvents` wait forever for durability. Now the proxy is answered (an error, so it
/// keeps its events), writes are retried with backoff, and nothing is lost or doubled once
/// the disk has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_proxies_backs_off_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(TestDisk::default());
    disk.space.store(2_000, Ordering::SeqCst);
    let sp = handle(dir.path(), Some(Arc::clone(&disk)));
    let now = SystemTime::now();
    let ts = now_text();
    let batch = |from: usize| -> Vec<Admitted> {
        (from..from + 20)
            .map(|i| admit(&bytes(&pre(&format!("e{i}"), &ts, "{}")), "u", "h", now).unwrap())
            .collect()
    };
    let t0 = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(10), sp.append_durable(batch(0)))
        .await
        .expect("EmitEvents hangs on a full disk");
    assert!(first.is_err(), "{first:?}");
    let second = tokio::time::timeout(Duration::from_secs(1), sp.append_durable(batch(20)))
        .await
        .expect("EmitEvents hangs on a full disk");
    assert!(second.unwrap_err().to_string().contains("cannot write"));
    // Retried with backoff, not in a loop: four attempts take over a second.
    wait_until("four write attempts", 30, || {
        disk.refused.load(Ordering::SeqCst) >= 4
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    disk.space.store(u64::MAX / 2, Ordering::SeqCst);
    let mut health = sp.health.clone();
    tokio::time::timeout(Duration::from_secs(30), health.wait_for(Option::is_none))
        .await
        .unwrap()
        .unwrap();
    // The proxy re-sends both batches: the first was held (de-duplicated), the second new.
    let mut again = batch(0);
    again.extend(batch(20));
    assert_eq!(sp.append_durable(again).await.unwrap(), (40, 0));
    let recs = sp.read(0, usize::MAX, usize::MAX).await.unwrap();
    assert_eq!(recs.len(), 40);
    assert!(
        recs.iter()
            .all(|(_, r)| !String::from_utf8_lossy(r).contains("eventIdReused"))
    );
    let mut prev = thoth_proto::chain::GENESIS.to_owned();
    for (seq, line) in &recs {
        let (s, h) = thoth_proto::chain::check_link(line, &prev).unwrap();
        assert_eq!(s, *seq);
        prev = h;
    }
}

/// A controller stand-in: acknowledges each batch, refuses (and ends the stream on) any
/// batch holding a record marked POISON, as ingest did for an event without `eventId`.
#[derive(Clone, Default)]
struct FakeIngest {
    got: Arc<Mutex<Vec<Value>>>,
    max_batch: Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl pb::event_upload_server::EventUpload for FakeIngest {
    type UploadStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::EventAck, tonic::Status>> + Send>,
    >;

    async fn upload(
        &self,
        req: tonic::Request<tonic::Streaming<pb::EventBatch>>,
    ) -> Result<tonic::Response<Self::UploadStream>, tonic::Status> {
        let mut input = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(b)) = input.message().await {
                let size: usize = b.events.iter().map(Vec::len).sum();
                me.max_batch.fetch_max(size, Ordering::SeqCst);
                if b.events
                    .iter()
                    .any(|e| String::from_utf8_lossy(e).contains("POISON"))
                {
                    let _ = tx
                        .send(Err(tonic::Status::invalid_argument(
                            "an event has no usable eventId",
                        )))
                        .await;
                    return;
                }
                lock(&me.got).extend(
                    b.events
                        .iter()
                        .map(|e| serde_json::from_slice::<Value>(e).unwrap()),
                );
                let seq = b.head.map_or(0, |h| h.seq);
                if tx.send(Ok(pb::EventAck { acked_seq: seq })).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Finding 13.1, upload side: a record the controller refuses used to be re-sent in the same
/// batch forever (every later event stuck on the laptop, status "no error"), and batches were
/// capped by count only. Now batches are capped by bytes, the refused record is isolated and
/// quarantined (reported), everything after it is delivered, and the stall shows meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_controller_refuses_is_quarantined_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sp = handle(dir.path(), None);
    let fake = FakeIngest::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = pb::event_upload_server::EventUploadServer::new(fake.clone())
        .max_decoding_message_size(64 << 20);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    // A padded event (its detail set after the agent's bound, which would cut it).
    let ev = |i: usize, pad: usize| {
        let mut e = agent_event(EventType::ConfigWrapped, Value::Null);
        e.detail = Some(serde_json::json!({"i": i, "pad": "x".repeat(pad)}));
        e
    };
    for i in 0..5 {
        assert!(sp.append(ev(i, 10)));
    }
    let mut poison = ev(5, 10);
    poison.detail = Some(serde_json::json!({"i": 5, "marker": "POISON"}));
    assert!(sp.append(poison));
    // 40 events of 200 KB: one count-capped batch would be 8 MB.
    for i in 6..46 {
        assert!(sp.append(ev(i, 200_000)));
    }
    wait_until("46 durable", 10, || *sp.durable.borrow() >= 46).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_stall = None;
    loop {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            upload(&sp, ch.clone(), "agent-1", &key),
        )
        .await;
        let st = lock(&sp.stats).clone();
        if let Some(s) = lock(&sp.upload).stalled(st.seq - st.acked, st.waiting_since) {
            saw_stall.get_or_insert(s);
        }
        let got = lock(&fake.got).clone();
        let tests = got
            .iter()
            .filter(|e| e["eventType"] == "CONFIG_WRAPPED")
            .count();
        if tests == 45 && got.iter().any(|e| e["eventType"] == "EVENT_QUARANTINED") {
            let q = got
                .iter()
                .find(|e| e["eventType"] == "EVENT_QUARANTINED")
                .unwrap();
            assert_eq!(q["detail"]["seq"], 6, "{q}");
            break;
        }
        assert!(Instant::now() < deadline, "stuck: {tests} of 45 delivered");
    }
    let stall = saw_stall.expect("the stall was never reported");
    assert!(
        stall.contains("stalled") && stall.contains("no usable eventId"),
        "{stall}"
    );
    assert_eq!(lock(&sp.upload).quarantined, 1);
    assert!(
        dir.path()
            .join("quarantine")
            .join(format!("{:020}.json", 6))
            .exists()
    );
    let max = fake.max_batch.load(Ordering::SeqCst);
    assert!(max <= BATCH_BYTES + 250_000, "a batch of {max} bytes");
    // Progress again: no stall.
    let st = lock(&sp.stats).clone();
    assert!(
        lock(&sp.upload)
            .stalled(st.seq - st.acked, st.waiting_since)
            .is_none()
    );
    server.abort();
}

/// Review L14: a 256 KiB event of `[0,0,0,…]` (or deep nesting) parsed into a Value takes
/// ~16 times its size; now such shapes are refused before parsing, real events still pass.
#[test]
fn events_with_too_many_values_or_too_deep_are_refused_before_parsing() {
    let now = SystemTime::now();
    let ts = now_text();
    let mut ev = pre("e1", &ts, "{\"a\": [1, 2, 3]}");
    ev["sessionToolCalls"] = serde_json::json!(["read_file", "write_file"]);
    assert!(admit(&bytes(&ev), "u", "h", now).is_ok());
    // A session that called a thousand one-letter tools is still an event.
    let mut many = pre("e5", &ts, "{}");
    let tools: Vec<String> = (0..1000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8).to_string())
        .collect();
    many["sessionToolCalls"] = serde_json::json!(tools);
    assert!(admit(&bytes(&many), "u", "h", now).is_ok());
    // Small values packed densely are refused even when few.
    let mut dense = pre("e6", &ts, "{}");
    dense["extra"] = Value::Array(vec![Value::from(0); 3_000]);
    let err = admit(&bytes(&dense), "u", "h", now)
        .unwrap_err()
        .to_string();
    assert!(err.contains("values"), "{err}");
    let mut wide = pre("e2", &ts, "{}");
    wide["extra"] = Value::Array(vec![Value::from(0); 100_000]);
    let raw = bytes(&wide);
    assert!(raw.len() < MAX_PROXY_EVENT_BYTES);
    let err = admit(&raw, "u", "h", now).unwrap_err().to_string();
    assert!(err.contains("values"), "{err}");
    let mut deep = pre("e3", &ts, "{}");
    let mut v = Value::from(0);
    for _ in 0..64 {
        v = Value::Array(vec![v]);
    }
    deep["extra"] = v;
    let err = admit(&bytes(&deep), "u", "h", now).unwrap_err().to_string();
    assert!(err.contains("deeper"), "{err}");
    // Commas and brackets inside strings (escaped quotes too) are not counted.
    let text = format!("\\\"[{}", ",".repeat(100_000));
    assert!(admit(&bytes(&pre("e4", &ts, &text)), "u", "h", now).is_ok());
}

/// Review M2: a spool thread behind (its channel full) answered `Ok((0, n))`, which the
/// proxy counts as dropped and never re-sends. Now it is "unavailable": the proxy keeps them.
#[tokio::test]
async fn a_full_spool_channel_answers_unavailable_so_the_proxy_keeps_its_events() {
    let (tx, rx) = mpsc::sync_channel::<Cmd>(1);
    tx.try_send(Cmd::Ack(0)).unwrap();
    let sp = SpoolHandle {
        tx,
        identity: Arc::new(Mutex::new(None)),
        durable: watch::channel(0).1,
        health: watch::channel(None).1,
        stats: Arc::default(),
        upload: Arc::new(Mutex::new(UploadState::default())),
        refusals: Arc::default(),
    };
    let now = SystemTime::now();
    let ev = admit(&bytes(&pre("e1", &now_text(), "{}")), "alice", "h", now).unwrap();
    let got = sp.append_durable(vec![ev]).await;
    assert!(got.is_err(), "a full channel answered {got:?}");
    drop(rx);
}

fn quota_spool(dir: &std::path::Path) -> SpoolHandle {
    let (spool, _) = Spool::open(dir, 1 << 20).unwrap();
    let sp = spawn(spool, 0, agent_event).unwrap();
    *lock(&sp.identity) = Some(("agent-1".into(), "default".into()));
    sp
}

/// Sends `user`'s events (8 KiB each, four a call) until the spool refuses a call; returns
/// how many were taken.
async fn fill(sp: &SpoolHandle, user: &str, max: usize) -> usize {
    send_as(sp, user, user, user, max).await
}

/// Review M4: one user flooding the shared spool made its size bound delete other users'
/// unsent events. Now a user holding more than a quarter of it unacknowledged may not make
/// the bound delete someone else's events: those events are refused as unavailable (their
/// proxy keeps them), and nobody else's are lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_over_quota_is_refused_and_cannot_evict_another_users_events() {
    let dir = tempfile::tempdir().unwrap();
    let sp = quota_spool(dir.path());
    assert_eq!(fill(&sp, "alice", 4).await, 4);
    // 400 events of 8 KiB = over three times the whole spool: mallory may use the room there
    // is, never the room alice's events take.
    let taken = fill(&sp, "mallory", 400).await;
    assert!(
        taken < 128,
        "mallory put {taken} events of 8 KiB in a 1 MiB spool"
    );
    assert_eq!(lock(&sp.stats).lost, 0, "events were deleted");
    let recs = records(&sp).await;
    assert_eq!(recs.iter().filter(|r| r["user"] == "alice").count(), 4);
    // Alice is not refused; and once mallory's events are acknowledged, mallory is taken again.
    assert_eq!(fill(&sp, "alice", 1).await, 1);
    sp.ack(lock(&sp.stats).seq);
    wait_until("the ack", 10, || lock(&sp.stats).acked > 0).await;
    assert_eq!(fill(&sp, "mallory", 1).await, 1);
}

/// Review M4: if the size bound still deletes events (many users at their quota), the
/// EVENTS_DROPPED event says whose events were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_dropped_names_whose_events_the_size_bound_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let sp = quota_spool(dir.path());
    for u in ["u1", "u2", "u3", "u4", "u5", "u6"] {
        fill(&sp, u, 400).await;
    }
    wait_until("lost events", 10, || lock(&sp.stats).lost > 0).await;
    let recs = records(&sp).await;
    let dropped = recs
        .iter()
        .find(|r| r["eventType"] == "EVENTS_DROPPED")
        .expect("an EVENTS_DROPPED event");
    let by = dropped["detail"]["byUser"].as_object().expect("byUser");
    assert!(
        by.get("u1").and_then(Value::as_u64).unwrap_or(0) > 0,
        "{dropped}"
    );
}

/// Sends `n` of `user`'s events (8 KiB each, four a call) counted against `owner`, ids
/// `{tag}-{i}`, until the spool refuses a call (it must say why: the per-user limit); returns
/// how many were taken.
async fn send_as(sp: &SpoolHandle, user: &str, owner: &str, tag: &str, n: usize) -> usize {
    let now = SystemTime::now();
    let ts = now_text();
    let content = "x".repeat(8 << 10);
    let mut taken = 0;
    while taken < n {
        let batch: Vec<Admitted> = (taken..n.min(taken + 4))
            .map(|i| {
                let raw = bytes(&pre(&format!("{tag}-{i}"), &ts, &content));
                let mut a = admit(&raw, user, "h", now).unwrap();
                a.owner = owner.to_owned();
                a
            })
            .collect();
        let k = batch.len() as u32;
        match sp.append_durable(batch).await {
            Ok((a, 0)) if a == k => taken += k as usize,
            Ok(other) => panic!("{other:?}"),
            Err(e) => {
                assert!(e.to_string().contains("per user"), "{e}");
                return taken;
            }
        }
    }
    taken
}

/// Review M3 (round 2): the quota check added up the attacker's own run of records, but the
/// size bound deletes whole segments. Mallory's run starts the oldest segment and is larger
/// than any one call needs, so the check passed, and the whole segment went, with alice's
/// record and the agent's PROXY_TAMPERED about mallory after the run. Now the deletion is
/// simulated segment by segment: a segment holding anything that is not mallory's stops her.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_starting_the_oldest_segment_cannot_delete_the_rest_of_it() {
    for with_alice in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB: segments of 128 KiB, a quota of 256 KiB.
        let sp = quota_spool(dir.path());
        // Mallory's run of ~70 KiB starts the oldest segment: more than any call of hers needs.
        assert_eq!(send_as(&sp, "mallory", "mallory", "m0", 8).await, 8);
        if with_alice {
            assert_eq!(send_as(&sp, "alice", "alice", "a", 1).await, 1);
        }
        assert!(sp.append(agent_event(
            EventType::ProxyTampered,
            serde_json::json!({"user": "mallory"})
        )));
        let taken = send_as(&sp, "mallory", "mallory", "m1", 400).await;
        assert!(
            taken < 128,
            "mallory put {taken} events of 8 KiB in a 1 MiB spool (alice too: {with_alice})"
        );
        assert_eq!(lock(&sp.stats).lost, 0, "events were deleted");
        let recs = records(&sp).await;
        if with_alice {
            assert_eq!(recs.iter().filter(|r| r["user"] == "alice").count(), 1);
        }
        assert_eq!(
            recs.iter()
                .filter(|r| r["eventType"] == "PROXY_TAMPERED")
                .count(),
            1
        );
    }
}

/// Review M3 (round 2): after a restart the held records were counted by their `user`, which
/// for a subordinate uid is the uid's own name, not the login user owning it: alice's holdings
/// through her sub-uid were forgotten, and she could push out bob's events again. The owner is
/// now kept in the record (`quotaOwner`), so a restart rebuilds the same holdings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holdings_survive_a_restart_under_the_owner_of_a_sub_uid() {
    let dir = tempfile::tempdir().unwrap();
    let sp = quota_spool(dir.path());
    assert_eq!(send_as(&sp, "bob", "bob", "b", 4).await, 4);
    // ~870 KiB through alice's sub-uid: room there was, so all taken.
    assert_eq!(send_as(&sp, "alice-sub", "alice", "s", 100).await, 100);
    let recs = records(&sp).await;
    assert!(
        recs.iter()
            .filter(|r| r["user"] == "alice-sub")
            .all(|r| r[QUOTA_OWNER] == "alice"),
        "the owner is not in the records"
    );
    assert!(
        recs.iter()
            .filter(|r| r["user"] == "bob")
            .all(|r| r.get(QUOTA_OWNER).is_none())
    );
    // Restart: the spool thread ends when the last handle goes.
    let stats = Arc::clone(&sp.stats);
    drop(sp);
    wait_until("the spool thread ended", 10, || {
        Arc::strong_count(&stats) == 1
    })
    .await;
    let sp = quota_spool(dir.path());
    // Alice (as herself now) already holds far over a quarter: she may not delete bob's.
    let taken = send_as(&sp, "alice", "alice", "a", 100).await;
    assert!(
        taken < 30,
        "alice put {taken} more events in after a restart"
    );
    assert_eq!(lock(&sp.stats).lost, 0, "events were deleted");
    let recs = records(&sp).await;
    assert_eq!(recs.iter().filter(|r| r["user"] == "bob").count(), 4);
}

/// The quota owner is the agent's field: a proxy cannot pick whose quota its events use.
#[test]
fn a_proxy_cannot_set_the_quota_owner() {
    let mut v = pre("e1", &now_text(), "{}");
    v[QUOTA_OWNER] = Value::from("bob");
    let a = admit(&bytes(&v), "mallory", "h", SystemTime::now()).unwrap();
    assert!(a.event.quota_owner.is_none());
    assert_eq!(a.owner, "mallory");
}

/// `clientName` comes from the MCP client's `initialize` request (any program chooses it): the
/// agent keeps it bounded and free of control characters, and never loses the event over it.
#[test]
fn a_proxys_client_name_is_bounded_and_cleaned() {
    let now = SystemTime::now();
    let with = |name: Value| {
        let mut v = pre("e1", &now_text(), "{}");
        v["clientName"] = name;
        admit(&bytes(&v), "u", "h", now)
            .unwrap()
            .event
            .client_name
            .map(|c| c.into_owned())
    };
    assert_eq!(with(Value::from("cursor")).as_deref(), Some("cursor"));
    assert_eq!(
        with(Value::from("  evil\u{1b}[2J\nCONFIG_OK\u{7} ")).as_deref(),
        Some("evil[2JCONFIG_OK")
    );
    let long = with(Value::from("é".repeat(10_000))).unwrap();
    assert!(long.len() <= MAX_CLIENT_NAME_BYTES, "{} bytes", long.len());
    assert_eq!(long, "é".repeat(MAX_CLIENT_NAME_BYTES / 2));
    let long = with(Value::from(format!("x{}", "é".repeat(100)))).unwrap();
    assert_eq!(
        long.len(),
        MAX_CLIENT_NAME_BYTES - 1,
        "cut on a character boundary"
    );
    assert_eq!(with(Value::from("\n\t \u{0}")), None, "nothing left");
    // Invisible reordering and zero-width characters go too (a spoofed name in a terminal).
    assert_eq!(
        with(Value::from("cur\u{202e}rosr\u{200b}\u{2066}x\u{feff}")).as_deref(),
        Some("currosrx")
    );
    let mut v = pre("e1", &now_text(), "{}");
    v.as_object_mut().unwrap().remove("clientName");
    assert!(
        admit(&bytes(&v), "u", "h", now)
            .unwrap()
            .event
            .client_name
            .is_none()
    );
}

/// The rule's intent kept: a lone user keeps the whole spool's outage tolerance and goes on
/// displacing their own oldest records, past the agent's start record (about nobody) and the
/// spool's own EVENTS_DROPPED naming only their losses; evidence about users is never theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_user_displaces_their_own_oldest_past_the_agents_start_and_their_own_losses() {
    let dir = tempfile::tempdir().unwrap();
    let sp = quota_spool(dir.path());
    assert!(sp.append(agent_event(EventType::AgentStarted, serde_json::json!({}))));
    // 400 events of 8 KiB: over three times the 1 MiB spool, all taken.
    assert_eq!(send_as(&sp, "alice", "alice", "a", 400).await, 400);
    let recs = records(&sp).await;
    assert!(lock(&sp.stats).lost > 0);
    assert!(
        recs.iter().all(|r| r["eventType"] != "AGENT_STARTED"),
        "the start record was not displaced"
    );
    // A PROXY_TAMPERED about her, now in the oldest segments' way, stops her.
    assert!(sp.append(agent_event(
        EventType::ProxyTampered,
        serde_json::json!({"user": "alice"})
    )));
    assert!(send_as(&sp, "alice", "alice", "b", 400).await < 400);
    let recs = records(&sp).await;
    assert!(recs.iter().any(|r| r["eventType"] == "PROXY_TAMPERED"));
}
