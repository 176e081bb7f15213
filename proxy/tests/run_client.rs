//! `thoth run --client HOST`: every event names the client (else the `initialize` request's
//! `clientInfo.name`, cleaned); the `--no-command` marker is accepted; and a Claude Desktop
//! extension's plain `node` runs on Claude's own binary (`ELECTRON_RUN_AS_NODE=1`) when no
//! Node.js is on `PATH`, or every call is denied saying how to fix it. Real binaries: `thoth`,
//! `cat` and `node` as MCP servers, and `node` copied to `<tmp>/Claude` as the launching app.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

const ALLOW_ALL: &str =
    "servers:\n  - name: \"*\"\n    enforcement: block\n    approved_scope: [\"*\"]\n";

/// A command with none of the runner's `THOTH_*` or loader variables, `HOME` in `dir`.
fn clean(program: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("THOTH_") || k == "LD_PRELOAD" || k.starts_with("DYLD_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir)
        .env("HOME", dir)
        .env("XDG_STATE_HOME", dir.join("xdg"))
        .env("THOTH_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Sends `lines`, collects stdout lines until `done` says so (30 s at most), closes stdin and
/// waits for the exit; returns (stdout lines, stderr).
fn converse(
    mut cmd: Command,
    lines: &[Value],
    done: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, String) {
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
    let mut got: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))),
            Err(_) => {
                drop(stdin);
                let _ = child.kill();
                panic!(
                    "no complete answer within 30 s: {got:?}\n{}",
                    err.join().unwrap()
                );
            }
        }
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "thoth run did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    (got, err.join().unwrap())
}

fn initialize(name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": name, "version": "1.0"}}})
}

fn call(id: u64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": {"path": "/tmp/x"}}})
}

/// `thoth run [extra] --events F --policy P -- cat`; sends `lines`; returns the events.
fn events_of(extra: &[&str], lines: &[Value]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("allow.yaml"), ALLOW_ALL).unwrap();
    let events = dir.path().join("events.jsonl");
    let mut cmd = clean(&common::thoth(), dir.path());
    cmd.args([
        "run",
        "--server",
        "s",
        "--policy",
        "allow.yaml",
        "--agent-socket",
        "nosock",
    ])
    .args(["--state-dir", "nostate", "--events"])
    .arg(&events)
    .args(extra)
    .args(["--", "cat"]);
    // `cat` echoes each line: the call comes back as its own echo.
    let (_, err) = converse(cmd, lines, |got| {
        got.iter().any(|l| l["method"] == "tools/call")
    });
    let text = std::fs::read_to_string(&events).unwrap_or_else(|e| panic!("{e}\n{err}"));
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 2, "{text}\n{err}");
    events
}

#[test]
fn client_names_every_event() {
    for ev in events_of(
        &["--client", "cursor", "--no-command", "--no-args"],
        &[call(1, "write_file")],
    ) {
        assert_eq!(ev["clientName"], "cursor", "{ev}");
    }
    // --client wins over what the client says.
    for ev in events_of(
        &["--client", "vscode"],
        &[initialize("Visual Studio Code"), call(1, "w")],
    ) {
        assert_eq!(ev["clientName"], "vscode", "{ev}");
    }
}

#[test]
fn without_client_the_initialize_request_names_it_cleaned_and_bounded() {
    let events = events_of(
        &[],
        &[initialize("Zed\u{1b}[31m\n Editor\u{7}"), call(1, "w")],
    );
    for ev in &events {
        assert_eq!(ev["clientName"], "Zed[31m Editor", "{ev}");
    }
    let long = "x".repeat(10_000);
    for ev in events_of(&[], &[initialize(&long), call(1, "w")]) {
        assert_eq!(
            ev["clientName"].as_str().unwrap().chars().count(),
            128,
            "{ev}"
        );
    }
    // No name at all: no clientName.
    for ev in events_of(&[], &[call(1, "w")]) {
        assert!(ev.get("clientName").is_none(), "{ev}");
    }
}

/// A tiny MCP server in Node that answers `whoami` with its runtime and environment.
const SERVER_JS: &str = r#"
const rl = require('readline').createInterface({ input: process.stdin });
const send = (m) => process.stdout.write(JSON.stringify(m) + '\n');
rl.on('line', (line) => {
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  if (m.method === 'initialize') {
    send({ jsonrpc: '2.0', id: m.id, result: { protocolVersion: '2025-06-18',
      capabilities: { tools: {} }, serverInfo: { name: 'who', version: '1' } } });
  } else if (m.method === 'tools/call') {
    const text = JSON.stringify({ execPath: process.execPath,
      runAsNode: process.env.ELECTRON_RUN_AS_NODE || null });
    send({ jsonrpc: '2.0', id: m.id, result: { content: [{ type: 'text', text }] } });
  } else {
    send({ jsonrpc: '2.0', id: m.id, result: {} });
  }
});
rl.on('close', () => process.exit(0));
"#;

/// What Claude Desktop does: start `thoth run --client claude-extension … -- node server.js`
/// with a GUI app's PATH (no node on it), its stdio being ours.
const LAUNCHER_JS: &str = r#"
const { spawnSync } = require('child_process');
const [thoth, policy, empty] = process.argv.slice(2);
const env = Object.assign({}, process.env, { PATH: empty });
const r = spawnSync(thoth, ['run', '--server', 'ext', '--client', 'claude-extension',
  '--policy', policy, '--agent-socket', 'nosock', '--state-dir', 'nostate',
  '--', 'node', 'server.js'], { stdio: 'inherit', env });
process.exit(r.status === null ? 1 : r.status);
"#;

fn real_node() -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH");
    std::env::split_paths(&path)
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
        .expect("node on PATH (the tests need Node.js)")
}

/// `<dir>/Claude`: the real node binary under Claude's name (hard link, else a copy).
fn fake_claude(dir: &Path) -> PathBuf {
    let node = std::fs::canonicalize(real_node()).unwrap();
    let claude = dir.join("Claude");
    if std::fs::hard_link(&node, &claude).is_err() {
        std::fs::copy(&node, &claude).unwrap();
    }
    claude
}

fn call_text(got: &[Value]) -> String {
    let answer = got.iter().find(|l| l["id"] == 1).unwrap();
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn has_answer(got: &[Value]) -> bool {
    got.iter().any(|l| l["id"] == 1)
}

#[test]
fn an_extensions_node_runs_on_claudes_binary_when_no_node_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("allow.yaml"), ALLOW_ALL).unwrap();
    std::fs::write(d.join("server.js"), SERVER_JS).unwrap();
    std::fs::write(d.join("launcher.js"), LAUNCHER_JS).unwrap();
    std::fs::create_dir(d.join("empty-bin")).unwrap();
    let claude = fake_claude(d);
    let mut cmd = clean(&claude, d);
    cmd.arg("launcher.js")
        .arg(common::thoth())
        .arg("allow.yaml")
        .arg(d.join("empty-bin"))
        // No well-known Node.js (this machine has one in /usr/bin), no installed Claude.app.
        .env("THOTH_NODE_LOCATIONS", "")
        .env("THOTH_CLAUDE_LOCATIONS", "");
    let (got, err) = converse(cmd, &[initialize("Claude"), call(1, "whoami")], has_answer);
    let who: Value =
        serde_json::from_str(&call_text(&got)).unwrap_or_else(|e| panic!("{e}: {got:?}\n{err}"));
    assert_eq!(
        std::fs::canonicalize(who["execPath"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(&claude).unwrap(),
        "{who}\n{err}"
    );
    assert_eq!(who["runAsNode"], "1", "{who}");
    assert!(err.contains("Claude's own binary as Node"), "{err}");
    // With a well-known Node.js, that one is used, without ELECTRON_RUN_AS_NODE.
    let mut cmd = clean(&claude, d);
    cmd.arg("launcher.js")
        .arg(common::thoth())
        .arg("allow.yaml")
        .arg(d.join("empty-bin"))
        .env("THOTH_NODE_LOCATIONS", real_node())
        .env("THOTH_CLAUDE_LOCATIONS", "");
    let (got, err) = converse(cmd, &[initialize("Claude"), call(1, "whoami")], has_answer);
    let who: Value = serde_json::from_str(&call_text(&got)).unwrap();
    assert_eq!(
        std::fs::canonicalize(who["execPath"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(real_node()).unwrap(),
        "{who}\n{err}"
    );
    assert_eq!(who["runAsNode"], Value::Null, "{who}");
}

#[test]
fn with_no_runtime_at_all_every_call_is_denied_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("allow.yaml"), ALLOW_ALL).unwrap();
    std::fs::create_dir(d.join("empty-bin")).unwrap();
    // Started by this test (not named Claude), with no node anywhere.
    let mut cmd = clean(&common::thoth(), d);
    cmd.args([
        "run",
        "--server",
        "ext",
        "--client",
        "claude-extension",
        "--policy",
        "allow.yaml",
    ])
    .args([
        "--agent-socket",
        "nosock",
        "--state-dir",
        "nostate",
        "--",
        "node",
        "server.js",
    ])
    .env("PATH", d.join("empty-bin"))
    .env("THOTH_NODE_LOCATIONS", "")
    .env("THOTH_CLAUDE_LOCATIONS", "");
    let (got, err) = converse(cmd, &[initialize("Claude"), call(1, "whoami")], |got| {
        has_answer(got) && got.iter().any(|l| l["id"] == 0)
    });
    assert!(
        err.contains("node is not installed and Claude's bundled runtime could not be used"),
        "{err}"
    );
    // The client got an initialize answer, then the call's denial.
    let init = got
        .iter()
        .find(|l| l["id"] == 0)
        .expect("initialize answered");
    assert_eq!(
        init["result"]["serverInfo"]["name"], "thoth-unavailable",
        "{init}"
    );
    let answer = got.iter().find(|l| l["id"] == 1).unwrap();
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(call_text(&got).contains("install Node.js"), "{answer}");
    // Without --client claude-extension, plain `node` is started as it is (and not found).
    let mut cmd = clean(&common::thoth(), d);
    cmd.args([
        "run",
        "--server",
        "ext",
        "--policy",
        "allow.yaml",
        "--",
        "node",
        "server.js",
    ])
    .env("PATH", d.join("empty-bin"));
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(127),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
