use std::path::PathBuf;

use serde::Deserialize;

/// A `webhook` sink's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL.
    pub url: String,
    /// The HMAC secret.
    pub secret: String,
    /// For an https URL: the CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
}
