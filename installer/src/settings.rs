//! The settings an install uses: flags, then the MDM's managed configuration, then defaults.
//!
//! Managed configuration, per platform (the same keys everywhere: `controller`, `tenant`,
//! `enroll_token` or `enroll_token_file`, `ca_fingerprint`, `root_key`, `labels`):
//! - Linux: `/etc/thoth/managed.toml`;
//! - macOS: managed preferences of the `com.thoth.agent` domain, which a configuration profile
//!   installs as `/Library/Managed Preferences/com.thoth.agent.plist`;
//! - Windows: string values under `HKLM\SOFTWARE\Policies\Thoth` (Intune, GPO); `labels` is
//!   `k=v,k=v` there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thoth_endpoint::config::{AgentConfig, parse_root_key};

use crate::error::{InstallerError, bad};
use crate::layout::{Layout, Platform, WINDOWS_POLICY_KEY};

/// Managed settings (what an MDM profile provides), all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Managed {
    pub controller: Option<String>,
    pub tenant: Option<String>,
    pub enroll_token: Option<String>,
    pub enroll_token_file: Option<PathBuf>,
    pub ca_fingerprint: Option<String>,
    pub root_key: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// Managed settings and where they came from (for messages), and the settings of the current
/// installation, if any (so a repair or upgrade needs no settings again).
pub(crate) struct Source {
    pub managed: Managed,
    pub origin: String,
    pub installed: Managed,
}

/// The settings of the installation at `l`, read back from its agent.toml (empty if none).
fn installed(l: &Layout) -> Managed {
    let Ok(text) = std::fs::read_to_string(l.etc().join("agent.toml")) else {
        return Managed::default();
    };
    let Ok(v) = text.parse::<toml::Table>() else {
        return Managed::default();
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    Managed {
        controller: s("controller_url"),
        tenant: s("tenant"),
        ca_fingerprint: s("ca_fingerprint"),
        root_key: s("root_public_key"),
        labels: v.get("labels").and_then(|t| t.as_table()).map(|t| {
            t.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        }),
        ..Managed::default()
    }
}

/// Reads the managed settings for `l`'s platform. Absent is fine; present but malformed is an
/// error naming the source.
pub(crate) fn managed(l: &Layout) -> Result<Source, InstallerError> {
    let mut src = read_managed(l)?;
    src.installed = installed(l);
    Ok(src)
}

fn read_managed(l: &Layout) -> Result<Source, InstallerError> {
    // Windows keeps managed settings in the registry, the others in a file.
    let Some(path) = l.managed_file() else {
        let managed = if l.system && cfg!(windows) {
            let out = std::process::Command::new("reg.exe")
                .args(["query", WINDOWS_POLICY_KEY])
                .output();
            match out {
                Ok(o) if o.status.success() => from_reg_query(&String::from_utf8_lossy(&o.stdout))?,
                _ => Managed::default(),
            }
        } else {
            Managed::default()
        };
        return Ok(Source {
            managed,
            origin: WINDOWS_POLICY_KEY.to_owned(),
            installed: Managed::default(),
        });
    };
    match l.platform {
        Platform::Linux | Platform::Windows => {
            let managed = match std::fs::read_to_string(&path) {
                Ok(t) => toml::from_str(&t).map_err(|e| bad(format!("{}: {e}", path.display())))?,
                Err(_) => Managed::default(),
            };
            Ok(Source {
                managed,
                origin: path.display().to_string(),
                installed: Managed::default(),
            })
        }
        Platform::Macos => {
            let managed = if path.exists() {
                from_plist(&path)?
            } else {
                Managed::default()
            };
            Ok(Source {
                managed,
                origin: format!("{} (configuration profile)", path.display()),
                installed: Managed::default(),
            })
        }
    }
}

/// Managed preferences as a configuration profile installs them (binary or XML plist).
pub(crate) fn from_plist(path: &Path) -> Result<Managed, InstallerError> {
    let value: plist::Value = plist::from_file(path)
        .map_err(|e| bad(format!("{}: not a property list: {e}", path.display())))?;
    let Some(dict) = value.into_dictionary() else {
        return Err(bad(format!("{}: not a dictionary", path.display())));
    };
    // macOS adds its own bookkeeping keys (PayloadUUID, …) to managed preferences; skip them.
    let mut map = serde_json::Map::new();
    for (k, v) in dict {
        if k.starts_with("Payload") || k == "MCXPreference" {
            continue;
        }
        let json = match v {
            plist::Value::String(s) => serde_json::Value::String(s),
            plist::Value::Dictionary(d) => {
                let mut labels = serde_json::Map::new();
                for (lk, lv) in d {
                    let Some(s) = lv.as_string() else {
                        return Err(bad(format!(
                            "{}: labels.{lk} must be a string",
                            path.display()
                        )));
                    };
                    labels.insert(lk, serde_json::Value::String(s.to_owned()));
                }
                serde_json::Value::Object(labels)
            }
            other => {
                return Err(bad(format!(
                    "{}: {k} must be a string, not {other:?}",
                    path.display()
                )));
            }
        };
        map.insert(k, json);
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// Parses `reg query HKLM\SOFTWARE\Policies\Thoth` output: lines of `name    REG_SZ    value`.
pub(crate) fn from_reg_query(text: &str) -> Result<Managed, InstallerError> {
    let mut map = serde_json::Map::new();
    for line in text.lines() {
        let line = line.trim_start();
        let mut parts = line.splitn(3, "    ");
        let (Some(name), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if kind != "REG_SZ" && kind != "REG_EXPAND_SZ" {
            return Err(bad(format!(
                "{WINDOWS_POLICY_KEY}\\{name} must be a string value (REG_SZ), not {kind}"
            )));
        }
        let value = value.trim_end_matches(['\r', '\n']);
        let json = if name == "labels" {
            serde_json::Value::Object(
                parse_labels(value)?
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect(),
            )
        } else {
            serde_json::Value::String(value.to_owned())
        };
        map.insert(name.to_owned(), json);
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| bad(format!("{WINDOWS_POLICY_KEY}: {e}")))
}

/// `k=v,k=v`.
pub(crate) fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, InstallerError> {
    let mut labels = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("label {part:?} is not key=value")))?;
        labels.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(labels)
}

/// What install will write.
pub(crate) struct Resolved {
    pub controller: String,
    pub tenant: String,
    pub token: Option<String>,
    pub ca_fingerprint: String,
    pub root_key: String,
    pub labels: BTreeMap<String, String>,
}

/// The flags `install` takes that are settings.
pub(crate) struct Flags<'a> {
    pub controller: &'a Option<String>,
    pub tenant: &'a Option<String>,
    pub enroll_token: &'a Option<String>,
    pub enroll_token_file: &'a Option<PathBuf>,
    pub ca_fingerprint: &'a Option<String>,
    pub root_key: &'a Option<String>,
    pub labels: &'a Option<String>,
}

/// Flags > managed > the current installation's settings, then the agent's own checks, so a bad value is refused now
/// rather than at first start.
pub(crate) fn resolve(f: &Flags, src: &Source) -> Result<Resolved, InstallerError> {
    let m = &src.managed;
    let old = &src.installed;
    let pick = |flag: &Option<String>, m: &Option<String>, old: &Option<String>, name: &str| {
        flag.clone()
            .or_else(|| m.clone())
            .or_else(|| old.clone())
            .ok_or_else(|| {
                bad(format!(
                    "--{name} is required (or set {} in {})",
                    name.replace('-', "_"),
                    src.origin
                ))
            })
    };
    let read_token = |f: &Path| -> Result<String, InstallerError> {
        Ok(std::fs::read_to_string(f)
            .map_err(|e| {
                bad(format!(
                    "cannot read the enrollment token file {}: {e}",
                    f.display()
                ))
            })?
            .trim()
            .to_owned())
    };
    let token = if let Some(t) = f.enroll_token {
        Some(t.trim().to_owned())
    } else if let Some(file) = f.enroll_token_file {
        Some(read_token(file)?)
    } else if let Some(t) = &m.enroll_token {
        Some(t.trim().to_owned())
    } else if let Some(file) = &m.enroll_token_file {
        Some(read_token(file)?)
    } else {
        None
    };
    if token.as_deref() == Some("") {
        return Err(bad("the enrollment token is empty"));
    }
    let mut labels = m
        .labels
        .clone()
        .or_else(|| old.labels.clone())
        .unwrap_or_default();
    if let Some(text) = f.labels {
        labels.extend(parse_labels(text)?);
    }
    let r = Resolved {
        controller: pick(f.controller, &m.controller, &old.controller, "controller")?,
        tenant: pick(f.tenant, &m.tenant, &old.tenant, "tenant")?,
        ca_fingerprint: pick(
            f.ca_fingerprint,
            &m.ca_fingerprint,
            &old.ca_fingerprint,
            "ca-fingerprint",
        )?,
        root_key: pick(f.root_key, &m.root_key, &old.root_key, "root-key")?,
        token,
        labels,
    };
    let probe = format!(
        "controller_url = {}\ntenant = {}\nca_fingerprint = {}\nroot_public_key = {}\n",
        toml_str(&r.controller),
        toml_str(&r.tenant),
        toml_str(&r.ca_fingerprint),
        toml_str(&r.root_key)
    );
    let cfg: AgentConfig = toml::from_str(&probe).map_err(|e| bad(e.to_string()))?;
    cfg.check().map_err(|e| bad(e.to_string()))?;
    parse_root_key(&r.root_key).map_err(|e| bad(e.to_string()))?;
    Ok(r)
}

/// A TOML string literal.
pub(crate) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reg_query_output_is_read_including_labels_and_spaces_in_values() {
        let out = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Thoth\r\n    controller    REG_SZ    https://thoth.example.com:7443\r\n    tenant    REG_SZ    acme corp\r\n    labels    REG_SZ    team=it, site=paris\r\n\r\n";
        let m = from_reg_query(out).unwrap();
        assert_eq!(
            m.controller.as_deref(),
            Some("https://thoth.example.com:7443")
        );
        assert_eq!(m.tenant.as_deref(), Some("acme corp"));
        let labels = m.labels.unwrap();
        assert_eq!(labels["site"], "paris");
        assert_eq!(labels["team"], "it");
    }

    #[test]
    fn reg_query_refuses_unknown_names_and_non_string_values() {
        let e = from_reg_query("    tenantt    REG_SZ    x\r\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenantt"), "{e}");
        let e = from_reg_query("    tenant    REG_DWORD    0x1\r\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("REG_SZ"), "{e}");
    }

    #[test]
    fn managed_preferences_skip_payload_keys_and_refuse_wrong_types() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("com.thoth.agent.plist");
        let mut d = plist::Dictionary::new();
        d.insert("PayloadUUID".into(), "X".into());
        d.insert("tenant".into(), "acme".into());
        let mut labels = plist::Dictionary::new();
        labels.insert("team".into(), "it".into());
        d.insert("labels".into(), plist::Value::Dictionary(labels));
        // Binary, as macOS writes managed preferences.
        plist::to_file_binary(&p, &plist::Value::Dictionary(d.clone())).unwrap();
        let m = from_plist(&p).unwrap();
        assert_eq!(m.tenant.as_deref(), Some("acme"));
        assert_eq!(m.labels.unwrap()["team"], "it");
        d.insert("tenant".into(), plist::Value::Integer(3.into()));
        plist::to_file_xml(&p, &plist::Value::Dictionary(d)).unwrap();
        assert!(
            from_plist(&p)
                .unwrap_err()
                .to_string()
                .contains("tenant must be a string")
        );
        std::fs::write(&p, "not a plist").unwrap();
        assert!(
            from_plist(&p)
                .unwrap_err()
                .to_string()
                .contains("not a property list")
        );
    }
}
