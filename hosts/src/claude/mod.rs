//! Claude Desktop configs: the rewrite that puts `thoth run` in front of every stdio MCP server
//! (and takes it out), and safe file replacement.

pub mod file;
pub mod rewrite;

pub use file::governed_counts;
