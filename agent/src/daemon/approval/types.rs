//! What the approval modules share, and what they need of the daemon: the user channel's
//! interface ([`UserChannel`], [`Prompt`], [`UserAnswer`], [`CancelToken`]) and [`Daemon`], which
//! the daemon's shared state implements (the approval modules name nothing of the daemon).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use thoth_proto::EventType;
use thoth_proto::fleet as pb;

/// What the approval modules read from and report to the agent (the daemon's shared state
/// implements it).
pub trait Daemon: Send + Sync + 'static {
    /// Raises an approval event (APPROVAL_REQUESTED, APPROVAL_DECIDED) about `req`: logged, held
    /// for upload, noted in the status.
    fn record_approval(&self, event_type: EventType, req: &pb::ApprovalRequest, detail: Value);
    /// The agent's current connection to its controller, if it has one now.
    fn controller_channel(&self) -> Option<tonic::transport::Channel>;
    /// An approval (on any channel) lets `uid` use the tool definition `pin` of the request's
    /// server `server_name` (never accepts it for trust: only an admin's pin decision does).
    fn accept_pin(&self, _uid: u32, _server_name: &str, _pin: &pb::PinRef) {}
}

/// What the user channel shows. Every string is already length-limited by the broker; the
/// channel must still show them escaped (no markup, no control or bidi characters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompt {
    /// The approval id (UUIDv7) the agent set.
    pub approval_id: String,
    /// The MCP client the proxy serves (e.g. "claude-code"), may be empty.
    pub client_name: String,
    /// The MCP server entry the call goes to.
    pub server: String,
    /// The tool called.
    pub tool: String,
    /// A redacted, capped preview of the arguments.
    pub content: String,
    /// Why policy asks (the rule's reason).
    pub reason: String,
    /// Hex SHA-256 of the canonical JSON of the arguments.
    pub arguments_sha256: String,
    /// What an approval covers: "once", "session" or a duration like "15m".
    pub remember: String,
    /// When the proxy asked (Unix ms).
    pub requested_unix_ms: u64,
    /// When the request stops being answerable (Unix ms).
    pub expires_unix_ms: u64,
}

/// The user channel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAnswer {
    /// The user allowed the call; `by` names who (the OS user name).
    Allowed { by: String },
    /// The user denied the call.
    Denied { by: String },
    /// The deadline passed or the prompt was cancelled without an answer.
    NoAnswer,
    /// No dialog could be shown (no desktop session, helper missing, ...): why.
    Unavailable(String),
}

/// Asks the OS user on the machine. Implementations block; the broker calls them on a blocking
/// thread, at most one prompt at a time per user.
pub trait UserChannel: Send + Sync {
    /// Shows `req` to the OS user `uid` until an answer, `deadline`, or `cancel`.
    fn ask(&self, uid: u32, req: &Prompt, deadline: Instant, cancel: CancelToken) -> UserAnswer;
}

/// A user channel that never shows anything (the default until a real one is wired).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoUserChannel;

impl UserChannel for NoUserChannel {
    fn ask(&self, _: u32, _: &Prompt, _: Instant, _: CancelToken) -> UserAnswer {
        UserAnswer::Unavailable("no user channel yet".into())
    }
}

/// A cancellation flag a blocking thread can poll or wait on.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<(Mutex<bool>, Condvar)>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels (idempotent) and wakes every waiter.
    pub fn cancel(&self) {
        let (m, c) = &*self.0;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
        c.notify_all();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        *self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `d` for cancellation; true when cancelled.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let (m, c) = &*self.0;
        let g = m.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = c
            .wait_timeout_while(g, d, |cancelled| !*cancelled)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }
}
