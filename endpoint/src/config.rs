//! `thoth-agent` settings (TOML). `agent/thoth-agent.example.toml` is the documented example.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/thoth";
/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/var/run/thoth/agent.sock";

/// Why a config file or one of its settings is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped setting.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// Where and why.
        source: toml::de::Error,
    },
    /// A setting of the file fails its check.
    #[error("{}: {source}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The failed check.
        source: Box<ConfigError>,
    },
    /// `controller_url` is not https.
    #[error("controller_url {0:?} must start with https://")]
    ControllerUrl(String),
    /// `ca_fingerprint` is not a SHA-256 fingerprint.
    #[error("ca_fingerprint {0:?} is not sha256:<64 hex digits> (see `thoth-controller info`)")]
    Fingerprint(String),
    /// `root_public_key` is not 32 bytes of base64.
    #[error("root_public_key {0:?} is not a base64 Ed25519 key (see `thoth-controller info`)")]
    RootKeyEncoding(String),
    /// `root_public_key` is not an Ed25519 point.
    #[error("root_public_key: {0}")]
    RootKey(ed25519_dalek::SignatureError),
    /// `tenant` is not a tenant name.
    #[error("tenant {0:?} is not a tenant name")]
    Tenant(String),
    /// `heartbeat_interval` is under a second.
    #[error("heartbeat_interval must be at least 1s")]
    HeartbeatInterval,
    /// `spool_max_bytes` is under 64 KiB.
    #[error("spool_max_bytes must be at least 65536")]
    SpoolMaxBytes,
    /// `enrollment_token_file` cannot be read.
    #[error("cannot read enrollment_token_file {}: {source}", path.display())]
    TokenFile {
        /// The token file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The agent's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The controller, `https://host:port`.
    pub controller_url: String,
    /// The tenant this machine belongs to.
    pub tenant: String,
    /// `sha256:<hex>` of the controller CA certificate (pinned; the system trust store is not used).
    pub ca_fingerprint: String,
    /// The controller's root public key (base64 Ed25519), which signs policy-signing keys.
    pub root_public_key: String,
    /// Enrollment token (used once, at first start).
    #[serde(default)]
    pub enrollment_token: Option<String>,
    /// A file holding the enrollment token (readable by root only).
    #[serde(default)]
    pub enrollment_token_file: Option<PathBuf>,
    /// Where identity, last-known-good policy and status live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The local endpoint for proxies.
    #[serde(default = "default_socket")]
    pub socket_path: PathBuf,
    /// How often to report status and inventory (with ±20% jitter).
    #[serde(default = "default_heartbeat", with = "human")]
    pub heartbeat_interval: Duration,
    /// Longest wait between reconnection attempts (backoff is exponential with full jitter).
    #[serde(default = "default_backoff_max", with = "human")]
    pub reconnect_max: Duration,
    /// Labels sent at enrollment.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Largest size of the on-disk event spool; past it the oldest events go (counted, and
    /// reported as EVENTS_DROPPED).
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    /// Override of the users' home root, for discovering Claude Desktop configs (tests).
    #[serde(default)]
    pub users_root: Option<PathBuf>,
    /// Keep every user's Claude Desktop config wrapped through `thoth run`.
    #[serde(default = "default_true")]
    pub wrap_configs: bool,
    /// The `thoth` binary wrapped entries run [default: `thoth` next to `thoth-agent`].
    #[serde(default)]
    pub thoth_path: Option<PathBuf>,
    /// A command run (with `sh -c`) after a config changed, e.g. to restart Claude Desktop.
    #[serde(default)]
    pub claude_restart_command: Option<String>,
    /// How often to look for new homes and new Claude Desktop configs.
    #[serde(default = "default_rescan", with = "human")]
    pub config_rescan_interval: Duration,
    /// The MCP clients ("hosts") whose files the agent manages, by id (`claude-desktop`,
    /// `cursor`…); absent: every client. The policy's `managed_clients` may narrow it further.
    /// Checked by the agent at start (an unknown id is refused, naming the known ones).
    #[serde(default)]
    pub clients: Option<Vec<String>>,
}

fn default_true() -> bool {
    true
}
fn default_rescan() -> Duration {
    Duration::from_secs(10)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(60)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_spool_max() -> u64 {
    256 << 20
}

mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration like \"60s\": {e}"))
        })
    }
}

impl AgentConfig {
    /// Reads and checks a config file; errors name the file, line and setting.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: AgentConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.check().map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        Ok(config)
    }

    /// Field checks beyond types.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !self.controller_url.starts_with("https://") {
            return Err(ConfigError::ControllerUrl(self.controller_url.clone()));
        }
        self.pinned_fingerprint()?;
        self.root_key()?;
        let t = &self.tenant;
        if t.is_empty()
            || t.len() > 63
            || !t
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(ConfigError::Tenant(t.clone()));
        }
        if self.heartbeat_interval < Duration::from_secs(1) {
            return Err(ConfigError::HeartbeatInterval);
        }
        if self.spool_max_bytes < 64 << 10 {
            return Err(ConfigError::SpoolMaxBytes);
        }
        Ok(())
    }

    /// The CA fingerprint as 32 bytes.
    pub fn pinned_fingerprint(&self) -> Result<[u8; 32], ConfigError> {
        parse_fingerprint(&self.ca_fingerprint)
    }

    /// The root key.
    pub fn root_key(&self) -> Result<ed25519_dalek::VerifyingKey, ConfigError> {
        parse_root_key(&self.root_public_key)
    }

    /// The enrollment token, from the setting or the file.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = &self.enrollment_token {
            return Ok(Some(t.trim().to_owned()));
        }
        match &self.enrollment_token_file {
            Some(p) => std::fs::read_to_string(p)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|source| ConfigError::TokenFile {
                    path: p.clone(),
                    source,
                }),
            None => Ok(None),
        }
    }
}

/// Parses a CA fingerprint, `sha256:<64 hex digits>` (colons between bytes allowed).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], ConfigError> {
    let hex_part = text
        .strip_prefix("sha256:")
        .unwrap_or(text)
        .replace(':', "");
    hex::decode(&hex_part)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ConfigError::Fingerprint(text.to_owned()))
}

/// Reads a base64 Ed25519 public key.
pub fn parse_root_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, ConfigError> {
    let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ConfigError::RootKeyEncoding(text.to_owned()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(ConfigError::RootKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_mistakes_are_named() {
        let text = include_str!("../../agent/thoth-agent.example.toml");
        let c: AgentConfig = toml::from_str(text).unwrap();
        c.check().unwrap();
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        let typo = format!("{text}\nheartbeat_intervl = \"5s\"\n");
        let err = toml::from_str::<AgentConfig>(&typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat_intervl"), "{err}");
        let bad = AgentConfig {
            ca_fingerprint: "sha256:abc".into(),
            ..c.clone()
        };
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("ca_fingerprint")
        );
        let bad = AgentConfig {
            controller_url: "http://x".into(),
            ..c
        };
        assert!(bad.check().is_err());
    }
}
