//! Cursor: `~/.cursor/mcp.json` (JSON, `mcpServers`; `%USERPROFILE%\.cursor` on Windows).
//! Cursor reloads the file when it changes; a server it had started keeps running until it is
//! toggled off and on in Cursor's MCP settings.

use std::path::{Path, PathBuf};

use crate::format::Format;
use crate::format::json::JsonFormat;
use crate::host::{Host, Os, existing, parents};

/// The host.
pub struct Cursor;

fn candidates(home: &Path) -> Vec<PathBuf> {
    vec![home.join(".cursor/mcp.json")]
}

impl Host for Cursor {
    fn id(&self) -> &'static str {
        "cursor"
    }
    fn name(&self) -> &'static str {
        "Cursor"
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
        "in Cursor's MCP settings, turn each server off and on again (or restart Cursor)"
    }
}
