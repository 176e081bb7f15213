use std::path::PathBuf;

use serde::Deserialize;

/// A `splunk_hec` sink's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecConfig {
    /// The collector's URL.
    pub url: String,
    /// The HEC token.
    pub token: String,
    /// For an https URL: the CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
}
