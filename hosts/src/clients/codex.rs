//! Codex: `~/.codex/config.toml`, `[mcp_servers.NAME]`. PLACEHOLDER until the TOML engine lands.

use std::path::{Path, PathBuf};

use crate::format::Format;
use crate::host::{Host, Os};

/// The host.
pub struct Codex;

impl Host for Codex {
    fn id(&self) -> &'static str {
        "codex"
    }
    fn name(&self) -> &'static str {
        "Codex"
    }
    fn files(&self, _: &Path, _: Os) -> Vec<PathBuf> {
        Vec::new()
    }
    fn watch_dirs(&self, _: &Path, _: Os) -> Vec<PathBuf> {
        Vec::new()
    }
    fn format(&self, _: &Path) -> Format {
        Format::Toml {
            table: "mcp_servers",
        }
    }
    fn pickup(&self) -> &'static str {
        "start a new Codex session"
    }
}
