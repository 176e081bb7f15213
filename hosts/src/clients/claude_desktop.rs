//! Claude Desktop: `claude_desktop_config.json` (strict JSON, `mcpServers`) in Claude's
//! app-data directory. Read at launch only: the app must be quit and reopened.

use std::path::{Path, PathBuf};

use crate::format::Format;
use crate::format::json::JsonFormat;
use crate::host::{Host, Os, existing, parents};

/// The config file's name.
pub const FILE_NAME: &str = "claude_desktop_config.json";

/// The host.
pub struct ClaudeDesktop;

/// Claude's app-data directory for the user whose home is `home` (the Windows Store build keeps
/// its own copy under `AppData/Local/Packages`).
pub fn app_dirs(home: &Path, os: Os) -> Vec<PathBuf> {
    match os {
        Os::Windows => vec![
            home.join("AppData/Roaming/Claude"),
            home.join("AppData/Local/Packages/Claude_pzs8sxrjxfjjc/LocalCache/Roaming/Claude"),
        ],
        _ => vec![os.app_data(home).join("Claude")],
    }
}

/// This user's config path on this OS.
pub fn default_path() -> Option<PathBuf> {
    if cfg!(windows) {
        return std::env::var_os("APPDATA")
            .map(|a| PathBuf::from(a).join("Claude").join(FILE_NAME));
    }
    let home = PathBuf::from(std::env::var_os("HOME")?);
    app_dirs(&home, Os::current())
        .into_iter()
        .next()
        .map(|d| d.join(FILE_NAME))
}

fn candidates(home: &Path, os: Os) -> Vec<PathBuf> {
    app_dirs(home, os)
        .into_iter()
        .map(|d| d.join(FILE_NAME))
        .collect()
}

impl Host for ClaudeDesktop {
    fn id(&self) -> &'static str {
        "claude-desktop"
    }
    fn name(&self) -> &'static str {
        "Claude Desktop"
    }
    fn files(&self, home: &Path, os: Os) -> Vec<PathBuf> {
        existing(candidates(home, os))
    }
    fn watch_dirs(&self, home: &Path, os: Os) -> Vec<PathBuf> {
        parents(&candidates(home, os))
    }
    fn format(&self, _: &Path) -> Format {
        Format::Json(JsonFormat {
            jsonc: false,
            tables: &[&["mcpServers"]],
        })
    }
    fn pickup(&self) -> &'static str {
        "quit Claude Desktop completely and reopen it"
    }
}
