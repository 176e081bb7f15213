//! What the guardian knows (every managed host file of every user, the directories it watches,
//! what it last saw and reported per file) and what it does: discover, route watch events,
//! rediscover (rate-limited), and bring one file to the wrapped state, reporting what it did
//! (`process`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use thoth_endpoint::status::ConfigStatus;
use thoth_hosts::clients::claude_code;
use thoth_hosts::file;
use thoth_hosts::format::{self, Found, Op};
use thoth_hosts::host::{Host, HostFilter, Os, home_owner};
use thoth_proto::EventType;

use super::drift::Servers;
use super::{ConfigReport, clean, managed};

mod process;

/// Rediscovery after a directory event runs at most this often (a busy directory must not make
/// the guardian re-read every host's files in a loop).
pub(super) const REDISCOVER_EVERY: Duration = Duration::from_millis(500);
/// A file its host rewrites itself (Claude Code's `~/.claude.json`, saved many times a second)
/// is processed at most this often; the last change is always processed.
pub(super) const SELF_WRITER_GAP: Duration = Duration::from_millis(100);
/// Attempts at a file that changed while it was being rewritten (a host holding its lock) in
/// one pass, at most.
const RACE_ATTEMPTS: u32 = 5;
/// No attempt at such a file starts this long after its pass began: one attempt waits up to
/// 300 ms for the host's lock, so one file holds the guardian's thread (every user's files)
/// well under a second.
const RETRY_WITHIN: Duration = Duration::from_millis(500);
/// A file whose every attempt raced is processed again this long after its last pass.
const CONTENDED_RETRY: Duration = Duration::from_secs(1);
/// After this long of nothing but raced attempts at a file (its host's lock held or refreshed
/// all along), it is rewritten without the lock ([`Guardian::lock_grace`]).
pub(super) const LOCK_GRACE: Duration = Duration::from_secs(30);
/// MCP_SERVER_UNGOVERNED events raised for one file in one pass at most (the rest on later
/// passes): a hostile file with thousands of remote entries must not flood the spool.
const MAX_UNGOVERNED_EVENTS: usize = 100;
/// Ungoverned servers remembered (reported once each) over every file at most.
const MAX_UNGOVERNED_KNOWN: usize = 10_000;
/// Directories watched per home at most (Claude Code's projects, VS Code's workspaces); files in
/// the others are still checked by the periodic pass.
const MAX_WATCHED_PER_HOME: usize = 256;

/// Where a file belongs: its host and the home it was found in.
#[derive(Clone)]
pub(crate) struct Place {
    /// The host whose file it is.
    pub(crate) host: &'static dyn Host,
    /// The user's home.
    pub(crate) home: PathBuf,
    /// The home's owner when the file was found (the file was theirs then); the file is read
    /// and rewritten only while it is still theirs (a link swapped in since is refused).
    pub(crate) owner: Option<u32>,
    /// The home's user, as events name them ([`user_of`]).
    pub(crate) user: String,
}

impl Place {
    fn new(host: &'static dyn Host, home: &Path, owner: Option<u32>, user: &str) -> Place {
        Place {
            host,
            home: home.to_path_buf(),
            owner,
            user: user.to_owned(),
        }
    }
}

/// The files of `host` in `home`, as `thoth_hosts::host::discover` lists them (none when the
/// home's owner is unknown): every one is read and rewritten only as the home's owner
/// (`home_owner`), so a file of anyone else — a user's `~/.cursor` pointing into another
/// user's home — is seen, refused with its reason, and never read on this user's behalf.
fn owned_files(host: &dyn Host, home: &Path, home_owner: Option<u32>, os: Os) -> Vec<PathBuf> {
    if home_owner.is_none() {
        return Vec::new();
    }
    host.files(home, os)
}

/// What the guardian remembers about one file.
#[derive(Default)]
struct Known {
    /// The servers as last seen wrapped (label → entry).
    servers: Option<Servers>,
    /// The text of an invalid file already reported (report once per content).
    invalid_reported: Option<String>,
    /// Entries whose `env` sets loader variables, as last reported (report once per change).
    loader_reported: Vec<String>,
    /// Servers reported MCP_SERVER_UNGOVERNED (label → reason): again only when the reason
    /// changes.
    ungoverned: BTreeMap<String, String>,
    /// Some were left unreported by the bounds: the periodic check processes the file again.
    more_ungoverned: bool,
    /// Since when every attempt at rewriting the file has raced (none: the last one did not).
    raced_since: Option<Instant>,
}

/// A watched directory: which (home, host id) pairs it may hold files of (none: the users
/// root), and the directory it was when watched (device, inode; a replaced directory is
/// watched again).
struct Watched {
    id: (u64, u64),
    owners: BTreeSet<(PathBuf, &'static str)>,
}

/// What identifies a file's content without reading it (device, inode, size, change time). The
/// change time cannot be set back by a user (any write or `utimes` moves it), so an edit is
/// never mistaken for the file last processed.
type Stamp = (u64, u64, u64, i64, i64);

#[cfg(unix)]
fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec()))
}

#[cfg(not(unix))]
fn stamp(_: &Path) -> Option<Stamp> {
    None
}

#[cfg(unix)]
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).ok().filter(|m| m.is_dir())?;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    dir.is_dir().then_some((0, 0))
}

/// The login name of `uid` (its passwd entry), if it has one.
fn login_name(uid: u32) -> Option<String> {
    #[cfg(unix)]
    {
        crate::daemon::local::login_name(uid)
    }
    #[cfg(not(unix))]
    {
        let _ = uid;
        None
    }
}

/// The user a home belongs to: the login name of the home's owner (what a user's own status is
/// filtered by: a home need not be named after its login, `/Users/Ann.Smith`), else (the uid has
/// no passwd entry, or ownership is not known here) the home directory's name.
pub(crate) fn user_of(home: &Path) -> String {
    home_owner(home).and_then(login_name).unwrap_or_else(|| {
        home.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| home.display().to_string())
    })
}

/// Whether the host is Claude Desktop (or its extensions): `claude_restart_command` and
/// `restart_needed` are theirs.
fn is_claude_app(host: &dyn Host) -> bool {
    matches!(host.id(), "claude-desktop" | "claude-extension")
}

/// The servers of a file's text as its host runs them; `None` when it does not parse.
fn found_of(host: &dyn Host, path: &Path, text: &str) -> Option<Vec<Found>> {
    let found = format::entries(text, &host.format(path)).ok()?;
    Some(host.servers(path, text, found, Os::current()))
}

/// Raises an event about one client's file: the detail's control characters (server names
/// and paths come from users' files) escaped, so it stays one line wherever it is shown.
fn raise<R: ConfigReport>(sh: &R, event_type: EventType, client: &str, detail: String) {
    sh.raise(event_type, client, clean(&detail, usize::MAX));
}

/// The guardian: every managed file, what it knows of each, and the watches.
pub(crate) struct Guardian<R: ConfigReport> {
    pub(crate) sh: Arc<R>,
    thoth: String,
    extra: Vec<String>,
    op: Op,
    /// The hosts managed now (the agent's settings ∩ the policy).
    filter: HostFilter,
    watcher: Option<notify::RecommendedWatcher>,
    /// Every managed host file found: path → host and home.
    pub(crate) files: BTreeMap<PathBuf, Place>,
    known: BTreeMap<PathBuf, Known>,
    pub(crate) statuses: BTreeMap<PathBuf, ConfigStatus>,
    watched: BTreeMap<PathBuf, Watched>,
    /// Each file as it was when last processed: a rediscovery or the periodic check skips a
    /// file still exactly so.
    processed: HashMap<PathBuf, Stamp>,
    /// When each file was last processed (see [`SELF_WRITER_GAP`]).
    last_run: HashMap<PathBuf, Instant>,
    /// Files to process (a watch event or a rediscovery found them changed), with the cause.
    dirty: BTreeMap<PathBuf, &'static str>,
    /// Homes (and which of their hosts) to rediscover.
    pending: BTreeMap<PathBuf, BTreeSet<&'static str>>,
    last_discovery: Option<Instant>,
    /// How long a file's rewrites may keep racing (its host's lock held against the agent)
    /// before it is rewritten without the lock: [`LOCK_GRACE`] (lowered in tests).
    pub(crate) lock_grace: Duration,
    /// How long a file's rewrites must have raced before its status says "locked" (Claude
    /// Code's own saves race for milliseconds: the status must not flap on a busy machine).
    pub(crate) locked_after: Duration,
}

impl<R: ConfigReport> Guardian<R> {
    /// A guardian wrapping with `thoth` and `extra`, watching with `watcher` (none in tests:
    /// events are then fed by hand).
    pub(crate) fn new(
        sh: Arc<R>,
        thoth: String,
        extra: Vec<String>,
        watcher: Option<notify::RecommendedWatcher>,
    ) -> Guardian<R> {
        let filter = managed(sh.config(), sh.policy_clients().as_deref());
        Guardian {
            op: Op::wrap_strict(thoth.clone(), extra.clone()),
            sh,
            thoth,
            extra,
            filter,
            watcher,
            files: BTreeMap::new(),
            known: BTreeMap::new(),
            statuses: BTreeMap::new(),
            watched: BTreeMap::new(),
            processed: HashMap::new(),
            last_run: HashMap::new(),
            dirty: BTreeMap::new(),
            pending: BTreeMap::new(),
            last_discovery: None,
            lock_grace: LOCK_GRACE,
            locked_after: Duration::from_secs(2),
        }
    }

    fn users_root(&self) -> PathBuf {
        self.sh.config().users_root.clone().unwrap_or_else(|| {
            PathBuf::from(if cfg!(target_os = "macos") {
                "/Users"
            } else {
                "/home"
            })
        })
    }

    /// Whether `path` is exactly as it was last processed.
    fn unchanged(&self, path: &Path) -> bool {
        let now = stamp(path);
        now.is_some() && self.processed.get(path) == now.as_ref()
    }

    /// Discovers everything, then processes every file (`only_changed`: only those changed
    /// since they were last processed). The managed hosts are recomputed first (a policy may
    /// have changed them); files of hosts no longer managed are forgotten, not touched.
    pub(crate) fn full_pass(&mut self, cause: &'static str, only_changed: bool) {
        let filter = managed(self.sh.config(), self.sh.policy_clients().as_deref());
        if filter != self.filter {
            tracing::info!(
                clients = %filter.hosts().iter().map(|h| h.id()).collect::<Vec<_>>().join(", "),
                "the managed MCP clients changed"
            );
            self.filter = filter;
        }
        for path in self.discover_all() {
            if only_changed && self.unchanged(&path) {
                continue;
            }
            self.process(&path, cause);
        }
    }

    /// Finds every file of every managed host of every home, and watches their directories.
    fn discover_all(&mut self) -> Vec<PathBuf> {
        let os = Os::current();
        let homes = file::homes(self.sh.config().users_root.as_deref());
        let mut files: BTreeMap<PathBuf, Place> = BTreeMap::new();
        let mut dirs: BTreeMap<PathBuf, BTreeSet<(PathBuf, &'static str)>> = BTreeMap::new();
        for home in &homes {
            let home_owner = home_owner(home);
            let user = user_of(home);
            for host in self.filter.hosts() {
                for f in owned_files(host, home, home_owner, os) {
                    files
                        .entry(f)
                        .or_insert_with(|| Place::new(host, home, home_owner, &user));
                }
                for d in host.watch_dirs(home, os) {
                    dirs.entry(d).or_default().insert((home.clone(), host.id()));
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !files.contains_key(*p))
            .cloned()
            .collect();
        for p in &gone {
            self.forget(p);
        }
        self.files = files;
        dirs.entry(self.users_root()).or_default();
        let stale: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|d| !dirs.contains_key(*d))
            .cloned()
            .collect();
        for d in stale {
            self.unwatch(&d);
        }
        for (d, owners) in dirs {
            self.watch(d, owners, false);
        }
        self.pending.clear();
        self.last_discovery = Some(Instant::now());
        self.files.keys().cloned().collect()
    }

    fn unwatch(&mut self, dir: &Path) {
        if self.watched.remove(dir).is_some()
            && let Some(w) = &mut self.watcher
        {
            // A directory already gone has lost its watch: the error says only that.
            let _ = w.unwatch(dir);
        }
    }

    /// Watches `dir` (when it exists) for `owners` (`merge`: added to the owners it has). A
    /// directory replaced since it was watched (an extension's update) is watched again.
    fn watch(&mut self, dir: PathBuf, owners: BTreeSet<(PathBuf, &'static str)>, merge: bool) {
        let Some(id) = dir_id(&dir) else {
            self.unwatch(&dir);
            return;
        };
        if let Some(w) = self.watched.get_mut(&dir) {
            if w.id == id {
                if merge {
                    w.owners.extend(owners);
                } else {
                    w.owners = owners;
                }
                return;
            }
            self.unwatch(&dir);
        }
        if let Some((home, _)) = owners.iter().next() {
            let in_home = self
                .watched
                .values()
                .filter(|w| w.owners.iter().any(|(h, _)| h == home))
                .count();
            if in_home >= MAX_WATCHED_PER_HOME {
                tracing::debug!(dir = %dir.display(), "not watched: {MAX_WATCHED_PER_HOME} directories of this home are");
                return;
            }
        }
        if let Some(w) = &mut self.watcher
            && let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %dir.display(), "cannot watch: {e}");
            return;
        }
        tracing::debug!(dir = %dir.display(), "watching an MCP client directory");
        self.watched.insert(dir, Watched { id, owners });
    }

    /// Asks for `home`'s files of `host` (every managed host: `None`) to be found again.
    fn pend(&mut self, home: PathBuf, host: Option<&'static str>) {
        let ids = self.pending.entry(home).or_default();
        match host {
            Some(id) => {
                ids.insert(id);
            }
            None => ids.extend(self.filter.hosts().iter().map(|h| h.id())),
        }
    }

    /// Routes one watch event's path: a known file is processed; a new or replaced entry of a
    /// watched directory makes its owners' files be found again. In a home or a project (busy
    /// directories watched for Claude Code alone) only Claude Code's own files, and in a home a
    /// new directory (a client's first start), matter: everything else is ignored at once.
    pub(crate) fn on_event(&mut self, p: &Path) {
        if self.files.contains_key(p) {
            self.dirty
                .entry(p.to_path_buf())
                .or_insert("the file changed");
            return;
        }
        if let Some(w) = self.watched.get(p) {
            // The directory itself was replaced or removed (an extension's update).
            let owners: Vec<_> = w.owners.iter().cloned().collect();
            for (home, id) in owners {
                self.pend(home, Some(id));
            }
            return;
        }
        let Some(dir) = p.parent() else { return };
        if dir == self.users_root() {
            // A new (or removed) home.
            self.pend(p.to_path_buf(), None);
            return;
        }
        let Some(w) = self.watched.get(dir) else {
            return;
        };
        let owners: Vec<(PathBuf, &'static str)> = w.owners.iter().cloned().collect();
        let claude_code_only = !owners.is_empty()
            && owners
                .iter()
                .all(|(_, id)| *id == claude_code::ClaudeCode.id());
        if claude_code_only {
            let name = p.file_name().unwrap_or_default();
            if name == claude_code::USER_FILE || name == claude_code::PROJECT_FILE {
                for (home, id) in owners {
                    self.pend(home, Some(id));
                }
            } else if let Some((home, _)) = owners.iter().find(|(h, _)| h == dir)
                && !name.to_string_lossy().ends_with(".lock")
                && p.is_dir()
            {
                self.pend(home.clone(), None);
            }
            return;
        }
        for (home, id) in owners {
            self.pend(home, Some(id));
        }
    }

    /// When the guardian has work due next (a rate-limited rediscovery, a throttled file).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let rediscover = (!self.pending.is_empty()).then(|| {
            self.last_discovery
                .map_or_else(Instant::now, |t| t + REDISCOVER_EVERY)
        });
        let files = self
            .dirty
            .keys()
            .map(|p| self.due(p).unwrap_or_else(Instant::now))
            .min();
        rediscover.into_iter().chain(files).min()
    }

    /// When a changed file may be processed: `None` at once; a file whose last pass raced
    /// throughout waits [`CONTENDED_RETRY`], and a file its host rewrites itself
    /// [`SELF_WRITER_GAP`], after its last processing.
    fn due(&self, path: &Path) -> Option<Instant> {
        let contended = self
            .known
            .get(path)
            .is_some_and(|k| k.raced_since.is_some());
        match (self.files.get(path), self.last_run.get(path)) {
            (Some(_), Some(t)) if contended => Some(*t + CONTENDED_RETRY),
            (Some(place), Some(t)) if place.host.rewrites_itself() => Some(*t + SELF_WRITER_GAP),
            _ => None,
        }
    }

    /// Finds the pending homes' files again (at most every [`REDISCOVER_EVERY`]); new and
    /// replaced files are processed next.
    pub(crate) fn rediscover_pending(&mut self) {
        if self.pending.is_empty()
            || self
                .last_discovery
                .is_some_and(|t| t.elapsed() < REDISCOVER_EVERY)
        {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        self.last_discovery = Some(Instant::now());
        let os = Os::current();
        for (home, ids) in pending {
            let exists = home.is_dir();
            let home_owner = home_owner(&home);
            let user = user_of(&home);
            for host in self.filter.hosts() {
                if !ids.contains(host.id()) {
                    continue;
                }
                let now = if exists {
                    owned_files(host, &home, home_owner, os)
                } else {
                    Vec::new()
                };
                let old: Vec<PathBuf> = self
                    .files
                    .iter()
                    .filter(|(p, pl)| {
                        pl.home == home && pl.host.id() == host.id() && !now.contains(p)
                    })
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in old {
                    self.files.remove(&p);
                    self.forget(&p);
                }
                for p in now {
                    if self
                        .files
                        .get(&p)
                        .is_some_and(|pl| pl.host.id() != host.id())
                    {
                        continue;
                    }
                    self.files
                        .insert(p.clone(), Place::new(host, &home, home_owner, &user));
                    if !self.unchanged(&p) {
                        self.dirty.entry(p).or_insert("a new or replaced file");
                    }
                }
                if exists {
                    for d in host.watch_dirs(&home, os) {
                        self.watch(d, BTreeSet::from([(home.clone(), host.id())]), true);
                    }
                }
            }
        }
    }

    /// Processes the changed files that are due.
    pub(crate) fn process_dirty(&mut self) {
        let now = Instant::now();
        let due: Vec<(PathBuf, &'static str)> = self
            .dirty
            .iter()
            .filter(|(p, _)| self.due(p).is_none_or(|t| t <= now))
            .map(|(p, c)| (p.clone(), *c))
            .collect();
        for (p, cause) in due {
            self.dirty.remove(&p);
            self.process(&p, cause);
        }
    }

    /// Drops what is known of a file (gone, or its host no longer managed: left as it is).
    pub(super) fn forget(&mut self, path: &Path) {
        self.known.remove(path);
        self.processed.remove(path);
        self.last_run.remove(path);
        self.dirty.remove(path);
        if self.statuses.remove(path).is_some() {
            self.publish_status();
        }
    }

    pub(super) fn publish_status(&self) {
        self.sh
            .config_status(self.statuses.values().cloned().collect());
    }
}
