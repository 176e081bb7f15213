//! TOML configs (Codex `~/.codex/config.toml`). PLACEHOLDER until the TOML engine lands.

use super::{ConfigError, Ctx, Found, Op, Rewritten};

/// Every server entry of the table `table`.
pub fn entries(_text: &str, _table: &str) -> Result<Vec<Found>, ConfigError> {
    Err(ConfigError::Shape(
        "TOML configs are not supported yet".into(),
    ))
}

/// Wraps or unwraps every server of the table `table`.
pub fn rewrite(
    _text: &str,
    _table: &str,
    _op: &Op,
    _ctx: &Ctx<'_>,
) -> Result<Rewritten, ConfigError> {
    Err(ConfigError::Shape(
        "TOML configs are not supported yet".into(),
    ))
}
