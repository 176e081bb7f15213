//! The admin helpers: `thoth policy validate|explain`, `thoth events verify`, and `--help`.

use serde_json::{Value, json};
use thoth_e2e::*;

#[test]
fn validate_accepts_every_shipped_example_and_locates_errors() {
    let examples = std::fs::read_dir(repo_root().join("policy/examples")).unwrap();
    let files: Vec<String> = examples
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut args = vec!["policy", "validate"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = thoth_cmd(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok: ")).count(),
        files.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(
        dir.path(),
        "bad.yaml",
        "servers:\n  - name: fs\n    approved_scope: [read]\n    constraints:\n      - tool: read\n        arg: path\n        path_glob: [\"/srv/[\"]\n",
    );
    let (code, out, _) = thoth_cmd(&["policy", "validate", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("bad.yaml:7:"), "{out}");
    assert!(
        out.contains("servers[0].constraints[0].path_glob[0]"),
        "{out}"
    );
    assert!(out.contains("invalid glob"), "{out}");
    let (code, _, err) = thoth_cmd(&["policy", "validate", "/nonexistent/p.yaml"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn explain_prints_the_decision_and_its_rule() {
    let p = example_policy("read-write-files.yaml");
    let fs = "npx -y @modelcontextprotocol/server-filesystem /home/ann/projects";
    let (code, out, err) = thoth_cmd(&[
        "policy",
        "explain",
        p.to_str().unwrap(),
        "--server",
        "files",
        "--command",
        fs,
        "--tool",
        "write_file",
        "--args",
        r#"{"path": "/etc/passwd"}"#,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"], "step_up");
    assert_eq!(v["rule"], "servers[0].constraints[0]");
    assert_eq!(v["policyVersion"], "read-write-files@1");
    assert_eq!(
        v["approval"],
        json!({"approvers": ["user", "admin"], "timeoutSecs": 45, "remember": "once"})
    );

    let (_, out, _) = thoth_cmd(&[
        "policy",
        "explain",
        p.to_str().unwrap(),
        "--server",
        "files",
        "--command",
        fs,
        "--after",
        "search_files",
        "--tool",
        "move_file",
        "--args",
        r#"{"source": "/tmp/a", "destination": "/tmp/b"}"#,
    ]);
    assert!(out.contains("decision: deny"), "{out}");
    assert!(out.contains("rule:     servers[0].sequences[0]"), "{out}");
    assert!(!out.contains("ask:"), "no approval for a denial: {out}");

    // Text form of a step_up decision: who is asked, how long the call is held, what an
    // approval covers; the entry's own settings win over the defaults.
    let dir = tempfile::tempdir().unwrap();
    let own = write_file(
        dir.path(),
        "own.yaml",
        "defaults:\n  approvers: [user]\n  approval_remember: 2h\nservers:\n  - name: db\n    \
         enforcement: step_up\n    approvers: [admin]\n    approval_remember: 90m\n    \
         approval_timeout_secs: 20\n",
    );
    let explain = |file: &std::path::Path, server: &str, command: &str| {
        let (code, out, err) = thoth_cmd(&[
            "policy",
            "explain",
            file.to_str().unwrap(),
            "--server",
            server,
            "--command",
            command,
            "--tool",
            "drop",
        ]);
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = explain(&own, "db", "");
    assert!(out.contains("decision: step_up"), "{out}");
    assert!(out.contains("ask:      admin\n"), "{out}");
    assert!(out.contains("timeout:  20s"), "{out}");
    assert!(out.contains("remember: 90m (the identical call"), "{out}");
    let out = explain(&p, "files", fs);
    assert!(
        out.contains("ask:      user or admin (the first decisive answer wins)"),
        "{out}"
    );
    assert!(out.contains("timeout:  45s"), "{out}");
    assert!(out.contains("remember: once"), "{out}");

    let (code, _, err) = thoth_cmd(&[
        "policy",
        "explain",
        p.to_str().unwrap(),
        "--server",
        "x",
        "--tool",
        "t",
        "--args",
        "[1]",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--args must be a JSON object"), "{err}");
}

#[test]
fn verify_finds_the_line_where_a_chain_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.jsonl");
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "servers:\n  - name: notes\n    approved_scope: [echo]\n",
    );
    let python = python();
    let server = py_script("modern_server.py");
    let ops: Vec<Value> = (0..3)
        .map(|i| json!({"op": "call", "tool": "echo", "args": {"text": format!("m{i}")}}))
        .collect();
    mcp_client(
        ClientOpts::default(),
        Value::Array(ops),
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
    wait_for("events", || read_events(&events).len() >= 6);
    let path = events.to_str().unwrap();
    let (code, out, _) = thoth_cmd(&["events", "verify", path, "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["events"], 6);

    // Change one byte of the content of the event that carries "m1" back: "m1" becomes "m7".
    let original = std::fs::read(&events).unwrap();
    let lines: Vec<&[u8]> = original.split_inclusive(|b| *b == b'\n').collect();
    let target = lines
        .iter()
        .position(|l| {
            let l = String::from_utf8_lossy(l);
            l.contains("TOOL_CALL_POST") && l.contains("m1")
        })
        .expect("the POST event of the second call");
    let start: usize = lines[..target].iter().map(|l| l.len()).sum();
    let rel = lines[target].windows(2).position(|w| w == b"m1").unwrap();
    let mut tampered = original.clone();
    tampered[start + rel + 1] = b'7';
    std::fs::write(&events, &tampered).unwrap();
    let (code, out, _) = thoth_cmd(&["events", "verify", path]);
    assert_eq!(code, 1, "{out}");
    let at = format!(":{}:", target + 1);
    assert!(
        out.contains(&at),
        "the break is reported at line {}: {out}",
        target + 1
    );
    assert!(out.contains("altered"), "{out}");

    // Dropping a line is caught too.
    let dropped: Vec<u8> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .flat_map(|(_, l)| l.to_vec())
        .collect();
    std::fs::write(&events, dropped).unwrap();
    let (code, out, _) = thoth_cmd(&["events", "verify", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(":2:"), "{out}");
}

#[test]
fn help_teaches_the_commands() {
    let (code, out, _) = thoth_cmd(&["run", "--help"]);
    assert_eq!(code, 0);
    for needle in [
        "--policy",
        "--events",
        "--server",
        "fail closed",
        "claude_desktop_config.json",
    ] {
        assert!(out.contains(needle), "run --help lacks {needle}:\n{out}");
    }
    let (code, _, err) = thoth_cmd(&["run", "--policy", "p.yaml"]);
    assert_eq!(code, 2, "a missing server command is a usage error");
    assert!(err.contains("CMD"), "{err}");
    let (code, out, _) = thoth_cmd(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("policy") && out.contains("events"), "{out}");
}

#[test]
fn a_server_that_cannot_start_is_reported() {
    let (code, _, err) = thoth_cmd(&["run", "--", "/nonexistent/mcp-server"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("cannot start the MCP server"), "{err}");
}
