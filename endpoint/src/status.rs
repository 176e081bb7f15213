//! The agent's status document: what `thoth-agent status`, `thoth status` and `thoth health`
//! show, and what `status.json` keeps.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Agent-raised events kept for display.
pub const RECENT_EVENTS: usize = 50;
/// Longest detail (in characters) a noted event keeps: the status is cloned for every local
/// call and written to status.json.
pub const NOTE_CHARS: usize = 2048;

/// RFC 3339 now.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The owner of a config file (of its directory once it is gone).
#[cfg(unix)]
fn owner_uid(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .or_else(|| std::fs::symlink_metadata(path.parent()?).ok())
        .map(|m| m.uid())
}

#[cfg(not(unix))]
fn owner_uid(_path: &std::path::Path) -> Option<u32> {
    None
}

/// The policy in force.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// Bundle version.
    pub version: u64,
    /// When the controller signed it.
    pub issued_at: String,
    /// When it expires.
    pub expires_at: String,
    /// When this agent applied it.
    pub applied_at: String,
    /// Expired and no newer one arrived: still enforced.
    pub stale: bool,
    /// Signing key.
    pub key_id: String,
    /// Seconds since it was signed (filled when shown).
    #[serde(default)]
    pub age_secs: u64,
}

/// Counts of events from proxies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EventCounts {
    /// Accepted into the buffer.
    pub accepted: u64,
    /// Held now.
    pub held: u64,
    /// Dropped because the buffer was full (never silent: counted here and reported).
    pub dropped: u64,
    /// Last sequence number on the agent's chain.
    #[serde(default)]
    pub seq: u64,
    /// Durable (fsynced) up to.
    #[serde(default)]
    pub durable: u64,
    /// Acknowledged by the controller up to.
    #[serde(default)]
    pub acked: u64,
    /// Spool size on disk.
    #[serde(default)]
    pub spool_bytes: u64,
    /// Corrupt spool records found (reported, never uploaded).
    #[serde(default)]
    pub corrupt: u64,
    /// Events from proxies refused (invalid, or of a type a proxy may not send).
    #[serde(default)]
    pub refused: u64,
    /// The last refusal: whose, and why.
    #[serde(default)]
    pub last_refusal: Option<String>,
    /// Proxy events kept although their caller had used the id for a different record
    /// (flagged `eventIdReused`).
    #[serde(default)]
    pub id_reused: u64,
    /// Records the controller kept refusing, set aside (`EVENT_QUARANTINED`).
    #[serde(default)]
    pub quarantined: u64,
    /// The upload is stalled, or the spool cannot write: in words (also the `last_error`).
    #[serde(default)]
    pub error: Option<String>,
}

/// A proxy caller, by OS user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CallerInfo {
    /// Calls made.
    pub calls: u64,
    /// Last call.
    pub last_seen: String,
    /// MCP servers it governs.
    pub servers: Vec<String>,
}

/// An event the agent raised (POLICY_APPLIED, POLICY_REJECTED, AGENT_STARTED…).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentEventNote {
    /// Event type.
    pub event_type: String,
    /// When.
    pub timestamp: String,
    /// What happened.
    pub detail: String,
}

/// One MCP client's file of one user (Claude Desktop's config, Cursor's `mcp.json`…).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// The file.
    pub path: String,
    /// The MCP client ("host") whose file it is (`claude-desktop`, `cursor`…).
    #[serde(default)]
    pub client: String,
    /// `governed`, `partly governed`, `no servers`, `invalid`, `refused` (unreadable: a
    /// symlink, not a regular file, too large, someone else's) or `locked` (the client has held
    /// its lock against the agent's rewrite for seconds; overridden after 30 s).
    pub state: String,
    /// Servers in the file.
    pub servers: u32,
    /// Of which run through thoth.
    pub governed: u32,
    /// Remote (URL) entries: they run elsewhere, not launched by the client.
    pub remote: u32,
    /// The last change the agent made or saw.
    pub last_change: String,
    /// The error, for an invalid file.
    pub error: Option<String>,
    /// Claude Desktop must be restarted to apply the agent's last change (Claude Desktop and
    /// its extensions only).
    pub restart_needed: bool,
    /// What a user must do for a change to take effect in this client.
    #[serde(default)]
    pub pickup: String,
}

/// The whole document.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Agent id (once enrolled).
    pub agent_id: Option<String>,
    /// Tenant.
    pub tenant: String,
    /// Controller URL.
    pub controller_url: String,
    /// Has a certificate.
    pub enrolled: bool,
    /// Subscription open now.
    pub connected: bool,
    /// The controller revoked this agent.
    pub revoked: bool,
    /// Last time a subscription opened.
    pub last_connected_at: Option<String>,
    /// The policy in force.
    pub policy: Option<PolicyStatus>,
    /// The last error, in words.
    pub last_error: Option<String>,
    /// Certificate expiry.
    pub certificate_not_after: Option<String>,
    /// Proxy events.
    pub events: EventCounts,
    /// Proxy callers by OS user.
    pub callers: BTreeMap<String, CallerInfo>,
    /// Recent agent-raised events, oldest first.
    pub recent_events: VecDeque<AgentEventNote>,
    /// Software version.
    pub agent_version: String,
    /// Process id.
    pub pid: u32,
    /// Started.
    pub started_at: String,
    /// Socket path.
    pub socket: String,
    /// The MCP clients' files on this machine (every managed client of every user).
    #[serde(default)]
    pub configs: Vec<ConfigStatus>,
    /// State directory.
    pub state_dir: String,
    /// The canonical `thoth` binary wrapped entries run (a wrapper with another command is not
    /// governed), when it exists.
    #[serde(default)]
    pub thoth_path: Option<String>,
}

impl Status {
    /// Fills computed fields (policy age) for display.
    pub fn for_display(mut self) -> Status {
        if let Some(p) = &mut self.policy {
            p.age_secs = humantime::parse_rfc3339(&p.issued_at)
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or(Duration::ZERO)
                .as_secs();
            if let Ok(t) = humantime::parse_rfc3339(&p.expires_at)
                && SystemTime::now() > t
            {
                p.stale = true;
            }
        }
        self
    }

    /// Records an agent-raised event (its detail cut to [`NOTE_CHARS`] characters).
    pub fn note(&mut self, event_type: &str, detail: impl Into<String>) {
        if self.recent_events.len() >= RECENT_EVENTS {
            self.recent_events.pop_front();
        }
        let mut detail = detail.into();
        if let Some((cut, _)) = detail.char_indices().nth(NOTE_CHARS) {
            detail.truncate(cut);
            detail.push('…');
        }
        self.recent_events.push_back(AgentEventNote {
            event_type: event_type.into(),
            timestamp: now_rfc3339(),
            detail,
        });
    }

    /// What a local user other than root (and the agent's own user) may see: their own proxy
    /// callers, the configs in their own home, and the agent events about those; counts,
    /// policy and connection state as they are. Another user's servers, config paths and
    /// drift are not theirs to read.
    pub fn only_for(mut self, uid: u32, user: &str) -> Status {
        self.callers.retain(|name, _| name == user);
        // The last refused event names its user: shown to that user only.
        if !self
            .events
            .last_refusal
            .as_deref()
            .is_some_and(|r| r.starts_with(&format!("{user}: ")))
        {
            self.events.last_refusal = None;
        }
        self.configs
            .retain(|c| owner_uid(std::path::Path::new(&c.path)) == Some(uid));
        let own: Vec<&str> = self.configs.iter().map(|c| c.path.as_str()).collect();
        let mine = format!("{user}: ");
        self.recent_events.retain(|n| {
            // A failed proxy check names its user first (daemon::peer).
            if n.event_type == "PROXY_TAMPERED" {
                return n.detail.starts_with(&mine);
            }
            // The guardian's events name their client first (`Cursor: /home/ann/.cursor/…`,
            // `Cursor: ann: files (…) is not governed…`).
            let after_client = n.detail.split_once(": ").map_or("", |(_, rest)| rest);
            if n.event_type == "MCP_SERVER_UNGOVERNED" {
                return after_client.starts_with(&mine);
            }
            !n.event_type.starts_with("CONFIG_")
                || own.iter().any(|p| {
                    let p = format!("{p}:");
                    n.detail.starts_with(&p) || after_client.starts_with(&p)
                })
        });
        self
    }

    /// Human-readable lines.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, k: &str, v: String| {
            out.push_str(&format!("{k:<18} {v}\n"));
        };
        line(
            &mut out,
            "agent",
            self.agent_id
                .clone()
                .unwrap_or_else(|| "not enrolled yet".into()),
        );
        line(&mut out, "tenant", self.tenant.clone());
        let conn = if self.revoked {
            "REVOKED by the controller".to_owned()
        } else if self.connected {
            format!("connected to {}", self.controller_url)
        } else {
            format!(
                "not connected to {} (last connected: {})",
                self.controller_url,
                self.last_connected_at
                    .clone()
                    .unwrap_or_else(|| "never".into())
            )
        };
        line(&mut out, "controller", conn);
        match &self.policy {
            Some(p) => line(
                &mut out,
                "policy",
                format!(
                    "version {} signed {} ago{}, expires {}",
                    p.version,
                    humantime::format_duration(Duration::from_secs(p.age_secs)),
                    if p.stale {
                        " — STALE (expired; still enforced)"
                    } else {
                        ""
                    },
                    p.expires_at
                ),
            ),
            None => line(
                &mut out,
                "policy",
                "none yet: every tool call is denied until a policy arrives".into(),
            ),
        }
        line(
            &mut out,
            "last error",
            self.last_error.clone().unwrap_or_else(|| "none".into()),
        );
        if let Some(c) = &self.certificate_not_after {
            line(&mut out, "certificate until", c.clone());
        }
        line(
            &mut out,
            "events",
            format!(
                "{} accepted from proxies, {} refused; chain at {}, {} waiting for the controller, {} dropped, {} quarantined, {} KiB spooled",
                self.events.accepted,
                self.events.refused,
                self.events.seq,
                self.events.held,
                self.events.dropped,
                self.events.quarantined,
                self.events.spool_bytes / 1024
            ),
        );
        if let Some(e) = &self.events.error {
            line(&mut out, "EVENTS", format!("ERROR: {e}"));
        }
        if let Some(r) = &self.events.last_refusal {
            line(&mut out, "last refused", r.clone());
        }
        for c in &self.configs {
            line(
                &mut out,
                "mcp config",
                format!(
                    "{}{} — {} ({}/{} servers governed{}){}",
                    if c.client.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", c.client)
                    },
                    c.path,
                    c.state,
                    c.governed,
                    c.servers.saturating_sub(c.remote),
                    if c.remote > 0 {
                        format!(", {} remote", c.remote)
                    } else {
                        String::new()
                    },
                    if c.restart_needed {
                        "; restart Claude Desktop to apply"
                    } else {
                        ""
                    }
                ),
            );
            if let Some(e) = &c.error {
                line(&mut out, "", format!("  {e}"));
            }
            if !c.restart_needed && !c.pickup.is_empty() && !c.last_change.is_empty() {
                line(&mut out, "", format!("  to apply a change: {}", c.pickup));
            }
        }
        for (user, c) in &self.callers {
            line(
                &mut out,
                "proxies of",
                format!(
                    "{user}: {} calls, last {} ({})",
                    c.calls,
                    c.last_seen,
                    c.servers.join(", ")
                ),
            );
        }
        line(&mut out, "agent version", self.agent_version.clone());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn a_user_sees_the_guardians_events_about_their_own_files_and_servers_only() {
        let dir = std::env::temp_dir();
        let mine = dir.display().to_string();
        let uid = owner_uid(&dir).unwrap();
        let mut s = Status {
            configs: vec![ConfigStatus {
                path: mine.clone(),
                client: "cursor".into(),
                ..ConfigStatus::default()
            }],
            ..Status::default()
        };
        for (t, d) in [
            ("CONFIG_WRAPPED", format!("Cursor: {mine}: wrapped files")),
            (
                "CONFIG_DRIFT",
                "Cursor: /home/eve/.cursor/mcp.json: x".into(),
            ),
            ("CONFIG_DRIFT", format!("{mine}: an older agent's detail")),
            (
                "MCP_SERVER_UNGOVERNED",
                "Cursor: ann: linear (url https://x) is not governed".into(),
            ),
            (
                "MCP_SERVER_UNGOVERNED",
                "Cursor: eve: linear (url https://x) is not governed".into(),
            ),
            (
                "MCP_SERVER_UNGOVERNED",
                "Cursor: anne: x (stdio) is not governed".into(),
            ),
            ("POLICY_APPLIED", "policy version 3 applied".into()),
        ] {
            s.note(t, d);
        }
        let seen: Vec<String> = s
            .only_for(uid, "ann")
            .recent_events
            .into_iter()
            .map(|n| n.detail)
            .collect();
        assert_eq!(
            seen,
            [
                format!("Cursor: {mine}: wrapped files"),
                format!("{mine}: an older agent's detail"),
                "Cursor: ann: linear (url https://x) is not governed".into(),
                "policy version 3 applied".to_owned(),
            ]
        );
    }
}
