//! A sink's settings (`[[sinks]]` in controller.toml): the fields every kind has, and the kind's
//! own, chosen by `kind`. An unknown field, or a field of another kind (`url` on a `jsonl` sink),
//! is an error naming it.
//!
//! serde's `flatten` does not combine with `deny_unknown_fields`, so the table is split by hand:
//! the common keys go to [`Common`], the rest (with `kind`) to the tagged [`SinkKind`], and each
//! side refuses what it does not know.

use serde::{Deserialize, Deserializer};

use super::jsonl::JsonlConfig;
use super::splunk_hec::SplunkHecConfig;
use super::syslog::SyslogConfig;
use super::webhook::WebhookConfig;

/// One sink's settings.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Unique name (its cursor is kept under it).
    pub name: String,
    /// Only these tenants (empty: all).
    pub tenants: Vec<String>,
    /// Only these event types (empty: all).
    pub event_types: Vec<String>,
    /// Events per delivery.
    pub batch: u32,
    /// The kind and its settings.
    pub kind: SinkKind,
}

/// A sink kind and its own settings (`kind = "…"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkKind {
    /// A JSON lines file, rotated.
    Jsonl(JsonlConfig),
    /// RFC 5424 over TCP (octet counting) or TLS.
    Syslog(SyslogConfig),
    /// Splunk's HTTP Event Collector.
    SplunkHec(SplunkHecConfig),
    /// An HTTP POST of a JSON array, signed with an HMAC.
    Webhook(WebhookConfig),
}

impl SinkKind {
    /// The `kind` as written in controller.toml.
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::Jsonl(_) => "jsonl",
            SinkKind::Syslog(_) => "syslog",
            SinkKind::SplunkHec(_) => "splunk_hec",
            SinkKind::Webhook(_) => "webhook",
        }
    }
}

/// The fields every kind has.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: String,
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default = "default_batch")]
    batch: u32,
}

/// The keys of [`Common`].
const COMMON: [&str; 4] = ["name", "tenants", "event_types", "batch"];

fn default_batch() -> u32 {
    500
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut rest = toml::Table::deserialize(d)?;
        let mut common = toml::Table::new();
        for key in COMMON {
            if let Some(v) = rest.remove(key) {
                common.insert(key.to_owned(), v);
            }
        }
        let common: Common = common
            .try_into()
            .map_err(|e: toml::de::Error| D::Error::custom(format!("sink: {}", e.message())))?;
        let kind_name = match rest.get("kind") {
            Some(toml::Value::String(k)) => format!(" ({k})"),
            _ => String::new(),
        };
        let kind: SinkKind = rest.try_into().map_err(|e: toml::de::Error| {
            let also = if e.message().starts_with("unknown field") {
                " (and the common name, tenants, event_types, batch)"
            } else {
                ""
            };
            D::Error::custom(format!(
                "sink {:?}{kind_name}: {}{also}",
                common.name,
                e.message()
            ))
        })?;
        Ok(SinkConfig {
            name: common.name,
            tenants: common.tenants,
            event_types: common.event_types,
            batch: common.batch,
            kind,
        })
    }
}

impl SinkConfig {
    /// Checks what parsing does not (each kind's required settings are required by parsing).
    pub fn check(&self) -> Result<(), super::error::SinkError> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(super::error::SinkError::Name);
        }
        Ok(())
    }
}
