//! Helpers shared by the policy tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;
use thoth_policy::{
    Action, Decision, Format, Policy, ServerView, SessionState, ToolCall, evaluate,
};

pub(crate) fn parse(yaml: &str) -> Policy {
    thoth_policy::parse_policy(yaml, "test.yaml", Format::Yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// A session against one server: evaluates calls and records them as the proxy does.
pub(crate) struct Session<'p> {
    pub policy: &'p Policy,
    pub server: ServerView,
    pub state: SessionState,
    pub now: Instant,
}

impl<'p> Session<'p> {
    pub(crate) fn new(policy: &'p Policy, name: &str, argv: &[&str]) -> Self {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        Session {
            policy,
            server: policy.resolve(name, &argv),
            state: SessionState::new(),
            now: Instant::now(),
        }
    }

    /// Decides a call; a call whose decision forwards it (or needs approval, which these tests
    /// treat as granted) is recorded as forwarded.
    pub(crate) fn call(&mut self, tool: &str, args: Value) -> Decision {
        let d = evaluate(
            self.policy,
            &self.server,
            &self.state,
            &ToolCall {
                tool,
                arguments: (&args).into(),
                hints: None,
            },
            self.now,
        );
        // The arguments as the proxy reads them (members found in the JSON text) decide alike.
        let text = args.to_string();
        let from_text = evaluate(
            self.policy,
            &self.server,
            &self.state,
            &ToolCall {
                tool,
                arguments: thoth_policy::Arguments::Json(&text),
                hints: None,
            },
            self.now,
        );
        assert_eq!(d, from_text, "arguments read from JSON text: {text}");
        self.state.record(tool, &d, d.action.forwards(), self.now);
        d
    }

    pub(crate) fn action(&mut self, tool: &str, args: Value) -> Action {
        self.call(tool, args).action
    }

    pub(crate) fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
    }
}
