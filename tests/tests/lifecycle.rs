//! The 2026-07-28 lifecycle (no `initialize`; version and capabilities in `_meta`), with the
//! official Python SDK on both sides.

use serde_json::json;
use thoth_e2e::*;

#[test]
fn the_no_initialize_lifecycle_is_governed() {
    let dir = tempfile::tempdir().unwrap();
    let note = dir.path().join("note.txt");
    let events = dir.path().join("ev.jsonl");
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: notes\n    enforcement: block\n    approved_scope: [echo, read_note]\n    hide_unapproved: true\n",
    );
    let python = python();
    let server = py_script("modern_server.py");
    let run = mcp_client(
        ClientOpts {
            lifecycle: "discover",
            ..Default::default()
        },
        json!([
            {"op": "list_tools"},
            {"op": "call", "tool": "echo", "args": {"text": "hi"}},
            {"op": "call", "tool": "write_note", "args": {"path": note, "text": "secret"}},
        ]),
        &[
            "--server",
            "notes",
            "--policy",
            policy.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        &[python.to_str().unwrap(), server.to_str().unwrap()],
    );
    assert_eq!(run.tools(), ["echo", "read_note"], "write_note is hidden");
    let c = run.calls();
    assert_eq!(c[0]["isError"], false, "{:?}", c[0]);
    assert_eq!(c[0]["text"], "hi");
    assert_eq!(c[1]["isError"], true, "{:?}", c[1]);
    assert!(
        c[1]["text"].as_str().unwrap().contains("write_note"),
        "{:?}",
        c[1]
    );
    assert!(!note.exists(), "the blocked call reached the server");
    wait_for("events", || read_events(&events).len() >= 4);
    let (code, out, _) = thoth_cmd(&["events", "verify", events.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn the_legacy_lifecycle_works_with_the_python_server_too() {
    let dir = tempfile::tempdir().unwrap();
    let note = dir.path().join("note.txt");
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: notes\n    approved_scope: [\"*\"]\n",
    );
    let python = python();
    let server = py_script("modern_server.py");
    let run = mcp_client(
        ClientOpts::default(),
        json!([{"op": "call", "tool": "write_note", "args": {"path": note, "text": "kept"}}]),
        &["--server", "notes", "--policy", policy.to_str().unwrap()],
        &[python.to_str().unwrap(), server.to_str().unwrap()],
    );
    assert_eq!(run.calls()[0]["isError"], false, "{:?}", run.calls());
    assert_eq!(std::fs::read_to_string(&note).unwrap(), "kept");
}

#[test]
fn step_up_in_the_no_initialize_lifecycle_asks_through_input_required() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: notes\n    enforcement: step_up\n    approved_scope: [echo]\n    approval_timeout_secs: 30\n",
    );
    let python = python();
    let server = py_script("modern_server.py");
    for (answer, written) in [("accept", true), ("decline", false)] {
        let note = dir.path().join(format!("{answer}.txt"));
        let run = mcp_client(
            ClientOpts {
                lifecycle: "discover",
                elicit: answer,
            },
            json!([{"op": "call", "tool": "write_note", "args": {"path": note, "text": answer}}]),
            &["--server", "notes", "--policy", policy.to_str().unwrap()],
            &[python.to_str().unwrap(), server.to_str().unwrap()],
        );
        let prompt = run
            .out
            .iter()
            .find(|v| v["op"] == "elicitation")
            .expect("an approval prompt");
        assert!(
            prompt["message"].as_str().unwrap().contains("write_note"),
            "{prompt}"
        );
        let c = run.calls()[0];
        assert_eq!(note.exists(), written, "{answer}: {c:?}");
        assert_eq!(c["isError"], !written, "{answer}: {c:?}");
        if written {
            assert!(c["text"].as_str().unwrap().starts_with("wrote"), "{c:?}");
        } else {
            assert!(
                c["text"].as_str().unwrap().contains("the user declined"),
                "{c:?}"
            );
        }
    }
}

#[test]
fn the_servers_own_input_round_counts_as_one_call() {
    // `confirm` makes the server ask the user (input_required), so the client sends the call
    // twice. Progressive mode must see one out-of-scope call, not two.
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.jsonl");
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: notes\n    enforcement: progressive\n    progressive: {warn: 1, block_after: 1}\n    approved_scope: [echo]\n",
    );
    let python = python();
    let server = py_script("modern_server.py");
    let run = mcp_client(
        ClientOpts {
            lifecycle: "discover",
            elicit: "accept",
        },
        json!([
            {"op": "call", "tool": "confirm", "args": {"question": "go?"}},
            {"op": "call", "tool": "confirm", "args": {"question": "again?"}},
        ]),
        &[
            "--server",
            "notes",
            "--policy",
            policy.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        &[
            python.to_str().unwrap(),
            server.to_str().unwrap(),
            "--with-elicit",
        ],
    );
    let c = run.calls();
    assert_eq!(
        c[0]["isError"], false,
        "the first call, both rounds, is the one warned call: {c:?}"
    );
    assert!(c[0]["text"].as_str().unwrap().contains("accept"), "{c:?}");
    assert_eq!(
        c[1]["isError"], true,
        "the second call is past the limit: {c:?}"
    );
    assert!(
        c[1]["text"]
            .as_str()
            .unwrap()
            .contains("past this session's limit"),
        "{c:?}"
    );
}
