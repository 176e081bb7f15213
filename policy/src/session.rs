//! What the evaluator remembers about one session (one proxied MCP server connection).

use std::time::Instant;

use crate::decision::Decision;
use crate::pattern::ToolGlob;

/// Distinct tool names remembered per session; past this the session is marked overflowed and
/// sequence rules fire conservatively (see [`SessionState::last_call_matching`]).
pub(crate) const MAX_REMEMBERED_TOOLS: usize = 512;

/// The state of one session, updated by the caller after each decision with [`SessionState::record`].
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// Distinct tools forwarded in this session, in first-call order, with the (monotonic) time
    /// of the last call to each.
    called: Vec<(String, Instant)>,
    overflowed: bool,
    out_of_scope: u32,
}

impl SessionState {
    /// A new, empty session.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tools already called (and forwarded) in this session, in first-call order.
    pub fn tools_called(&self) -> impl Iterator<Item = &str> {
        self.called.iter().map(|(t, _)| t.as_str())
    }

    /// Out-of-scope calls attempted so far (the progressive mode counts these).
    pub fn out_of_scope_calls(&self) -> u32 {
        self.out_of_scope
    }

    /// When a tool matching `glob` was last forwarded. Once more distinct tools were called than
    /// are remembered, the answer is conservatively "just now" for any glob, so a flood of calls
    /// cannot wash an earlier call out of a sequence rule's sight.
    pub fn last_call_matching(&self, glob: &ToolGlob, now: Instant) -> Option<Instant> {
        let found = self
            .called
            .iter()
            .filter(|(t, _)| glob.is_match(t))
            .map(|(_, at)| *at)
            .max();
        match found {
            Some(at) => Some(at),
            None if self.overflowed => Some(now),
            None => None,
        }
    }

    /// Records the outcome of a call: `forwarded` says whether it reached the server.
    pub fn record(&mut self, tool: &str, decision: &Decision, forwarded: bool, now: Instant) {
        if decision.out_of_scope {
            self.out_of_scope = self.out_of_scope.saturating_add(1);
        }
        if !forwarded {
            return;
        }
        if let Some(entry) = self.called.iter_mut().find(|(t, _)| t == tool) {
            entry.1 = now;
        } else if self.called.len() < MAX_REMEMBERED_TOOLS {
            self.called.push((tool.to_owned(), now));
        } else {
            self.overflowed = true;
        }
    }
}
