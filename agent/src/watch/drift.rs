//! CONFIG_DRIFT's words: how a file's servers differ from what the agent left, for any format
//! (entries as `thoth_hosts::format::entries` reads them, named by their labels).

use std::collections::BTreeMap;

use thoth_hosts::format::Found;
use thoth_hosts::wrapper::Entry;

/// A file's servers: label (the key, with its project for Claude Code) → entry.
pub(super) type Servers = BTreeMap<String, Entry>;

/// The servers of `found`, by label.
pub(super) fn servers(found: &[Found]) -> Servers {
    found.iter().map(|f| (f.label(), f.entry.clone())).collect()
}

/// What the description says when no server changed.
pub(super) const REWRITTEN: &str = "the file was rewritten";

/// Describes how `now` differs from what the agent left (`before`).
pub(super) fn describe(before: &Servers, now: &Servers) -> String {
    let added: Vec<&str> = now
        .keys()
        .filter(|k| !before.contains_key(*k))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = before
        .keys()
        .filter(|k| !now.contains_key(*k))
        .map(String::as_str)
        .collect();
    let mut unwrapped = Vec::new();
    let mut edited = Vec::new();
    for (k, e) in now {
        let Some(b) = before.get(k) else { continue };
        if b == e {
            continue;
        }
        if b.is_wrapped() && !e.is_wrapped() && e.command.is_some() {
            unwrapped.push(k.as_str());
        } else {
            edited.push(k.as_str());
        }
    }
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("server added: {}", added.join(", ")));
    }
    if !unwrapped.is_empty() {
        parts.push(format!("wrapper removed: {}", unwrapped.join(", ")));
    }
    if !edited.is_empty() {
        parts.push(format!("entry edited: {}", edited.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("server removed: {}", removed.join(", ")));
    }
    if parts.is_empty() {
        REWRITTEN.into()
    } else {
        parts.join("; ")
    }
}
