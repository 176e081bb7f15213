//! The whole chain with real binaries and real peers: a controller with a JSON lines SIEM sink,
//! `thoth-installer` laying out a laptop, the installed agent enrolling and wrapping a user's
//! Claude Desktop config, servers launched exactly as Claude Desktop launches them from that
//! config (the official Python MCP client, and a raw JSON-RPC session kept open), policy pushes
//! and a rollback reaching a running proxy, progressive escalation, events verified in the
//! controller and the sink, an agent crash and restart, and an uninstall restoring the config.
//! Also the README's first command: `thoth-quickstart --once` (crate thoth-devtools).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use thoth_e2e::fleet::{Controller, bin};
use thoth_e2e::{
    ClientOpts, Proxy, call, example_policy, mcp_client_exec, node_server, thoth_cmd, wait_for,
    write_file,
};

/// The agent as the service manager runs it: the installed binary with the installed config.
struct InstalledAgent {
    child: Option<Child>,
    prefix: PathBuf,
    log: PathBuf,
}

impl InstalledAgent {
    fn start(prefix: &Path, log: &Path) -> InstalledAgent {
        let mut a = InstalledAgent {
            child: None,
            prefix: prefix.to_path_buf(),
            log: log.to_path_buf(),
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(self.prefix.join("usr/local/bin/thoth-agent"))
                .args(["run", "--config"])
                .arg(self.prefix.join("etc/thoth/agent.toml"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&c),
                rustix::process::Signal::TERM,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for InstalledAgent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The `files` entry of a Claude Desktop config: (command, args, env).
fn entry(config: &Path) -> (String, Vec<String>, Vec<(String, String)>) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let e = &v["mcpServers"]["files"];
    let args = e["args"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    let env = e["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    (e["command"].as_str().unwrap().to_owned(), args, env)
}

fn applied(c: &Controller, agent_id: &str) -> Option<u64> {
    let out = c.ctl_ok(&["--json", "agents", "list"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()?
        .iter()
        .find(|a| a["agentId"] == agent_id)
        .and_then(|a| a["appliedVersion"].as_u64())
}

fn sink_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn actions(events: &[Value], tool: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["eventType"] == "TOOL_CALL_PRE" && e["toolName"] == tool)
        .map(|e| e["decision"]["action"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn the_whole_chain_from_install_to_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sink = d.join("siem/events.jsonl");
    let controller = Controller::start(
        d,
        &format!(
            "[[sinks]]\nname = \"siem\"\nkind = \"jsonl\"\npath = {:?}\n",
            sink.display().to_string()
        ),
    );
    let (fp, root_key) = controller.trust();
    let token = controller.token();
    let token_file = write_file(d, "token", &token);

    // A laptop: one user whose Claude Desktop runs the filesystem server.
    let prefix = d.join("laptop");
    let docs = prefix.join("home/ann/Documents");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("a.txt"), "alpha\n").unwrap();
    let config = prefix.join("home/ann/.config/Claude/claude_desktop_config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let original = format!(
        "{{\n  \"mcpServers\": {{\n    \"files\": {{\n      \"command\": {:?},\n      \"args\": [{:?}],\n      \"env\": {{\"NODE_NO_WARNINGS\": \"1\"}}\n    }}\n  }},\n  \"globalShortcut\": \"Ctrl+Space\"\n}}\n",
        node_server("mcp-server-filesystem").display().to_string(),
        docs.display().to_string()
    );
    std::fs::write(&config, &original).unwrap();

    // The installer with a wrong CA fingerprint installs but says the controller is not the one.
    let install = |prefix: &Path, fp: &str| {
        Command::new(bin("thoth-installer"))
            .args(["install", "--no-start", "--prefix"])
            .arg(prefix)
            .args(["--controller", &controller.url(), "--tenant", "default"])
            .arg("--enroll-token-file")
            .arg(&token_file)
            .args(["--ca-fingerprint", fp, "--root-key", &root_key])
            .output()
            .unwrap()
    };
    let wrong = install(
        &d.join("other"),
        "sha256:1111111111111111111111111111111111111111111111111111111111111111",
    );
    assert_eq!(wrong.status.code(), Some(6), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not the pinned one"));
    // The right one: exit 0, the controller answered with the pinned CA.
    let out = install(&prefix, &fp);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&token));

    // The installed agent enrolls and wraps ann's config.
    let mut agent = InstalledAgent::start(&prefix, &d.join("agent.log"));
    let identity = prefix.join("var/lib/thoth/identity/agent.json");
    wait_for("enrollment", || identity.exists());
    let id: Value = serde_json::from_str(&std::fs::read_to_string(&identity).unwrap()).unwrap();
    let agent_id = id["agentId"].as_str().unwrap().to_owned();
    let thoth_path = prefix.join("usr/local/bin/thoth").display().to_string();
    wait_for("the config to be wrapped", || {
        std::fs::read_to_string(&config).is_ok_and(|t| t.contains(&thoth_path))
    });
    let (command, args, env) = entry(&config);
    assert_eq!(command, thoth_path);
    assert_eq!(env, [("NODE_NO_WARNINGS".to_owned(), "1".to_owned())]);
    let agents = controller.ctl_ok(&["--json", "agents", "list"]);
    assert!(agents.contains(&agent_id), "{agents}");
    let log = std::fs::read_to_string(d.join("agent.log")).unwrap();
    assert!(!log.contains(&token), "the token is in the agent's log");

    // v1, block mode: a session as Claude Desktop starts it — read allowed, write blocked.
    let v1 = controller.push(&example_policy("read-only-files-strict.yaml"));
    wait_for("v1 applied", || applied(&controller, &agent_id) == Some(v1));
    // What MDM sees: installed, running, enrolled, the applied version, the config governed.
    let st = Command::new(bin("thoth-installer"))
        .args(["status", "--json", "--prefix"])
        .arg(&prefix)
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["service"], "running", "{st}");
    assert_eq!(st["enrolled"], true);
    assert_eq!(st["agentId"], agent_id.as_str());
    assert_eq!(st["policyVersion"].as_u64(), Some(v1));
    assert_eq!(
        (st["configs"].as_u64(), st["governedConfigs"].as_u64()),
        (Some(1), Some(1))
    );
    let a = docs.join("a.txt");
    let run = mcp_client_exec(
        ClientOpts::default(),
        json!([
            {"op": "call", "tool": "read_text_file", "args": {"path": a}},
            {"op": "call", "tool": "write_file", "args": {"path": docs.join("b.txt"), "content": "x"}},
        ]),
        &command,
        &args,
        &env,
    );
    let calls = run.calls();
    assert_eq!(calls[0]["isError"], false, "{:?}", calls[0]);
    assert!(calls[0]["text"].as_str().unwrap().contains("alpha"));
    assert_eq!(calls[1]["isError"], true, "{:?}", calls[1]);
    assert!(
        calls[1]["text"]
            .as_str()
            .unwrap()
            .contains(&format!("v{v1}"))
    );
    assert!(
        !docs.join("b.txt").exists(),
        "the blocked write reached the server"
    );

    // A session kept open under v1; v2 (writes approved) pushed: the running proxy enforces it
    // from its next call.
    let mut session = Proxy::spawn({
        let mut c = Command::new(&command);
        c.args(&args).envs(env.iter().map(|(k, v)| (k, v)));
        c
    });
    session.handshake(false);
    let mut next_id = 10u64;
    let mut write = |session: &mut Proxy, name: &str| {
        next_id += 1;
        session.send(&call(
            next_id,
            "write_file",
            json!({"path": docs.join(name), "content": name}),
        ));
        let (r, _) = session.recv_response(json!(next_id));
        r["result"]["isError"] != true
    };
    assert!(!write(&mut session, "c0.txt"), "v1 blocks");
    let rw = write_file(
        d,
        "rw.yaml",
        "name: rw\nversion: 1\nservers:\n  - command: \"*server-filesystem*\"\n    enforcement: block\n    approved_scope: [\"*\"]\n",
    );
    let v2 = controller.push(&rw);
    wait_for("v2 applied", || applied(&controller, &agent_id) == Some(v2));
    let mut allowed = false;
    let mut kept_writes = 1; // c0
    let deadline = std::time::Instant::now() + thoth_e2e::WAIT;
    for i in 1.. {
        if std::time::Instant::now() > deadline {
            break;
        }
        kept_writes += 1;
        if write(&mut session, &format!("c{i}.txt")) {
            allowed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        allowed,
        "the running proxy did not enforce v{v2} within {:?}",
        thoth_e2e::WAIT
    );
    session.close_stdin();
    session.wait(Duration::from_secs(10));

    // v3, progressive: in a new session, 2 out-of-scope writes go through with a warning, the
    // next 2 need an approval (the admins are asked and nobody answers within the 2 s hold:
    // denied), then they are blocked.
    let progressive = std::fs::read_to_string(example_policy("read-only-files.yaml"))
        .unwrap()
        .replacen(
            "\n  enforcement: progressive\n",
            "\n  enforcement: progressive\n  approval_timeout_secs: 2\n  approvers: [admin]\n",
            1,
        );
    assert!(
        progressive.contains("approval_timeout_secs: 2"),
        "{progressive}"
    );
    let v3 = controller.push(&write_file(dir.path(), "progressive.yaml", &progressive));
    wait_for("v3 applied", || applied(&controller, &agent_id) == Some(v3));
    let ops: Vec<Value> = (1..=6)
        .map(|i| json!({"op": "call", "tool": "write_file", "args": {"path": docs.join(format!("p{i}.txt")), "content": "p"}}))
        .collect();
    let run = mcp_client_exec(ClientOpts::default(), json!(ops), &command, &args, &env);
    let outcomes: Vec<bool> = run.calls().iter().map(|c| c["isError"] != true).collect();
    assert_eq!(
        outcomes,
        [true, true, false, false, false, false],
        "{:?}",
        run.calls()
    );
    assert!(docs.join("p2.txt").exists() && !docs.join("p3.txt").exists());

    // Rollback to v1: a new version with v1's document; a fresh session's first write is
    // blocked outright (progressive would have let it through with a warning).
    let rb = controller.ctl_ok(&["--json", "policy", "rollback", &v1.to_string()]);
    let v4 = serde_json::from_str::<Value>(&rb).unwrap()["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("{rb}"));
    assert!(v4 > v3);
    wait_for("the rollback applied", || {
        applied(&controller, &agent_id) == Some(v4)
    });
    let run = mcp_client_exec(
        ClientOpts::default(),
        json!([{"op": "call", "tool": "write_file", "args": {"path": docs.join("d.txt"), "content": "x"}}]),
        &command,
        &args,
        &env,
    );
    assert_eq!(run.calls()[0]["isError"], true, "{:?}", run.calls());
    assert!(
        run.calls()[0]["text"]
            .as_str()
            .unwrap()
            .contains(&format!("v{v4}")),
        "{:?}",
        run.calls()
    );
    assert!(!docs.join("d.txt").exists());

    // Events: in the SIEM file (one verified chain) and in the controller.
    // Python v1 session, the kept-open session, the progressive session, after the rollback.
    let total_writes = 1 + kept_writes + 6 + 1;
    wait_for("the events in the SIEM file", || {
        actions(&sink_events(&sink), "write_file").len() >= total_writes
    });
    let events = sink_events(&sink);
    assert_eq!(actions(&events, "read_text_file"), ["allow"]);
    let writes = actions(&events, "write_file");
    assert_eq!(writes.len(), total_writes, "{writes:?}");
    // The progressive session, in order: warned twice, then "needs approval" (held for a human,
    // nobody answered: denied at the timeout) twice, then past the session's limit.
    let progressive = &writes[writes.len() - 7..writes.len() - 1];
    assert_eq!(
        progressive,
        ["warn", "warn", "step_up", "step_up", "deny", "deny"],
        "{writes:?}"
    );
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["eventType"] == "TOOL_CALL_PRE" && e["toolName"] == "write_file")
        .map(|e| e["decision"]["reason"].as_str().unwrap_or(""))
        .collect();
    let reasons = &reasons[reasons.len() - 7..reasons.len() - 1];
    assert!(reasons[2].contains("needs approval") && reasons[3].contains("needs approval"));
    assert!(
        reasons[4].contains("limit") && reasons[5].contains("limit"),
        "{reasons:?}"
    );
    assert_eq!(writes.last().map(String::as_str), Some("deny"));
    let (code, out, err) = thoth_cmd(&["events", "verify", sink.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let q = controller.ctl_ok(&[
        "--json",
        "events",
        "query",
        "--type",
        "TOOL_CALL_PRE",
        "--limit",
        "100",
    ]);
    // One JSON object per line.
    let in_controller = q
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["eventType"] == "TOOL_CALL_PRE")
        .count();
    let in_sink = events
        .iter()
        .filter(|e| e["eventType"] == "TOOL_CALL_PRE")
        .count();
    assert_eq!(in_controller, in_sink, "the controller and the SIEM agree");

    // The agent crashes and is restarted (as systemd would): it reconnects, takes the next
    // push, and its events continue the same chain.
    agent.kill9();
    agent.spawn();
    let v5 = controller.push(&example_policy("read-only-files-strict.yaml"));
    wait_for("v5 applied after the restart", || {
        applied(&controller, &agent_id) == Some(v5)
    });
    let run = mcp_client_exec(
        ClientOpts::default(),
        json!([{"op": "call", "tool": "read_text_file", "args": {"path": a}}]),
        &command,
        &args,
        &env,
    );
    assert_eq!(run.calls()[0]["isError"], false);
    wait_for("the read after the restart in the SIEM file", || {
        actions(&sink_events(&sink), "read_text_file").len() == 2
    });
    let (code, out, err) = thoth_cmd(&["events", "verify", sink.to_str().unwrap()]);
    assert_eq!(
        code, 0,
        "the chain continues across the restart: {out}{err}"
    );
    let alerts = controller.ctl_ok(&["events", "query", "--type", "CHAIN_ALERT"]);
    assert!(!alerts.contains("CHAIN_ALERT"), "{alerts}");

    // Uninstall: the agent stops, ann's config is back byte for byte, the files are gone.
    agent.stop();
    let out = Command::new(bin("thoth-installer"))
        .args(["uninstall", "--prefix"])
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
    assert!(!prefix.join("usr/local/bin/thoth").exists());
    assert!(!prefix.join("etc/thoth").exists());
    assert!(!prefix.join("var/lib/thoth").exists());
}

#[test]
fn the_quickstart_completes_the_narrated_flow_and_says_which_step_failed_when_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("qs");
    let out = Command::new(bin("thoth-quickstart"))
        .args(["--once", "--dir"])
        .arg(&work)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in 1..=8 {
        assert!(text.contains(&format!("[{step}/8]")), "step {step}: {text}");
    }
    assert!(text.contains("→ allowed"), "{text}");
    assert!(text.contains("→ BLOCKED"), "{text}");
    assert!(text.contains("All 8 steps passed"), "{text}");
    // What it narrated is true: the SIEM file holds both decisions, the chain verifies, the
    // blocked write changed nothing, and nothing is left running.
    let sink = work.join("siem/events.jsonl");
    let events = sink_events(&sink);
    assert_eq!(actions(&events, "read_text_file"), ["allow"]);
    assert_eq!(actions(&events, "write_file"), ["deny"]);
    let (code, _, err) = thoth_cmd(&["events", "verify", sink.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(work.join("laptop/home/alex/Documents/notes.txt")).unwrap(),
        "Quarterly numbers are in the shared drive.\n"
    );
    assert!(
        !work.join("laptop/run/thoth/agent.sock").exists()
            || std::os::unix::net::UnixStream::connect(work.join("laptop/run/thoth/agent.sock"))
                .is_err(),
        "the agent was stopped"
    );
    // A server that cannot start: the step that failed is named, with why.
    let out = Command::new(bin("thoth-quickstart"))
        .args(["--once", "--mcp-server", "/nonexistent/mcp-server", "--dir"])
        .arg(dir.path().join("broken"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("quickstart step 7/8") && err.contains("failed"),
        "{err}"
    );
    // A directory that is not empty is refused before anything starts.
    let out = Command::new(bin("thoth-quickstart"))
        .args(["--once", "--dir"])
        .arg(&work)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
}
