//! Policy documents come from admins' git repositories and, later, from bundles: parsing and
//! evaluating any document must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thoth_policy::{Format, SessionState, ToolCall, evaluate, parse_policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for format in [Format::Yaml, Format::Json] {
        if let Ok(policy) = parse_policy(text, "fuzz", format) {
            let argv = vec!["npx".to_owned(), "@modelcontextprotocol/server-filesystem".to_owned()];
            let server = policy.resolve("files", &argv);
            let mut session = SessionState::new();
            let args = serde_json::json!({"path": "/srv/../etc/passwd", "url": "http://x"});
            let now = std::time::Instant::now();
            for tool in ["read_file", "write_file", "x"] {
                let d = evaluate(&policy, &server, &session, &ToolCall { tool, arguments: (&args).into(), hints: None }, now);
                session.record(tool, &d, d.action.forwards(), now);
                let _ = policy.tool_visible(&server, tool);
            }
        }
    }
});
