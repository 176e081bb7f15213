//! A minimal MCP client over stdio, enough for the quickstart to act as Claude Desktop: launch a
//! server entry (command, args, env) from `claude_desktop_config.json`, initialize, call tools.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Why an MCP session with a server fails.
#[derive(Debug, thiserror::Error)]
pub(crate) enum McpError {
    /// The server cannot be started.
    #[error("cannot start {command}: {source}")]
    Start {
        command: String,
        source: std::io::Error,
    },
    /// The server's stdin is closed.
    #[error("the server's stdin is closed")]
    StdinClosed,
    /// A message cannot be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// The server's stdin cannot be written to.
    #[error("cannot write to the server: {0}")]
    Write(#[source] std::io::Error),
    /// No answer in time.
    #[error("no answer to {method} within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    /// The server exited first.
    #[error("the server exited before answering {method}")]
    Exited { method: String },
    /// The server answered with a JSON-RPC error.
    #[error("{method}: {error}")]
    Rpc { method: String, error: Value },
}

/// A running MCP server session.
pub(crate) struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    next_id: u64,
}

/// What a tool call came back with.
pub(crate) struct CallResult {
    /// The result's `isError` (a governance denial is a tool error the model can read).
    pub(crate) is_error: bool,
    /// The text content, joined.
    pub(crate) text: String,
}

impl Session {
    /// Launches `command args` with `env` added, exactly as Claude Desktop starts a server entry,
    /// and performs the `initialize` handshake.
    pub(crate) fn launch(
        command: &str,
        args: &[String],
        env: &[(String, String)],
        stderr: Stdio,
        timeout: Duration,
    ) -> Result<Session, McpError> {
        let mut child = Command::new(command)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| McpError::Start {
                command: command.to_owned(),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Session {
            stdin: child.stdin.take(),
            child,
            lines,
            next_id: 1,
        };
        s.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "thoth-quickstart", "version": env!("CARGO_PKG_VERSION")}
            }),
            timeout,
        )?;
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(s)
    }

    fn send(&mut self, msg: &Value) -> Result<(), McpError> {
        let stdin = self.stdin.as_mut().ok_or(McpError::StdinClosed)?;
        let mut line = serde_json::to_vec(msg)?;
        line.push(b'\n');
        stdin
            .write_all(&line)
            .and_then(|()| stdin.flush())
            .map_err(McpError::Write)
    }

    /// Sends a request and waits for its response's `result` (an error response is an error).
    pub(crate) fn request(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, McpError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(McpError::Timeout {
                        method: method.to_owned(),
                        timeout,
                    });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(McpError::Exited {
                        method: method.to_owned(),
                    });
                }
            };
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                continue; // not JSON-RPC (a server's stray output)
            };
            if msg.get("id") != Some(&json!(id)) || msg.get("method").is_some() {
                continue; // a notification, or a request from the server
            }
            if let Some(e) = msg.get("error") {
                return Err(McpError::Rpc {
                    method: method.to_owned(),
                    error: e.clone(),
                });
            }
            return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// Calls a tool.
    pub(crate) fn call(
        &mut self,
        tool: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<CallResult, McpError> {
        let r = self.request(
            "tools/call",
            json!({"name": tool, "arguments": args}),
            timeout,
        )?;
        let text = r["content"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        Ok(CallResult {
            is_error: r["isError"].as_bool().unwrap_or(false),
            text,
        })
    }

    /// Closes stdin (how a client ends a stdio session) and waits for the server to exit.
    pub(crate) fn close(mut self, timeout: Duration) {
        self.stdin.take();
        super::runner::wait_or_kill(&mut self.child, timeout);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
