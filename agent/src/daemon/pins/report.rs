//! The pinned tools as the heartbeat reports them (`Inventory.tool_pins`): every user's, at most
//! [`MAX_REPORTS`] entries and [`MAX_REPORT_BYTES`] of text, every string cut and escaped (they
//! come from proxies, and a server's name or command line from a user's files).
//!
//! States: "pinned", "changed" (a newer definition waits), "rejected" (an admin rejected the
//! pending or pinned one), and "added": a tool a pinned server did not offer when it was pinned,
//! not pinned, so `digest` and `pending_digest` are both its own digest and `changes` is
//! ["added"] (rejected or not: the controller's decision says which).

use thoth_proto::fleet as pb;

use super::store::UserStore;
use crate::watch::clean;

/// Most entries in one report.
pub const MAX_REPORTS: usize = 4096;
/// Most text in the entries together.
pub const MAX_REPORT_BYTES: usize = 512 << 10;
/// Longest user, server and tool name.
pub const MAX_NAME: usize = 256;
/// Longest client id (the controller's limit for MCP clients).
pub const MAX_CLIENT: usize = 32;
/// Longest command line.
pub const MAX_COMMAND: usize = 4096;
/// Longest description of a pending definition, escaped (the controller's limit).
pub const MAX_DESCRIPTION: usize = 2048;

/// The entries, user by user, within the bounds.
#[derive(Debug, Default)]
pub struct Reports {
    out: Vec<pb::ToolPinReport>,
    bytes: usize,
    cut: usize,
}

impl Reports {
    /// Adds the entries of one user's store (`user`: their name).
    pub fn add(&mut self, user: &str, store: &UserStore) {
        if store.servers.is_empty() {
            return;
        }
        let user = clean(user, MAX_NAME);
        for (key, e) in &store.servers {
            let client = clean(&e.client, MAX_CLIENT);
            let server_name = clean(&e.name, MAX_NAME);
            let command = clean(&e.command.join(" "), MAX_COMMAND);
            for (tool, pin) in &e.tools {
                let (state, pending) = match &pin.pending {
                    Some(p) if p.rejected => ("rejected", Some(p)),
                    Some(p) => ("changed", Some(p)),
                    None => ("pinned", None),
                };
                let r = pb::ToolPinReport {
                    user: user.clone(),
                    client: client.clone(),
                    server_name: server_name.clone(),
                    server_key: key.clone(),
                    command: command.clone(),
                    tool: clean(tool, MAX_NAME),
                    digest: pin.digest.clone(),
                    state: state.into(),
                    pending_digest: pending.map(|p| p.digest.clone()).unwrap_or_default(),
                    source: pin.source.as_str().into(),
                    accepted: pin.accepted,
                    changes: pending.map(|p| p.changes.clone()).unwrap_or_default(),
                    first_seen_unix_ms: pin.first_seen_ms,
                    changed_unix_ms: pending.map_or(0, |p| p.seen_ms),
                    pending_description: pending
                        .map(|p| clean(&p.description, MAX_DESCRIPTION))
                        .unwrap_or_default(),
                };
                self.push(r);
            }
            // Tools the server did not offer when it was pinned: not pinned, so the digest is
            // the added definition's own, pending too (the controller lists one row for it).
            for (tool, p) in &e.added {
                self.push(pb::ToolPinReport {
                    user: user.clone(),
                    client: client.clone(),
                    server_name: server_name.clone(),
                    server_key: key.clone(),
                    command: command.clone(),
                    tool: clean(tool, MAX_NAME),
                    digest: p.digest.clone(),
                    state: "added".into(),
                    pending_digest: p.digest.clone(),
                    source: String::new(),
                    accepted: false,
                    changes: vec!["added".into()],
                    first_seen_unix_ms: p.seen_ms,
                    changed_unix_ms: p.seen_ms,
                    pending_description: clean(&p.description, MAX_DESCRIPTION),
                });
            }
        }
    }

    /// Keeps `r` when it fits the bounds (else counts it as left out).
    fn push(&mut self, r: pb::ToolPinReport) {
        let size = r.user.len()
            + r.client.len()
            + r.server_name.len()
            + r.server_key.len()
            + r.command.len()
            + r.tool.len()
            + r.digest.len()
            + r.pending_digest.len()
            + r.pending_description.len()
            + r.changes.iter().map(String::len).sum::<usize>()
            + 64;
        if self.out.len() < MAX_REPORTS && self.bytes + size <= MAX_REPORT_BYTES {
            self.bytes += size;
            self.out.push(r);
        } else {
            self.cut += 1;
        }
    }

    /// The entries, with how many were left out over the bounds.
    pub fn finish(self) -> (Vec<pb::ToolPinReport>, usize) {
        (self.out, self.cut)
    }
}
