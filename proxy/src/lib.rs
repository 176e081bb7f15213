//! `thoth`: the governance proxy (`thoth run`) between an MCP client and one MCP server (stdio).
//!
//! Threads: one reads the client (stdin) and decides, one reads the server (the child's stdout),
//! one writes events, one waits for the child, one turns signals into messages; the main thread
//! supervises shutdown. The relay is synchronous on purpose: each direction is a blocking
//! read-decide-write loop, which costs the least latency per message (no task hand-offs).

mod approval;
pub mod cli;
pub mod commands;
pub mod dlp;
pub mod event_record;
pub mod events;
pub mod forward;
pub mod framing;
pub mod integrity;
mod join;
pub mod message;
pub mod node;
pub mod oracle;
pub mod paths;
pub mod policy;
pub mod relay;
mod relay_approval;
mod relay_call;
mod relay_dlp;
mod relay_tools;
pub mod respond;
pub mod source;

mod supervise;

pub use supervise::{RunConfig, run};
