//! The event pipeline on the agent: events from proxies and from the agent itself go through a
//! bounded channel to the spool thread (chain, append, group commit every ~50 ms), and an
//! uploader streams durable events to the controller, deleting them once acknowledged.
//!
//! The agent owns event identity: each proxy event is checked on its own ([`admit`]: only the
//! types a proxy may send, their fields and types, a size cap; identity fields forced from the
//! agent and the caller's OS user; clock skew flagged), gets an `eventId` from the agent (the
//! proxy's is kept as `proxyEventId`), and is de-duplicated only against an identical record
//! from the same caller. Uploads are capped by count and bytes; a record the controller keeps
//! refusing is quarantined rather than retried forever, and a stalled upload or a spool that
//! cannot write (disk full: backoff, bounded logs, proxies told to keep their events) is an
//! error in the status.

mod admit;
mod owed;
mod spooler;
mod upload;

pub use admit::{
    Admitted, MAX_CLIENT_NAME_BYTES, MAX_CLOCK_SKEW, MAX_EVENT_DEPTH, MAX_EVENT_VALUES,
    MAX_PROXY_EVENT_BYTES, PROXY_EVENT_TYPES, QUOTA_OWNER, Refusal, admit,
};
pub use spooler::*;
pub use upload::{UploadError, upload};
