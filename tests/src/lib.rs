//! Helpers for the end-to-end tests: find the built binaries and the installed peers, start
//! `thoth run` with pipes, and drive the official Python MCP client through it.
//!
//! Peers are installed by `scripts/setup-peers` (run by `scripts/test`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod fleet;
pub mod integrity;

/// How long a test waits for any one expected message.
pub const WAIT: Duration = Duration::from_secs(30);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The built `thoth` binary: `THOTH_BIN`, or next to this test executable's `deps/` folder.
pub fn thoth() -> PathBuf {
    if let Some(p) = std::env::var_os("THOTH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let bin = dir.join(format!("thoth{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (scripts/test does: cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// An MCP server installed from npm under tests/node_modules.
pub fn node_server(name: &str) -> PathBuf {
    let p = repo_root().join("tests/node_modules/.bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-peers",
        p.display()
    );
    p
}

/// The npm filesystem MCP server serving `dir`, as a command line.
pub fn fs_server(dir: &Path) -> Vec<String> {
    vec![
        node_server("mcp-server-filesystem").display().to_string(),
        dir.display().to_string(),
    ]
}

/// Borrowed views of owned strings (for argument lists).
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The JSON objects of a JSON lines file (missing file: none; lines that are not JSON skipped).
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until `cond` holds, at most `secs` seconds.
pub fn wait_secs(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Python with the official MCP SDK.
pub fn python() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-peers",
        p.display()
    );
    p
}

/// A script under tests/python.
pub fn py_script(name: &str) -> PathBuf {
    repo_root().join("tests/python").join(name)
}

/// A shipped example policy.
pub fn example_policy(name: &str) -> PathBuf {
    repo_root().join("policy/examples").join(name)
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

/// The legacy `initialize` request.
pub fn initialize(id: u64, elicitation: bool) -> String {
    let caps = if elicitation {
        json!({"elicitation": {}})
    } else {
        json!({})
    };
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": caps,
        "clientInfo": {"name": "thoth-e2e", "version": "0"}}})
    .to_string()
}

/// A `tools/call` request.
pub fn call(id: u64, tool: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
    .to_string()
}

/// `thoth run` with piped stdio, driven line by line.
pub struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proxy {
    /// Starts `thoth run THOTH_ARGS -- SERVER…`. Stderr is inherited (shown on test failure).
    pub fn start(thoth_args: &[&str], server: &[&str]) -> Proxy {
        let mut cmd = Command::new(thoth());
        cmd.arg("run").args(thoth_args).arg("--").args(server);
        Self::spawn(cmd)
    }

    /// Starts any command with piped stdin/stdout (used for the direct, proxy-less baseline).
    pub fn spawn(mut cmd: Command) -> Proxy {
        isolate(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Proxy {
            stdin: child.stdin.take(),
            child,
            lines: rx,
        }
    }

    /// The process id of `thoth` itself.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one line (a newline is added).
    pub fn send(&mut self, line: &str) {
        let w = self.stdin.as_mut().expect("stdin still open");
        w.write_all(line.as_bytes()).expect("write to proxy");
        w.write_all(b"\n").expect("write to proxy");
        w.flush().expect("flush");
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.stdin.as_mut().expect("stdin still open");
        w.write_all(bytes).expect("write to proxy");
        w.flush().expect("flush");
    }

    /// The next line, exactly as received (with its newline), or `None` after `timeout`.
    pub fn recv_raw(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next message; panics if none comes within [`WAIT`].
    pub fn recv(&self) -> Value {
        let line = self
            .recv_raw(WAIT)
            .expect("a message from the proxy in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Reads until the response with `id`, returning it and the messages seen before it.
    pub fn recv_response(&self, id: Value) -> (Value, Vec<Value>) {
        let deadline = Instant::now() + WAIT;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .recv_raw(left)
                .unwrap_or_else(|| panic!("no response {id} in time; saw {before:?}"));
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if v.get("id") == Some(&id) && v.get("method").is_none() {
                return (v, before);
            }
            before.push(v);
        }
    }

    /// Performs the legacy handshake.
    pub fn handshake(&mut self, elicitation: bool) -> Value {
        self.send(&initialize(0, elicitation));
        let (r, _) = self.recv_response(json!(0));
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        r
    }

    /// Closes the proxy's stdin (the client going away).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for the proxy to exit, at most `timeout`; kills it and panics after that.
    pub fn wait(mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("thoth run did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Close our side first, so thoth shuts its server down the normal way (no orphans);
        // kill only what does not exit in time.
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Children of a process (Linux /proc), to find the MCP server `thoth run` started.
pub fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    let sig = rustix::process::Signal::from_named_raw(sig);
    if let (Some(pid), Some(sig)) = (pid, sig) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// What the Python MCP client printed, one JSON value per op.
#[derive(Debug)]
pub struct ClientRun {
    /// One value per line of output.
    pub out: Vec<Value>,
    /// The client's exit status.
    pub status: ExitStatus,
    /// Its stderr.
    pub stderr: String,
}

impl ClientRun {
    /// The outputs of `call` ops, in order.
    pub fn calls(&self) -> Vec<&Value> {
        self.out.iter().filter(|v| v["op"] == "call").collect()
    }

    /// The tool names of the first `list_tools` op.
    pub fn tools(&self) -> Vec<String> {
        let list = self
            .out
            .iter()
            .find(|v| v["op"] == "list_tools")
            .expect("a list_tools op");
        list["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }
}

/// Options of one Python client run.
pub struct ClientOpts<'a> {
    /// `initialize` or `discover`.
    pub lifecycle: &'a str,
    /// `none`, `accept` or `decline`.
    pub elicit: &'a str,
}

impl Default for ClientOpts<'_> {
    fn default() -> Self {
        ClientOpts {
            lifecycle: "initialize",
            elicit: "none",
        }
    }
}

/// This test's own state directory for the proxies it starts: a proxy keeps events its agent
/// did not take in `$XDG_STATE_HOME/thoth/pending` and the next proxy sends them, so tests
/// running side by side must not share the runner's home.
pub fn state_home() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir"))
        .path()
}

fn isolate(cmd: &mut Command) {
    let set = |k: &str| cmd.get_envs().any(|(name, _)| name == k);
    if !set("HOME") && !set("XDG_STATE_HOME") {
        cmd.env("XDG_STATE_HOME", state_home());
    }
}

/// Runs the official Python MCP client against `thoth run THOTH_ARGS -- SERVER…`.
pub fn mcp_client(
    opts: ClientOpts<'_>,
    ops: Value,
    thoth_args: &[&str],
    server: &[&str],
) -> ClientRun {
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(thoth_args.iter().map(|a| (*a).to_owned()));
    args.push("--".into());
    args.extend(server.iter().map(|a| (*a).to_owned()));
    mcp_client_exec(opts, ops, &thoth().display().to_string(), &args, &[])
}

/// Runs the official Python MCP client against the server `command args` with `env` added:
/// what Claude Desktop does with an `mcpServers` entry.
pub fn mcp_client_exec(
    opts: ClientOpts<'_>,
    ops: Value,
    command: &str,
    args: &[String],
    env: &[(String, String)],
) -> ClientRun {
    let mut cmd = Command::new(python());
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    isolate(&mut cmd);
    let out = cmd
        .arg(py_script("mcp_client.py"))
        .args([
            "--lifecycle",
            opts.lifecycle,
            "--elicit",
            opts.elicit,
            "--timeout",
            "60",
        ])
        .arg("--ops")
        .arg(ops.to_string())
        .arg("--")
        .arg(command)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the Python MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let parsed = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("client printed non-JSON ({e}): {l}\nstderr: {stderr}"))
        })
        .collect();
    let run = ClientRun {
        out: parsed,
        status: out.status,
        stderr,
    };
    assert!(run.status.success(), "the MCP client failed: {run:?}");
    run
}

/// Reads an events file as JSON values.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("event line is JSON"))
        .collect()
}

/// Waits until `cond` holds, at most [`WAIT`].
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Runs `thoth ARGS…` to completion, returning (exit code, stdout, stderr).
pub fn thoth_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(thoth())
        .args(args)
        .output()
        .expect("run thoth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
