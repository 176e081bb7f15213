//! MCP hosts (clients) on a laptop: where each keeps its servers, how `thoth run` is put in
//! front of every stdio server (and taken out) in every format, safe file replacement, and the
//! inventory of what is and is not governed.
//!
//! - [`host`]: the host-adapter model and the registry of hosts; [`clients`]: one file per host.
//! - [`format`](mod@format): the rewrite per format (JSON/JSONC, TOML, extension manifests).
//! - [`wrapper`]: the wrapped form, format-free.
//! - [`file`](mod@file): reading hostile files and replacing them safely.
//! - [`inventory`]: what each host file holds, governed or not and why.

#![forbid(unsafe_code)]

pub mod clients;
pub mod file;
pub mod format;
pub mod host;
pub mod inventory;
pub mod wrapper;
