//! The agent daemon end to end: real `thoth-controller`, `thothctl`, `thoth-agent`, `thoth run`,
//! the official Python MCP client and the npm filesystem server, on loopback in temp dirs.

use std::path::Path;

use serde_json::{Value, json};
use thoth_e2e::fleet::{Agent, Controller};
use thoth_e2e::*;

/// Reads a.txt then writes b.txt through a proxy fed by `agent`; returns (read blocked, write blocked).
fn read_and_write(agent: &Agent, work: &Path, extra: &[&str]) -> (bool, bool, String) {
    let mut args: Vec<String> = vec!["--server".into(), "files".into()];
    args.extend(agent.proxy_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let run = mcp_client(
        ClientOpts::default(),
        json!([
            {"op": "call", "tool": "read_text_file", "args": {"path": work.join("a.txt")}},
            {"op": "call", "tool": "write_file", "args": {"path": work.join("b.txt"), "content": "x"}},
        ]),
        &strs(&args),
        &strs(&fs_server(work)),
    );
    let calls = run.calls();
    (
        calls[0]["isError"] == true,
        calls[1]["isError"] == true,
        calls[1]["text"].as_str().unwrap_or("").to_owned(),
    )
}

struct Setup {
    dir: tempfile::TempDir,
    controller: Controller,
    agent: Agent,
}

impl Setup {
    fn new(controller_config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        write_file(&dir.path().join("work"), "a.txt", "hello");
        let controller = Controller::start(dir.path(), controller_config);
        let agent = Agent::start(dir.path(), &controller);
        Setup {
            dir,
            controller,
            agent,
        }
    }

    fn work(&self) -> std::path::PathBuf {
        self.dir.path().join("work")
    }
}

#[test]
fn a_push_reaches_the_agent_and_new_and_running_proxies_enforce_it() {
    let s = Setup::new("");
    let st = s.agent.wait_status("enrollment", |st| {
        st["enrolled"] == true && st["connected"] == true
    });
    assert!(st["agentId"].as_str().unwrap().starts_with("agt-"));
    // No policy yet: the proxy fails closed, and says why.
    let (_, write_blocked, text) = read_and_write(&s.agent, &s.work(), &[]);
    assert!(write_blocked && text.contains("no policy"), "{text}");

    // Push the strict read-only policy; the agent applies it.
    let v1 = s
        .controller
        .push(&example_policy("read-only-files-strict.yaml"));
    s.agent
        .wait_status("v1 applied", |st| Agent::version(st) == Some(v1));
    // A proxy started now enforces it: reads pass, writes are blocked and never reach the server.
    let (read_blocked, write_blocked, text) = read_and_write(&s.agent, &s.work(), &[]);
    assert!(!read_blocked);
    assert!(write_blocked, "{text}");
    assert!(
        text.contains(&format!("v{v1}")),
        "the denial names the version: {text}"
    );
    assert!(!s.work().join("b.txt").exists());

    // A proxy already running picks up the next version for its next call.
    let mut args: Vec<String> = vec!["--server".into(), "files".into()];
    args.extend(s.agent.proxy_args());
    let server = fs_server(&s.work());
    let mut proxy = Proxy::start(&strs(&args), &strs(&server));
    proxy.handshake(false);
    proxy.send(&call(
        10,
        "write_file",
        json!({"path": s.work().join("c.txt"), "content": "1"}),
    ));
    let (r, _) = proxy.recv_response(json!(10));
    assert_eq!(r["result"]["isError"], true, "{r}");
    let rw = write_file(
        s.dir.path(),
        "rw.yaml",
        "name: rw\nversion: 2\nservers:\n  - name: files\n    enforcement: block\n    approved_scope: [\"*\"]\n",
    );
    let v2 = s.controller.push(&rw);
    s.agent
        .wait_status("v2 applied", |st| Agent::version(st) == Some(v2));
    let mut allowed = false;
    for id in 11..200 {
        proxy.send(&call(
            id,
            "write_file",
            json!({"path": s.work().join("c.txt"), "content": "2"}),
        ));
        let (r, _) = proxy.recv_response(json!(id));
        if r["result"]["isError"] != true {
            allowed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(allowed, "the running proxy never enforced version {v2}");
    assert_eq!(
        std::fs::read_to_string(s.work().join("c.txt")).unwrap(),
        "2"
    );
    proxy.close_stdin();
    proxy.wait(WAIT);

    // The controller records the applied version and the inventory.
    let out = s.controller.ctl_ok(&["--json", "agents", "list"]);
    let agents: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(agents[0]["appliedVersion"], v2);
    assert_eq!(agents[0]["connected"], true);
    assert!(
        !agents[0]["inventory"]["osName"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{agents}"
    );
    // The agent saw the proxies, by OS user.
    let st = s.agent.status().unwrap();
    assert!(!st["callers"].as_object().unwrap().is_empty(), "{st}");
}

#[test]
fn offline_restarts_and_controller_restarts_keep_enforcement_going() {
    let mut s = Setup::new("");
    let v1 = s
        .controller
        .push(&example_policy("read-only-files-strict.yaml"));
    s.agent
        .wait_status("v1 applied", |st| Agent::version(st) == Some(v1));

    // Controller down, agent restarted: it enforces last-known-good from disk.
    s.controller.stop();
    s.agent.stop();
    s.agent.boot();
    let st = s
        .agent
        .wait_status("lkg loaded", |st| Agent::version(st) == Some(v1));
    assert_eq!(st["connected"], false);
    let (read_blocked, write_blocked, _) = read_and_write(&s.agent, &s.work(), &[]);
    assert!(!read_blocked && write_blocked);
    // Even with the agent stopped, proxies use the verified bundle on disk.
    s.agent.stop();
    let (read_blocked, write_blocked, text) = read_and_write(&s.agent, &s.work(), &[]);
    assert!(!read_blocked && write_blocked, "{text}");
    assert!(!s.work().join("b.txt").exists());
    s.agent.boot();

    // The controller comes back: the agent reconnects by itself and gets the next push.
    s.controller.restart();
    s.agent
        .wait_status("reconnect", |st| st["connected"] == true);
    let v2 = s.controller.push(&example_policy("read-only-files.yaml"));
    s.agent
        .wait_status("v2 after restart", |st| Agent::version(st) == Some(v2));
    // And survives a second controller restart while connected.
    s.controller.restart();
    s.agent
        .wait_status("reconnect again", |st| st["connected"] == true);
}

#[test]
fn a_tampered_or_older_last_known_good_is_refused_at_load_and_re_fetched() {
    let mut s = Setup::new("");
    let v1 = s
        .controller
        .push(&example_policy("read-only-files-strict.yaml"));
    s.agent
        .wait_status("v1", |st| Agent::version(st) == Some(v1));
    let old_bundle = s.controller.ctl_ok(&["policy", "show", "--bundle"]);
    let v2 = s.controller.push(&example_policy("read-only-files.yaml"));
    s.agent
        .wait_status("v2", |st| Agent::version(st) == Some(v2));
    let lkg = s.agent.state.join("policy/last-known-good.json");

    // Tampered: one byte of the signed payload flipped.
    s.agent.stop();
    let good = std::fs::read(&lkg).unwrap();
    let mut env: Value = serde_json::from_slice(&good).unwrap();
    let bytes = env["payload"]["bytes"].as_str().unwrap().to_owned();
    let mut chars: Vec<char> = bytes.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    env["payload"]["bytes"] = Value::String(chars.into_iter().collect());
    std::fs::write(&lkg, serde_json::to_vec(&env).unwrap()).unwrap();
    // A proxy refuses it too (and, with no agent, fails closed).
    let (_, write_blocked, text) = read_and_write(&s.agent, &s.work(), &[]);
    assert!(write_blocked && text.contains("refused"), "{text}");
    s.agent.boot();
    let st = s
        .agent
        .wait_status("refetched", |st| Agent::version(st) == Some(v2));
    let notes = st["recentEvents"].to_string();
    assert!(notes.contains("POLICY_REJECTED"), "{notes}");
    assert_eq!(
        std::fs::read(&lkg).unwrap(),
        good,
        "the good bundle is back on disk"
    );

    // Older but validly signed (a replay of v1): refused as a rollback, v2 comes back.
    s.agent.stop();
    s.controller.stop();
    std::fs::write(&lkg, old_bundle.trim()).unwrap();
    s.agent.boot();
    let st = s.agent.wait_status("rollback refused", |st| {
        st["recentEvents"].to_string().contains("rollback")
    });
    assert_eq!(
        Agent::version(&st),
        None,
        "the replayed v1 must not be enforced: {st}"
    );
    s.controller.restart();
    s.agent
        .wait_status("v2 again", |st| Agent::version(st) == Some(v2));
}

#[test]
fn an_expired_bundle_makes_the_agent_stale_but_keeps_it_enforcing() {
    // Bundles valid 3 s; re-signing only hourly: the bundle will expire.
    let s = Setup::new("bundle_validity = \"3s\"\nresign_before = \"1s\"\n");
    let v1 = s
        .controller
        .push(&example_policy("read-only-files-strict.yaml"));
    s.agent
        .wait_status("v1", |st| Agent::version(st) == Some(v1));
    let st = s
        .agent
        .wait_status("stale", |st| st["policy"]["stale"] == true);
    assert_eq!(Agent::version(&st), Some(v1), "still enforcing v1");
    let (read_blocked, write_blocked, _) = read_and_write(&s.agent, &s.work(), &[]);
    assert!(
        !read_blocked && write_blocked,
        "an expired policy is still enforced"
    );
    // thoth health says so, for MDM.
    let (code, out, _) = thoth_cmd(&[
        "health",
        "--agent-socket",
        s.agent.socket.to_str().unwrap(),
        "--claude-config",
        "/nonexistent",
    ]);
    assert_eq!(code, 1, "{out}");
    let h: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h["stale"], true);
    assert!(h["problems"].to_string().contains("expired"), "{h}");
    // The controller learns it too.
    let v: Value =
        serde_json::from_str(&s.controller.ctl_ok(&["--json", "agents", "list"])).unwrap();
    wait_for("stale reported", || {
        let v: Value =
            serde_json::from_str(&s.controller.ctl_ok(&["--json", "agents", "list"])).unwrap();
        v[0]["stale"] == true
    });
    drop(v);
}

#[test]
fn a_revoked_agent_says_so_and_keeps_its_policy() {
    let s = Setup::new("");
    let v1 = s
        .controller
        .push(&example_policy("read-only-files-strict.yaml"));
    let st = s
        .agent
        .wait_status("v1", |st| Agent::version(st) == Some(v1));
    let id = st["agentId"].as_str().unwrap().to_owned();
    s.controller
        .ctl_ok(&["agents", "revoke", &id, "--reason", "test"]);
    let st = s.agent.wait_status("revoked", |st| st["revoked"] == true);
    assert!(
        st["lastError"].as_str().unwrap().contains("revoked"),
        "{st}"
    );
    assert_eq!(Agent::version(&st), Some(v1));
    let (_, write_blocked, _) = read_and_write(&s.agent, &s.work(), &[]);
    assert!(write_blocked);
    let (code, out, _) = thoth_cmd(&[
        "status",
        "--agent-socket",
        s.agent.socket.to_str().unwrap(),
        "--claude-config",
        "/nonexistent",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("revoked"), "{out}");
}

#[test]
fn an_agent_revoked_while_it_was_down_says_so_when_it_comes_back() {
    // The controller refuses a revoked agent's certificate at the handshake (an alert, not a
    // PERMISSION_DENIED answer): the agent must still know it is revoked.
    let mut s = Setup::new("");
    let v1 = s
        .controller
        .push(&example_policy("read-only-files-strict.yaml"));
    let st = s
        .agent
        .wait_status("v1", |st| Agent::version(st) == Some(v1));
    let id = st["agentId"].as_str().unwrap().to_owned();
    s.agent.stop();
    s.controller
        .ctl_ok(&["agents", "revoke", &id, "--reason", "test"]);
    s.agent.boot();
    let st = s.agent.wait_status("revoked", |st| st["revoked"] == true);
    assert!(
        st["lastError"].as_str().unwrap().contains("re-enroll"),
        "{st}"
    );
    assert_eq!(Agent::version(&st), Some(v1));
}

#[test]
fn a_proxy_with_no_agent_and_no_bundle_fails_closed_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "a.txt", "a");
    let run = mcp_client(
        ClientOpts::default(),
        json!([{"op": "call", "tool": "read_text_file", "args": {"path": dir.path().join("a.txt")}}]),
        &[
            "--agent-socket",
            dir.path().join("none.sock").to_str().unwrap(),
            "--state-dir",
            dir.path().join("nostate").to_str().unwrap(),
        ],
        &strs(&fs_server(dir.path())),
    );
    let c = run.calls()[0];
    assert_eq!(c["isError"], true);
    let text = c["text"].as_str().unwrap();
    assert!(text.contains("no agent socket"), "{text}");
    assert!(text.contains("no --policy"), "{text}");
    // And `thoth status` says what is wrong and what to do.
    let (code, out, _) = thoth_cmd(&[
        "status",
        "--agent-socket",
        dir.path().join("none.sock").to_str().unwrap(),
        "--claude-config",
        "/nonexistent",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("not running") && out.contains("thoth-agent"),
        "{out}"
    );
}

#[test]
fn status_lists_which_of_the_users_servers_are_governed() {
    let s = Setup::new("");
    let v1 = s
        .controller
        .push(&example_policy("read-only-files-strict.yaml"));
    s.agent
        .wait_status("v1", |st| Agent::version(st) == Some(v1));
    // A wrapper counts as governed only in the exact form the agent writes (this agent's thoth,
    // socket and state directory, as they are not the defaults).
    let mut files_args = vec![
        "run".to_owned(),
        "--server".into(),
        "files".into(),
        "--client".into(),
        "claude-desktop".into(),
    ];
    files_args.extend(s.agent.proxy_args());
    files_args.extend(["--".into(), "npx".into(), "x".into()]);
    let agents_thoth = std::fs::canonicalize(thoth()).unwrap();
    let config = write_file(
        s.dir.path(),
        "claude_desktop_config.json",
        &json!({"mcpServers": {
            "files": {"command": agents_thoth, "args": files_args.clone()},
            // Another binary named thoth, with the same arguments: not governed.
            "other": {"command": "/usr/local/bin/thoth", "args": files_args},
            "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"]},
            "remote": {"url": "https://example.com/mcp"}
        }})
        .to_string(),
    );
    let (code, out, _) = thoth_cmd(&[
        "health",
        "--agent-socket",
        s.agent.socket.to_str().unwrap(),
        "--claude-config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "github is not governed: {out}");
    let h: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h["agentRunning"], true);
    assert_eq!(h["policyVersion"], v1);
    let states: Vec<(String, String)> = h["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().into(),
                s["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        states.contains(&("files".into(), "governed".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("github".into(), "not governed".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("other".into(), "not governed".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("remote".into(), "remote".into())),
        "{states:?}"
    );
    assert!(h["problems"].to_string().contains("github"), "{h}");
}

#[test]
fn thoth_agent_refuses_bad_settings_with_the_file_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "agent.toml",
        "controller_url = \"https://x:1\"\ntenant = \"default\"\nca_fingerprint = \"sha256:zz\"\nroot_public_key = \"AAAA\"\n",
    );
    let out = std::process::Command::new(fleet::bin("thoth-agent"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent.toml") && err.contains("ca_fingerprint"),
        "{err}"
    );
    let cfg = write_file(dir.path(), "typo.toml", "controler_url = \"https://x:1\"\n");
    let out = std::process::Command::new(fleet::bin("thoth-agent"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("controler_url"));
    // The shipped example is valid.
    let example = repo_root().join("agent/thoth-agent.example.toml");
    let out = std::process::Command::new(fleet::bin("thoth-agent"))
        .args(["check-config", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_agent_renews_its_certificate_before_it_expires_and_stays_connected() {
    // Certificates valid 9 s: the agent renews at two thirds, over the open connection.
    let s = Setup::new("agent_cert_validity = \"9s\"\n");
    let first = s
        .agent
        .wait_status("enrolled", |st| st["connected"] == true);
    let before = first["certificateNotAfter"].as_str().unwrap().to_owned();
    let st = s.agent.wait_status("renewed", |st| {
        st["certificateNotAfter"]
            .as_str()
            .is_some_and(|c| c > before.as_str())
    });
    assert_eq!(st["revoked"], false);
    // After the first certificate has expired, reconnecting (a controller restart) still works.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let mut s = s;
    s.controller.restart();
    s.agent
        .wait_status("reconnected with the renewed certificate", |st| {
            st["connected"] == true
        });
    let v = s
        .controller
        .push(&example_policy("read-only-files-strict.yaml"));
    s.agent
        .wait_status("push after renewal", |st| Agent::version(st) == Some(v));
}
