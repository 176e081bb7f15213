//! An independent check of invariant 1 ("no tool call reaches an MCP server without a policy
//! decision"), used by the fuzz target and the invariant test: it reads bytes the way the most
//! lenient server we know does (lines split on LF *and* bare CR, duplicate keys last-wins,
//! batches), and lists every tool a `tools/call` in them would run.

use serde_json::Value;

/// Tool names of every `tools/call` a lenient server would see in `bytes`.
pub fn tool_calls_seen_by_a_lenient_server(bytes: &[u8]) -> Vec<String> {
    let mut tools = Vec::new();
    for piece in bytes.split(|b| *b == b'\n' || *b == b'\r') {
        let Ok(v) = serde_json::from_slice::<Value>(piece) else {
            continue;
        };
        let messages = match v {
            Value::Array(items) => items,
            other => vec![other],
        };
        for m in messages {
            if m.get("method").and_then(Value::as_str) == Some("tools/call") {
                let name = m
                    .pointer("/params/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                tools.push(name.to_owned());
            }
        }
    }
    tools
}
