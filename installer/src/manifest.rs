//! The manifest install writes: what it installed, for status and uninstall.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What install recorded, for status and uninstall.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub(crate) version: String,
    pub(crate) installed_at: String,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) controller: String,
    pub(crate) tenant: String,
}
