//! `controller.toml`: every setting, with its default. `init` writes a commented copy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The controller's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// gRPC (TLS 1.3, mTLS) listen address.
    pub listen: SocketAddr,
    /// Prometheus metrics and a plain health check over HTTP; `"off"` disables it.
    pub metrics_listen: String,
    /// Tenant used when an unscoped admin names none.
    pub default_tenant: String,
    /// How long a signed bundle is valid.
    #[serde(with = "human")]
    pub bundle_validity: Duration,
    /// Re-sign the latest bundle of each tenant when it expires within this.
    #[serde(with = "human")]
    pub resign_before: Duration,
    /// How often to look for bundles to re-sign.
    #[serde(with = "human")]
    pub resign_check_interval: Duration,
    /// Default lifetime of an enrollment token.
    #[serde(with = "human")]
    pub token_ttl: Duration,
    /// Lifetime of an agent certificate (agents renew at two thirds).
    #[serde(with = "human")]
    pub agent_cert_validity: Duration,
    /// Largest gRPC request accepted, bytes.
    pub max_request_bytes: usize,
    /// Time a client has to finish the TLS handshake.
    #[serde(with = "human")]
    pub handshake_timeout: Duration,
    /// Most connections open at once; more are closed at once (and counted).
    pub max_connections: usize,
    /// A connection with no request in progress for this long is closed, unless it carries a
    /// client certificate and has made a request (agents keep theirs open). The first request
    /// must come within it too: a TLS connection without a request holds nothing for long.
    #[serde(with = "human")]
    pub idle_timeout: Duration,
    /// A connection that has not made an authorised request (an enrolled, unrevoked agent, an
    /// admin not revoked) is closed this long after it was accepted, whatever is in progress.
    #[serde(with = "human")]
    pub unauthorised_lifetime: Duration,
    /// Most connections one address (an IPv6 /64) may hold before they make an authorised
    /// request (handshaking, enrolling, health checks, refused certificates); more are closed at
    /// once (and counted). Authorised connections (agents and admins behind one NAT) do not count.
    pub max_unauthenticated_per_address: usize,
    /// Names and addresses the server certificate covers (used when it is first made).
    pub server_names: Vec<String>,
    /// SIEM sinks (`[[sinks]]`).
    pub sinks: Vec<crate::sinks::SinkConfig>,
    /// Approval notifiers (`[[approval_notifiers]]`).
    pub approval_notifiers: Vec<ApprovalNotifierConfig>,
    /// How long approval requests no longer pending (decided, withdrawn, expired) are kept; the
    /// audit log keeps the decisions. 1 day to 10 years.
    #[serde(with = "human")]
    pub approval_retention: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            listen: "127.0.0.1:7443".parse().expect("address"),
            metrics_listen: "127.0.0.1:7444".into(),
            default_tenant: "default".into(),
            bundle_validity: Duration::from_secs(7 * 86_400),
            resign_before: Duration::from_secs(3 * 86_400),
            resign_check_interval: Duration::from_secs(3_600),
            token_ttl: Duration::from_secs(86_400),
            agent_cert_validity: Duration::from_secs(30 * 86_400),
            max_request_bytes: 5 << 20,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 50_000,
            idle_timeout: Duration::from_secs(30),
            unauthorised_lifetime: Duration::from_secs(60),
            max_unauthenticated_per_address: 256,
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            sinks: Vec::new(),
            approval_notifiers: Vec::new(),
            approval_retention: Duration::from_secs(30 * 86_400),
        }
    }
}

mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration like \"90s\" or \"7d\": {e}"
            ))
        })
    }
}

/// The file `init` writes: every setting commented, at its default.
pub const TEMPLATE: &str = r#"# Thoth controller settings. Every setting is optional; the value shown is the default.
# Durations are written like "90s", "10m", "24h", "7d".

# gRPC listen address (TLS 1.3; agents and thothctl connect here). Use "0.0.0.0:7443" to serve
# other machines, and add their name for this host to `server_names` *before* the first start.
# listen = "127.0.0.1:7443"

# Prometheus metrics (/metrics) and a plain health check (/healthz), over HTTP; "off" disables.
# metrics_listen = "127.0.0.1:7444"

# Tenant used when an admin certificate for all tenants does not name one.
# default_tenant = "default"

# How long a signed policy bundle is valid, and when the controller re-signs the latest one of
# each tenant (when it expires within `resign_before`), checked every `resign_check_interval`.
# An expired bundle never stops an agent: it keeps enforcing it and reports itself stale.
# bundle_validity = "7d"
# resign_before = "3d"
# resign_check_interval = "1h"

# Default lifetime of an enrollment token (`thothctl token create --ttl` overrides it).
# token_ttl = "24h"

# Lifetime of an agent's client certificate; agents renew before it ends.
# agent_cert_validity = "30d"

# Largest request accepted, in bytes (a policy document itself may be at most 4 MiB).
# max_request_bytes = 5242880

# Time a client has to complete the TLS handshake.
# handshake_timeout = "10s"

# Most client connections open at once (each agent keeps one); more are closed at once and
# counted in thoth_connections_refused_total. The open-file limit must allow this many.
# max_connections = 50000

# A connection with no request in progress for this long is closed, unless it carries a client
# certificate and has made a request (agents keep theirs). The first request must come within it.
# idle_timeout = "30s"

# A connection that has not made an authorised request (an enrolled, unrevoked agent, an admin
# not revoked) is closed this long after it was accepted, whatever it has in progress.
# unauthorised_lifetime = "60s"

# Most connections one address (an IPv6 /64) may hold before they make an authorised request
# (handshaking, enrolling, health checks, refused certificates); more are closed at once and
# counted in thoth_connections_refused_total. Authorised connections (many agents behind one
# NAT) do not count.
# max_unauthenticated_per_address = 256

# Names and addresses the server certificate covers. Used when the certificate is made (first
# start); delete server.crt and server.key to make a new one after changing this.
# server_names = ["localhost", "127.0.0.1", "::1"]

# How long approval requests no longer pending (decided, withdrawn, expired) are kept, 1d-3650d;
# every admin decision stays in the audit log. Each tenant also keeps at most 50000 requests
# (the oldest ended ones are deleted first).
# approval_retention = "30d"

# SIEM sinks: any number. Each reads the event store by its own cursor, delivers at least once
# and retries with backoff; `tenants` and `event_types` filter (empty: all). Field names are the
# events' camelCase names. Lag is the metric thoth_sink_lag_events{sink="…"}. Every sink takes
# name, kind, tenants, event_types and batch (events per delivery, default 500), and only its own
# kind's settings below: another kind's (url on a jsonl sink) or a misspelt one is an error.
#
# [[sinks]]
# name = "siem-file"
# kind = "jsonl"                       # JSON lines, rotated past max_bytes, keep files
# path = "/var/log/thoth/events.jsonl"
# max_bytes = 104857600
# keep = 5
#
# [[sinks]]
# name = "rsyslog"
# kind = "syslog"                      # RFC 5424 over TCP, octet-counting framing
# address = "127.0.0.1:6514"
# tls = false                          # true: TLS, trusting ca_file
# event_types = ["TOOL_CALL_PRE", "TOOL_CALL_POST", "CHAIN_ALERT"]
#
# [[sinks]]
# name = "splunk"
# kind = "splunk_hec"
# url = "https://splunk.example.com:8088/services/collector/event"
# token = "00000000-0000-0000-0000-000000000000"
# ca_file = "/etc/thoth/splunk-ca.pem"
#
# [[sinks]]
# name = "hook"
# kind = "webhook"                     # POST a JSON array; X-Thoth-Signature: sha256=<HMAC>
# url = "http://127.0.0.1:9000/thoth"
# secret = "change me"

# Approval notifiers: each new approval request (a step_up call waiting for an admin) is POSTed,
# from a bounded queue with retries (never holding the agent up), at most once per agent per 10 s
# (the others are counted into the next: "and N more"): kind "slack" posts a
# Slack-compatible {"text": …} message, kind "json" the request as JSON ("more": N). With secret_env, each POST
# carries X-Thoth-Signature: sha256=<HMAC-SHA256 of the body> under that variable's value.
# `tenants` filters (empty: all); for https, ca_file is the CA to trust.
#
# [[approval_notifiers]]
# kind = "slack"
# url = "http://127.0.0.1:9001/hooks/approvals"
# secret_env = "THOTH_APPROVAL_HMAC"
# tenants = ["default"]
"#;

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
    /// `metrics_listen` is not a socket address.
    #[error("metrics_listen {addr:?} is not an address like \"127.0.0.1:7444\": {source}")]
    MetricsListen {
        /// The setting.
        addr: String,
        /// Why.
        source: std::net::AddrParseError,
    },
    /// `default_tenant` is not a tenant name.
    #[error("default_tenant: {0}")]
    DefaultTenant(crate::pki::PkiError),
    /// A sink's settings fail their check.
    #[error(transparent)]
    Sink(crate::sinks::SinkError),
    /// Two sinks have one name.
    #[error("two sinks are named {0:?}")]
    DuplicateSink(String),
    /// Settings that contradict each other or are out of range.
    #[error("{0}")]
    Setting(String),
}

impl ControllerConfig {
    /// Reads a config file; errors name the file, line and setting.
    pub fn load(path: &Path) -> Result<ControllerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: ControllerConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        config.check().map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        Ok(config)
    }

    /// The metrics address, `None` when off.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.metrics_listen.as_str() {
            "" | "off" => Ok(None),
            addr => addr
                .parse()
                .map(Some)
                .map_err(|source| ConfigError::MetricsListen {
                    addr: addr.to_owned(),
                    source,
                }),
        }
    }

    /// Cross-field checks.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.metrics_addr()?;
        crate::pki::check_tenant(&self.default_tenant).map_err(ConfigError::DefaultTenant)?;
        if self.resign_before >= self.bundle_validity {
            return Err(ConfigError::Setting(format!(
                "resign_before ({}) must be shorter than bundle_validity ({})",
                humantime::format_duration(self.resign_before),
                humantime::format_duration(self.bundle_validity)
            )));
        }
        if self.resign_check_interval.is_zero() || self.bundle_validity.is_zero() {
            return Err(ConfigError::Setting(
                "resign_check_interval and bundle_validity must be above zero".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.sinks {
            s.check().map_err(ConfigError::Sink)?;
            if !names.insert(s.name.clone()) {
                return Err(ConfigError::DuplicateSink(s.name.clone()));
            }
        }
        for n in &self.approval_notifiers {
            n.check().map_err(ConfigError::Setting)?;
        }
        if self.approval_retention < Duration::from_secs(86_400)
            || self.approval_retention > Duration::from_secs(3650 * 86_400)
        {
            return Err(ConfigError::Setting(format!(
                "approval_retention ({}) must be between 1 day and 3650 days",
                humantime::format_duration(self.approval_retention)
            )));
        }
        if self.max_connections == 0 || self.max_unauthenticated_per_address == 0 {
            return Err(ConfigError::Setting(
                "max_connections and max_unauthenticated_per_address must be above zero".into(),
            ));
        }
        if self.idle_timeout.is_zero() || self.unauthorised_lifetime.is_zero() {
            return Err(ConfigError::Setting(
                "idle_timeout and unauthorised_lifetime must be above zero".into(),
            ));
        }
        if self.max_request_bytes < 64 << 10 {
            return Err(ConfigError::Setting(
                "max_request_bytes must be at least 65536".into(),
            ));
        }
        Ok(())
    }
}

/// What a notifier posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// A Slack-compatible `{"text": …}` message.
    Slack,
    /// The request as JSON (ApprovalInfo's fields, camelCase).
    Json,
}

/// One `[[approval_notifiers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalNotifierConfig {
    /// slack or json.
    pub kind: NotifierKind,
    /// Where to POST (http or https).
    pub url: String,
    /// The environment variable holding the HMAC-SHA256 secret: each POST carries
    /// `X-Thoth-Signature: sha256=<hex>` of its body, as the webhook sink does.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Only these tenants' requests (empty: all).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// For an https URL: the CA certificate (PEM) to trust.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl ApprovalNotifierConfig {
    /// Refuses a URL that is not http(s).
    pub fn check(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "approval notifier url {:?} must start with http:// or https://",
                self.url
            ));
        }
        if let Some(env) = &self.secret_env
            && env.is_empty()
        {
            return Err("approval notifier secret_env is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_to_the_defaults_and_bad_settings_are_named() {
        let parsed: ControllerConfig = toml::from_str(TEMPLATE).unwrap();
        assert_eq!(parsed.listen, ControllerConfig::default().listen);
        let settings = TEMPLATE.split("# SIEM sinks").next().unwrap();
        let uncommented: String = settings
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| l.contains(" = "))
                    .unwrap_or("")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: ControllerConfig = toml::from_str(&uncommented).unwrap();
        assert_eq!(parsed.bundle_validity, Duration::from_secs(7 * 86_400));
        parsed.check().unwrap();
        // The sink examples, uncommented, are valid sinks.
        let sinks: String = TEMPLATE
            .split("# SIEM sinks")
            .nth(1)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with("[[") || l.contains(" = "))
            .collect::<Vec<_>>()
            .join("\n");
        let with_sinks: ControllerConfig = toml::from_str(&sinks).unwrap();
        assert_eq!(with_sinks.sinks.len(), 4);
        with_sinks.check().unwrap();
        let err = toml::from_str::<ControllerConfig>("bundle_validty = \"1d\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bundle_validty"), "{err}");
        let err = toml::from_str::<ControllerConfig>("token_ttl = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a duration"), "{err}");
        let c = ControllerConfig {
            resign_before: Duration::from_secs(8 * 86_400),
            ..ControllerConfig::default()
        };
        assert!(c.check().is_err());
        assert_eq!(parsed.approval_retention, Duration::from_secs(30 * 86_400));
        for bad in ["1h", "3651d"] {
            let c: ControllerConfig =
                toml::from_str(&format!("approval_retention = \"{bad}\"")).unwrap();
            let err = c.check().unwrap_err().to_string();
            assert!(err.contains("approval_retention"), "{err}");
        }
        let c: ControllerConfig = toml::from_str("approval_retention = \"90d\"").unwrap();
        c.check().unwrap();
    }
}
