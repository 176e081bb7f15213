use std::path::PathBuf;

use serde::Deserialize;

/// A `syslog` sink's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port`.
    pub address: String,
    /// Use TLS (then `ca_file` is the CA to trust).
    #[serde(default)]
    pub tls: bool,
    /// Over TLS: the CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Over TLS: the server name to check (default: the host of `address`).
    pub server_name: Option<String>,
}
