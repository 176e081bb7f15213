//! Properties of the evaluator over many generated sessions (a small deterministic generator, so
//! a failure reproduces): what each mode may and may not do, whatever the calls.

mod common;

use common::{Session, parse};
use serde_json::json;
use thoth_policy::Action;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const TOOLS: [&str; 8] = [
    "read_a", "read_b", "write", "rm_rf", "sudo", "list", "send", "x",
];

fn policy(mode: &str) -> thoth_policy::Policy {
    parse(&format!(
        "defaults:\n  progressive: {{warn: 2, block_after: 5}}\nservers:\n  - name: s\n    enforcement: {mode}\n    \
         approved_scope: [\"read_*\", list]\n    deny: [\"rm_*\"]\n    step_up: [sudo]\n    \
         sequences: [{{after: \"read_*\", then: send, action: deny}}]\n"
    ))
}

fn sessions(mode: &str, mut check: impl FnMut(&str, Action)) {
    let p = policy(mode);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let mut s = Session::new(&p, "s", &[]);
        for _ in 0..12 {
            let tool = rng.pick(&TOOLS);
            check(tool, s.action(tool, json!({})));
        }
    }
}

#[test]
fn observe_never_stops_a_call() {
    sessions("observe", |tool, a| assert!(a.forwards(), "{tool}: {a:?}"));
}

#[test]
fn block_only_allows_approved_tools() {
    sessions("block", |tool, a| {
        let approved = tool.starts_with("read_") || tool == "list";
        match a {
            Action::Allow => assert!(approved, "{tool} allowed"),
            Action::Deny => assert!(!approved || tool == "send", "{tool} denied"),
            Action::StepUp => assert_eq!(tool, "sudo"),
            other => panic!("{tool}: block mode gave {other:?}"),
        }
    });
}

#[test]
fn deny_list_and_sequence_rules_hold_in_every_enforcing_mode() {
    for mode in ["progressive", "step_up", "block"] {
        let p = policy(mode);
        let mut rng = Rng(42);
        for _ in 0..200 {
            let mut s = Session::new(&p, "s", &[]);
            let mut read = false;
            for _ in 0..10 {
                let tool = rng.pick(&TOOLS);
                let a = s.action(tool, json!({}));
                if tool.starts_with("rm_") || (tool == "send" && read) {
                    assert_eq!(a, Action::Deny, "{mode}: {tool}");
                }
                if tool.starts_with("read_") {
                    read = true;
                }
            }
        }
    }
}

#[test]
fn progressive_escalation_never_steps_back() {
    // Whatever in-scope calls are mixed in, out-of-scope calls climb warn → step_up → deny and
    // never come back down within a session.
    let p = policy("progressive");
    let mut rng = Rng(7);
    for _ in 0..300 {
        let mut s = Session::new(&p, "s", &[]);
        let mut level = 0;
        let mut out_of_scope = 0;
        for _ in 0..15 {
            let tool = rng.pick(&TOOLS);
            let a = s.action(tool, json!({}));
            if !matches!(tool, "write" | "x") {
                continue;
            }
            out_of_scope += 1;
            let now = match a {
                Action::Warn => 0,
                Action::StepUp => 1,
                Action::Deny => 2,
                other => panic!("{tool}: {other:?}"),
            };
            assert!(
                now >= level,
                "out-of-scope call {out_of_scope}: {a:?} after level {level}"
            );
            let expected = if out_of_scope <= 2 {
                0
            } else if out_of_scope <= 5 {
                1
            } else {
                2
            };
            assert!(now >= expected, "out-of-scope call {out_of_scope}: {a:?}");
            level = now;
        }
    }
}
