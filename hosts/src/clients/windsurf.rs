//! Windsurf: `~/.codeium/windsurf/mcp_config.json` (JSON, `mcpServers`; remote servers use
//! `serverUrl`; an entry may say `"disabled": true`).

use std::path::{Path, PathBuf};

use crate::format::Format;
use crate::format::json::JsonFormat;
use crate::host::{Host, Os, existing, parents};

/// The host.
pub struct Windsurf;

fn candidates(home: &Path) -> Vec<PathBuf> {
    vec![home.join(".codeium/windsurf/mcp_config.json")]
}

impl Host for Windsurf {
    fn id(&self) -> &'static str {
        "windsurf"
    }
    fn name(&self) -> &'static str {
        "Windsurf"
    }
    fn files(&self, home: &Path, _: Os) -> Vec<PathBuf> {
        existing(candidates(home))
    }
    fn watch_dirs(&self, home: &Path, _: Os) -> Vec<PathBuf> {
        parents(&candidates(home))
    }
    fn format(&self, _: &Path) -> Format {
        Format::Json(JsonFormat {
            jsonc: false,
            tables: &[&["mcpServers"]],
        })
    }
    fn pickup(&self) -> &'static str {
        "press Refresh in Windsurf's MCP panel (Cascade → MCP servers)"
    }
}
