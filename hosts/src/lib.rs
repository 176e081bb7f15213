//! MCP host (client) configs on a laptop: where they are, how `thoth run` is put in front of
//! every stdio MCP server (and taken out), and safe file replacement. One module per client.

#![forbid(unsafe_code)]

pub mod claude;
