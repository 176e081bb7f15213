//! Helpers for the tool-integrity tests (issue 17): the configurable Python server
//! (`tests/python/integrity_server.py`), policies for it, what it received, and the events.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use thoth_proto::pins::{ToolDigest, tool_digest};

use super::{ClientRun, Proxy, py_script, python, read_jsonl, write_file};

/// The AWS documentation's example access key id, which the server's `read_file` returns with
/// `--secrets`.
pub const AWS_ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
/// The AWS documentation's example secret key, returned with it.
pub const AWS_SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// What the rug-pulled `read_file` description smuggles in.
pub const SMUGGLED: &str = "~/.ssh/id_rsa";

/// The server name every policy here names (`thoth run --server integrity`).
pub const SERVER: &str = "integrity";

/// One test's files: a temp dir with the server's variant file, its call log and an events
/// file.
pub struct Files {
    /// The temp dir (removed on drop).
    pub dir: tempfile::TempDir,
    /// The variant file (`--state`): the test writes "rugpull" to it.
    pub state: PathBuf,
    /// The server's call log (`--log`).
    pub log: PathBuf,
    /// The proxy's events file (`--events`).
    pub events: PathBuf,
}

impl Files {
    /// A fresh set.
    pub fn new() -> Files {
        let dir = tempfile::tempdir().expect("a temp dir");
        Files {
            state: dir.path().join("variant"),
            log: dir.path().join("calls.jsonl"),
            events: dir.path().join("events.jsonl"),
            dir,
        }
    }

    /// The server's command line with `flags` (`--poisoned`, `--secrets`, `--shadow NAME`…),
    /// its variant file and call log.
    pub fn server(&self, flags: &[&str]) -> Vec<String> {
        let mut v = vec![
            python().display().to_string(),
            py_script("integrity_server.py").display().to_string(),
            "--state".into(),
            self.state.display().to_string(),
            "--log".into(),
            self.log.display().to_string(),
        ];
        v.extend(flags.iter().map(|f| (*f).to_owned()));
        v
    }

    /// Makes the next server process (and a `poke`d one) offer the rug-pulled `read_file`.
    pub fn rugpull(&self) {
        std::fs::write(&self.state, "rugpull").expect("write the variant file");
    }

    /// The calls the server received: `{"tool", "arguments", "text"}`.
    pub fn server_calls(&self) -> Vec<Value> {
        read_jsonl(&self.log)
    }

    /// The calls of `tool` the server received.
    pub fn server_calls_of(&self, tool: &str) -> Vec<Value> {
        self.server_calls()
            .into_iter()
            .filter(|c| c["tool"] == tool)
            .collect()
    }

    /// The events file as raw text (to look for secrets anywhere in it).
    pub fn events_text(&self) -> String {
        std::fs::read_to_string(&self.events).unwrap_or_default()
    }

    /// Writes a policy under the temp dir (see [`policy_yaml`]).
    pub fn policy(&self, defaults: &str, server_extra: &str) -> PathBuf {
        write_file(
            self.dir.path(),
            "policy.yaml",
            &policy_yaml(defaults, server_extra),
        )
    }

    /// `thoth run` arguments for a standalone proxy with `policy`.
    pub fn proxy_args(&self, policy: &Path) -> Vec<String> {
        [
            "--server",
            SERVER,
            "--client",
            "claude-desktop",
            "--policy",
            &policy.display().to_string(),
            "--events",
            &self.events.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Default for Files {
    fn default() -> Self {
        Self::new()
    }
}

/// A policy for the integrity server: `defaults` (YAML lines, indented by two spaces, e.g.
/// `"  on_tool_change: block\n"`) besides `enforcement: block`, and one server entry for the
/// names starting with [`SERVER`] that approves every tool, plus `server_extra` (lines
/// indented by four spaces). Every tool is approved, so only the integrity and DLP settings
/// (and annotation rules) can deny.
pub fn policy_yaml(defaults: &str, server_extra: &str) -> String {
    format!(
        "name: integrity-e2e\nversion: 1\ndefaults:\n  enforcement: block\n  unknown_servers: block\n{defaults}servers:\n  - name: \"{SERVER}*\"\n    approved_scope: [\"*\"]\n{server_extra}"
    )
}

/// The tools the server offers, as it sends them, talking to it directly (no proxy).
pub fn direct_tools(server: &[String]) -> Vec<Value> {
    let mut cmd = Command::new(&server[0]);
    cmd.args(&server[1..]);
    let mut p = Proxy::spawn(cmd);
    p.handshake(false);
    p.send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    let (r, _) = p.recv_response(json!(1));
    r["result"]["tools"].as_array().cloned().unwrap_or_default()
}

/// The digests of tool `name` in `tools`.
pub fn digest_of(tools: &[Value], name: &str) -> ToolDigest {
    let t = tools
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no tool {name} in {tools:?}"));
    tool_digest(t).expect("a digestible tool")
}

/// A GitHub-token-shaped string made at run time (`ghp_` and 36 letters and digits), so no
/// secret-looking literal lives in the repository.
pub fn github_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let s = std::collections::hash_map::RandomState::new();
    let mut out = String::from("ghp_");
    let mut i = 0u64;
    while out.len() < 40 {
        let mut h = s.build_hasher();
        h.write_u64(i);
        let mut x = h.finish();
        for _ in 0..8 {
            if out.len() == 40 {
                break;
            }
            out.push(char::from(ALNUM[(x % 62) as usize]));
            x /= 62;
        }
        i += 1;
    }
    out
}

/// The outputs of the run's `list_tools` ops, in order.
pub fn lists(run: &ClientRun) -> Vec<&Value> {
    run.out.iter().filter(|v| v["op"] == "list_tools").collect()
}

/// The tool names of one `list_tools` output.
pub fn names(list: &Value) -> Vec<String> {
    list["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The events of type `kind`.
pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["eventType"] == kind).collect()
}

/// Whether `s` is `n` lowercase hex digits.
pub fn is_hex(s: &Value, n: usize) -> bool {
    s.as_str().is_some_and(|s| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The `detail.dlp` findings of an event (empty when none).
pub fn dlp_findings(event: &Value) -> Vec<Value> {
    event["detail"]["dlp"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the events file satisfies `cond` (at most 30 s); returns the events.
pub fn wait_events(path: &Path, what: &str, mut cond: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let t0 = std::time::Instant::now();
    loop {
        let ev = read_jsonl(path);
        if cond(&ev) {
            return ev;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}; events: {ev:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
