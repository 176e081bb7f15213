//! Cursor: `~/.cursor/mcp.json` (JSON, `mcpServers`; `%USERPROFILE%\.cursor` on Windows), and
//! each recently opened project's `.cursor/mcp.json` (found, as VS Code's workspaces are, through
//! Cursor's `User/workspaceStorage/*/workspace.json`). Cursor reloads the file when it changes;
//! a server it had started keeps running until it is toggled off and on in Cursor's MCP
//! settings.

use std::path::{Path, PathBuf};

use crate::format::Format;
use crate::format::json::JsonFormat;
use crate::host::{Host, Os, existing, parents};

/// The host.
pub struct Cursor;

/// Cursor's directory under the app-data directory.
const PRODUCT: &str = "Cursor";

fn candidates(home: &Path) -> Vec<PathBuf> {
    vec![home.join(".cursor/mcp.json")]
}

/// The recently opened projects' `.cursor` directories (the projects belong to the home's
/// owner).
fn project_dirs(home: &Path, os: Os) -> Vec<PathBuf> {
    crate::clients::vscode::workspaces_of(home, os, &[PRODUCT])
        .into_iter()
        .map(|w| w.join(".cursor"))
        .collect()
}

impl Host for Cursor {
    fn id(&self) -> &'static str {
        "cursor"
    }
    fn name(&self) -> &'static str {
        "Cursor"
    }
    fn files(&self, home: &Path, os: Os) -> Vec<PathBuf> {
        let owner = crate::host::home_owner(home);
        let mut files = existing(candidates(home));
        files.extend(
            existing(
                project_dirs(home, os)
                    .iter()
                    .map(|d| d.join("mcp.json"))
                    .collect(),
            )
            .into_iter()
            .filter(|f| crate::host::owner(f) == owner),
        );
        // A project opened at the home is the user file again.
        files.sort();
        files.dedup();
        files
    }
    fn watch_dirs(&self, home: &Path, os: Os) -> Vec<PathBuf> {
        let mut dirs = parents(&candidates(home));
        dirs.extend(project_dirs(home, os));
        dirs.sort();
        dirs.dedup();
        dirs
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
