//! The file formats MCP hosts keep their servers in, and the one rewrite every format obeys:
//! wrap puts `thoth run` in front of every stdio server (see [`crate::wrapper`]), unwrap takes
//! it out, and nothing but the entries' `command` and `args` ever changes. A text that does not
//! parse is refused with its line and column, and never written.

mod cst;
pub mod json;
pub mod manifest;
mod model;
pub mod toml;

pub use model::{ConfigError, Ctx, Found, Op, Report, Rewritten, label};

/// How a file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON or JSONC with server tables.
    Json(json::JsonFormat),
    /// TOML with one server table (Codex: `mcp_servers`).
    Toml {
        /// The table's key.
        table: &'static str,
    },
    /// A Claude Desktop extension's `manifest.json` (`server.mcp_config`, with platform
    /// overrides).
    Manifest,
    /// Claude Desktop's registry of installed extensions (`extensions-installations.json`):
    /// a manifest copy per extension at `extensions.<id>.manifest`.
    ManifestRegistry,
}

/// Rewrites a file's text in `format`.
pub fn rewrite(
    text: &str,
    format: &Format,
    op: &Op,
    ctx: &Ctx<'_>,
) -> Result<Rewritten, ConfigError> {
    match format {
        Format::Json(f) => json::rewrite(text, f, op, ctx),
        Format::Toml { table } => toml::rewrite(text, table, op, ctx),
        Format::Manifest => manifest::rewrite(text, op, ctx),
        Format::ManifestRegistry => manifest::rewrite_registry(text, op, ctx),
    }
}

/// Every server entry of a file's text in `format`.
pub fn entries(text: &str, format: &Format) -> Result<Vec<Found>, ConfigError> {
    match format {
        Format::Json(f) => json::entries(text, f),
        Format::Toml { table } => toml::entries(text, table),
        Format::Manifest => manifest::entries(text),
        Format::ManifestRegistry => manifest::entries_registry(text),
    }
}
