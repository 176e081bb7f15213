//! The agent's pin book: every user's store (by OS uid; a user never sees or changes
//! another's), the admins' decisions, and what shadowing remembers; loaded from the state
//! directory's `pins/` (0700) on first use, each changed file written atomically (0600).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use thoth_proto::fleet as pb;

use super::check::{Checked, check};
use super::decisions::{self, Decisions};
use super::shadow::{Shadowed, Shadows};
use super::store::{self, Source, ToolPin, UserStore};

/// The decisions' file name in the pins directory.
const DECISIONS_FILE: &str = "decisions.json";

struct Inner {
    users: BTreeMap<u32, UserStore>,
    decisions: Decisions,
    dirty: BTreeSet<u32>,
    decisions_dirty: bool,
    shadows: Shadows,
}

/// Every user's pins.
pub struct PinBook {
    dir: PathBuf,
    inner: OnceLock<Mutex<Inner>>,
    flush_scheduled: AtomicBool,
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn user_file(dir: &Path, uid: u32) -> PathBuf {
    dir.join(format!("{uid}.json"))
}

/// Loads every store and the decisions from `dir` (created 0700). A file that cannot be used
/// is logged and that user starts empty.
fn load_all(dir: &Path) -> Inner {
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), "cannot create the pins directory: {e}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let mut users = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(uid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            match store::load(&ent.path()) {
                Ok(Some(s)) => {
                    users.insert(uid, s);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(
                        uid,
                        file = %ent.path().display(),
                        "the pinned tools file cannot be used ({e}): this user starts with no pins"
                    );
                    users.insert(uid, UserStore::default());
                }
            }
        }
    }
    let decisions = Decisions::load(&dir.join(DECISIONS_FILE)).unwrap_or_else(|e| {
        tracing::warn!("the admins' pin decisions file cannot be used ({e}): starting empty");
        Decisions::default()
    });
    Inner {
        users,
        decisions,
        dirty: BTreeSet::new(),
        decisions_dirty: false,
        shadows: Shadows::default(),
    }
}

impl Inner {
    /// Writes `uid`'s store (bounded: servers evicted to fit, counted and logged).
    fn save_user(&mut self, dir: &Path, uid: u32, keep: &str) {
        self.dirty.remove(&uid);
        let Some(s) = self.users.get_mut(&uid) else {
            return;
        };
        let (bytes, evicted) = s.encode(keep);
        if evicted > 0 {
            tracing::warn!(
                uid,
                evicted,
                "pinned tools over {} bytes: the least recently seen servers were evicted",
                store::MAX_FILE_BYTES
            );
        }
        if bytes.is_empty() {
            return;
        }
        if let Err(e) = store::save(&user_file(dir, uid), &bytes) {
            tracing::warn!(uid, "cannot write the pinned tools: {e}");
            self.dirty.insert(uid);
        }
    }

    fn save_decisions(&mut self, dir: &Path) {
        self.decisions_dirty = false;
        let bytes = self.decisions.encode();
        if let Err(e) = store::save(&dir.join(DECISIONS_FILE), &bytes) {
            tracing::warn!("cannot write the admins' pin decisions: {e}");
            self.decisions_dirty = true;
        }
    }
}

impl PinBook {
    /// A book kept in `dir` (nothing is read until it is first used, or [`PinBook::load`]).
    pub fn new(dir: PathBuf) -> PinBook {
        PinBook {
            dir,
            inner: OnceLock::new(),
            flush_scheduled: AtomicBool::new(false),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .get_or_init(|| Mutex::new(load_all(&self.dir)))
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the files now (at start: a corrupt one is logged then).
    pub fn load(&self) {
        drop(self.inner());
    }

    /// Checks a list for `uid` (see [`check`]): the verdict, and the tool names another server
    /// of the same user and client offers too (newly). The user's file is written when it
    /// changed. Blocking (file IO).
    pub fn check(&self, uid: u32, req: &pb::ToolListCheck) -> (pb::ToolListVerdict, Vec<Shadowed>) {
        let mut inner = self.inner();
        let inner = &mut *inner;
        let store = inner.users.entry(uid).or_default();
        let Checked {
            verdict,
            dirty,
            evicted,
        } = check(store, &inner.decisions, req, now_ms());
        if evicted > 0 {
            tracing::warn!(
                uid,
                evicted,
                "over {} servers with pinned tools: the least recently seen were evicted",
                store::MAX_SERVERS
            );
        }
        if dirty || inner.dirty.contains(&uid) {
            inner.save_user(&self.dir, uid, &verdict.server_key);
        }
        let names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
        let shadowed = inner
            .shadows
            .observe(uid, &req.client, &req.server_name, &names);
        (verdict, shadowed)
    }

    /// Records an admin's decision and applies it to every user's store, in memory; the files
    /// are written by [`PinBook::flush`]. Whether anything changed; `Err` when it is ignored.
    pub fn decide(&self, d: &pb::PinDecision) -> Result<bool, String> {
        decisions::checked(d)?;
        let mut inner = self.inner();
        let inner = &mut *inner;
        let mut changed = inner.decisions.record(d);
        inner.decisions_dirty |= changed;
        let now = now_ms();
        for (uid, s) in &mut inner.users {
            if decisions::apply(s, d, now) {
                inner.dirty.insert(*uid);
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Writes every changed file. Blocking.
    pub fn flush(&self) {
        let mut inner = self.inner();
        if inner.decisions_dirty {
            inner.save_decisions(&self.dir);
        }
        let dirty: Vec<u32> = inner.dirty.iter().copied().collect();
        for uid in dirty {
            inner.save_user(&self.dir, uid, "");
        }
    }

    /// [`PinBook::decide`], the files written shortly after (on a blocking thread; decisions
    /// arriving together are written once).
    pub fn decide_soon(self: &Arc<Self>, d: &pb::PinDecision) {
        match self.decide(d) {
            Err(why) => tracing::warn!("a pin decision from the controller is ignored: {why}"),
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(
                    tool = %d.tool,
                    accepted = d.accepted,
                    "an admin's decision on a tool definition was applied"
                );
                self.flush_soon();
            }
        }
    }

    /// Writes the changed files shortly (on a blocking thread; changes made meanwhile are
    /// written together); at once when there is no runtime.
    pub fn flush_soon(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.flush();
            return;
        };
        if !self.flush_scheduled.swap(true, Ordering::AcqRel) {
            let me = Arc::clone(self);
            rt.spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                me.flush_scheduled.store(false, Ordering::Release);
                let _ = tokio::task::spawn_blocking(move || me.flush()).await;
            });
        }
    }

    /// A held call's approval (by the user or an admin: either approved a call, nobody
    /// reviewed the definition) lets `uid` use the definition it names: it becomes that user's
    /// pin with source `user_approval`, never accepted (its annotations stay untrusted; only an
    /// admin's [`PinBook::decide`] accepts). Applied only when this user's store has
    /// `pin.server_key` for a server named `server_name` (the request's) and holds exactly
    /// `pin.digest` as that tool's pending or added definition, not rejected by an admin; else
    /// ignored (logged). Whether it applied. In memory: written by [`PinBook::flush`].
    pub fn approved(&self, uid: u32, server_name: &str, pin: &pb::PinRef) -> bool {
        let mut inner = self.inner();
        let inner = &mut *inner;
        let rejected = inner.decisions.get(&pin.server_key, &pin.tool, &pin.digest) == Some(false);
        let done = !rejected
            && inner
                .users
                .get_mut(&uid)
                .is_some_and(|s| apply_approval(s, server_name, pin, now_ms()));
        if done {
            inner.dirty.insert(uid);
        } else {
            tracing::info!(
                uid,
                "an approval names a tool definition this user's store does not hold as pending \
                 for that server (or an admin rejected it): the definition is left as it was"
            );
        }
        done
    }

    /// The heartbeat's entries (see [`super::report::reports`]).
    pub fn reports(&self, name_of: &dyn Fn(u32) -> String) -> (Vec<pb::ToolPinReport>, usize) {
        // The user names (NSS lookups, which block) first, without holding the book.
        let uids: Vec<u32> = self.inner().users.keys().copied().collect();
        let names: BTreeMap<u32, String> = uids.into_iter().map(|u| (u, name_of(u))).collect();
        let inner = self.inner();
        super::report::reports(&inner.users, &|u| {
            names.get(&u).cloned().unwrap_or_else(|| format!("uid {u}"))
        })
    }

    /// `uid`'s counts: servers, pinned tools, definitions waiting for a decision.
    pub fn counts(&self, uid: u32) -> (usize, usize, usize) {
        let inner = self.inner();
        let Some(s) = inner.users.get(&uid) else {
            return (0, 0, 0);
        };
        let tools = s.servers.values().map(|e| e.tools.len()).sum();
        let pending = s
            .servers
            .values()
            .map(|e| e.added.len() + e.tools.values().filter(|t| t.pending.is_some()).count())
            .sum();
        (s.servers.len(), tools, pending)
    }

    /// The decisions kept.
    pub fn decisions(&self) -> usize {
        self.inner().decisions.len()
    }
}

/// [`PinBook::approved`] on one user's store.
fn apply_approval(store: &mut UserStore, server_name: &str, pin: &pb::PinRef, now: i64) -> bool {
    let Some(entry) = store.servers.get_mut(&pin.server_key) else {
        return false;
    };
    if entry.name != server_name {
        return false;
    }
    if let Some(t) = entry.tools.get_mut(&pin.tool) {
        return match t.pending.take_if(|p| p.digest == pin.digest && !p.rejected) {
            Some(p) => {
                t.digest = p.digest;
                t.parts = p.parts;
                t.source = Source::UserApproval;
                t.accepted = false;
                true
            }
            None => false,
        };
    }
    if !entry
        .added
        .get(&pin.tool)
        .is_some_and(|p| p.digest == pin.digest && !p.rejected)
    {
        return false;
    }
    let Some(p) = entry.added.remove(&pin.tool) else {
        return false;
    };
    entry.tools.insert(
        pin.tool.clone(),
        ToolPin {
            digest: p.digest,
            parts: p.parts,
            source: Source::UserApproval,
            accepted: false,
            first_seen_ms: now,
            pending: None,
        },
    );
    true
}
