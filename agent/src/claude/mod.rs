//! Claude Desktop configs: the rewrite that puts `thoth run` in front of every stdio MCP server
//! (and takes it out), safe file replacement, and the agent's watcher that heals drift.

pub mod file;
pub mod rewrite;
pub mod watch;
