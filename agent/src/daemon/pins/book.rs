//! The agent's pin book: every user's store (by OS uid; a user never sees or changes
//! another's), the admins' decisions, and what shadowing remembers; loaded from the state
//! directory's `pins/` (0700) on first use, each changed file written atomically (0600).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::SystemTime;

use thoth_proto::fleet as pb;

use super::check::{Checked, check};
use super::decisions::{self, Decisions};
use super::report::Reports;
use super::shadow::{Shadowed, Shadows};
use super::store::{self, Source, ToolPin, UserStore};

/// The decisions' file name in the pins directory.
const DECISIONS_FILE: &str = "decisions.json";

/// A store (or the decisions) in memory: changed since written, and how many times encoded.
#[derive(Default)]
struct Kept<T> {
    data: T,
    dirty: bool,
    seq: u64,
}

/// One user's pins. Lock order: the decisions, then `kept`; `written` then `kept`. File IO
/// happens under `written` only (never under `kept` or a lock shared by users), and a write
/// whose `seq` is older than the last one written is dropped: an older state never lands
/// after a newer one.
#[derive(Default)]
struct User {
    kept: Mutex<Kept<UserStore>>,
    /// The `seq` last written.
    written: Mutex<u64>,
}

struct Inner {
    users: Mutex<BTreeMap<u32, Arc<User>>>,
    decisions: RwLock<Kept<Decisions>>,
    decisions_written: Mutex<u64>,
    shadows: Mutex<Shadows>,
}

/// Every user's pins.
pub struct PinBook {
    dir: PathBuf,
    inner: OnceLock<Inner>,
    flush_scheduled: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

fn user(store: UserStore) -> Arc<User> {
    Arc::new(User {
        kept: Mutex::new(Kept {
            data: store,
            ..Kept::default()
        }),
        written: Mutex::new(0),
    })
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
                    users.insert(uid, user(s));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(
                        uid,
                        file = %ent.path().display(),
                        "the pinned tools file cannot be used ({e}): this user starts with no pins"
                    );
                    users.insert(uid, user(UserStore::default()));
                }
            }
        }
    }
    let decisions = Decisions::load(&dir.join(DECISIONS_FILE)).unwrap_or_else(|e| {
        tracing::warn!("the admins' pin decisions file cannot be used ({e}): starting empty");
        Decisions::default()
    });
    Inner {
        users: Mutex::new(users),
        decisions: RwLock::new(Kept {
            data: decisions,
            ..Kept::default()
        }),
        decisions_written: Mutex::new(0),
        shadows: Mutex::new(Shadows::default()),
    }
}

/// Writes `u`'s store (bounded: servers evicted to fit, counted and logged): encoded under its
/// lock, written outside it; dropped when a newer state was written meanwhile.
fn save_user(dir: &Path, uid: u32, u: &User, keep: &str) {
    let (bytes, seq, evicted) = {
        let mut k = lock(&u.kept);
        k.dirty = false;
        k.seq += 1;
        let (bytes, evicted) = k.data.encode(keep);
        (bytes, k.seq, evicted)
    };
    if evicted > 0 {
        tracing::warn!(
            uid,
            evicted,
            "pinned tools over {} bytes: the least recently seen servers holding no \
             admin-accepted pin were evicted",
            store::MAX_FILE_BYTES
        );
    }
    if bytes.is_empty() {
        tracing::warn!(
            uid,
            "pinned tools over {} bytes with nothing left to drop: not written",
            store::MAX_FILE_BYTES
        );
        return;
    }
    let mut written = lock(&u.written);
    if *written >= seq {
        return;
    }
    match store::save(&user_file(dir, uid), &bytes) {
        Ok(()) => *written = seq,
        Err(e) => {
            tracing::warn!(uid, "cannot write the pinned tools: {e}");
            lock(&u.kept).dirty = true;
        }
    }
}

impl Inner {
    fn user(&self, uid: u32) -> Arc<User> {
        Arc::clone(lock(&self.users).entry(uid).or_default())
    }

    fn existing(&self, uid: u32) -> Option<Arc<User>> {
        lock(&self.users).get(&uid).cloned()
    }

    fn all(&self) -> Vec<(u32, Arc<User>)> {
        lock(&self.users)
            .iter()
            .map(|(u, a)| (*u, Arc::clone(a)))
            .collect()
    }

    fn decisions(&self) -> std::sync::RwLockReadGuard<'_, Kept<Decisions>> {
        self.decisions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn decisions_mut(&self) -> std::sync::RwLockWriteGuard<'_, Kept<Decisions>> {
        self.decisions.write().unwrap_or_else(|p| p.into_inner())
    }

    fn save_decisions(&self, dir: &Path) {
        let (bytes, seq) = {
            let mut d = self.decisions_mut();
            if !d.dirty {
                return;
            }
            d.dirty = false;
            d.seq += 1;
            (d.data.encode(), d.seq)
        };
        let mut written = lock(&self.decisions_written);
        if *written >= seq {
            return;
        }
        match store::save(&dir.join(DECISIONS_FILE), &bytes) {
            Ok(()) => *written = seq,
            Err(e) => {
                tracing::warn!("cannot write the admins' pin decisions: {e}");
                self.decisions_mut().dirty = true;
            }
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

    fn inner(&self) -> &Inner {
        self.inner.get_or_init(|| load_all(&self.dir))
    }

    /// Loads the files now (at start: a corrupt one is logged then).
    pub fn load(&self) {
        self.inner();
    }

    /// Checks a list for `uid` (see [`check`]): the verdict, and the tool names another server
    /// of the same user and client offers too (newly). The user's file is written when it
    /// changed (outside every lock another user's check needs). Blocking (file IO).
    pub fn check(&self, uid: u32, req: &pb::ToolListCheck) -> (pb::ToolListVerdict, Vec<Shadowed>) {
        let inner = self.inner();
        let u = inner.user(uid);
        let (verdict, dirty) = {
            let decisions = inner.decisions();
            let mut k = lock(&u.kept);
            let Checked {
                verdict,
                dirty,
                evicted,
            } = check(&mut k.data, &decisions.data, req, now_ms());
            if evicted > 0 {
                tracing::warn!(
                    uid,
                    evicted,
                    "over {} servers with pinned tools: the least recently seen were evicted",
                    store::MAX_SERVERS
                );
            }
            k.dirty |= dirty;
            (verdict, k.dirty)
        };
        if dirty {
            save_user(&self.dir, uid, &u, &verdict.server_key);
        }
        let names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
        let shadowed = lock(&inner.shadows).observe(uid, &req.client, &req.server_name, &names);
        (verdict, shadowed)
    }

    /// Records an admin's decision and applies it to every user's store, in memory; the files
    /// are written by [`PinBook::flush`]. Whether anything changed; `Err` when it is ignored.
    pub fn decide(&self, d: &pb::PinDecision) -> Result<bool, String> {
        decisions::checked(d)?;
        let inner = self.inner();
        let mut changed = {
            let mut kept = inner.decisions_mut();
            let changed = kept.data.record(d);
            kept.dirty |= changed;
            changed
        };
        let now = now_ms();
        for (_, u) in inner.all() {
            let mut k = lock(&u.kept);
            if decisions::apply(&mut k.data, d, now) {
                k.dirty = true;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Writes every changed file. Blocking.
    pub fn flush(&self) {
        let inner = self.inner();
        inner.save_decisions(&self.dir);
        for (uid, u) in inner.all() {
            if lock(&u.kept).dirty {
                save_user(&self.dir, uid, &u, "");
            }
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
        let inner = self.inner();
        let done = {
            let decisions = inner.decisions();
            let rejected =
                decisions.data.get(&pin.server_key, &pin.tool, &pin.digest) == Some(false);
            !rejected
                && inner.existing(uid).is_some_and(|u| {
                    let mut k = lock(&u.kept);
                    let done = apply_approval(&mut k.data, server_name, pin, now_ms());
                    k.dirty |= done;
                    done
                })
        };
        if !done {
            tracing::info!(
                uid,
                "an approval names a tool definition this user's store does not hold as pending \
                 for that server (or an admin rejected it): the definition is left as it was"
            );
        }
        done
    }

    /// The heartbeat's entries (see [`Reports`]), each user's store locked in turn.
    pub fn reports(&self, name_of: &dyn Fn(u32) -> String) -> (Vec<pb::ToolPinReport>, usize) {
        let users = self.inner().all();
        // The user names (NSS lookups, which block) first, without holding any store.
        let names: Vec<String> = users.iter().map(|(u, _)| name_of(*u)).collect();
        let mut out = Reports::default();
        for ((_, u), name) in users.iter().zip(names) {
            out.add(&name, &lock(&u.kept).data);
        }
        out.finish()
    }

    /// `uid`'s counts: servers, pinned tools, definitions waiting for a decision.
    pub fn counts(&self, uid: u32) -> (usize, usize, usize) {
        let Some(u) = self.inner().existing(uid) else {
            return (0, 0, 0);
        };
        let k = lock(&u.kept);
        let s = &k.data;
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
        self.inner().decisions().data.len()
    }

    /// Runs `f` while `uid`'s file is held as if a write of it were under way (tests: a slow
    /// disk).
    #[cfg(test)]
    pub(super) fn with_write_held<R>(&self, uid: u32, f: impl FnOnce() -> R) -> R {
        let u = self.inner().user(uid);
        let _held = lock(&u.written);
        f()
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
