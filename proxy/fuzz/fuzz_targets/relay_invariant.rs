//! Invariant 1 under the fuzzer: whatever bytes the client sends, what the proxy forwards never
//! holds a `tools/call` the policy did not allow, as read by a lenient server (lines split on LF
//! and bare CR, duplicate keys last-wins, batches).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use thoth_proxy::events::EventSink;
use thoth_proxy::framing::{Frame, read_frame};
use thoth_proxy::oracle::tool_calls_seen_by_a_lenient_server;
use thoth_proxy::policy::{LoadedPolicy, PolicyState};
use thoth_proxy::relay::{ClientOut, Relay, ToServer};
use thoth_policy::{Format, parse_policy};

fn relay() -> &'static Arc<Relay> {
    static RELAY: OnceLock<Arc<Relay>> = OnceLock::new();
    RELAY.get_or_init(|| {
        let policy = parse_policy(
            "servers:\n  - name: s\n    enforcement: block\n    approved_scope: [ok_tool]\n",
            "p.yaml",
            Format::Yaml,
        )
        .expect("fuzz policy");
        let server = policy.resolve("s", &[]);
        let state =
            PolicyState::Loaded(Arc::new(LoadedPolicy { policy, server, version: "1".into() }));
        Arc::new(Relay::new(
            ClientOut::new(Box::new(std::io::sink())),
            EventSink::disabled(),
            state,
            "s".into(),
            "01a20abe-2043-7512-8916-ba4700421315",
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let relay = relay();
    let mut reader = std::io::BufReader::new(data);
    let mut frame = Vec::new();
    while let Ok(Frame::Line) = read_frame(&mut reader, &mut frame, 1 << 16) {
        let forwarded = match relay.from_client(&frame) {
            ToServer::Nothing => continue,
            ToServer::Original => frame.clone(),
            ToServer::Forward(bytes) => bytes,
        };
        for tool in tool_calls_seen_by_a_lenient_server(&forwarded) {
            assert_eq!(tool, "ok_tool", "forwarded {:?}", String::from_utf8_lossy(&frame));
        }
    }
});
