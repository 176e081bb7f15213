//! Events made while the agent is down (restarting, being upgraded): the proxy keeps what the
//! agent did not take in the user's pending directory, and the next proxy delivers it, exactly
//! once, on an unbroken chain.

use serde_json::json;
use thoth_e2e::fleet::{Agent, Controller, jsonl_sink};
use thoth_e2e::*;

#[test]
fn calls_made_while_the_agent_is_down_reach_the_controller_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    write_file(&work, "a.txt", "hello");
    let home = dir.path().join("home-ann");
    std::fs::create_dir_all(&home).unwrap();
    let (sinks, file) = jsonl_sink(dir.path());
    let controller = Controller::start(dir.path(), &sinks);
    let mut agent = Agent::start(dir.path(), &controller);
    let v = controller.push(&example_policy("read-only-files-strict.yaml"));
    agent.wait_status("policy", |s| Agent::version(s) == Some(v));
    let mut args: Vec<String> = vec!["run".into(), "--server".into(), "files".into()];
    args.extend(agent.proxy_args());
    args.push("--".into());
    args.extend(fs_server(&work));
    let env = [("HOME".to_owned(), home.display().to_string())];
    let thoth = thoth().display().to_string();
    // The agent is down (restarting, being upgraded): the proxy enforces the last-known-good
    // policy, and keeps the events it could not deliver in the user's pending directory.
    agent.stop();
    let run = mcp_client_exec(
        ClientOpts::default(),
        json!([
            {"op": "call", "tool": "read_text_file", "args": {"path": work.join("a.txt"), "tag": "while-down-1"}},
            {"op": "call", "tool": "write_file", "args": {"path": work.join("b.txt"), "content": "x"}},
        ]),
        &thoth,
        &args,
        &env,
    );
    assert_eq!(run.calls()[0]["isError"], false, "{:?}", run.calls());
    assert_eq!(run.calls()[1]["isError"], true, "{:?}", run.calls());
    let pending = home.join(".local/state/thoth/pending");
    let files: Vec<_> = std::fs::read_dir(&pending)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert_eq!(
        files.len(),
        1,
        "one pending file: {files:?}\n{}",
        run.stderr
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let kept = std::fs::read_to_string(&files[0]).unwrap();
    assert!(kept.contains("while-down-1"), "{kept}");
    let first = kept.lines().count();
    // Another session while the agent is still down takes the file over: its events are kept
    // once, with the earlier ones, never copied again.
    let run = mcp_client_exec(
        ClientOpts::default(),
        json!([{"op": "call", "tool": "read_text_file", "args": {"path": work.join("a.txt"), "tag": "while-down-2"}}]),
        &thoth,
        &args,
        &env,
    );
    assert_eq!(run.calls()[0]["isError"], false);
    let files: Vec<_> = std::fs::read_dir(&pending)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let kept = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(kept.lines().count(), first + 2, "{kept}");
    assert!(kept.contains("while-down-1") && kept.contains("while-down-2"));
    // The agent is back; the next proxy sends them first, and the files go.
    agent.boot();
    let run = mcp_client_exec(
        ClientOpts::default(),
        json!([{"op": "call", "tool": "read_text_file", "args": {"path": work.join("a.txt"), "tag": "after"}}]),
        &thoth,
        &args,
        &env,
    );
    assert_eq!(run.calls()[0]["isError"], false);
    wait_secs("all three calls in the sink", 30, || {
        let events = read_jsonl(&file);
        let pre = |tool: &str| {
            events
                .iter()
                .filter(|e| e["eventType"] == "TOOL_CALL_PRE" && e["toolName"] == tool)
                .count()
        };
        pre("read_text_file") == 3 && pre("write_file") == 1
    });
    wait_secs("the pending file removed", 10, || {
        std::fs::read_dir(&pending).map_or(true, |mut r| r.next().is_none())
    });
    // Exactly once each, on one verified chain.
    let events = read_jsonl(&file);
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), events.len(), "no duplicates");
    let (code, out, err) = thoth_cmd(&["events", "verify", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}
