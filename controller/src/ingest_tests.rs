use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::{EventFilter, EventStore};
use rcgen::SigningKey as _;
use thoth_proto::chain::Chain;
use tonic::Status;

struct Agent {
    id: String,
    tenant: String,
    key: rcgen::KeyPair,
}

impl Agent {
    fn new(id: &str, tenant: &str) -> Agent {
        Agent {
            id: id.into(),
            tenant: tenant.into(),
            key: rcgen::KeyPair::generate().unwrap(),
        }
    }

    /// A batch of lines whose signed head is (seq, hash).
    fn batch(&self, lines: Vec<Vec<u8>>, seq: u64, hash: &str) -> pb::EventBatch {
        pb::EventBatch {
            events: lines,
            head: Some(pb::ChainHead {
                seq,
                hash: hash.into(),
                signature: self.key.sign(&head_message(&self.id, seq, hash)).unwrap(),
            }),
        }
    }

    /// A batch of well-formed lines, its head naming the last.
    fn good_batch(&self, lines: Vec<Vec<u8>>) -> pb::EventBatch {
        let v: Value = serde_json::from_slice(lines.last().unwrap()).unwrap();
        let (seq, hash) = (v["seq"].as_u64().unwrap(), text(&v, "hash"));
        self.batch(lines, seq, &hash)
    }

    fn prepare(&self, batch: &pb::EventBatch) -> Result<Prepared, Status> {
        prepare(&self.id, batch, self.key.public_key_raw())
            .map_err(|e| ServiceError::from(e).into())
    }

    fn upload(&self, store: &dyn Store, batch: &pb::EventBatch) -> Ingested {
        let p = self.prepare(batch).unwrap();
        commit(
            store,
            &self.tenant,
            &self.id,
            &p,
            b"certificate",
            std::time::SystemTime::now(),
        )
        .unwrap()
    }

    /// Stored events of its chain (seq > 0), in commit order.
    fn events(&self, store: &dyn Store) -> Vec<StoredEventRecord> {
        self.records(store)
            .into_iter()
            .filter(|r| r.seq > 0)
            .collect()
    }

    fn alerts(&self, store: &dyn Store) -> Vec<Value> {
        self.records(store)
            .into_iter()
            .filter(|r| r.event_type == "CHAIN_ALERT")
            .map(|r| serde_json::from_str(&r.json).unwrap())
            .collect()
    }

    fn records(&self, store: &dyn Store) -> Vec<StoredEventRecord> {
        store
            .query_events(&EventFilter {
                agent_id: Some(self.id.clone()),
                limit: 10_000,
                ..Default::default()
            })
            .unwrap()
    }
}

/// A sealed event with this eventId (None: without one).
fn event(chain: &mut Chain, id: Option<&str>) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    if let Some(id) = id {
        m.insert("eventId".into(), id.into());
    }
    m.insert("eventType".into(), "TOOL_CALL_PRE".into());
    m.insert("timestamp".into(), "2026-11-30T10:00:00Z".into());
    m.insert("toolName".into(), "write_file".into());
    chain.seal_value(&mut m)
}

fn kinds(alerts: &[Value]) -> Vec<&str> {
    alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect()
}

fn ids(events: &[StoredEventRecord]) -> Vec<&str> {
    events.iter().map(|e| e.event_id.as_str()).collect()
}

#[test]
fn event_ids_belong_to_their_agent_and_a_reused_id_is_stored_and_alerted() {
    let store = SqliteStore::in_memory().unwrap();
    let (a, b) = (Agent::new("agt-a", "acme"), Agent::new("agt-b", "beta"));
    // Tenant B's agent uploads first, with the ids A's events will carry.
    let mut cb = Chain::new();
    b.upload(
        &store,
        &b.good_batch(vec![event(&mut cb, Some("x1")), event(&mut cb, Some("x2"))]),
    );
    let mut ca = Chain::new();
    let first = a.good_batch(vec![event(&mut ca, Some("x1")), event(&mut ca, Some("x2"))]);
    let done = a.upload(&store, &first);
    assert_eq!((done.stored, done.alerts, done.acked), (2, 0, 2));
    assert_eq!(
        ids(&a.events(&store)),
        ["x1", "x2"],
        "A's events were pre-empted"
    );
    assert!(a.alerts(&store).is_empty());
    // A re-send of the same records (a lost acknowledgement): nothing new, no alert.
    let again = a.upload(&store, &first);
    assert_eq!((again.stored, again.alerts, again.acked), (0, 0, 2));
    // A different record under a seen id: stored, and alerted.
    let reused = a.good_batch(vec![event(&mut ca, Some("x1"))]);
    let done = a.upload(&store, &reused);
    assert_eq!((done.stored, done.alerts), (1, 1));
    assert_eq!(ids(&a.events(&store)), ["x1", "x2", "x1"]);
    let alerts = a.alerts(&store);
    assert_eq!(kinds(&alerts), ["event_id_reused"]);
    assert_eq!(alerts[0]["subjectEventId"], "x1");
    assert_eq!(alerts[0]["seq"], 3);
    assert!(!a.events(&store)[2].chain_ok);
    // B's chain is untouched.
    assert_eq!(ids(&b.events(&store)), ["x1", "x2"]);
    assert!(b.alerts(&store).is_empty());
}

/// A flood of different records under one eventId: past the cap each is refused (an alert
/// with its seq and hash, no body kept), the chain goes on over them, and a re-send of the
/// records stored is still recognised.
#[test]
fn a_flood_of_records_under_one_event_id_is_capped_and_the_chain_goes_on() {
    let store = SqliteStore::in_memory().unwrap();
    let a = Agent::new("agt-a", "acme");
    let mut c = Chain::new();
    let cap = MAX_RECORDS_PER_EVENT_ID as usize;
    let flood: Vec<_> = (0..cap + 12).map(|_| event(&mut c, Some("x"))).collect();
    let batch = a.good_batch(flood.clone());
    let done = a.upload(&store, &batch);
    assert_eq!(
        done.stored, cap as u64,
        "more than the cap stored under one id"
    );
    assert_eq!(done.acked, (cap + 12) as u64);
    let alerts = a.alerts(&store);
    let refused: Vec<&Value> = alerts.iter().filter(|a| a["alert"] == "refused").collect();
    assert_eq!(refused.len(), 12);
    assert_eq!(alerts.len(), cap - 1 + 12, "{alerts:#?}");
    let line: Value = serde_json::from_slice(&flood[cap]).unwrap();
    assert_eq!(refused[0]["seq"], cap + 1);
    assert_eq!(refused[0]["eventHash"], line["hash"]);
    assert!(refused[0]["reason"].as_str().unwrap().contains("eventId x"));
    // The chain goes on over the refused records: the next event links, no gap.
    let next = a.upload(&store, &a.good_batch(vec![event(&mut c, Some("y"))]));
    assert_eq!((next.stored, next.alerts), (1, 0));
    assert!(a.events(&store).last().unwrap().chain_ok);
    // A re-send: the stored records are recognised by digest, the rest refused again.
    let again = a.upload(&store, &batch);
    assert_eq!(again.stored, 0);
    assert_eq!(a.events(&store).len(), cap + 1);
}

/// An event over the size limit is refused, but its place in the chain is read: the next
/// event links (no gap alert), and verifying what is stored finds one break (the hole, named
/// as the refusal) and verifies every chain on after it.
#[test]
fn after_an_oversize_event_the_stored_chains_verify_around_one_break() {
    let store = SqliteStore::in_memory().unwrap();
    let (a, b) = (Agent::new("agt-a", "acme"), Agent::new("agt-b", "acme"));
    // Events as an agent seals them: with its agentId (the verifier follows chains by it).
    let ev = |c: &mut Chain, agent: &Agent, id: &str, content: &str| {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("eventId", id),
            ("agentId", &agent.id),
            ("eventType", "TOOL_CALL_PRE"),
            ("content", content),
        ] {
            m.insert(k.into(), v.into());
        }
        c.seal_value(&mut m)
    };
    let (mut c, mut cb) = (Chain::new(), Chain::new());
    let first = vec![
        ev(&mut c, &a, "a1", ""),
        ev(&mut c, &a, "big", &"x".repeat(MAX_EVENT_BYTES)),
        ev(&mut c, &a, "a3", ""),
        ev(&mut c, &a, "a4", ""),
    ];
    a.upload(&store, &a.good_batch(first));
    let second = vec![ev(&mut cb, &b, "b1", ""), ev(&mut cb, &b, "b2", "")];
    b.upload(&store, &b.good_batch(second));
    a.upload(&store, &a.good_batch(vec![ev(&mut c, &a, "a5", "")]));
    assert_eq!(kinds(&a.alerts(&store)), ["refused"]);
    assert!(
        a.events(&store).iter().all(|e| e.chain_ok),
        "the event after the refused one was taken for a gap"
    );
    // Every stored record in commit order, as `thothctl events verify` reads them (signed
    // heads aside: these test agents have no certificate).
    let mut verifier = thoth_proto::Verifier::new(None);
    let all = store
        .query_events(&EventFilter {
            limit: 10_000,
            ..Default::default()
        })
        .unwrap();
    for r in all.iter().filter(|r| r.event_type != "CHAIN_HEAD") {
        let _ = verifier.push_stored(r.id as usize, r.json.as_bytes(), r.seq == 0, &r.agent_id);
    }
    let r = verifier.finish();
    assert_eq!(r.breaks.len(), 1, "{:#?}", r.breaks);
    assert!(
        r.breaks[0]
            .reason
            .contains("seq 2 of agent \"agt-a\" missing")
            && r.breaks[0].reason.contains("refused"),
        "{:?}",
        r.breaks[0]
    );
    assert_eq!(r.chains["agt-a"], 5);
    assert_eq!(r.first["agt-a"], 3);
    assert_eq!(r.chains["agt-b"], 2);
    assert_eq!(r.events, 4 + 2, "a1, a3..a5 and b1..b2 verified");
}

/// A hostile agent uploads lines made to look like the controller's records (a "refused"
/// alert about another agent's seq, with no hash; a hashed line claiming sourceType
/// controller; seq 0): each is refused (an alert about the uploader's own chain), none is
/// stored as sent, and verifying the store by provenance finds the victim's chain whole.
#[test]
fn lines_posing_as_controller_records_are_refused_and_do_not_break_another_chain() {
    let store = SqliteStore::in_memory().unwrap();
    let (victim, evil) = (Agent::new("agt-v", "acme"), Agent::new("agt-e", "acme"));
    let sealed = |c: &mut Chain, agent: &Agent, id: &str| {
        let mut m = serde_json::Map::new();
        m.insert("eventId".into(), id.into());
        m.insert("agentId".into(), agent.id.clone().into());
        m.insert("eventType".into(), "TOOL_CALL_PRE".into());
        c.seal_value(&mut m)
    };
    let mut cv = Chain::new();
    let v_lines: Vec<_> = (1..=4)
        .map(|i| sealed(&mut cv, &victim, &format!("v{i}")))
        .collect();
    victim.upload(&store, &victim.good_batch(v_lines[..2].to_vec()));
    let v3: Value = serde_json::from_slice(&v_lines[2]).unwrap();
    // seq 1: a "controller" refusal of the victim's seq 3, no hash.
    let forged_alert = serde_json::to_vec(&serde_json::json!({
        "eventId": "f1", "eventType": "CHAIN_ALERT", "sourceType": "controller",
        "alert": "refused", "agentId": victim.id, "seq": 3, "eventHash": v3["hash"],
        "detail": "event 3 of agt-v was refused",
    }))
    .unwrap();
    let mut ce = Chain::new();
    let e1 = sealed(&mut ce, &evil, "e1");
    // seq 2: hashed and linked, but claiming to be the controller's.
    let mut m = serde_json::Map::new();
    m.insert("eventId".into(), "f2".into());
    m.insert("sourceType".into(), "controller".into());
    let claims = ce.seal_value(&mut m);
    let seq0 = serde_json::to_vec(&serde_json::json!({
        "eventId": "f3", "seq": 0, "hash": "00", "prevHash": GENESIS,
    }))
    .unwrap();
    let next = sealed(&mut ce, &evil, "e3");
    let batch = evil.good_batch(vec![e1, forged_alert.clone(), claims, seq0, next]);
    let done = evil.upload(&store, &batch);
    assert_eq!(
        (done.stored, done.alerts),
        (2, 3),
        "{:#?}",
        evil.records(&store)
    );
    assert_eq!(ids(&evil.events(&store)), ["e1", "e3"]);
    let alerts = evil.alerts(&store);
    assert_eq!(kinds(&alerts), ["refused", "refused", "refused"]);
    assert!(alerts.iter().all(|a| a["agentId"] == evil.id.as_str()));
    assert!(alerts[0]["reason"].as_str().unwrap().contains("no hash"));
    assert!(alerts[1]["reason"].as_str().unwrap().contains("sourceType"));
    assert!(alerts[2]["reason"].as_str().unwrap().contains("seq 0"));
    for r in evil.records(&store) {
        assert!(!r.event_id.starts_with('f'), "stored as sent: {r:?}");
    }
    victim.upload(&store, &victim.good_batch(v_lines[2..].to_vec()));
    // A tenant-wide verification, as `thothctl events verify` reads the rows.
    let mut verifier = thoth_proto::Verifier::new(None);
    let all = store
        .query_events(&EventFilter {
            limit: 10_000,
            ..Default::default()
        })
        .unwrap();
    for r in all.iter().filter(|r| r.event_type != "CHAIN_HEAD") {
        let _ = verifier.push_stored(r.id as usize, r.json.as_bytes(), r.seq == 0, &r.agent_id);
    }
    let r = verifier.finish();
    assert_eq!((r.first["agt-v"], r.chains["agt-v"]), (1, 4));
    assert!(
        r.breaks.iter().all(|b| !b.reason.contains("agt-v")),
        "{:#?}",
        r.breaks
    );
}

#[test]
fn a_restarted_or_rewound_chain_is_alerted_and_its_events_stored() {
    let store = SqliteStore::in_memory().unwrap();
    let a = Agent::new("agt-a", "acme");
    let mut old = Chain::new();
    let lines: Vec<_> = (1..=5)
        .map(|i| event(&mut old, Some(&format!("o{i}"))))
        .collect();
    a.upload(&store, &a.good_batch(lines));
    // The spool is deleted: a new chain from seq 1 and the genesis hash.
    let mut new = Chain::new();
    let restart = a.good_batch(vec![
        event(&mut new, Some("n1")),
        event(&mut new, Some("n2")),
    ]);
    let done = a.upload(&store, &restart);
    assert_eq!((done.stored, done.alerts, done.acked), (2, 1, 2));
    assert_eq!(kinds(&a.alerts(&store)), ["chain_restart"]);
    // Its identical re-send is de-duplicated; it goes on without alerts.
    assert_eq!(a.upload(&store, &restart).stored, 0);
    a.upload(&store, &a.good_batch(vec![event(&mut new, Some("n3"))]));
    assert_eq!(a.alerts(&store).len(), 1);
    let events = a.events(&store);
    assert_eq!(
        ids(&events),
        ["o1", "o2", "o3", "o4", "o5", "n1", "n2", "n3"]
    );
    let flags: Vec<bool> = events.iter().map(|e| e.chain_ok).collect();
    assert_eq!(flags, [true, true, true, true, true, false, true, true]);
    // A disk restored from a backup taken at seq 1: seq 2 and 3 again, other events.
    let (_, seq1_hash) = check_link(&restart.events[0], GENESIS).unwrap();
    let mut restored = Chain::resume(1, thoth_proto::chain::parse_hash(&seq1_hash).unwrap());
    let rewind = a.good_batch(vec![
        event(&mut restored, Some("r2")),
        event(&mut restored, Some("r3")),
        event(&mut restored, Some("r4")),
    ]);
    let done = a.upload(&store, &rewind);
    assert_eq!((done.stored, done.alerts, done.acked), (3, 1, 4));
    assert_eq!(kinds(&a.alerts(&store)), ["chain_restart", "chain_rewind"]);
    assert_eq!(
        ids(&a.events(&store))[8..],
        ["r2", "r3", "r4"],
        "the rewound chain's events were dropped"
    );
    assert_eq!(a.upload(&store, &rewind).stored, 0);
    assert_eq!(a.alerts(&store).len(), 2);
}

#[test]
fn one_bad_event_is_recorded_as_an_alert_and_the_rest_of_the_batch_is_stored() {
    let store = SqliteStore::in_memory().unwrap();
    let a = Agent::new("agt-a", "acme");
    let mut c = Chain::new();
    let not_json = b"SECRET-CONTENT {not json".to_vec();
    let lines = vec![
        event(&mut c, Some("e1")),
        not_json.clone(),
        event(&mut c, Some("e2")),
        event(&mut c, None), // seq 3: no eventId
        event(&mut c, Some("e4")),
    ];
    // seq 5: over the size limit.
    let mut big = serde_json::Map::new();
    big.insert("eventId".into(), "e5".into());
    big.insert("content".into(), "SECRET-CONTENT".repeat(80_000).into());
    let mut lines = lines;
    lines.push(c.seal_value(&mut big));
    lines.push(event(&mut c, Some("e6")));
    let batch = a.good_batch(lines.clone());
    let done = a.upload(&store, &batch);
    assert_eq!(done.acked, 6, "the batch must be acknowledged whole");
    assert_eq!(ids(&a.events(&store)), ["e1", "e2", "e4", "e6"]);
    let alerts = a.alerts(&store);
    // Seq 5 is over the size limit, but its place in the chain is read: no gap after it.
    assert_eq!(
        kinds(&alerts),
        ["refused", "refused", "refused"],
        "{alerts:#?}"
    );
    let sha = |l: &[u8]| hex::encode(Sha256::digest(l));
    assert_eq!(alerts[0]["sha256"], sha(&not_json));
    assert!(alerts[0]["reason"].as_str().unwrap().contains("not JSON"));
    assert_eq!(alerts[1]["seq"], 3);
    assert_eq!(alerts[1]["sha256"], sha(&lines[3]));
    assert!(alerts[1]["reason"].as_str().unwrap().contains("eventId"));
    assert_eq!(alerts[2]["sha256"], sha(&lines[5]));
    assert!(alerts[2]["reason"].as_str().unwrap().contains("limit"));
    let big_line: Value = serde_json::from_slice(&lines[5]).unwrap();
    assert_eq!(alerts[2]["seq"], 5);
    assert_eq!(alerts[2]["eventHash"], big_line["hash"]);
    for r in a.records(&store) {
        if r.event_type == "CHAIN_ALERT" {
            assert!(
                !r.json.contains("SECRET"),
                "an alert carries the bad event's content"
            );
        }
    }
    // Seq 3 and 5 were refused but their places in the chain known: seq 4 and 6 link
    // without a break.
    let flags: Vec<bool> = a.events(&store).iter().map(|e| e.chain_ok).collect();
    assert_eq!(flags, [true, true, true, true]);
    // A batch ending with an unreadable event: the head names its seq, the hash as read.
    let mut c2 = Chain::resume(
        6,
        thoth_proto::chain::parse_hash(&text(&serde_json::from_slice(&lines[6]).unwrap(), "hash"))
            .unwrap(),
    );
    let last_bad = a.batch(
        vec![event(&mut c2, Some("e7")), b"\xff\xfe".to_vec()],
        8,
        "",
    );
    assert_eq!(a.upload(&store, &last_bad).acked, 8);
    assert_eq!(ids(&a.events(&store))[4..], ["e7"]);
    // What concerns the whole batch still fails it.
    let mut forged = a.good_batch(vec![event(&mut c2, Some("e9"))]);
    forged.head.as_mut().unwrap().signature[10] ^= 1;
    assert_eq!(
        a.prepare(&forged).unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let too_many = a.good_batch(vec![event(&mut c2, Some("e10")); MAX_BATCH_EVENTS + 1]);
    assert_eq!(
        a.prepare(&too_many).unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let mut wrong_head = a.good_batch(vec![event(&mut c2, Some("e11"))]);
    wrong_head.head.as_mut().unwrap().seq += 1;
    assert!(a.prepare(&wrong_head).is_err());
}
