//! Who holds the spool's unacknowledged records: each user's runs of proxy records (their quota,
//! and whose records the size bound deleted) and who may displace the agent's own records.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use thoth_proto::{Dropped, Event, EventType};

/// Who may make the size bound delete one of the agent's own records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Displace {
    /// Evidence about users or the fleet (CONFIG_DRIFT, PROXY_TAMPERED, POLICY_REJECTED, ...):
    /// counts as someone else's for every user.
    Nobody,
    /// Says nothing about any user (AGENT_STARTED, AGENT_ENROLLED).
    Anyone,
    /// The spool's own EVENTS_DROPPED when every record it reports lost was this owner's.
    Owner(Arc<str>),
}

/// Who may displace the agent record `e` (decided from its content alone, so a restart
/// rebuilds the same answer). In the spool's EVENTS_DROPPED, `agentEvidenceLost` says how many
/// of the records lost were the agent's evidence (its records other than AGENT_STARTED /
/// AGENT_ENROLLED and earlier EVENTS_DROPPED about the same single owner).
pub(super) fn displace(e: &Event<'_>) -> Displace {
    match e.event_type {
        EventType::AgentStarted | EventType::AgentEnrolled => Displace::Anyone,
        EventType::EventsDropped => {
            let d = e.detail.as_ref().and_then(Dropped::from_detail);
            // Only when it reports one owner's losses and none of the agent's evidence.
            match d.and_then(|d| Some((d.by_user?, d.agent_evidence_lost?))) {
                Some((by, 0)) if by.len() == 1 => {
                    Displace::Owner(Arc::from(by.keys().next().expect("one").as_str()))
                }
                _ => Displace::Nobody,
            }
        }
        _ => Displace::Nobody,
    }
}

/// Unacknowledged records by owner: proxy records as runs of consecutive records of one owner
/// (what each user holds of the spool, their quota, and whose records the size bound deleted),
/// and the agent's own records with who may displace them.
#[derive(Default)]
pub(super) struct Owed {
    /// (first seq, last seq, owner, bytes, records), oldest first; the seqs of a run are
    /// consecutive.
    runs: VecDeque<(u64, u64, Arc<str>, u64, u64)>,
    by: HashMap<Arc<str>, u64>,
    /// The agent's records (seq, who may displace it), oldest first.
    pub(super) agent: VecDeque<(u64, Displace)>,
}

impl Owed {
    pub(super) fn add(&mut self, seq: u64, owner: &str, bytes: u64) {
        *self.by.entry(Arc::from(owner)).or_default() += bytes;
        match self.runs.back_mut() {
            Some(r) if &*r.2 == owner && r.1 + 1 == seq => {
                r.1 = seq;
                r.3 += bytes;
                r.4 += 1;
            }
            _ => self.runs.push_back((seq, seq, Arc::from(owner), bytes, 1)),
        }
    }

    pub(super) fn add_agent(&mut self, seq: u64, who: Displace) {
        self.agent.push_back((seq, who));
    }

    pub(super) fn held(&self, owner: &str) -> u64 {
        self.by.get(owner).copied().unwrap_or(0)
    }

    /// Whether every record from `from` to `to` is `owner`'s to displace (a record this does
    /// not know, such as a corrupt one, is not).
    pub(super) fn only(&self, owner: &str, from: u64, to: u64) -> bool {
        let mut covered = 0;
        let i = self.runs.partition_point(|r| r.1 < from);
        for r in self.runs.range(i..) {
            if r.0 > to {
                break;
            }
            if &*r.2 != owner {
                return false;
            }
            covered += r.1.min(to) - r.0.max(from) + 1;
        }
        let i = self.agent.partition_point(|a| a.0 < from);
        for (seq, who) in self.agent.range(i..) {
            if *seq > to {
                break;
            }
            match who {
                Displace::Anyone => {}
                Displace::Owner(o) if &**o == owner => {}
                _ => return false,
            }
            covered += 1;
        }
        covered == to - from + 1
    }

    /// Whether making `need` bytes of room would delete a record that is not `owner`'s to
    /// displace. The size bound deletes whole segments (`spans`: first seq, last seq, bytes,
    /// oldest first), so every record in each segment it would delete counts, not only the
    /// owner's run at the front. Records at or before `acked` are delivered and do not count.
    pub(super) fn evicts_other(
        &self,
        owner: &str,
        need: u64,
        acked: u64,
        spans: impl Iterator<Item = (u64, u64, u64)>,
    ) -> bool {
        let mut freed = 0;
        for (first, last, bytes) in spans {
            if freed >= need {
                return false;
            }
            let from = first.max(acked + 1);
            if from <= last && !self.only(owner, from, last) {
                return true;
            }
            freed += bytes;
        }
        false
    }

    /// Forgets records at or before `upto` (a run cut in two is shared out in proportion);
    /// returns how many records per owner.
    pub(super) fn release(&mut self, upto: u64) -> std::collections::BTreeMap<String, u64> {
        let mut gone = std::collections::BTreeMap::new();
        while self.agent.front().is_some_and(|a| a.0 <= upto) {
            self.agent.pop_front();
        }
        while let Some(r) = self.runs.front_mut() {
            if r.0 > upto {
                break;
            }
            let (n, bytes) = if r.1 <= upto {
                (r.4, r.3)
            } else {
                let n = (upto - r.0 + 1).min(r.4 - 1);
                let bytes = r.3 / r.4 * n;
                r.0 = upto + 1;
                r.3 -= bytes;
                r.4 -= n;
                (n, bytes)
            };
            let owner = Arc::clone(&r.2);
            if r.1 <= upto {
                self.runs.pop_front();
            }
            if n > 0 {
                *gone.entry(owner.to_string()).or_default() += n;
            }
            if let Some(b) = self.by.get_mut(&owner) {
                *b = b.saturating_sub(bytes);
                if *b == 0 {
                    self.by.remove(&owner);
                }
            }
            if n == 0 {
                break;
            }
        }
        gone
    }
}
