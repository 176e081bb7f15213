//! Enforcement through the real binary: the official Python MCP client, `thoth run`, and the
//! real filesystem MCP server from npm.

use serde_json::json;
use thoth_e2e::*;

#[test]
fn block_mode_allows_reads_and_blocks_writes_before_they_reach_the_server() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "notes.txt", "hello from the server\n");
    let target = dir.path().join("written.txt");
    let events = dir.path().join("ev.jsonl");
    let policy = example_policy("read-only-files-strict.yaml");
    let server = fs_server(dir.path());
    let run = mcp_client(
        ClientOpts::default(),
        json!([
            {"op": "list_tools"},
            {"op": "call", "tool": "read_text_file", "args": {"path": dir.path().join("notes.txt")}},
            {"op": "call", "tool": "write_file", "args": {"path": target, "content": "pwned"}},
        ]),
        &[
            "--server",
            "files",
            "--policy",
            policy.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        &strs(&server),
    );
    // tools/list is filtered: only approved tools are shown.
    let tools = run.tools();
    assert!(tools.contains(&"read_text_file".to_string()), "{tools:?}");
    assert!(
        !tools
            .iter()
            .any(|t| t == "write_file" || t == "edit_file" || t == "move_file"),
        "{tools:?}"
    );
    assert_eq!(tools.len(), 10, "{tools:?}");

    let calls = run.calls();
    assert_eq!(calls[0]["isError"], false, "{:?}", calls[0]);
    assert_eq!(calls[0]["text"], "hello from the server\n");

    let denied = calls[1];
    assert_eq!(denied["isError"], true, "{denied:?}");
    let text = denied["text"].as_str().unwrap();
    for needle in [
        "write_file",
        "\"files\"",
        "servers[0].approved_scope",
        "read-only-files-strict@1",
    ] {
        assert!(text.contains(needle), "denial text lacks {needle}: {text}");
    }
    assert_eq!(denied["meta"]["thoth/decision"]["action"], "deny");
    assert_eq!(denied["meta"]["thoth/decision"]["mode"], "block");
    assert!(!target.exists(), "the blocked write reached the server");

    // Events: PRE and POST for both calls, on a chain that verifies.
    wait_for("events", || read_events(&events).len() >= 4);
    let evs = read_events(&events);
    let kinds: Vec<(&str, &str)> = evs
        .iter()
        .map(|e| {
            (
                e["eventType"].as_str().unwrap(),
                e["toolName"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("TOOL_CALL_PRE", "read_text_file"),
            ("TOOL_CALL_POST", "read_text_file"),
            ("TOOL_CALL_PRE", "write_file"),
            ("TOOL_CALL_POST", "write_file"),
        ]
    );
    for e in &evs {
        for field in [
            "eventId",
            "eventType",
            "timestamp",
            "tenantId",
            "agentId",
            "hostname",
            "user",
            "sessionId",
            "serverName",
            "sourceType",
            "toolName",
            "content",
            "sessionToolCalls",
            "decision",
            "policyVersion",
            "latencyUs",
            "seq",
            "prevHash",
            "hash",
        ] {
            assert!(e.get(field).is_some(), "event lacks {field}: {e}");
        }
        assert_eq!(e["sourceType"], "agent_tool_call");
        assert_eq!(e["serverName"], "files");
    }
    assert!(
        evs[1]["content"]
            .as_str()
            .unwrap()
            .contains("hello from the server")
    );
    assert_eq!(evs[2]["decision"]["action"], "deny");
    assert_eq!(evs[2]["sessionToolCalls"], json!(["read_text_file"]));
    assert!(evs[2]["content"].as_str().unwrap().contains("pwned"));
    let (code, out, _) = thoth_cmd(&["events", "verify", events.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn progressive_mode_warns_then_asks_then_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.jsonl");
    let policy = example_policy("read-only-files.yaml");
    let server = fs_server(dir.path());
    let write = |n: u32| {
        json!({"op": "call", "tool": "write_file",
        "args": {"path": dir.path().join(format!("w{n}.txt")), "content": "x"}})
    };
    let run = mcp_client(
        ClientOpts::default(),
        json!([write(1), write(2), write(3), write(4), write(5)]),
        &[
            "--server",
            "files",
            "--policy",
            policy.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        &strs(&server),
    );
    let calls = run.calls();
    // warn: 2 → the first two go through (with warning events).
    assert_eq!(calls[0]["isError"], false, "{:?}", calls[0]);
    assert_eq!(calls[1]["isError"], false, "{:?}", calls[1]);
    assert!(dir.path().join("w1.txt").exists() && dir.path().join("w2.txt").exists());
    // 3rd and 4th need approval; this client cannot show prompts → denied, saying so.
    for c in &calls[2..4] {
        assert_eq!(c["isError"], true, "{c:?}");
        assert!(
            c["text"]
                .as_str()
                .unwrap()
                .contains("requires human approval"),
            "{c:?}"
        );
        assert!(
            c["text"]
                .as_str()
                .unwrap()
                .contains("no approver was reachable"),
            "{c:?}"
        );
    }
    // From the 5th on: blocked.
    assert_eq!(calls[4]["isError"], true);
    assert!(
        calls[4]["text"]
            .as_str()
            .unwrap()
            .contains("past this session's limit"),
        "{:?}",
        calls[4]
    );
    for n in 3..=5 {
        assert!(
            !dir.path().join(format!("w{n}.txt")).exists(),
            "w{n}.txt was written"
        );
    }
    wait_for("events", || read_events(&events).len() >= 10);
    let pre: Vec<String> = read_events(&events)
        .iter()
        .filter(|e| e["eventType"] == "TOOL_CALL_PRE")
        .map(|e| e["decision"]["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pre, ["warn", "warn", "deny", "deny", "deny"]);
}

#[test]
fn observe_mode_lets_everything_through_and_records_would_block() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.jsonl");
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: files\n    enforcement: observe\n    approved_scope: [read_text_file]\n",
    );
    let server = fs_server(dir.path());
    let target = dir.path().join("observed.txt");
    let run = mcp_client(
        ClientOpts::default(),
        json!([{"op": "call", "tool": "write_file", "args": {"path": target, "content": "ok"}}]),
        &[
            "--server",
            "files",
            "--policy",
            policy.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        &strs(&server),
    );
    assert_eq!(run.calls()[0]["isError"], false);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "ok");
    wait_for("events", || read_events(&events).len() >= 2);
    let evs = read_events(&events);
    assert_eq!(evs[0]["decision"]["action"], "would_block");
    assert_eq!(evs[0]["decision"]["mode"], "observe");
}

#[test]
fn step_up_uses_elicitation_when_the_client_supports_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - command: \"*server-filesystem*\"\n    enforcement: step_up\n    approved_scope: [\"read_*\"]\n    approval_timeout_secs: 20\n",
    );
    let server = fs_server(dir.path());
    for (answer, written) in [("accept", true), ("decline", false)] {
        let target = dir.path().join(format!("{answer}.txt"));
        let run = mcp_client(
            ClientOpts {
                elicit: answer,
                ..Default::default()
            },
            json!([{"op": "call", "tool": "write_file", "args": {"path": target, "content": answer}}]),
            &["--policy", policy.to_str().unwrap()],
            &strs(&server),
        );
        let prompt = run
            .out
            .iter()
            .find(|v| v["op"] == "elicitation")
            .expect("an approval prompt");
        assert!(
            prompt["message"].as_str().unwrap().contains("write_file"),
            "{prompt}"
        );
        let c = run.calls()[0];
        assert_eq!(target.exists(), written, "{answer}: {c:?}");
        assert_eq!(c["isError"], !written, "{answer}: {c:?}");
        if !written {
            assert!(
                c["text"].as_str().unwrap().contains("the user declined"),
                "{c:?}"
            );
        }
    }
}

#[test]
fn argument_constraints_and_sequence_rules_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("inside");
    std::fs::create_dir(&inside).unwrap();
    write_file(&inside, "a.txt", "a");
    let policy = write_file(
        dir.path(),
        "p.yaml",
        &format!(
            r#"
servers:
  - name: files
    enforcement: block
    approved_scope: ["read_text_file", "list_directory", "write_file"]
    constraints:
      - tool: "*_file"
        arg: path
        path_glob: ["{inside}/**"]
    sequences:
      - after: list_directory
        then: write_file
        action: deny
        reason: no writing after browsing
"#,
            inside = inside.display()
        ),
    );
    let server = fs_server(dir.path());
    let run = mcp_client(
        ClientOpts::default(),
        json!([
            {"op": "call", "tool": "read_text_file", "args": {"path": inside.join("a.txt")}},
            {"op": "call", "tool": "read_text_file", "args": {"path": format!("{}/../p.yaml", inside.display())}},
            {"op": "call", "tool": "write_file", "args": {"path": inside.join("b.txt"), "content": "b"}},
            {"op": "call", "tool": "list_directory", "args": {"path": inside}},
            {"op": "call", "tool": "write_file", "args": {"path": inside.join("c.txt"), "content": "c"}},
        ]),
        &["--server", "files", "--policy", policy.to_str().unwrap()],
        &strs(&server),
    );
    let c = run.calls();
    assert_eq!(c[0]["text"], "a");
    assert_eq!(c[1]["isError"], true);
    assert!(
        c[1]["text"]
            .as_str()
            .unwrap()
            .contains("servers[0].constraints[0]"),
        "{:?}",
        c[1]
    );
    assert_eq!(c[2]["isError"], false, "{:?}", c[2]);
    assert!(inside.join("b.txt").exists());
    assert_eq!(c[3]["isError"], false);
    assert_eq!(c[4]["isError"], true);
    assert!(
        c[4]["text"]
            .as_str()
            .unwrap()
            .contains("no writing after browsing"),
        "{:?}",
        c[4]
    );
    assert!(!inside.join("c.txt").exists());
}

#[test]
fn without_a_policy_every_tool_call_is_denied_with_an_explanation() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "a.txt", "a");
    let server = fs_server(dir.path());
    let bad = write_file(
        dir.path(),
        "bad.yaml",
        "servers:\n  - name: x\n    enforcment: block\n",
    );
    for args in [vec![], vec!["--policy", bad.to_str().unwrap()]] {
        let run = mcp_client(
            ClientOpts::default(),
            json!([{"op": "list_tools"},
                   {"op": "call", "tool": "read_text_file", "args": {"path": dir.path().join("a.txt")}}]),
            &args,
            &strs(&server),
        );
        assert_eq!(run.tools().len(), 14, "tools/list still works");
        let c = run.calls()[0];
        assert_eq!(c["isError"], true, "{c:?}");
        let text = c["text"].as_str().unwrap();
        assert!(text.contains("no policy is in force"), "{text}");
        assert!(text.contains("no_policy"), "{text}");
        if !args.is_empty() {
            assert!(
                text.contains("bad.yaml:3"),
                "the reason names the broken line: {text}"
            );
        }
    }
}

#[test]
fn server_initiated_requests_and_the_clients_answers_pass_through() {
    // server-everything's trigger-elicitation-request makes the server ask the client a
    // question mid-call: the request must reach the client and its answer the server, with
    // nothing consumed by the proxy (it consumes only replies to its own requests).
    let dir = tempfile::tempdir().unwrap();
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: everything\n    enforcement: block\n    approved_scope: [\"*\"]\n",
    );
    let everything = node_server("mcp-server-everything");
    let run = mcp_client(
        ClientOpts {
            elicit: "accept",
            ..Default::default()
        },
        json!([{"op": "call", "tool": "trigger-elicitation-request", "args": {}}]),
        &[
            "--server",
            "everything",
            "--policy",
            policy.to_str().unwrap(),
        ],
        &[everything.to_str().unwrap()],
    );
    assert!(
        run.out.iter().any(|v| v["op"] == "elicitation"),
        "{:?}",
        run.out
    );
    let c = run.calls()[0];
    assert_eq!(c["isError"], false, "{c:?}");
    assert!(c["text"].as_str().unwrap().contains("accept"), "{c:?}");
}

/// Path constraints match where a path really leads: a symlink in the allowed tree pointing
/// out of it is refused for reads and for writes through a symlinked directory, while the real
/// filesystem server (allowed the whole temp dir) would have followed both.
#[cfg(unix)]
#[test]
fn path_constraints_follow_symlinks_out_of_the_allowed_tree() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let public = root.join("public");
    std::fs::create_dir(&public).unwrap();
    std::fs::create_dir(root.join("private")).unwrap();
    write_file(&public, "a.txt", "a");
    write_file(&root, "notes.txt", "the secret notes");
    symlink("../notes.txt", public.join("link.txt")).unwrap();
    symlink("../private", public.join("dir")).unwrap();
    let policy = write_file(
        &root,
        "p.yaml",
        &format!(
            "servers:\n  - name: files\n    enforcement: block\n    approved_scope: [read_text_file, write_file]\n    constraints:\n      - {{tool: \"*_file\", arg: path, path_glob: [\"{}/**\"]}}\n",
            public.display()
        ),
    );
    let server = fs_server(&root);
    let run = mcp_client(
        ClientOpts::default(),
        json!([
            {"op": "call", "tool": "read_text_file", "args": {"path": public.join("a.txt")}},
            {"op": "call", "tool": "read_text_file", "args": {"path": public.join("link.txt")}},
            {"op": "call", "tool": "write_file", "args": {"path": public.join("dir/new.txt"), "content": "x"}},
        ]),
        &["--server", "files", "--policy", policy.to_str().unwrap()],
        &strs(&server),
    );
    let c = run.calls();
    assert_eq!(c[0]["text"], "a", "{:?}", c[0]);
    for (i, what) in [(1, "notes.txt"), (2, "private/new.txt")] {
        assert_eq!(c[i]["isError"], true, "{:?}", c[i]);
        let text = c[i]["text"].as_str().unwrap();
        assert!(
            text.contains("servers[0].constraints[0]") && text.contains(what),
            "the denial names the rule and where the path leads: {text}"
        );
        assert!(!text.contains("the secret notes"), "{text}");
    }
    assert!(!root.join("private/new.txt").exists());
}
