//! Claude Desktop extension manifests. PLACEHOLDER until the manifest engine lands.

use super::{ConfigError, Ctx, Found, Op, Rewritten};

/// Every server entry of a manifest.
pub fn entries(_text: &str) -> Result<Vec<Found>, ConfigError> {
    Err(ConfigError::Shape(
        "extension manifests are not supported yet".into(),
    ))
}

/// Wraps or unwraps a manifest's server.
pub fn rewrite(_text: &str, _op: &Op, _ctx: &Ctx<'_>) -> Result<Rewritten, ConfigError> {
    Err(ConfigError::Shape(
        "extension manifests are not supported yet".into(),
    ))
}

/// Every server entry of the registry of installed extensions.
pub fn entries_registry(_text: &str) -> Result<Vec<Found>, ConfigError> {
    Err(ConfigError::Shape(
        "extension manifests are not supported yet".into(),
    ))
}

/// Wraps or unwraps the manifest copies of the registry of installed extensions.
pub fn rewrite_registry(_text: &str, _op: &Op, _ctx: &Ctx<'_>) -> Result<Rewritten, ConfigError> {
    Err(ConfigError::Shape(
        "extension manifests are not supported yet".into(),
    ))
}
