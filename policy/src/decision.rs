//! What a decision says: the action taken on a call, the mode it was decided in, and why.

use serde::Serialize;

use crate::document::Enforcement;

/// What happens to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forward.
    Allow,
    /// Forward; the event carries a warning.
    Warn,
    /// Forward (observe mode); the event says the call would have been blocked.
    WouldBlock,
    /// Forward only after a human approves.
    StepUp,
    /// Do not forward.
    Deny,
}

impl Action {
    /// Whether the call goes to the server without asking anyone.
    pub fn forwards(self) -> bool {
        matches!(self, Action::Allow | Action::Warn | Action::WouldBlock)
    }

    /// The name used in events and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Warn => "warn",
            Action::WouldBlock => "would_block",
            Action::StepUp => "step_up",
            Action::Deny => "deny",
        }
    }
}

/// The mode a decision was made in: the server's enforcement, or how unknown servers are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Unknown server, `unknown_servers: allow`.
    Allow,
    /// `observe`.
    Observe,
    /// `progressive`.
    Progressive,
    /// `step_up`.
    StepUp,
    /// `block`.
    Block,
}

impl Mode {
    /// The name used in events and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Allow => "allow",
            Mode::Observe => "observe",
            Mode::Progressive => "progressive",
            Mode::StepUp => "step_up",
            Mode::Block => "block",
        }
    }
}

impl From<Enforcement> for Mode {
    fn from(e: Enforcement) -> Self {
        match e {
            Enforcement::Observe => Mode::Observe,
            Enforcement::Progressive => Mode::Progressive,
            Enforcement::StepUp => Mode::StepUp,
            Enforcement::Block => Mode::Block,
        }
    }
}

/// A decision and why it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What happens to the call.
    pub action: Action,
    /// The mode it was decided in.
    pub mode: Mode,
    /// The rule that decided, as a path into the document (`servers[0].deny[1]`).
    pub rule: String,
    /// Why, in words a person (or a model) can act on.
    pub reason: String,
    /// Whether the call was outside the approved scope (the progressive mode counts these).
    #[serde(skip)]
    pub out_of_scope: bool,
}
