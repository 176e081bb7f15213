//! What the checks of every connection share: the installed `thoth`, and the bounds on checks
//! running at once.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a connection's verdict holds: a connection is checked when it first calls, and
/// again only once this has passed (an open `WatchPolicy` stream too, on a timer).
pub const RECHECK: Duration = Duration::from_secs(60);
/// Checks running at once over every connection (each reads `/proc` on a blocking thread); one
/// owner (login user with their sub-uids) runs at most one at a time.
pub const MAX_CHECKS: usize = 3;

/// What the checks of every connection share: the installed `thoth` (its canonical path,
/// resolved at most once per [`RECHECK`], and the files seen there), and the bounds on checks
/// running at once ([`MAX_CHECKS`] in all, one per owner).
#[derive(Debug)]
pub struct Checks {
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    owners: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) installed: Mutex<Installed>,
    running: AtomicUsize,
    peak: AtomicUsize,
    runs: AtomicUsize,
}

/// The installed `thoth` as last resolved, and the (`st_dev`, inode) of the files seen there.
#[derive(Debug, Default)]
pub(crate) struct Installed {
    pub(crate) path: Option<(Result<PathBuf, crate::watch::ThothPathError>, Instant)>,
    known: VecDeque<(u64, u64)>,
}

/// Files remembered as the installed `thoth` (upgrades while proxies still run the old one).
const KNOWN_BINARIES: usize = 16;

impl Checks {
    /// For an agent with `config`: notes the installed `thoth` it finds now.
    pub fn new(config: &thoth_endpoint::config::AgentConfig) -> Checks {
        let c = Checks {
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CHECKS)),
            owners: Mutex::default(),
            installed: Mutex::default(),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
        };
        let _ = c.installed(config);
        c
    }

    /// The canonical installed `thoth` (resolved again once [`RECHECK`] has passed), and the
    /// files seen at it, the one there now included. Blocking.
    pub(crate) fn installed(
        &self,
        config: &thoth_endpoint::config::AgentConfig,
    ) -> (
        Result<PathBuf, crate::watch::ThothPathError>,
        Vec<(u64, u64)>,
    ) {
        let cached = {
            let i = self.installed.lock().unwrap_or_else(|p| p.into_inner());
            i.path
                .as_ref()
                .filter(|(_, at)| at.elapsed() < RECHECK)
                .map(|(p, _)| p.clone())
        };
        let path = cached.unwrap_or_else(|| crate::watch::canonical_thoth(config));
        let now = path.as_ref().ok().and_then(|p| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
        });
        let mut i = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        if i.path
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() >= RECHECK)
        {
            i.path = Some((path.clone(), Instant::now()));
        }
        if let Some(id) = now
            && !i.known.contains(&id)
        {
            if i.known.len() >= KNOWN_BINARIES {
                i.known.pop_front();
            }
            i.known.push_back(id);
        }
        (path, i.known.iter().copied().collect())
    }

    /// The lock that keeps `owner` to one check at a time.
    pub(crate) fn owner(&self, owner: u32) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= 1024 {
            m.retain(|_, l| Arc::strong_count(l) > 1);
        }
        Arc::clone(m.entry(owner).or_default())
    }

    /// Checks run so far.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }

    /// Most checks that ran at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Counts a running check (and the peak) while held.
pub(crate) struct Running<'a>(&'a Checks);

impl<'a> Running<'a> {
    pub(crate) fn new(c: &'a Checks) -> Running<'a> {
        c.runs.fetch_add(1, Ordering::Relaxed);
        let now = c.running.fetch_add(1, Ordering::AcqRel) + 1;
        c.peak.fetch_max(now, Ordering::AcqRel);
        Running(c)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}
