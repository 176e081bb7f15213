//! How often a failed check is raised as an event: once a period per owner and kind, and a cap a
//! period over every owner.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::verdict::Kind;

/// How often the same finding for the same owner is raised as an event.
pub const EVENT_PERIOD: Duration = Duration::from_secs(3600);
/// Findings raised as events per [`EVENT_PERIOD`] over every owner (the rest are counted and
/// said in the next one).
pub const MAX_RAISED: u64 = 64;
/// (Owner, kind) pairs remembered; past it, new pairs are held back until old ones expire.
const MAX_RAISED_KEYS: usize = 4096;

/// Which findings were raised lately, per (owner, kind), to raise each at most once a period,
/// and [`MAX_RAISED`] a period in all (the rest are counted and said in the next one).
#[derive(Debug, Default)]
pub struct Raised(Mutex<RaisedState>);

#[derive(Debug, Default)]
struct RaisedState {
    by: HashMap<(u32, Kind), (Instant, u64)>,
    /// The current period's start, findings raised in it, and those held back for the cap.
    period: Option<Instant>,
    raised: u64,
    held: u64,
}

impl Raised {
    /// Whether to raise `kind` for `owner` now; with how many were held back since the last one
    /// (of this owner and kind, and any held back for the overall cap).
    pub fn should_raise(&self, owner: u32, kind: Kind, now: Instant) -> Option<u64> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *s;
        if s.period
            .is_none_or(|t| now.saturating_duration_since(t) >= EVENT_PERIOD)
        {
            s.period = Some(now);
            s.raised = 0;
        }
        if s.by.len() >= MAX_RAISED_KEYS {
            s.by.retain(|_, (t, _)| now.saturating_duration_since(*t) < EVENT_PERIOD);
        }
        let full = s.by.len() >= MAX_RAISED_KEYS;
        let held = match s.by.get_mut(&(owner, kind)) {
            Some((t, held)) if now.saturating_duration_since(*t) < EVENT_PERIOD => {
                *held += 1;
                return None;
            }
            Some((_, held)) => *held,
            None if full => {
                s.held += 1;
                return None;
            }
            None => 0,
        };
        if s.raised >= MAX_RAISED {
            s.held += 1;
            return None;
        }
        s.raised += 1;
        s.by.insert((owner, kind), (now, 0));
        Some(held + std::mem::take(&mut s.held))
    }
}

#[cfg(test)]
#[path = "raised_tests.rs"]
mod tests;
