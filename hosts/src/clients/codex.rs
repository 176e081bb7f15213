//! Codex (the OpenAI CLI and IDE extension): `~/.codex/config.toml` (`%USERPROFILE%\.codex` on
//! Windows), servers in `[mcp_servers.NAME]` tables (TOML: `command`, `args`, `env`, `cwd`,
//! `enabled`…; a remote server has `url`). Codex reads the file when a session starts; running
//! sessions keep the servers they started.
//!
//! Not followed: `CODEX_HOME` (the root agent does not see users' environments; a user who
//! moves Codex's home is not governed there), and project files `.codex/config.toml`, which
//! Codex reads only for projects the user marked trusted and which live anywhere on disk.

use std::path::{Path, PathBuf};

use crate::format::Format;
use crate::host::{Host, Os, existing, parents};

/// The host.
pub struct Codex;

fn candidates(home: &Path) -> Vec<PathBuf> {
    vec![home.join(".codex").join("config.toml")]
}

impl Host for Codex {
    fn id(&self) -> &'static str {
        "codex"
    }
    fn name(&self) -> &'static str {
        "Codex"
    }
    fn files(&self, home: &Path, _: Os) -> Vec<PathBuf> {
        existing(candidates(home))
    }
    fn watch_dirs(&self, home: &Path, _: Os) -> Vec<PathBuf> {
        parents(&candidates(home))
    }
    fn format(&self, _: &Path) -> Format {
        Format::Toml {
            table: "mcp_servers",
        }
    }
    fn pickup(&self) -> &'static str {
        "start a new Codex session (running sessions keep the servers they started)"
    }
}
