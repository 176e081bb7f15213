use std::path::PathBuf;
use std::time::Duration;

use thoth_proto::{ContentLimits, Identity};

use super::*;
use crate::events::SessionInfo;
use crate::policy::{LoadedPolicy, PolicyState};

/// What the relay wrote to the client.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

struct Harness {
    relay: Arc<Relay>,
    out: Captured,
    events: PathBuf,
}

fn harness(policy: &str) -> Harness {
    let policy = thoth_policy::parse_policy(policy, "p.yaml", thoth_policy::Format::Yaml).unwrap();
    let server = policy.resolve("s", &[]);
    let state = PolicyState::Loaded(Arc::new(LoadedPolicy {
        policy,
        server,
        version: "1".into(),
    }));
    let dir = std::env::temp_dir().join(format!("thoth-relay-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let info = SessionInfo {
        identity: Identity {
            tenant_id: "t".into(),
            agent_id: "a".into(),
            hostname: "h".into(),
            user: "u".into(),
        },
        session_id: "s1".into(),
        server_name: "s".into(),
    };
    let sink = EventSink::to_file(&events, info, ContentLimits::default(), None).unwrap();
    let out = Captured::default();
    let relay = Arc::new(Relay::new(
        ClientOut::new(Box::new(out.clone())),
        sink,
        state,
        "s".into(),
        "01a20abe-2043-7512-8916-ba4700421315",
    ));
    Harness { relay, out, events }
}

impl Harness {
    /// Ends the session and returns the events written.
    fn finish(&self) -> Vec<Value> {
        self.relay.server_gone("exit status 0");
        self.relay.events.shutdown(Duration::from_secs(5));
        let text = std::fs::read_to_string(&self.events).unwrap();
        let _ = std::fs::remove_dir_all(self.events.parent().unwrap());
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn posts(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["eventType"] == "TOOL_CALL_POST")
        .collect()
}

const ALLOW: &str = "servers:\n  - name: s\n    enforcement: block\n    approved_scope: [read]\n    hide_unapproved: true\n";

fn call(id: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"read","arguments":{{}}}}}}"#).into_bytes()
}

#[test]
fn a_numeric_id_the_server_re_encodes_still_pairs_with_its_call() {
    for id in ["2.0", "2e0", "20e-1"] {
        let h = harness(ALLOW);
        assert!(matches!(h.relay.from_client(&call(id)), ToServer::Original));
        // A JavaScript server answers `2`.
        h.relay.from_server(
            br#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"the secret notes"}]}}"#
                .to_vec(),
        );
        let events = h.finish();
        let posts = posts(&events);
        assert_eq!(posts.len(), 1, "{id}: {events:?}");
        assert!(
            posts[0]["content"]
                .as_str()
                .unwrap()
                .contains("the secret notes"),
            "{id}: the POST must hold what the client got: {}",
            posts[0]
        );
        assert_eq!(posts[0]["isError"], false, "{id}");
        // The client got the content and no made-up error.
        assert_eq!(h.out.lines().len(), 1, "{id}");
    }
}

#[test]
fn a_second_request_under_a_pending_id_is_refused_not_forwarded() {
    let h = harness(ALLOW);
    assert!(matches!(
        h.relay.from_client(&call("5")),
        ToServer::Original
    ));
    for again in ["5", "5.0", "50e-1"] {
        assert!(
            matches!(h.relay.from_client(&call(again)), ToServer::Nothing),
            "{again}"
        );
        let ping = format!(r#"{{"jsonrpc":"2.0","id":{again},"method":"ping"}}"#);
        assert!(matches!(
            h.relay.from_client(ping.as_bytes()),
            ToServer::Nothing
        ));
    }
    let refusals = h.out.lines();
    assert_eq!(refusals.len(), 6);
    assert!(
        refusals
            .iter()
            .all(|r| r["error"]["code"] == code::INVALID_REQUEST)
    );
    h.relay
        .from_server(br#"{"jsonrpc":"2.0","id":5,"result":{"content":[]}}"#.to_vec());
    // Answered: the id is free again.
    assert!(matches!(
        h.relay.from_client(&call("5")),
        ToServer::Original
    ));
    let events = h.finish();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["eventType"] == "TOOL_CALL_PRE")
            .count(),
        2,
        "refused duplicates are not decided"
    );
    // Both forwarded calls have their POST.
    assert_eq!(posts(&events).len(), 2);
}

#[test]
fn a_call_cancelled_after_forwarding_is_recorded_as_possibly_done() {
    let h = harness(ALLOW);
    assert!(matches!(
        h.relay.from_client(&call("7")),
        ToServer::Original
    ));
    let cancel =
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7.0}}"#;
    assert!(matches!(h.relay.from_client(cancel), ToServer::Original));
    let events = h.finish();
    let posts = posts(&events);
    assert_eq!(posts.len(), 1, "{events:?}");
    let content = posts[0]["content"].as_str().unwrap();
    assert!(
        content.contains(CANCELLED_AFTER_FORWARDING),
        "the POST must not claim the call did not happen: {content}"
    );
}

#[test]
fn a_late_answer_to_a_cancelled_call_is_recorded_and_its_id_stays_taken_until_then() {
    let h = harness(ALLOW);
    assert!(matches!(
        h.relay.from_client(&call("5")),
        ToServer::Original
    ));
    let cancel =
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}"#;
    assert!(matches!(h.relay.from_client(cancel), ToServer::Original));
    // The server has not answered yet: a new request under 5 would be paired with that
    // answer.
    assert!(matches!(h.relay.from_client(&call("5")), ToServer::Nothing));
    assert_eq!(h.out.lines()[0]["error"]["code"], code::INVALID_REQUEST);
    // The late answer: relayed as the server wrote it (the client ignores it), recorded.
    h.relay.from_server(
        br#"{"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"the secret notes"}]}}"#
            .to_vec(),
    );
    assert_eq!(h.out.lines().len(), 2, "{:?}", h.out.lines());
    // Answered: 5 is free, and its own answer reaches the client.
    assert!(matches!(
        h.relay.from_client(&call("5")),
        ToServer::Original
    ));
    h.relay
        .from_server(br#"{"jsonrpc":"2.0","id":5,"result":{"content":[]}}"#.to_vec());
    let out = h.out.lines();
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[2]["result"]["content"], serde_json::json!([]));
    // A cancelled tools/list answered late is still filtered.
    let list = br#"{"jsonrpc":"2.0","id":6,"method":"tools/list"}"#;
    assert!(matches!(h.relay.from_client(list), ToServer::Original));
    let cancel =
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":6}}"#;
    h.relay.from_client(cancel);
    h.relay.from_server(
        br#"{"jsonrpc":"2.0","id":6,"result":{"tools":[{"name":"read"},{"name":"delete_all"}]}}"#
            .to_vec(),
    );
    let out = h.out.lines();
    assert_eq!(out.len(), 4, "{out:?}");
    assert_eq!(
        out[3]["result"]["tools"],
        serde_json::json!([{"name": "read"}])
    );
    let events = h.finish();
    let posts = posts(&events);
    assert_eq!(posts.len(), 3, "{events:?}");
    assert!(
        posts[0]["content"]
            .as_str()
            .unwrap()
            .contains(CANCELLED_AFTER_FORWARDING)
    );
    assert!(
        posts[1]["content"]
            .as_str()
            .unwrap()
            .contains("the secret notes"),
        "what the server returned is recorded: {}",
        posts[1]
    );
    assert!(
        posts[1]["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains(ANSWERED_AFTER_CANCEL),
        "{}",
        posts[1]
    );
}

#[test]
fn a_cancelled_id_is_free_after_its_time_and_an_answer_to_nothing_pending_is_dropped() {
    let h = harness(ALLOW);
    h.relay.from_client(&call("8"));
    let cancel =
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":8}}"#;
    h.relay.from_client(cancel);
    assert!(matches!(h.relay.from_client(&call("8")), ToServer::Nothing));
    // CANCELLED_KEPT later (its deadline moved instead of waiting).
    for p in h.relay.state().pending.values_mut() {
        if let Pending::Cancelled { until, .. } = p {
            *until = Instant::now();
        }
    }
    assert!(matches!(
        h.relay.from_client(&call("8")),
        ToServer::Original
    ));
    h.relay
        .from_server(br#"{"jsonrpc":"2.0","id":8,"result":{"content":[]}}"#.to_vec());
    // A second answer under 8 (the old call's, too late) or a made-up id: nothing to pair.
    for id in ["8", "99", "\"x\""] {
        h.relay.from_server(
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[]}}}}"#).into_bytes(),
        );
    }
    let out = h.out.lines();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1]["id"], 8);
    h.finish();
}

#[test]
fn at_the_pending_limit_new_requests_are_refused_and_nothing_is_forgotten() {
    let h = harness(ALLOW);
    let ping = |id: usize| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
    for id in 1..=MAX_PENDING {
        assert!(matches!(
            h.relay.from_client(ping(id).as_bytes()),
            ToServer::Original
        ));
    }
    // A call: denied, not forwarded untracked (nor by forgetting a ping).
    assert!(matches!(
        h.relay.from_client(&call("100000")),
        ToServer::Nothing
    ));
    let out = h.out.lines();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["id"], 100000);
    assert_eq!(out[0]["result"]["isError"], true, "{}", out[0]);
    assert!(
        out[0].to_string().contains("too_many_pending"),
        "{}",
        out[0]
    );
    // Any other request: refused.
    assert!(matches!(
        h.relay.from_client(ping(100001).as_bytes()),
        ToServer::Nothing
    ));
    assert_eq!(h.out.lines()[1]["error"]["code"], code::INTERNAL_ERROR);
    assert_eq!(h.relay.untracked(), 2);
    // Every ping is still remembered: its answer is relayed, and its id stays taken until
    // then.
    assert!(matches!(
        h.relay.from_client(ping(1).as_bytes()),
        ToServer::Nothing
    ));
    for id in 1..=MAX_PENDING {
        h.relay
            .from_server(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#).into_bytes());
    }
    assert_eq!(h.out.lines().len(), 3 + MAX_PENDING);
    // Room again.
    assert!(matches!(
        h.relay.from_client(&call("100000")),
        ToServer::Original
    ));
    let events = h.finish();
    let pres: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventType"] == "TOOL_CALL_PRE")
        .collect();
    assert_eq!(pres.len(), 2);
    assert_eq!(pres[0]["decision"]["action"], "deny");
    assert_eq!(posts(&events).len(), 2);
}

#[test]
fn tools_list_stays_filtered_whatever_the_id_tricks() {
    let listed = |id: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"read"}},{{"name":"delete_all"}}]}}}}"#
        )
        .into_bytes()
    };
    let names = |v: &Value| -> Vec<String> {
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // An id the server re-encodes.
    let h = harness(ALLOW);
    let list = br#"{"jsonrpc":"2.0","id":3.0,"method":"tools/list"}"#;
    assert!(matches!(h.relay.from_client(list), ToServer::Original));
    h.relay.from_server(listed("3"));
    let out = h.out.lines();
    assert_eq!(names(&out[0]), ["read"], "{out:?}");
    h.finish();
    // An id reused by a second request while the list is pending.
    let h = harness(ALLOW);
    let list = br#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#;
    assert!(matches!(h.relay.from_client(list), ToServer::Original));
    let ping = br#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#;
    assert!(matches!(h.relay.from_client(ping), ToServer::Nothing));
    h.relay.from_server(listed("4"));
    let out = h.out.lines();
    assert_eq!(out[0]["error"]["code"], code::INVALID_REQUEST);
    assert_eq!(names(&out[1]), ["read"], "{out:?}");
    h.finish();
}
