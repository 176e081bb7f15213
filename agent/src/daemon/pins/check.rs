//! `LocalAgent.CheckTools`: a proxy's tool list (digests only) compared with, and the first
//! time pinned as, the definitions kept for the calling OS user. The request is bounded
//! ([`validate`]); the server's identity is computed here from its fields, never taken from the
//! proxy.
//!
//! A server's store is bounded ([`MAX_SERVER_BYTES`]): a tool that no longer fits is not
//! pinned and is answered "added" (first_report set, as it is not remembered), even in the
//! server's first list, so `on_tool_change` applies to it; a change that no longer fits is
//! answered "changed" but not kept (a pending one kept before stays), its description dropped
//! first.
//!
//! A server is known (a tool it did not offer before is "added") once it is kept, or when it
//! was evicted (a tombstone: eviction never resets pinning). A brand-new server's first list
//! may come in pages: checked in the session that created its entry, while no complete list
//! of it was seen, its unknown tools are still "new".

use std::collections::BTreeSet;

use thoth_proto::fleet as pb;
use thoth_proto::pins::{changes, is_digest, server_key};

use super::decisions::Decisions;
use super::store::{
    DEFINITION_BYTES, MAX_DESCRIPTION, MAX_SERVER_BYTES, MAX_TOOLS, Parts, Pending, ServerEntry,
    Source, ToolPin, UserStore, cut_description,
};

/// Most tools in one list.
pub const MAX_LIST_TOOLS: usize = 4096;
/// Longest tool name.
pub const MAX_TOOL_NAME: usize = 256;
/// Longest server name.
pub const MAX_SERVER_NAME: usize = 1024;
/// Longest client id and session id.
pub const MAX_CLIENT: usize = 256;
/// Most command-line entries, and the longest one.
pub const MAX_ARGS: usize = 256;
/// Longest command-line entry.
pub const MAX_ARG: usize = 4096;

/// Why a list cannot be checked (answered INVALID_ARGUMENT), or `Ok`.
pub fn validate(req: &pb::ToolListCheck) -> Result<(), String> {
    if req.server_name.is_empty() || req.server_name.len() > MAX_SERVER_NAME {
        return Err(format!(
            "server_name must be 1 to {MAX_SERVER_NAME} bytes (it is {})",
            req.server_name.len()
        ));
    }
    if req.client.len() > MAX_CLIENT || req.session_id.len() > MAX_CLIENT {
        return Err(format!(
            "client and session_id must be at most {MAX_CLIENT} bytes"
        ));
    }
    if req.command.len() > MAX_ARGS {
        return Err(format!(
            "the command line has {} entries, over the limit of {MAX_ARGS}",
            req.command.len()
        ));
    }
    if let Some(i) = req.command.iter().position(|a| a.len() > MAX_ARG) {
        return Err(format!(
            "command entry {i} is over the limit of {MAX_ARG} bytes"
        ));
    }
    if req.tools.len() > MAX_LIST_TOOLS {
        return Err(format!(
            "{} tools in one list, over the limit of {MAX_LIST_TOOLS}",
            req.tools.len()
        ));
    }
    for (i, t) in req.tools.iter().enumerate() {
        if t.name.len() > MAX_TOOL_NAME {
            return Err(format!(
                "tool {i}'s name is over the limit of {MAX_TOOL_NAME} bytes"
            ));
        }
        // Reported escaped, such a name would never match the admins' decisions: never pinned.
        if let Some(c) = t.name.chars().find(|c| c.is_control()) {
            return Err(format!(
                "tool {i}'s name holds the control character U+{:04X}",
                c as u32
            ));
        }
        if ![
            &t.digest,
            &t.description_sha256,
            &t.schema_sha256,
            &t.annotations_sha256,
        ]
        .iter()
        .all(|d| is_digest(d))
        {
            return Err(format!(
                "tool {i} ({:?}): every digest must be 64 lowercase hex digits",
                t.name.chars().take(64).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// What a check did.
#[derive(Debug, Default)]
pub struct Checked {
    /// The answer.
    pub verdict: pb::ToolListVerdict,
    /// The store changed in a way worth writing.
    pub dirty: bool,
    /// Servers evicted over the bounds.
    pub evicted: usize,
}

fn parts(t: &pb::ToolDefinition) -> Parts {
    Parts {
        description: t.description_sha256.clone(),
        schema: t.schema_sha256.clone(),
        annotations: t.annotations_sha256.clone(),
    }
}

/// A definition seen, waiting for a decision (its description cut to [`MAX_DESCRIPTION`]).
fn pending(t: &pb::ToolDefinition, changes: Vec<String>, now_ms: i64, rejected: bool) -> Pending {
    Pending {
        digest: t.digest.clone(),
        parts: parts(t),
        changes,
        seen_ms: now_ms,
        rejected,
        description: cut_description(&t.description, MAX_DESCRIPTION),
    }
}

/// The bytes a server keeps, against [`MAX_SERVER_BYTES`].
struct Budget(usize);

impl Budget {
    /// Takes `new` bytes in place of `old`; false (nothing taken) when that does not fit.
    fn take(&mut self, new: usize, old: usize) -> bool {
        let after = self.0.saturating_sub(old).saturating_add(new);
        if new > old && after > MAX_SERVER_BYTES {
            return false;
        }
        self.0 = after;
        true
    }

    /// `p` in place of a kept one of `old` bytes (`extra`: what its tool counts for beyond
    /// it), its description dropped when only that does not fit; `None` when it does not fit.
    fn fit(&mut self, mut p: Pending, extra: usize, old: usize) -> Option<Pending> {
        if self.take(extra + p.bytes(), old) {
            return Some(p);
        }
        p.description.clear();
        self.take(extra + p.bytes(), old).then_some(p)
    }
}

fn verdict(name: &str, state: &str) -> pb::ToolVerdict {
    pb::ToolVerdict {
        name: name.to_owned(),
        state: state.to_owned(),
        ..pb::ToolVerdict::default()
    }
}

fn admin_pin(t: &pb::ToolDefinition, now_ms: i64) -> ToolPin {
    ToolPin {
        digest: t.digest.clone(),
        parts: parts(t),
        source: Source::Admin,
        accepted: true,
        first_seen_ms: now_ms,
        pending: None,
    }
}

fn same(pin: &ToolPin) -> pb::ToolVerdict {
    pb::ToolVerdict {
        pinned_digest: pin.digest.clone(),
        pin_source: pin.source.as_str().to_owned(),
        accepted: pin.accepted,
        ..verdict("", "same")
    }
}

/// Checks `req` (already [`validate`]d) against `store`, consulting `decisions`; pins a new
/// server's tools, records changes and added tools as pending.
pub fn check(
    store: &mut UserStore,
    decisions: &Decisions,
    req: &pb::ToolListCheck,
    now_ms: i64,
) -> Checked {
    let key = server_key(&req.client, &req.server_name, &req.command);
    let mut out = Checked::default();
    out.verdict.server_key.clone_from(&key);
    let kept = store.servers.contains_key(&key);
    let known = kept || store.is_tombstoned(&key);
    if !kept {
        store.revive(&key);
        let first_session = (!known && !req.session_id.is_empty()).then(|| req.session_id.clone());
        store.servers.insert(
            key.clone(),
            ServerEntry {
                name: req.server_name.clone(),
                client: req.client.clone(),
                command: req.command.clone(),
                first_session,
                ..ServerEntry::default()
            },
        );
        out.dirty = true;
        out.evicted = store.evict_over_count(&key);
    }
    let Some(entry) = store.servers.get_mut(&key) else {
        return out;
    };
    entry.last_seen_ms = now_ms;
    // Its first list, perhaps a later page of it.
    let first_list = !known || entry.first_session.as_ref() == Some(&req.session_id);
    let mut budget = Budget(entry.bytes());
    let mut seen = BTreeSet::new();
    for t in &req.tools {
        if !seen.insert(t.name.as_str()) {
            continue;
        }
        let decision = decisions.get(&key, &t.name, &t.digest);
        let (v, dirty) = match entry.tools.get_mut(&t.name) {
            Some(pin) => pinned_tool(pin, t, decision, now_ms, &mut budget),
            None if first_list && !entry.added.contains_key(&t.name) => {
                new_tool(entry, t, decision, now_ms, &mut budget)
            }
            None => added_tool(entry, t, decision, now_ms, &mut budget),
        };
        out.dirty |= dirty;
        out.verdict.tools.push(pb::ToolVerdict {
            name: t.name.clone(),
            ..v
        });
    }
    if req.complete {
        out.dirty |= entry.first_session.take().is_some();
        out.verdict.removed = entry
            .tools
            .keys()
            .filter(|n| !seen.contains(n.as_str()))
            .cloned()
            .collect();
        let before = entry.added.len();
        entry.added.retain(|n, _| seen.contains(n.as_str()));
        out.dirty |= entry.added.len() != before;
    }
    out
}

/// A tool pinned before.
fn pinned_tool(
    pin: &mut ToolPin,
    t: &pb::ToolDefinition,
    decision: Option<bool>,
    now_ms: i64,
    budget: &mut Budget,
) -> (pb::ToolVerdict, bool) {
    let old = pin.pending.as_ref().map_or(0, Pending::bytes);
    let rejected = decision == Some(false)
        || (decision.is_none()
            && pin
                .pending
                .as_ref()
                .is_some_and(|p| p.rejected && p.digest == t.digest));
    let what: Vec<String> = if pin.digest == t.digest {
        Vec::new()
    } else {
        changes(
            &pin.parts.digest("", &pin.digest),
            &parts(t).digest("", &t.digest),
        )
        .into_iter()
        .map(|c| c.as_str().to_owned())
        .collect()
    };
    if rejected {
        let first = pin
            .pending
            .as_ref()
            .is_none_or(|p| p.digest != t.digest || !p.rejected);
        if first && pin.digest == t.digest {
            pin.accepted = false;
        }
        let kept = first && keep_pending(pin, t, &what, now_ms, true, budget, old);
        let v = against_pin(pin, what, first, "rejected");
        return (v, kept || (first && pin.digest == t.digest));
    }
    if decision == Some(true) {
        // An admin accepted exactly this definition (perhaps before it was seen).
        let dirty = pin.digest != t.digest || !pin.accepted || pin.source != Source::Admin;
        if dirty {
            budget.take(0, old);
            *pin = ToolPin {
                first_seen_ms: pin.first_seen_ms,
                ..admin_pin(t, now_ms)
            };
        }
        return (same(pin), dirty);
    }
    if pin.digest == t.digest {
        return (same(pin), false);
    }
    let first = pin.pending.as_ref().is_none_or(|p| p.digest != t.digest);
    let kept = first && keep_pending(pin, t, &what, now_ms, false, budget, old);
    (against_pin(pin, what, first, "changed"), kept)
}

/// Records `t` as the pin's pending definition when the budget lets it; whether it did.
fn keep_pending(
    pin: &mut ToolPin,
    t: &pb::ToolDefinition,
    what: &[String],
    now_ms: i64,
    rejected: bool,
    budget: &mut Budget,
    old: usize,
) -> bool {
    let p = budget.fit(pending(t, what.to_vec(), now_ms, rejected), 0, old);
    let kept = p.is_some();
    if kept {
        pin.pending = p;
    }
    kept
}

/// The verdict on a definition that differs from the pin (`changed` or `rejected`).
fn against_pin(pin: &ToolPin, what: Vec<String>, first: bool, state: &str) -> pb::ToolVerdict {
    pb::ToolVerdict {
        pinned_digest: pin.digest.clone(),
        pin_source: pin.source.as_str().to_owned(),
        changes: what,
        first_report: first,
        ..verdict("", state)
    }
}

/// A tool of a server's first list (past the server's bounds: an added tool, not pinned).
fn new_tool(
    entry: &mut ServerEntry,
    t: &pb::ToolDefinition,
    decision: Option<bool>,
    now_ms: i64,
    budget: &mut Budget,
) -> (pb::ToolVerdict, bool) {
    if decision == Some(false)
        || entry.len() >= MAX_TOOLS
        || !budget.take(t.name.len() + DEFINITION_BYTES, 0)
    {
        return added_tool(entry, t, decision, now_ms, budget);
    }
    match decision {
        Some(true) => {
            let pin = admin_pin(t, now_ms);
            let v = same(&pin);
            entry.tools.insert(t.name.clone(), pin);
            (v, true)
        }
        // Not rejected (above).
        _ => {
            entry.tools.insert(
                t.name.clone(),
                ToolPin {
                    digest: t.digest.clone(),
                    parts: parts(t),
                    source: Source::FirstUse,
                    accepted: false,
                    first_seen_ms: now_ms,
                    pending: None,
                },
            );
            let v = pb::ToolVerdict {
                pin_source: Source::FirstUse.as_str().to_owned(),
                first_report: true,
                ..verdict("", "new")
            };
            (v, true)
        }
    }
}

/// A tool a pinned server did not offer before (not pinned until a decision; not kept past
/// the server's bounds).
fn added_tool(
    entry: &mut ServerEntry,
    t: &pb::ToolDefinition,
    decision: Option<bool>,
    now_ms: i64,
    budget: &mut Budget,
) -> (pb::ToolVerdict, bool) {
    let name = t.name.len();
    let old = entry.added.get(&t.name);
    let old_bytes = old.map_or(0, |p| name + p.bytes());
    if decision == Some(true) {
        // An admin accepted it: the verdict says so whether or not it fits (the decision is
        // consulted on every check).
        let pin = admin_pin(t, now_ms);
        let v = same(&pin);
        if budget.take(name + DEFINITION_BYTES, old_bytes) {
            entry.added.remove(&t.name);
            entry.tools.insert(t.name.clone(), pin);
        }
        return (v, true);
    }
    let rejected = decision == Some(false)
        || (decision.is_none() && old.is_some_and(|p| p.rejected && p.digest == t.digest));
    let first = old.is_none_or(|p| p.digest != t.digest || p.rejected != rejected);
    let mut kept = false;
    if first && (old.is_some() || entry.len() < MAX_TOOLS) {
        let p = pending(t, vec!["added".to_owned()], now_ms, rejected);
        if let Some(p) = budget.fit(p, name, old_bytes) {
            entry.added.insert(t.name.clone(), p);
            kept = true;
        }
    }
    let state = if rejected { "rejected" } else { "added" };
    let v = pb::ToolVerdict {
        first_report: first,
        ..verdict("", state)
    };
    (v, kept)
}
