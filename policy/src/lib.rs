//! Thoth policy: the document admins write (YAML or JSON), its validation, and the evaluator.
//!
//! This crate is pure: it does no IO and reads no clock. Callers pass document text in, the
//! current monotonic instant and, for path constraints, a [`PathResolver`] to [`evaluate_with`];
//! everything else is a function of its arguments.

#![forbid(unsafe_code)]

mod annotations;
mod approval;
mod decision;
mod document;
mod eval;
mod integrity;
mod load;
mod pattern;
mod session;
mod settings;

pub use approval::{ApprovalFieldError, Approver, DEFAULT_APPROVERS, MAX_REMEMBER, Remember};
pub use decision::{Action, Decision, Mode};
pub use document::{
    ClientId, Constraint, Defaults, Enforcement, KNOWN_CLIENTS, MAX_APPROVAL_TIMEOUT_SECS, Policy,
    Progressive, RuleError, SeqAction, SequenceRule, ServerFields, ServerRule, UnknownServers,
    VersionLabel,
};
pub use eval::{
    Arguments, Lexical, PathResolver, ResolveError, ServerView, ToolCall, evaluate, evaluate_with,
};
pub use integrity::{
    AnnotationRules, DEFAULT_DLP_DETECTORS, DLP_DETECTORS, DestructiveUse, Dlp, DlpArguments,
    DlpResults, DlpSettings, Integrity, MAX_PIN_TOOL_NAME, MAX_PINS, OnSuspiciousTool,
    OnToolChange, PinDigest, Pins, ReadOnlyUse, TrustedHints,
};
pub use load::{Format, MAX_POLICY_BYTES, PolicyError, parse_policy};
pub use pattern::{PathGlob, Pattern, PatternError, ToolGlob};
pub use session::SessionState;
