//! Tool integrity (issue 17): the tool definitions agents report pinned, listed per tenant and
//! grouped by (server, tool, digest); admins accept or reject a definition for the whole tenant
//! and the decision goes to every agent of the tenant on its Subscribe stream. Every check
//! lives here; the transports only translate.

use sha2::Digest as _;

use crate::controller::Controller;
use crate::ids::{AgentId, TenantId};
use crate::metrics::Metrics;
use crate::pki::Role;
use crate::service::{Caller, MAX_TEXT, Need, ServiceError};
use crate::store::{AgentRecord, PinDecisionRecord, PinRow, ToolPinRecord};

/// Most pins in one report.
pub const MAX_TOOL_PINS: usize = 4096;
/// Most text in one report's pins, all fields together, bytes.
pub const MAX_PIN_BYTES: usize = 1 << 20;
/// Longest user, server name or tool name, bytes.
pub const MAX_NAME: usize = 256;
/// Longest client id, bytes.
pub const MAX_CLIENT: usize = 128;
/// Longest command line, bytes.
pub const MAX_COMMAND: usize = 4096;
/// Longest pending description, bytes (the proxy cuts descriptions to 2 KiB).
pub const MAX_DESCRIPTION: usize = 2048;
/// Most `changes` of one pin.
pub const MAX_CHANGES: usize = 8;
/// Most rows in one listing.
pub const MAX_LIST: u32 = 10_000;
/// Most rows searched when resolving an id.
const MAX_RESOLVE: u32 = 200_000;
/// Most decisions (re-)sent on a new Subscribe stream.
pub const MAX_AGENT_DECISIONS: u32 = 4096;
/// Shortest id prefix accepted.
pub const MIN_PREFIX: usize = 6;

/// States a pin report may carry ("added": a tool the server did not offer when it was
/// pinned, not pinned; its `digest` and `pending_digest` are both its own).
pub const STATES: &[&str] = &["pinned", "changed", "rejected", "added"];
/// Sources a pin report may carry.
pub const SOURCES: &[&str] = &["", "first_use", "admin", "user_approval", "policy"];
/// What a change may name.
pub const CHANGES: &[&str] = &["description", "schema", "annotations", "added", "removed"];

/// Whether `c` is never stored in a shown field (controls, bidirectional and invisible format
/// characters).
fn hostile(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

fn check_text(field: &dyn Fn() -> String, value: &str, max: usize) -> Result<usize, ServiceError> {
    if value.len() > max {
        return Err(ServiceError::InvalidArgument(format!(
            "{} is {} bytes, over the {max} byte limit",
            field(),
            value.len()
        )));
    }
    // Control characters only, as for the MCP inventory (the agent escapes them): a tool or
    // server name with a bidirectional or invisible character is a hostile server's, and
    // refusing it would refuse the whole heartbeat; thothctl escapes those when it shows them.
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ServiceError::InvalidArgument(format!(
            "{} holds the control character U+{:04X}: escape it",
            field(),
            c as u32
        )));
    }
    Ok(value.len())
}

fn check_one_of(field: &dyn Fn() -> String, value: &str, set: &[&str]) -> Result<(), ServiceError> {
    if !set.contains(&value) {
        return Err(ServiceError::InvalidArgument(format!(
            "{} is {:?}: expected one of {}",
            field(),
            value.chars().take(32).collect::<String>(),
            set.join(", ")
        )));
    }
    Ok(())
}

fn check_digest(field: &dyn Fn() -> String, value: &str) -> Result<(), ServiceError> {
    if !thoth_proto::pins::is_digest(value) {
        return Err(ServiceError::InvalidArgument(format!(
            "{} must be 64 lowercase hex digits",
            field()
        )));
    }
    Ok(())
}

/// Checks the tool pins of a report (hostile input: count, lengths, characters, digests, states)
/// and returns the SHA-256 (hex) they are stored under: the same pins give the same digest.
pub fn check_tool_pins(pins: &[ToolPinRecord]) -> Result<String, ServiceError> {
    if pins.len() > MAX_TOOL_PINS {
        return Err(ServiceError::InvalidArgument(format!(
            "inventory.tool_pins: {} pins, over the limit of {MAX_TOOL_PINS}",
            pins.len()
        )));
    }
    let mut total = 0usize;
    let mut hash = sha2::Sha256::new();
    for (i, p) in pins.iter().enumerate() {
        let at = |k: &'static str| move || format!("inventory.tool_pins[{i}].{k}");
        total += check_text(&at("user"), &p.user, MAX_NAME)?
            + check_text(&at("client"), &p.client, MAX_CLIENT)?
            + check_text(&at("server_name"), &p.server_name, MAX_NAME)?
            + check_text(&at("command"), &p.command, MAX_COMMAND)?
            + check_text(&at("tool"), &p.tool, MAX_NAME)?
            + check_text(
                &at("pending_description"),
                &p.pending_description,
                MAX_DESCRIPTION,
            )?;
        // An empty tool name is a server's choice (a string name is a tool): kept, not refused.
        check_digest(&at("server_key"), &p.server_key)?;
        check_digest(&at("digest"), &p.digest)?;
        check_one_of(&at("state"), &p.state, STATES)?;
        check_one_of(&at("source"), &p.source, SOURCES)?;
        if p.state == "pinned" {
            if !p.pending_digest.is_empty() {
                check_digest(&at("pending_digest"), &p.pending_digest)?;
            }
        } else {
            check_digest(&at("pending_digest"), &p.pending_digest)?;
        }
        // An added definition is not pinned: no other digest, nobody accepted it (an accepted
        // one is reported pinned).
        if p.state == "added"
            && (p.pending_digest != p.digest || p.accepted || !p.source.is_empty())
        {
            return Err(ServiceError::InvalidArgument(format!(
                "inventory.tool_pins[{i}]: state added needs pending_digest equal to digest, accepted false and no source"
            )));
        }
        if p.changes.len() > MAX_CHANGES {
            return Err(ServiceError::InvalidArgument(format!(
                "inventory.tool_pins[{i}].changes: {} entries, over the limit of {MAX_CHANGES}",
                p.changes.len()
            )));
        }
        for c in &p.changes {
            check_one_of(&at("changes"), c, CHANGES)?;
        }
        let v = serde_json::json!([
            p.user,
            p.client,
            p.server_name,
            p.server_key,
            p.command,
            p.tool,
            p.digest,
            p.state,
            p.pending_digest,
            p.source,
            p.accepted,
            p.changes,
            p.first_seen_ms,
            p.changed_ms,
            p.pending_description
        ]);
        hash.update(v.to_string().as_bytes());
        hash.update(b"\n");
    }
    if total > MAX_PIN_BYTES {
        return Err(ServiceError::InvalidArgument(format!(
            "inventory.tool_pins: {total} bytes of text, over the {MAX_PIN_BYTES} byte limit"
        )));
    }
    Ok(hex::encode(hash.finalize()))
}

/// One definition as admins see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinView {
    /// `thoth_proto::pins::pin_id`.
    pub id: String,
    /// pending, pinned, accepted, rejected.
    pub state: String,
    /// What the store grouped.
    pub row: PinRow,
}

impl PinView {
    fn of(row: PinRow) -> PinView {
        let state = match &row.decision {
            Some(d) if d.accepted => "accepted",
            Some(_) => "rejected",
            None if row.pending => "pending",
            None => "pinned",
        };
        PinView {
            id: thoth_proto::pins::pin_id(&row.server_key, &row.tool, &row.digest),
            state: state.to_owned(),
            row,
        }
    }
}

/// Checks a pin id or prefix: 6 to 12 hex digits (case ignored); the lowercase text.
fn check_pin_id(id: &str) -> Result<String, ServiceError> {
    let id = id.trim().to_ascii_lowercase();
    if !(MIN_PREFIX..=12).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ServiceError::InvalidArgument(format!(
            "pin id {:?}: give the ID column of `thothctl pins list` (12 hex digits, or a unique prefix of at least {MIN_PREFIX})",
            id.chars().take(40).collect::<String>()
        )));
    }
    Ok(id)
}

/// Now, Unix milliseconds.
fn now_ms() -> i64 {
    crate::service::approvals::now_ms()
}

/// The pins service.
pub struct PinService<'a>(pub &'a Controller);

impl PinService<'_> {
    /// Stores the pins an agent reported (checked already by [`check_tool_pins`], which gave
    /// `sha256`); rewrites them only when they changed.
    pub async fn record(
        &self,
        agent: &AgentRecord,
        sha256: String,
        pins: Vec<ToolPinRecord>,
    ) -> Result<bool, ServiceError> {
        let (id, tenant) = (
            AgentId::trusted(agent.agent_id.as_str()),
            TenantId::trusted(agent.tenant.as_str()),
        );
        let now = now_ms();
        Ok(self
            .0
            .db(move |s| s.record_tool_pins(&id, &tenant, &sha256, &pins, now))
            .await?)
    }

    /// The tenant's definitions (viewer and up; tenant-scoped), those waiting for a decision
    /// first, at most [`MAX_LIST`].
    pub async fn list(
        &self,
        c: &Caller,
        tenant: &str,
        pending_only: bool,
        agent_id: &str,
    ) -> Result<Vec<PinView>, ServiceError> {
        let ctl = self.0;
        let tenant = c.authorize(ctl, "pins.list", Need::Read, tenant).await?;
        let agent = if agent_id.is_empty() {
            None
        } else {
            Some(AgentId::parse(agent_id)?)
        };
        let rows = ctl
            .db(move |s| s.pin_rows(&tenant, agent.as_ref(), pending_only, MAX_LIST))
            .await?;
        Ok(rows.into_iter().map(PinView::of).collect())
    }

    /// Refuses viewers and approvers (audited): accepting a definition changes what every agent
    /// of the tenant trusts (its annotations), which is a policy change, so operator and admin
    /// may decide.
    async fn decider(&self, c: &Caller, tenant: &str) -> Result<(), ServiceError> {
        if matches!(c.role, Role::Viewer | Role::Approver) {
            let why = format!(
                "{} has role {}; pins.decide needs operator or admin",
                c.name,
                if c.role == Role::Viewer {
                    "viewer"
                } else {
                    "approver"
                }
            );
            Metrics::inc(&self.0.metrics.auth_refused);
            c.audit_refused(self.0, "pins.decide", tenant, &why, serde_json::json!({}))
                .await;
            return Err(ServiceError::PermissionDenied(why));
        }
        Ok(())
    }

    /// Accepts or rejects one definition of the tenant (by id or unique prefix) for every agent
    /// of the tenant: recorded (replacing an earlier decision on it), audited, pushed.
    pub async fn decide(
        &self,
        c: &Caller,
        tenant: &str,
        id: &str,
        accept: bool,
        reason: &str,
    ) -> Result<PinView, ServiceError> {
        let ctl = self.0;
        self.decider(c, tenant).await?;
        let tenant = c.authorize(ctl, "pins.decide", Need::Read, tenant).await?;
        crate::service::check_len("reason", reason, MAX_TEXT)?;
        if let Some(ch) = reason.chars().find(|&ch| hostile(ch)) {
            return Err(ServiceError::InvalidArgument(format!(
                "reason holds the character U+{:04X}: control and invisible characters are refused",
                ch as u32
            )));
        }
        let prefix = check_pin_id(id)?;
        let t = tenant.clone();
        let rows = ctl
            .db(move |s| s.pin_rows(&t, None, false, MAX_RESOLVE))
            .await?;
        let mut found: Vec<PinView> = rows
            .into_iter()
            .map(PinView::of)
            .filter(|v| v.id.starts_with(&prefix))
            .collect();
        let view = match found.len() {
            0 => {
                return Err(ServiceError::NotFound(format!(
                    "no tool definition {prefix} in tenant {}: run `thothctl pins list` for the ids",
                    tenant.as_str()
                )));
            }
            1 => found.remove(0),
            n => {
                let list: Vec<String> = found
                    .iter()
                    .take(10)
                    .map(|v| format!("{} ({} {})", v.id, v.row.server_name, v.row.tool))
                    .collect();
                return Err(ServiceError::InvalidArgument(format!(
                    "pin id {prefix} is ambiguous: {n} definitions match ({}{}); give more digits",
                    list.join(", "),
                    if n > 10 { ", …" } else { "" }
                )));
            }
        };
        let decision = PinDecisionRecord {
            tenant: tenant.as_str().to_owned(),
            server_key: view.row.server_key.clone(),
            tool: view.row.tool.clone(),
            digest: view.row.digest.clone(),
            accepted: accept,
            decided_by: c.name.clone(),
            reason: reason.to_owned(),
            decided_ms: now_ms(),
        };
        let d = decision.clone();
        ctl.db(move |s| s.put_pin_decision(&d)).await?;
        c.audit_ok(
            ctl,
            "pins.decide",
            tenant.as_str(),
            serde_json::json!({
                "pinId": view.id,
                "accepted": accept,
                "reason": reason,
                "serverKey": view.row.server_key,
                "serverName": view.row.server_name,
                "client": view.row.client,
                "tool": view.row.tool,
                "digest": view.row.digest,
                "previousState": view.state,
                "credential": c.fingerprint,
            }),
        )
        .await;
        tracing::info!(
            tenant = tenant.as_str(),
            pin = view.id,
            tool = view.row.tool,
            accepted = accept,
            "tool definition decided"
        );
        ctl.hub.pin_decided(tenant.as_str());
        let row = PinRow {
            decision: Some(decision),
            ..view.row
        };
        Ok(PinView::of(row))
    }

    /// The tenant's recorded decisions made at or after `since_ms` (0: all), to (re-)send on a
    /// Subscribe stream, newest first, at most [`MAX_AGENT_DECISIONS`]. A stream asks again
    /// from the newest it sent (less a margin), so a decision wakes every stream of the tenant
    /// for a short indexed read, not for the whole list.
    pub async fn tenant_decisions(
        &self,
        tenant: &str,
        since_ms: i64,
    ) -> Result<Vec<PinDecisionRecord>, ServiceError> {
        let tenant = TenantId::trusted(tenant);
        Ok(self
            .0
            .db(move |s| s.pin_decisions(&tenant, since_ms, MAX_AGENT_DECISIONS))
            .await?)
    }

    /// What one agent reported last (for an inventory with tools).
    pub async fn agent_pins(&self, agent_id: &str) -> Result<Vec<ToolPinRecord>, ServiceError> {
        let id = AgentId::trusted(agent_id);
        Ok(self.0.db(move |s| s.agent_tool_pins(&id)).await?)
    }
}

#[cfg(test)]
#[path = "pins_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "pins_review_tests.rs"]
mod review_tests;

#[cfg(test)]
#[path = "pins_added_tests.rs"]
mod added_tests;
