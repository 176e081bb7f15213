//! What both the proxy (`thoth run`) and the agent daemon (and the installer) need on a laptop:
//! default paths and the agent's settings (`agent.toml`), the state directory and its trust file,
//! atomic file writes, pinned TLS, the local-socket IPC client and backoff.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod ipc;
pub mod state;
pub mod status;
pub mod tls;
