//! Approval of `step_up` calls driven in process: the relay between a scripted client and a
//! scripted server, no processes. What the client is sent, what reaches the server, in both MCP
//! lifecycles: an elicitation answered (accept, decline), one left unanswered until its deadline,
//! and an inline (`input_required`) approval bound to its call and used once.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thoth_policy::{Format, parse_policy};
use thoth_proxy::events::EventSink;
use thoth_proxy::policy::{LoadedPolicy, PolicyState};
use thoth_proxy::relay::{ClientOut, Relay, ToServer};

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

/// A relay for server `rec` under `policy`, and what it sends the client.
fn relay(policy: &str) -> (Arc<Relay>, Captured) {
    let policy = parse_policy(policy, "p.yaml", Format::Yaml).unwrap();
    let server = policy.resolve("rec", &[]);
    let state = PolicyState::Loaded(Arc::new(LoadedPolicy {
        policy,
        server,
        version: "1".into(),
    }));
    let out = Captured::default();
    let relay = Arc::new(Relay::new(
        ClientOut::new(Box::new(out.clone())),
        EventSink::disabled(),
        state,
        "rec".into(),
        "01a20abe-2043-7512-8916-ba4700421315",
    ));
    (relay, out)
}

const STEP_UP: &str =
    "servers:\n  - name: rec\n    enforcement: step_up\n    approved_scope: [alpha]\n";

/// The bytes the server receives for a client line (none when the relay keeps it).
fn to_server(relay: &Arc<Relay>, line: &str) -> Option<Value> {
    match relay.from_client(line.as_bytes()) {
        ToServer::Nothing => None,
        ToServer::Original => Some(serde_json::from_str(line).unwrap()),
        ToServer::Forward(bytes) => Some(serde_json::from_slice(&bytes).unwrap()),
    }
}

/// `initialize` (with or without elicitation) and the server's answer.
fn handshake(relay: &Arc<Relay>, elicitation: bool) {
    let caps = if elicitation {
        json!({"elicitation": {}})
    } else {
        json!({})
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": caps,
                   "clientInfo": {"name": "t", "version": "1"}}});
    assert!(to_server(relay, &init.to_string()).is_some());
    relay.from_server(
        json!({"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}}, "serverInfo": {"name": "rec", "version": "1"}}})
        .to_string()
        .into_bytes(),
    );
}

fn call(id: u64, tool: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
    .to_string()
}

/// The messages sent to the client with `method`.
fn sent(out: &Captured, method: &str) -> Vec<Value> {
    out.lines()
        .into_iter()
        .filter(|m| m["method"] == method)
        .collect()
}

/// The client's answer to request `id`, if sent.
fn answer(out: &Captured, id: Value) -> Option<Value> {
    out.lines()
        .into_iter()
        .find(|m| m["id"] == id && m.get("method").is_none())
}

#[test]
fn an_accepted_elicitation_releases_the_call_as_held_and_a_declined_one_denies_it() {
    let (relay, out) = relay(STEP_UP);
    handshake(&relay, true);

    // The call waits; the client is asked.
    assert_eq!(to_server(&relay, &call(2, "beta", json!({"x": 1}))), None);
    let asks = sent(&out, "elicitation/create");
    assert_eq!(asks.len(), 1, "{asks:?}");
    let ask_id = asks[0]["id"].as_str().unwrap().to_owned();
    assert!(ask_id.starts_with("thoth-"), "{ask_id}");
    // Unrelated traffic flows meanwhile.
    assert!(to_server(&relay, &call(3, "alpha", json!({}))).is_some());
    // Accept: the held call goes to the server, unchanged; the answer itself does not.
    let accept = json!({"jsonrpc": "2.0", "id": ask_id, "result": {"action": "accept"}});
    let released = to_server(&relay, &accept.to_string()).expect("the call released");
    assert_eq!(
        released,
        serde_json::from_str::<Value>(&call(2, "beta", json!({"x": 1}))).unwrap()
    );
    // A second answer to the same request releases nothing.
    assert_eq!(to_server(&relay, &accept.to_string()), None);

    // Decline: the call is answered with a denial and never forwarded.
    assert_eq!(to_server(&relay, &call(4, "beta", json!({"x": 2}))), None);
    let asks = sent(&out, "elicitation/create");
    assert_eq!(asks.len(), 2, "{asks:?}");
    let ask_id = asks[1]["id"].as_str().unwrap().to_owned();
    let decline = json!({"jsonrpc": "2.0", "id": ask_id, "result": {"action": "decline"}});
    assert_eq!(to_server(&relay, &decline.to_string()), None);
    let denied = answer(&out, json!(4)).expect("call 4 answered");
    assert_eq!(denied["result"]["isError"], true, "{denied}");
}

#[test]
fn an_unanswered_elicitation_times_out_into_a_denial_and_a_late_answer_releases_nothing() {
    let (relay, out) = relay(&format!("{STEP_UP}    approval_timeout_secs: 1\n"));
    handshake(&relay, true);
    assert_eq!(to_server(&relay, &call(2, "beta", json!({"x": 1}))), None);
    let ask_id = sent(&out, "elicitation/create")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let until = Instant::now() + Duration::from_secs(15);
    let denied = loop {
        if let Some(a) = answer(&out, json!(2)) {
            break a;
        }
        assert!(Instant::now() < until, "no denial after the deadline");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(denied["result"]["isError"], true, "{denied}");
    let text = denied["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("none was given within 1 s"), "{text}");
    assert!(
        sent(&out, "notifications/cancelled")
            .iter()
            .any(|m| m["params"]["requestId"] == ask_id.as_str()),
        "the client's prompt is withdrawn"
    );
    let late = json!({"jsonrpc": "2.0", "id": ask_id, "result": {"action": "accept"}});
    assert_eq!(
        to_server(&relay, &late.to_string()),
        None,
        "a late answer is consumed, not forwarded, and releases nothing"
    );
}

#[test]
fn an_inline_approval_is_bound_to_its_call_and_used_once() {
    let (relay, out) = relay(STEP_UP);
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}});
    let modern_call = |id: u64, args: Value, extra: Value| {
        let mut params = json!({"name": "beta", "arguments": args, "_meta": meta});
        if let Value::Object(m) = extra {
            params.as_object_mut().unwrap().extend(m);
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
    };
    let accept = |ask: &Value| {
        let state = ask["result"]["requestState"].as_str().unwrap().to_owned();
        json!({"requestState": state, "inputResponses": {"thoth/approval": {"action": "accept", "content": {}}}})
    };

    assert_eq!(
        to_server(&relay, &modern_call(1, json!({"x": 1}), json!({}))),
        None
    );
    let ask = answer(&out, json!(1)).expect("asked inline");
    assert_eq!(ask["result"]["resultType"], "input_required", "{ask}");
    // Not carried over to other arguments: asked afresh, and the state is spent.
    assert_eq!(
        to_server(&relay, &modern_call(2, json!({"x": 2}), accept(&ask))),
        None
    );
    let again = answer(&out, json!(2)).expect("asked again");
    assert_eq!(again["result"]["resultType"], "input_required", "{again}");
    // Its own state releases the call, without the approval round's fields.
    let released = to_server(&relay, &modern_call(3, json!({"x": 2}), accept(&again)))
        .expect("the approved call forwarded");
    assert_eq!(released["params"]["name"], "beta");
    assert_eq!(released["params"]["arguments"], json!({"x": 2}));
    let text = released.to_string();
    assert!(
        !text.contains("requestState") && !text.contains("thoth/approval"),
        "{text}"
    );
    // Used once: a replay is asked about again, not forwarded.
    assert_eq!(
        to_server(&relay, &modern_call(4, json!({"x": 2}), accept(&again))),
        None
    );
    let replay = answer(&out, json!(4)).expect("asked on replay");
    assert_eq!(replay["result"]["resultType"], "input_required", "{replay}");
}
