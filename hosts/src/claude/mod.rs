//! Claude Desktop configs: the rewrite that puts `thoth run` in front of every stdio MCP server
//! (and takes it out), and safe file replacement.

pub mod file;
pub mod rewrite;

use std::path::Path;

/// (servers in the file, servers governed) of one config; `None` if it does not parse. A server
/// counts as governed only when its wrapper is exactly the one the agent writes (`thoth`: the
/// agent's canonical thoth path; `extra`: its own socket and state-dir arguments) and its `env`
/// carries no loader variable — the same test as the config guardian's and `thoth status`'s.
pub fn governed_counts(config: &Path, thoth: &str, extra: &[String]) -> Option<(usize, usize)> {
    let (bytes, _) = file::read_config(config).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let v: serde_json::Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).ok()?;
    let servers = v.get("mcpServers")?.as_object()?;
    let governed = servers
        .iter()
        .filter(|(name, s)| rewrite::governed(name, s, thoth, extra).is_ok())
        .count();
    Some((servers.len(), governed))
}
