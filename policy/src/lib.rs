//! Thoth policy: the document admins write (YAML or JSON), its validation, and the evaluator.
//!
//! This crate is pure: it does no IO and reads no clock. Callers pass document text in and the
//! current time to [`evaluate`]; everything else is a function of its arguments.

mod document;
mod eval;
mod load;
mod pattern;
mod session;

pub use document::{
    Constraint, Defaults, Enforcement, MAX_APPROVAL_TIMEOUT_SECS, Policy, Progressive, SeqAction,
    SequenceRule, ServerFields, ServerRule, UnknownServers, VersionLabel,
};
pub use eval::{Action, Decision, Mode, ServerView, ToolCall, evaluate};
pub use load::{Format, MAX_POLICY_BYTES, PolicyError, parse_policy};
pub use pattern::{PathGlob, Pattern, ToolGlob};
pub use session::SessionState;
