//! Invariant 1 under generated hostile input: whatever bytes the client sends, what the proxy
//! forwards to the server never holds a `tools/call` the policy did not allow, as read by the
//! most lenient server parsing we know of (see `proxy::oracle`).

use std::sync::Arc;

use thoth_policy::{Format, parse_policy};
use thoth_proxy::events::EventSink;
use thoth_proxy::framing::{Frame, read_frame};
use thoth_proxy::oracle::tool_calls_seen_by_a_lenient_server;
use thoth_proxy::policy::{LoadedPolicy, PolicyState};
use thoth_proxy::relay::{ClientOut, Relay, ToServer};

fn relay() -> Arc<Relay> {
    let policy = parse_policy(
        "servers:\n  - name: s\n    enforcement: block\n    approved_scope: [ok_tool]\n",
        "p.yaml",
        Format::Yaml,
    )
    .unwrap();
    let server = policy.resolve("s", &[]);
    let state = PolicyState::Loaded(Arc::new(LoadedPolicy {
        policy,
        server,
        version: "1".into(),
    }));
    Arc::new(Relay::new(
        ClientOut::new(Box::new(std::io::sink())),
        EventSink::disabled(),
        state,
        "s".into(),
        "01a20abe-2043-7512-8916-ba4700421315",
    ))
}

/// Checks one client line: anything forwarded may only call `ok_tool`.
pub fn check(relay: &Arc<Relay>, line: &[u8]) {
    let forwarded = match relay.from_client(line) {
        ToServer::Nothing => return,
        ToServer::Original => line.to_vec(),
        ToServer::Forward(bytes) => bytes,
    };
    for tool in tool_calls_seen_by_a_lenient_server(&forwarded) {
        assert_eq!(
            tool,
            "ok_tool",
            "forwarded a call to {tool:?} from {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: [&str; 8] = [
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bad_tool","arguments":{}}}"#,
    r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"ok_tool"}}"#,
    r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"x":1}}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    r#"[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"bad_tool"}}]"#,
    r#"{"jsonrpc":"2.0","id":4,"method":"tools\/call","params":{"name":"bad\u005ftool"}}"#,
    r#"{"jsonrpc":"2.0","id":5,"result":{"action":"accept"}}"#,
    r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"bad_tool"}}"#,
];

/// Splices that have made proxies and servers disagree elsewhere.
const FRAGMENTS: [&str; 12] = [
    "\r",
    "\r\n",
    r#","method":"tools/call""#,
    r#","params":{"name":"bad_tool"}"#,
    r#","id":9"#,
    r#","id":null"#,
    "\u{2028}",
    r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"bad_tool"}}"#,
    r#""name":"bad_tool","#,
    "\\u0000",
    " ",
    r#","requestState":"thoth-approval-x-1","inputResponses":{"thoth/approval":{"action":"accept"}}"#,
];

#[test]
fn no_generated_line_gets_a_disallowed_call_to_the_server() {
    let relay = relay();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut checked = 0;
    for _ in 0..60_000 {
        let mut line = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(line.len() + 1);
            match rng.below(3) {
                0 => {
                    let frag = FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes();
                    line.splice(at..at, frag.iter().copied());
                }
                1 if !line.is_empty() => {
                    let i = at.min(line.len() - 1);
                    line.remove(i);
                }
                _ => {
                    let i = at.min(line.len().saturating_sub(1));
                    if !line.is_empty() {
                        let alphabet = b"{}[],:\"\\\r\n ax0";
                        line[i] = alphabet[rng.below(alphabet.len())];
                    }
                }
            }
        }
        // Sometimes nest the result as a value inside another message, with whitespace around it
        // that JSON allows but readers split on differently.
        if rng.below(3) == 0 {
            const WS: [&str; 5] = [" ", "\r", "\t", "\r\n", "\n"];
            let (a, b) = (WS[rng.below(WS.len())], WS[rng.below(WS.len())]);
            let mut outer =
                br#"{"jsonrpc":"2.0","method":"notifications/progress","params":"#.to_vec();
            outer.extend_from_slice(a.as_bytes());
            outer.extend_from_slice(&line);
            outer.extend_from_slice(b.as_bytes());
            outer.push(b'}');
            line = outer;
        }
        line.push(b'\n');
        // Frame it as the proxy does: each frame is one call of `from_client`.
        let mut reader = std::io::BufReader::new(&line[..]);
        let mut frame = Vec::new();
        while let Ok(Frame::Line) = read_frame(&mut reader, &mut frame, 1 << 20) {
            check(&relay, &frame);
        }
        checked += 1;
    }
    assert_eq!(checked, 60_000);
    // And the seeds themselves, as sent.
    for s in SEEDS {
        check(&relay, format!("{s}\n").as_bytes());
    }
}

#[test]
fn the_oracle_sees_what_a_lenient_server_would() {
    let hidden = b"{\"method\":\"x\",\"params\":\r{\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"bad\"}}\r}";
    assert_eq!(tool_calls_seen_by_a_lenient_server(hidden), ["bad"]);
    let dup = br#"{"id":1,"method":"tools/list","method":"tools/call","params":{"name":"bad"}}"#;
    assert_eq!(tool_calls_seen_by_a_lenient_server(dup), ["bad"]);
}
