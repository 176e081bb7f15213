//! Claude Desktop extensions (`.mcpb`). PLACEHOLDER until the manifest engine lands.

use std::path::{Path, PathBuf};

use crate::format::Format;
use crate::host::{Host, Os};

/// The host.
pub struct ClaudeExtension;

impl Host for ClaudeExtension {
    fn id(&self) -> &'static str {
        "claude-extension"
    }
    fn name(&self) -> &'static str {
        "Claude Desktop extensions"
    }
    fn files(&self, _: &Path, _: Os) -> Vec<PathBuf> {
        Vec::new()
    }
    fn watch_dirs(&self, _: &Path, _: Os) -> Vec<PathBuf> {
        Vec::new()
    }
    fn format(&self, _: &Path) -> Format {
        Format::Manifest
    }
    fn pickup(&self) -> &'static str {
        "quit Claude Desktop completely and reopen it"
    }
}
