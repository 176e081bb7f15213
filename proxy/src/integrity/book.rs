//! The session's book of tool definitions: the first list this session saw pins (first use);
//! later lists compare with it. It also keeps each tool's current treatment, the definitions a
//! human approved in this session, and which events were raised already (once per session per
//! tool and digest). Bounded: at most [`MAX_TOOLS`] tools, [`MAX_REPORTED`] events remembered.

use std::collections::{HashMap, HashSet};

use thoth_policy::{Action, Decision, Mode, TrustedHints};
use thoth_proto::EventType;
use thoth_proto::fleet::PinRef;
use thoth_proto::pins::{ToolDigest, changes};

use super::verdict::{Baseline, MAX_TOOLS, Observed, State, ToolStatus, Treatment};

/// (kind, tool, digest) of events raised, remembered at once; past this, nothing new is
/// remembered (events are then raised again: loss of dedup, never of events).
pub const MAX_REPORTED: usize = 16384;

/// What the session knows about its server's tools.
#[derive(Default)]
pub struct Book {
    /// The first-use pins of this session.
    pins: HashMap<String, ToolDigest>,
    /// A complete list was seen: unknown tools are "added" from now on.
    pinned: bool,
    /// The status of each listed tool.
    status: HashMap<String, ToolStatus>,
    /// (tool, digest) a human approved in this session.
    approved: HashSet<(String, String)>,
    reported: HashSet<(u8, String, String)>,
    /// The server's identity, once a list was seen.
    pub server_key: String,
    /// The proxy's own `tools/list` is in flight; `again`: another change came meanwhile.
    pub own_list: bool,
    pub again: bool,
    /// Requests of the proxy's own so far (ids).
    pub own_lists: u64,
    /// The agent could not be asked (logged once).
    pub fallback_logged: bool,
    /// `tools/list` requests with a cursor (later pages), by id key, until answered.
    later_pages: HashSet<String>,
    /// Approvals pending for a tool held because its definition changed: the definition asked
    /// about, by approval id.
    held: HashMap<String, PinRef>,
    /// A list had more tools than the book keeps (logged once).
    pub overflow_logged: bool,
    /// A tool could not be kept (the book was full): calls to unknown tools are denied.
    pub overflowed: bool,
}

impl Book {
    /// Compares one tool with the session's pin (pinning it while the first list is read).
    pub fn baseline(&mut self, seen: &Observed) -> Baseline {
        let name = &seen.digest.name;
        let (state, pinned, changes) = match self.pins.get(name) {
            Some(p) if p.digest == seen.digest.digest => (State::Same, p.digest.clone(), vec![]),
            Some(p) => (
                State::Changed,
                p.digest.clone(),
                changes(p, &seen.digest)
                    .into_iter()
                    .map(|c| c.as_str().to_owned())
                    .collect(),
            ),
            None if !self.pinned && self.pins.len() < MAX_TOOLS => {
                self.pins.insert(name.clone(), seen.digest.clone());
                (State::New, String::new(), vec![])
            }
            None => (State::Added, String::new(), vec![]),
        };
        Baseline {
            state,
            pinned,
            source: "first_use".to_owned(),
            accepted: false,
            changes,
            first_report: true,
        }
    }

    /// A list (page) was read: when it was complete, the first-use pins are final, and the
    /// pinned tools it lacks are returned (removed: name, pinned digest).
    pub fn list_read(&mut self, complete: bool, listed: &HashSet<&str>) -> Vec<(String, String)> {
        if !complete {
            return Vec::new();
        }
        let first = !self.pinned;
        self.pinned = true;
        if first {
            return Vec::new();
        }
        let mut gone: Vec<(String, String)> = self
            .pins
            .iter()
            .filter(|(n, _)| !listed.contains(n.as_str()))
            .map(|(n, d)| (n.clone(), d.digest.clone()))
            .collect();
        gone.sort();
        gone
    }

    /// A `tools/list` request with a cursor is pending under `key` (bounded: past
    /// [`MAX_TOOLS`] remembered, a page counts as a first page, which the client itself asked
    /// for that way).
    pub fn later_page(&mut self, key: String) {
        if self.later_pages.len() < MAX_TOOLS {
            self.later_pages.insert(key);
        }
    }

    /// Whether the answered request under `key` asked for a later page (forgets it).
    pub fn was_later_page(&mut self, key: &str) -> bool {
        self.later_pages.remove(key)
    }

    /// An approval was asked for the definition `pin` (bounded like the approvals themselves).
    pub fn hold(&mut self, approval_id: &str, pin: PinRef) {
        if self.held.len() < MAX_TOOLS {
            self.held.insert(approval_id.to_owned(), pin);
        }
    }

    /// The approval ended: the definition it was asked about, if it was one.
    pub fn released(&mut self, approval_id: &str) -> Option<PinRef> {
        self.held.remove(approval_id)
    }

    /// Whether `tool` at `digest` was approved by a human in this session.
    pub fn approved(&self, tool: &str, digest: &str) -> bool {
        self.approved
            .contains(&(tool.to_owned(), digest.to_owned()))
    }

    /// A human approved a call to `tool` held because its definition `digest` changed: that
    /// definition is accepted for this session (and the tool released, if it is still the one
    /// listed).
    pub fn approve(&mut self, tool: &str, digest: &str) {
        if self.approved.len() < MAX_TOOLS {
            self.approved.insert((tool.to_owned(), digest.to_owned()));
        }
        if let Some(s) = self.status.get_mut(tool)
            && s.digest == digest
            && matches!(s.treatment, Treatment::StepUp { .. })
        {
            s.treatment = Treatment::Visible;
        }
    }

    /// Records a tool's status; `false` when the book is full (the tool stays unknown, and from
    /// then on a call to any tool the book does not know is denied).
    /// `relax`: the list was shown to the client and asked from its first page, so it may make
    /// the treatment milder; any other list (the proxy's own, a later page) only makes it
    /// stricter, so a definition the client never saw, or saw next to another one of the same
    /// name, cannot release a held tool.
    pub fn set(&mut self, tool: &str, status: ToolStatus, relax: bool) -> bool {
        if self.status.len() >= MAX_TOOLS && !self.status.contains_key(tool) {
            self.overflowed = true;
            return false;
        }
        match self.status.get_mut(tool) {
            Some(old) if !relax => {
                if rank(&status.treatment) > rank(&old.treatment) {
                    *old = status;
                } else if old.digest != status.digest {
                    // Two definitions in play: no annotation of either is trusted.
                    old.hints = None;
                }
            }
            _ => {
                self.status.insert(tool.to_owned(), status);
            }
        }
        true
    }

    /// The status of a listed tool (`None` for a tool never listed in this session).
    pub fn status(&self, tool: &str) -> Option<&ToolStatus> {
        self.status.get(tool)
    }

    /// Whether the event (kind, tool, digest) is raised for the first time in this session
    /// (and remembers it).
    pub fn first_time(&mut self, kind: EventType, tool: &str, digest: &str) -> bool {
        let k = (kind as u8, tool.to_owned(), digest.to_owned());
        if self.reported.contains(&k) {
            return false;
        }
        if self.reported.len() < MAX_REPORTED {
            self.reported.insert(k);
        }
        true
    }

    /// The annotations the evaluator may trust for `tool` (its definition is accepted).
    pub fn hints(&self, tool: &str) -> Option<TrustedHints> {
        self.status(tool).and_then(|s| s.hints)
    }

    /// The policy's decision on a call, with the tool's treatment applied: a hidden tool is denied,
    /// a `step_up` one needs approval (unless the decision already stops the call).
    pub fn gate(&self, tool: &str, d: Decision) -> Decision {
        match self.status(tool).map(|s| &s.treatment) {
            Some(Treatment::Hidden { rule, why }) if d.action != Action::Deny => Decision {
                action: Action::Deny,
                mode: Mode::Block,
                rule: (*rule).to_owned(),
                reason: why.clone(),
                out_of_scope: false,
            },
            // A policy step_up too: the human is asked about the new definition, and an approval
            // accepts it for the session.
            Some(Treatment::StepUp { why })
                if d.action.forwards() || d.action == Action::StepUp =>
            {
                Decision {
                    action: Action::StepUp,
                    mode: Mode::StepUp,
                    rule: "on_tool_change".to_owned(),
                    reason: why.clone(),
                    out_of_scope: false,
                }
            }
            None if self.overflowed && d.action != Action::Deny => Decision {
                action: Action::Deny,
                mode: Mode::Block,
                rule: "too_many_tools".to_owned(),
                reason: format!(
                    "the server lists more than {MAX_TOOLS} tools, so \"{tool}\" could not be \
                     checked and is not callable"
                ),
                out_of_scope: false,
            },
            _ => d,
        }
    }

    /// The definition a `step_up` held because it changed is about (sent with the approval).
    pub fn pin_ref(&self, tool: &str, d: &Decision) -> Option<PinRef> {
        if d.rule != "on_tool_change" {
            return None;
        }
        let s = self.status(tool)?;
        Some(PinRef {
            server_key: self.server_key.clone(),
            tool: tool.to_owned(),
            digest: s.digest.clone(),
        })
    }
}

/// How strict a treatment is.
fn rank(t: &Treatment) -> u8 {
    match t {
        Treatment::Visible => 0,
        Treatment::StepUp { .. } => 1,
        Treatment::Hidden { .. } => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::verdict::observe;
    use serde_json::json;

    fn seen(name: &str, description: &str) -> Observed {
        observe(&json!({"name": name, "description": description, "inputSchema": {}})).unwrap()
    }

    #[test]
    fn the_first_complete_list_pins_and_later_ones_compare() {
        let mut b = Book::default();
        assert_eq!(b.baseline(&seen("a", "x")).state, State::New);
        assert_eq!(b.baseline(&seen("b", "x")).state, State::New);
        assert!(b.list_read(true, &["a", "b"].into()).is_empty());
        assert_eq!(b.baseline(&seen("a", "x")).state, State::Same);
        let c = b.baseline(&seen("a", "y"));
        assert_eq!(c.state, State::Changed);
        assert_eq!(c.changes, vec!["description".to_owned()]);
        // An added tool is never pinned by a later list: it stays "added".
        assert_eq!(b.baseline(&seen("c", "x")).state, State::Added);
        assert_eq!(b.baseline(&seen("c", "x")).state, State::Added);
        let gone = b.list_read(true, &["a"].into());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "b");
        assert!(b.first_time(EventType::ToolDefinitionChanged, "a", "d"));
        assert!(!b.first_time(EventType::ToolDefinitionChanged, "a", "d"));
    }

    #[test]
    fn an_incomplete_page_does_not_end_first_use() {
        let mut b = Book::default();
        b.baseline(&seen("a", "x"));
        assert!(b.list_read(false, &["a"].into()).is_empty());
        assert_eq!(b.baseline(&seen("b", "x")).state, State::New);
    }
}
