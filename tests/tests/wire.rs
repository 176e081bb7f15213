//! The relay at the byte level: raw JSON-RPC lines through the real binary, where a precise byte
//! sequence matters.

use std::time::Duration;

use serde_json::{Value, json};
use thoth_e2e::*;

fn recorder(dir: &std::path::Path, exit: i32) -> (Vec<String>, std::path::PathBuf) {
    let record = dir.join("received.jsonl");
    let cmd = vec![
        python().display().to_string(),
        py_script("recorder_server.py").display().to_string(),
        record.display().to_string(),
        exit.to_string(),
    ];
    (cmd, record)
}

fn allow_all(dir: &std::path::Path) -> String {
    write_file(dir, "allow.yaml", "defaults:\n  unknown_servers: allow\n")
        .display()
        .to_string()
}

#[test]
fn an_allowed_result_is_byte_identical_to_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "a.txt", "ünïcödé \"quoted\"\n\ttabbed");
    let fs = node_server("mcp-server-filesystem");
    let req = call(
        7,
        "read_text_file",
        json!({"path": dir.path().join("a.txt")}),
    );
    let mut direct_cmd = std::process::Command::new(&fs);
    direct_cmd.arg(dir.path());
    let mut direct = Proxy::spawn(direct_cmd);
    direct.handshake(false);
    direct.send(&req);
    let want = direct.recv_raw(WAIT).unwrap();

    let policy = allow_all(dir.path());
    let mut proxied = Proxy::start(
        &["--policy", &policy],
        &[fs.to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    proxied.handshake(false);
    proxied.send(&req);
    let got = proxied.recv_raw(WAIT).unwrap();
    assert_eq!(got, want);
    assert!(got.contains("ünïcödé"));
}

#[test]
fn client_bytes_reach_the_server_unchanged_and_unknown_methods_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (server, record) = recorder(dir.path(), 0);
    let policy = allow_all(dir.path());
    let mut p = Proxy::start(&["--policy", &policy], &strs(&server));
    let lines = [
        initialize(1, false),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_string(),
        // Odd but valid spacing, key order and escapes must survive as written.
        r#"{ "params" : {"name":"alpha","arguments":{"s":"\u00e9\n","n":1.50}} , "method":"tools/call","id":"x-1","jsonrpc":"2.0" }"#.to_string(),
        r#"{"jsonrpc":"2.0","id":3,"method":"vendor/unknown","params":{"z":[1,2]}}"#.to_string(),
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x-1","reason":"user"}}"#.to_string(),
    ];
    for l in &lines {
        p.send(l);
    }
    let (init, before) = p.recv_response(json!(1));
    assert_eq!(init["result"]["serverInfo"]["name"], "recorder");
    // The server's notification written before its initialize reply arrives first.
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["method"], "notifications/message");
    let (r, _) = p.recv_response(json!("x-1"));
    assert_eq!(r["result"]["content"][0]["text"], "called alpha");
    let (unknown, _) = p.recv_response(json!(3));
    assert_eq!(unknown["error"]["code"], -32601);
    wait_for("the server to record every line", || {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .count()
            == lines.len()
    });
    let want: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(std::fs::read_to_string(&record).unwrap(), want);
}

#[test]
fn server_messages_before_the_initialize_reply_are_relayed_in_order() {
    let everything = node_server("mcp-server-everything");
    let dir = tempfile::tempdir().unwrap();
    let policy = allow_all(dir.path());
    let mut p = Proxy::start(&["--policy", &policy], &[everything.to_str().unwrap()]);
    p.send(&initialize(1, false));
    let (init, mut seen) = p.recv_response(json!(1));
    assert!(init["result"]["serverInfo"].is_object());
    p.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    p.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    let (_, after) = p.recv_response(json!(2));
    seen.extend(after);
    // The server sends this unprompted, at start-up; its timing against the reply varies.
    assert!(
        seen.iter()
            .any(|m| m["method"] == "notifications/tools/list_changed"),
        "the server's unprompted notification was lost: {seen:?}"
    );
}

#[test]
fn bad_input_from_either_side_gets_an_error_and_the_proxy_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (server, record) = recorder(dir.path(), 0);
    let policy = allow_all(dir.path());
    let mut p = Proxy::start(&["--policy", &policy], &strs(&server));
    p.handshake(false);

    p.send("{this is not json");
    let e = p.recv();
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (Value::Null, json!(-32700))
    );
    p.send_raw(b"\xff\xfe\x00garbage\n");
    assert_eq!(p.recv()["error"]["code"], -32700);
    p.send(r#"[{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"alpha"}}]"#);
    let batch = p.recv();
    assert_eq!(batch["error"]["code"], -32600);
    assert!(
        batch["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batches")
    );
    p.send(r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"arguments":{}}}"#);
    let (bad_params, _) = p.recv_response(json!(6));
    assert_eq!(bad_params["error"]["code"], -32602);
    p.send(r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","method":"tools/call","params":{"name":"alpha"}}"#);
    assert_eq!(
        p.recv()["error"]["code"],
        -32600,
        "duplicate keys are refused"
    );

    // Garbage from the server is dropped; the real reply still arrives.
    p.send(&call(8, "garbage", json!({})));
    let (ok, before) = p.recv_response(json!(8));
    assert_eq!(ok["result"]["content"][0]["text"], "called garbage");
    assert!(before.is_empty(), "garbage was forwarded: {before:?}");

    p.send(&call(9, "beta", json!({})));
    assert_eq!(
        p.recv_response(json!(9)).0["result"]["content"][0]["text"],
        "called beta"
    );
    let received = std::fs::read_to_string(&record).unwrap();
    assert!(
        !received.contains("not json")
            && !received.contains("\"id\":5")
            && !received.contains("\"id\":6")
    );
}

#[test]
fn a_16_mib_message_passes_both_ways_and_over_limit_messages_are_refused() {
    // The Node SDK's stdio transport gives up on lines this large, so the Python recorder
    // echoes it back instead.
    let dir = tempfile::tempdir().unwrap();
    let (server, record) = recorder(dir.path(), 0);
    let policy = allow_all(dir.path());
    let mut p = Proxy::start(&["--policy", &policy], &strs(&server));
    p.handshake(false);
    let big = "é".repeat(8 << 20) + "end";
    p.send(&call(2, "echo", json!({"text": big})));
    let (r, _) = p.recv_response(json!(2));
    let text = r["result"]["content"][0]["text"]
        .as_str()
        .expect("echoed text");
    assert_eq!(text.len(), (16 << 20) + 3);
    assert!(text.ends_with("éend"));
    assert!(std::fs::metadata(&record).unwrap().len() > 16 << 20);

    let everything = node_server("mcp-server-everything");
    let mut small = Proxy::start(
        &["--policy", &policy, "--max-message-bytes", "4096"],
        &[everything.to_str().unwrap()],
    );
    small.handshake(false);
    small.send(&call(3, "echo", json!({"message": "y".repeat(10_000)})));
    // The refusal cannot name the id of a message it did not read: its id is null.
    let (e, _) = small.recv_response(Value::Null);
    assert_eq!(e["error"]["code"], -32600);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit is 4096 bytes"),
        "{e}"
    );
    small.send(&call(4, "echo", json!({"message": "still here"})));
    let (r, _) = small.recv_response(json!(4));
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("still here")
    );
}

#[test]
fn a_server_crash_mid_call_answers_the_call_and_exits_with_the_servers_status() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = recorder(dir.path(), 0);
    let policy = allow_all(dir.path());
    let mut p = Proxy::start(&["--policy", &policy], &strs(&server));
    p.handshake(false);
    p.send(&call(2, "crash", json!({})));
    let (r, _) = p.recv_response(json!(2));
    assert_eq!(r["error"]["code"], -32603);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exited (exit status 3)"),
        "{r}"
    );
    assert_eq!(p.wait(Duration::from_secs(15)).code(), Some(3));
}

#[test]
fn a_server_killed_during_a_long_call_is_reported_and_the_status_passed_on() {
    let everything = node_server("mcp-server-everything");
    let dir = tempfile::tempdir().unwrap();
    let policy = allow_all(dir.path());
    let mut p = Proxy::start(&["--policy", &policy], &[everything.to_str().unwrap()]);
    p.handshake(false);
    p.send(&call(
        2,
        "trigger-long-running-operation",
        json!({"duration": 30, "steps": 3}),
    ));
    let mut kids = Vec::new();
    wait_for("the server process", || {
        kids = children_of(p.pid());
        !kids.is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    signal(kids[0], libc_sigkill());
    let (r, _) = p.recv_response(json!(2));
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("signal 9"),
        "{r}"
    );
    assert_eq!(p.wait(Duration::from_secs(15)).code(), Some(128 + 9));
}

fn libc_sigkill() -> i32 {
    9
}

#[test]
fn client_eof_shuts_down_cleanly_with_the_servers_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = recorder(dir.path(), 7);
    let policy = allow_all(dir.path());
    let mut p = Proxy::start(&["--policy", &policy], &strs(&server));
    p.handshake(false);
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(15)).code(), Some(7));
}

#[test]
fn sigterm_stops_the_server_and_the_proxy() {
    let fs = node_server("mcp-server-filesystem");
    let dir = tempfile::tempdir().unwrap();
    let policy = allow_all(dir.path());
    let mut p = Proxy::start(
        &["--policy", &policy],
        &[fs.to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    p.handshake(false);
    signal(p.pid(), 15);
    let status = p.wait(Duration::from_secs(15));
    // Node exits on SIGTERM by the signal: 128 + 15; a server that handles it may exit 0.
    assert!(matches!(status.code(), Some(143) | Some(0)), "{status:?}");
}

#[test]
fn an_unanswered_approval_times_out_into_a_denial() {
    let dir = tempfile::tempdir().unwrap();
    let (server, record) = recorder(dir.path(), 0);
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: rec\n    enforcement: step_up\n    approved_scope: [alpha]\n    approval_timeout_secs: 1\n",
    );
    let mut p = Proxy::start(
        &["--server", "rec", "--policy", policy.to_str().unwrap()],
        &strs(&server),
    );
    p.handshake(true);
    p.send(&call(2, "beta", json!({"x": 1})));
    let ask = p.recv();
    assert_eq!(ask["method"], "elicitation/create", "{ask}");
    let ask_id = ask["id"].as_str().unwrap().to_owned();
    assert!(ask_id.starts_with("thoth-"), "{ask_id}");
    // Unrelated traffic keeps flowing while the call waits.
    p.send(&call(3, "alpha", json!({})));
    assert_eq!(
        p.recv_response(json!(3)).0["result"]["content"][0]["text"],
        "called alpha"
    );
    let (denied, before) = p.recv_response(json!(2));
    assert!(
        before
            .iter()
            .any(|m| m["method"] == "notifications/cancelled"
                && m["params"]["requestId"] == ask_id.as_str())
    );
    assert_eq!(denied["result"]["isError"], true);
    assert!(
        denied["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("none was given within 1 s")
    );
    // A late answer is consumed, not forwarded, and does not release the call.
    p.send(&json!({"jsonrpc": "2.0", "id": ask_id, "result": {"action": "accept"}}).to_string());
    p.send(&call(4, "alpha", json!({})));
    p.recv_response(json!(4));
    let received = std::fs::read_to_string(&record).unwrap();
    assert!(
        !received.contains("beta") && !received.contains("thoth-approval"),
        "{received}"
    );
}

#[test]
fn events_mask_secrets_and_cap_content() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = recorder(dir.path(), 0);
    let policy = allow_all(dir.path());
    let events = dir.path().join("ev.jsonl");
    let mut p = Proxy::start(
        &[
            "--policy",
            &policy,
            "--events",
            events.to_str().unwrap(),
            "--content-max-bytes",
            "1024",
        ],
        &strs(&server),
    );
    p.handshake(false);
    p.send(&call(
        2,
        "alpha",
        json!({"user": "ann", "password": "hunter2", "headers": {"Authorization": "Bearer abc"}}),
    ));
    p.recv_response(json!(2));
    p.send(&call(3, "echo", json!({"text": "z".repeat(5000)})));
    p.recv_response(json!(3));
    p.close_stdin();
    p.wait(Duration::from_secs(15));
    let evs = read_events(&events);
    assert_eq!(evs.len(), 4, "{evs:?}");
    let pre = evs[0]["content"].as_str().unwrap();
    assert!(pre.contains("ann") && pre.contains("[REDACTED]"), "{pre}");
    assert!(
        !pre.contains("hunter2") && !pre.contains("Bearer abc"),
        "{pre}"
    );
    let post = &evs[3];
    assert_eq!(post["contentTruncated"], true);
    assert_eq!(post["content"].as_str().unwrap().len(), 1024);
    assert_eq!(post["contentSha256"].as_str().unwrap().len(), 64);
    let raw = std::fs::read_to_string(&events).unwrap();
    assert!(!raw.contains("hunter2"));
}

#[test]
fn an_inline_approval_is_bound_to_its_call_and_used_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, record) = recorder(dir.path(), 0);
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: rec\n    enforcement: step_up\n    approved_scope: [alpha]\n",
    );
    let mut p = Proxy::start(
        &["--server", "rec", "--policy", policy.to_str().unwrap()],
        &strs(&server),
    );
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}});
    let modern_call = |id: u64, args: Value, extra: Value| {
        let mut params = json!({"name": "beta", "arguments": args, "_meta": meta});
        if let Value::Object(m) = extra {
            params.as_object_mut().unwrap().extend(m);
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
    };
    p.send(&modern_call(1, json!({"x": 1}), json!({})));
    let (ask, _) = p.recv_response(json!(1));
    assert_eq!(ask["result"]["resultType"], "input_required", "{ask}");
    let state = ask["result"]["requestState"].as_str().unwrap().to_owned();
    let accept = json!({"requestState": state, "inputResponses": {"thoth/approval": {"action": "accept", "content": {}}}});

    // The approval does not carry over to other arguments: that call is asked about afresh.
    p.send(&modern_call(2, json!({"x": 2}), accept.clone()));
    let (again, _) = p.recv_response(json!(2));
    assert_eq!(again["result"]["resultType"], "input_required", "{again}");
    // The state was consumed by that attempt; a new one is needed.
    let state = again["result"]["requestState"].as_str().unwrap().to_owned();
    let accept = json!({"requestState": state, "inputResponses": {"thoth/approval": {"action": "accept", "content": {}}}});
    p.send(&modern_call(3, json!({"x": 2}), accept.clone()));
    let (done, _) = p.recv_response(json!(3));
    assert_eq!(
        done["result"]["content"][0]["text"], "called beta",
        "{done}"
    );
    // Used once: replaying it asks again instead of forwarding.
    p.send(&modern_call(4, json!({"x": 2}), accept));
    let (replay, _) = p.recv_response(json!(4));
    assert_eq!(replay["result"]["resultType"], "input_required", "{replay}");

    let received = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        received.lines().count(),
        1,
        "only the approved call reached the server: {received}"
    );
    assert!(
        !received.contains("requestState") && !received.contains("thoth/approval"),
        "{received}"
    );
}

#[test]
fn a_partial_last_line_left_by_a_crash_is_isolated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = recorder(dir.path(), 0);
    let policy = allow_all(dir.path());
    let events = dir.path().join("ev.jsonl");
    let run_session = |n: u64| {
        let mut p = Proxy::start(
            &["--policy", &policy, "--events", events.to_str().unwrap()],
            &strs(&server),
        );
        p.handshake(false);
        p.send(&call(n, "alpha", json!({})));
        p.recv_response(json!(n));
        p.close_stdin();
        p.wait(Duration::from_secs(15));
    };
    run_session(1);
    // A writer killed mid-write leaves half a line behind.
    let whole = std::fs::read(&events).unwrap();
    let first_line_end = whole.iter().position(|b| *b == b'\n').unwrap();
    std::fs::write(&events, &whole[..first_line_end + 1 + 40]).unwrap();
    run_session(2);
    let text = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines[1].len(),
        40,
        "the partial line stays alone on its line"
    );
    for l in [lines[0], lines[2], lines[3]] {
        serde_json::from_str::<Value>(l).expect("the other lines are whole events");
    }
    let (code, out, _) = thoth_cmd(&["events", "verify", events.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains(":2:") && out.contains("cut short"), "{out}");
}

#[test]
fn a_carriage_return_cannot_smuggle_a_call_past_the_proxy() {
    // Python's stdio reader splits lines on a bare CR too; JSON allows one between tokens. A
    // message with CRs inside would look like one notification to a proxy that only splits on
    // LF, and like a tools/call to the server.
    let dir = tempfile::tempdir().unwrap();
    let note = dir.path().join("PWNED");
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: notes\n    approved_scope: [echo]\n",
    );
    let python = python();
    let server = py_script("modern_server.py");
    let mut p = Proxy::start(
        &["--server", "notes", "--policy", policy.to_str().unwrap()],
        &[python.to_str().unwrap(), server.to_str().unwrap()],
    );
    p.handshake(false);
    let hidden = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "write_note", "arguments": {"path": note, "text": "x"}}});
    let smuggled = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":\r{hidden}\r}}\n"
    );
    p.send_raw(smuggled.as_bytes());
    let (refused, _) = p.recv_response(Value::Null);
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    p.send(&call(8, "echo", json!({"text": "still serving"})));
    let (ok, before) = p.recv_response(json!(8));
    assert!(
        ok["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("still serving")
    );
    assert!(
        before.iter().all(|m| m.get("id") != Some(&json!(7))),
        "{before:?}"
    );
    assert!(!note.exists(), "the smuggled call reached the server");
}

#[test]
fn a_tools_call_without_a_usable_id_never_reaches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (server, record) = recorder(dir.path(), 0);
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: rec\n    approved_scope: [alpha]\n",
    );
    let mut p = Proxy::start(
        &["--server", "rec", "--policy", policy.to_str().unwrap()],
        &strs(&server),
    );
    p.handshake(false);
    for line in [
        r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"beta"}}"#,
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"beta"}}"#,
        r#"{"jsonrpc":"2.0","id":1e400,"method":"tools/call","params":{"name":"beta"}}"#,
        r#"{"jsonrpc":"2.0","id":[1],"method":"tools/call","params":{"name":"beta"}}"#,
    ] {
        p.send(line);
        let (e, _) = p.recv_response(Value::Null);
        assert_eq!(e["error"]["code"], -32600, "{line} -> {e}");
    }
    p.send(&call(9, "alpha", json!({})));
    p.recv_response(json!(9));
    let received = std::fs::read_to_string(&record).unwrap();
    assert!(!received.contains("beta"), "{received}");
}

#[test]
fn cancelled_and_re_encoded_ids_do_not_leak_pending_requests() {
    // 5000 requests the server answers under a re-encoded id, or never (cancelled): the proxy
    // must still filter tools/list afterwards (past 4096 pending it refuses new requests).
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = recorder(dir.path(), 0);
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: rec\n    approved_scope: [alpha]\n    hide_unapproved: true\n",
    );
    let mut p = Proxy::start(
        &["--server", "rec", "--policy", policy.to_str().unwrap()],
        &strs(&server),
    );
    p.handshake(false);
    let mut batch = String::new();
    for i in 0..5000 {
        // The recorder answers unknown methods with the id re-encoded by Python's json module.
        batch.push_str(&format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":\"\\u0078{i}\",\"method\":\"ping/x\"}}\n"
        ));
    }
    p.send_raw(batch.as_bytes());
    for _ in 0..5000 {
        p.recv();
    }
    p.send(r#"{"jsonrpc":"2.0","id":"last","method":"tools/list"}"#);
    let (list, _) = p.recv_response(json!("last"));
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"]);
}

#[test]
fn approval_timers_end_with_their_approvals() {
    // A client that answers every prompt at once must not leave a sleeping timer thread behind
    // per approval (a slow way to exhaust threads).
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = recorder(dir.path(), 0);
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: rec\n    enforcement: step_up\n    approved_scope: [alpha]\n    approval_timeout_secs: 600\n",
    );
    let mut p = Proxy::start(
        &["--server", "rec", "--policy", policy.to_str().unwrap()],
        &strs(&server),
    );
    p.handshake(true);
    let threads = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .count()
    };
    let before = threads(p.pid());
    for i in 0..30u64 {
        p.send(&call(100 + i, "beta", json!({})));
        let ask = p.recv();
        assert_eq!(ask["method"], "elicitation/create", "{ask}");
        p.send(
            &json!({"jsonrpc": "2.0", "id": ask["id"], "result": {"action": "decline"}})
                .to_string(),
        );
        let (denied, _) = p.recv_response(json!(100 + i));
        assert_eq!(denied["result"]["isError"], true);
    }
    wait_for("the timer threads to end", || {
        threads(p.pid()) <= before + 1
    });
}
