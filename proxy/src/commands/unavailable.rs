//! `thoth unavailable-server` (hidden): the stand-in MCP server `thoth run` starts when the real
//! one cannot start (an extension's `node` with no Node.js runtime). It answers `initialize`,
//! lists no tools, and answers every other request with an error naming the reason; `thoth run`
//! itself denies every `tools/call` with the same reason before it gets here. Reads stdin until
//! it closes.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

/// Longest line read (the relay has already bounded what it forwards).
const MAX_LINE: u64 = 16 << 20;

/// Runs until stdin closes; exit 0.
pub fn run() -> anyhow::Result<i32> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = std::io::Read::take(&mut input, MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(0);
        }
        let Ok(msg) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let (Some(id), Some(method)) = (msg.get("id"), msg.get("method").and_then(Value::as_str))
        else {
            continue;
        };
        let reply = match method {
            "initialize" => json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": msg.pointer("/params/protocolVersion")
                    .and_then(Value::as_str).unwrap_or("2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "thoth-unavailable", "version": env!("CARGO_PKG_VERSION")},
                "instructions": crate::node::NO_RUNTIME,
            }}),
            "tools/list" => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": []}}),
            "ping" => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
            _ => json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": -32603, "message": crate::node::NO_RUNTIME,
            }}),
        };
        serde_json::to_writer(&mut out, &reply)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
}
