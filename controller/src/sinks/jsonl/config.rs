use std::path::PathBuf;

use serde::Deserialize;

/// A `jsonl` sink's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    /// The file.
    pub path: PathBuf,
    /// Rotate past this size.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

pub(crate) fn default_max_bytes() -> u64 {
    100 << 20
}

fn default_keep() -> u32 {
    5
}
