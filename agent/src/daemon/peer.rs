//! Checking a proxy from outside. A proxy's own refusal of loader variables (`thoth run`) runs
//! inside the process it protects, so a preloaded library that `unsetenv`s itself, or a loader
//! variable set for the whole session, gets past it. Before the agent serves policy (or takes
//! events), it looks at the calling process itself (Linux: `/proc/<pid>`):
//!
//! - the process is the one that connected: its pid comes from the socket's credentials
//!   (`SO_PEERPIDFD` when the kernel has it), and its start time, read when the connection was
//!   accepted, must still match, so a pid reused after the connecting process exited is not
//!   mistaken for it;
//! - its executable is the installed `thoth` (the agent's `thoth_path`, same device and inode; a
//!   root-owned binary replaced by an upgrade while the proxy runs also counts);
//! - its original environment block (`/proc/<pid>/environ`, which still shows a variable the
//!   process removed from its own environment later) names no `LD_PRELOAD`, `LD_AUDIT` or
//!   `DYLD_*`;
//! - no executable mapping (`/proc/<pid>/maps`) comes from a file a non-root user owns or can
//!   write, or from a directory a non-root user can write (this also covers `LD_LIBRARY_PATH`,
//!   and a library that also wiped its name from the environment block), or from an anonymous
//!   file (`memfd`), and no executable memory is anonymous (a `thoth` has none).
//!
//! - it shares the agent's user namespace, and the agent's or pid 1's mount namespace (inside a
//!   user namespace of their own, `unshare -Urm`, a user can bind any binary over a path; what
//!   the agent sees of paths would say nothing).
//!
//! A connection is checked when it first calls and again only after [`RECHECK`] (an open
//! `WatchPolicy` stream on that timer too); between checks a call only confirms that the
//! process that connected still runs. Checks are bounded: [`MAX_CHECKS`] at once, one per owner
//! (a login user with their sub-uids), the memory map and environment read up to a size, and a
//! reason names a few findings and counts the rest.
//!
//! This is a tripwire for naive or accidental preloads, not a boundary against a process of the
//! same user. Not covered: code injected after the check (ptrace, which the kernel allows
//! between processes of one user unless Yama forbids it), caught only if still visible at the
//! next check; a library that scrubs its traces (overwrites its `LD_PRELOAD=` bytes in the
//! environment block, then writes its code into a private, copy-on-write mapping of a
//! root-owned file and unmaps its own: the map shows only root's file); a process that connects and hands the socket on (a tampered parent makes the socket,
//! its child connects and then execs the installed thoth with a clean environment: the peer
//! credentials name the child, which passes, while the parent speaks on the socket; the agent
//! cannot tell which process writes to a shared socket); a library an administrator installed
//! in a root-owned directory; and other systems than Linux, where no check is made ([`verify`]
//! answers `Unchecked`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a connection's verdict holds: a connection is checked when it first calls, and
/// again only once this has passed (an open `WatchPolicy` stream too, on a timer).
pub const RECHECK: Duration = Duration::from_secs(60);
/// Checks running at once over every connection (each reads `/proc` on a blocking thread); one
/// owner (login user with their sub-uids) runs at most one at a time.
pub const MAX_CHECKS: usize = 3;
/// Most bytes of `/proc/<pid>/maps` read; a larger map is refused as unverifiable (a `thoth`
/// maps some tens of KiB).
pub const MAX_MAPS_BYTES: u64 = 1 << 20;
/// Most executable file mappings examined; more are refused as unverifiable.
pub const MAX_CODE_MAPPINGS: usize = 2048;
/// Most bytes of `/proc/<pid>/environ` read; a larger block is refused as unverifiable.
pub const MAX_ENVIRON_BYTES: u64 = 4 << 20;
/// Names (paths, variables) a refusal's reason lists; the rest are counted.
const MAX_NAMED: usize = 8;
/// Longest name (in characters) a reason lists as it is; longer ones are cut.
const MAX_NAME_CHARS: usize = 256;

/// What the local endpoint knows about a connection: tonic's Unix-socket information, and the
/// process that connected, identified when the connection was accepted.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Peer address and credentials.
    #[cfg(unix)]
    pub uds: tonic::transport::server::UdsConnectInfo,
    /// The connecting process (pid and start time), when it could be identified.
    pub process: Option<Process>,
    /// This connection's last verdict, when it was reached, and whether it was reported
    /// (shared by its calls: one check in flight per connection, none again before
    /// [`RECHECK`]).
    pub checked: Arc<tokio::sync::Mutex<Option<(Verdict, Instant, bool)>>>,
}

/// A process, identified by pid and start time (so a reused pid is a different process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    /// Its pid, in the agent's pid namespace.
    pub pid: u32,
    /// Its start time (clock ticks after boot, `/proc/<pid>/stat` field 22).
    pub start: u64,
}

impl Process {
    /// The process with `pid` now (its start time read), if it runs.
    #[cfg(target_os = "linux")]
    pub fn of(pid: u32) -> Option<Process> {
        Some(Process {
            pid,
            start: start_time(pid)?,
        })
    }
}

impl ConnInfo {
    /// The peer's uid.
    pub fn uid(&self) -> Option<u32> {
        #[cfg(unix)]
        {
            self.uds.peer_cred.map(|c| c.uid())
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// The information for a freshly accepted connection.
    #[cfg(unix)]
    pub fn of(stream: &tokio::net::UnixStream) -> ConnInfo {
        use tonic::transport::server::Connected as _;
        let uds = stream.connect_info();
        let pid = uds
            .peer_cred
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok());
        ConnInfo {
            uds,
            process: pid.and_then(|pid| identify(stream, pid)),
            checked: Arc::default(),
        }
    }
}

/// The connecting process's start time. With `SO_PEERPIDFD` (Linux 6.5), the pid file
/// descriptor says whether the connecting process still has that pid while its start time is
/// read; without it, the pid is taken as it is (reuse between connect and accept is the only gap).
#[cfg(target_os = "linux")]
fn identify(stream: &tokio::net::UnixStream, pid: u32) -> Option<Process> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `fd`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &mut len,
        )
    };
    let pidfd = (rc == 0 && fd >= 0).then(|| {
        // SAFETY: the kernel gave us this new descriptor; we own it from here.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    let alive = |pidfd: &OwnedFd| {
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Pid:"))
                    .map(|v| v.trim() == pid.to_string())
            })
    };
    if let Some(p) = &pidfd
        && alive(p) == Some(false)
    {
        return None;
    }
    let start = start_time(pid)?;
    if let Some(p) = &pidfd
        && alive(p) == Some(false)
    {
        return None;
    }
    Some(Process { pid, start })
}

#[cfg(all(unix, not(target_os = "linux")))]
fn identify(_stream: &tokio::net::UnixStream, pid: u32) -> Option<Process> {
    Some(Process { pid, start: 0 })
}

/// Field 22 of `/proc/<pid>/stat` (after the parenthesised command name, which may hold spaces).
#[cfg(target_os = "linux")]
pub(super) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')': field 3 (state) is the first; field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What a check found wrong, by kind (events are limited per user and kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The process is not the installed `thoth`.
    NotInstalledThoth,
    /// Loader variables in its original environment.
    LoaderVariable,
    /// Code mapped from a file or directory a non-root user can write.
    Library,
    /// The process could not be examined.
    Unverifiable,
}

impl Kind {
    /// A short stable name (in event details).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NotInstalledThoth => "not_installed_thoth",
            Kind::LoaderVariable => "loader_variable",
            Kind::Library => "library",
            Kind::Unverifiable => "unverifiable",
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The installed `thoth`, untampered as far as can be seen from outside.
    Verified,
    /// Not checked on this system.
    Unchecked,
    /// Refused: the first kind found, and everything found.
    Refused(Kind, String),
}

/// A name as a reason lists it: at most [`MAX_NAME_CHARS`] characters.
fn clip(name: &str) -> String {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        None => name.to_owned(),
        Some((i, _)) => format!("{}…", &name[..i]),
    }
}

/// The first [`MAX_NAMED`] of `names` (each clipped), and how many more there are.
fn list(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(MAX_NAMED)
        .map(|n| clip(n))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_NAMED {
        out.push_str(&format!(" and {} more", names.len() - MAX_NAMED));
    }
    out
}

/// At most `limit` bytes of the file at `path`; `None` when it holds more.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut out)?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

/// The `(major, minor)` device numbers of `dev` (an `st_dev`), as `/proc/<pid>/maps` shows them.
fn major_minor(dev: u64) -> (u64, u64) {
    (
        ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
        (dev & 0xff) | ((dev >> 12) & !0xff),
    )
}

/// A file's identity as `/proc/<pid>/maps` shows it: device (major, minor) and inode.
type FileId = (u64, u64, u64);

#[cfg(target_os = "linux")]
fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    let (major, minor) = major_minor(m.dev());
    (major, minor, m.ino())
}

/// Checks the process behind a connection against the installed `thoth` at `thoth`; `known`
/// holds the (`st_dev`, inode) pairs the agent has seen at that path (so a proxy still running
/// a binary an upgrade replaced is recognised). Blocking: reads `/proc`, within bounds
/// ([`MAX_MAPS_BYTES`], [`MAX_CODE_MAPPINGS`], [`MAX_ENVIRON_BYTES`]).
#[cfg(target_os = "linux")]
pub fn verify(process: Option<Process>, thoth: &Path, known: &[(u64, u64)]) -> Verdict {
    let Some(p) = process else {
        return Verdict::Refused(
            Kind::Unverifiable,
            "the calling process could not be identified (it exited, or runs in another pid \
             namespace)"
                .into(),
        );
    };
    let proc = PathBuf::from(format!("/proc/{}", p.pid));
    let mut found: Vec<(Kind, String)> = Vec::new();
    let unverifiable = |what: &str, e: std::io::Error| {
        Verdict::Refused(
            Kind::Unverifiable,
            format!("cannot read {what} of process {}: {e}", p.pid),
        )
    };
    let too_large = |what: &str| {
        Verdict::Refused(
            Kind::Unverifiable,
            format!("{what} of process {} is too large to check", p.pid),
        )
    };
    // Its namespaces: an unprivileged user can remount (bind another binary over the installed
    // thoth's path, hide a directory) only inside a user namespace of their own, where this
    // agent's view of paths says nothing. A proxy Claude Desktop starts runs in the agent's.
    if let Some(why) = other_namespace(&proc) {
        return Verdict::Refused(Kind::Unverifiable, why);
    }
    // The executable.
    let exe_link = match std::fs::read_link(proc.join("exe")) {
        Ok(l) => l,
        Err(e) => return unverifiable("the executable", e),
    };
    let exe = match exe_is_thoth(&proc.join("exe"), &exe_link, thoth, known) {
        Ok((true, id)) => Some(id),
        Ok((false, _)) => {
            found.push((
                Kind::NotInstalledThoth,
                format!(
                    "it runs {}, not the installed thoth ({})",
                    clip(&exe_link.display().to_string()),
                    thoth.display()
                ),
            ));
            None
        }
        Err(e) => return unverifiable("the executable", e),
    };
    // The environment block it started with.
    let environ = match read_bounded(&proc.join("environ"), MAX_ENVIRON_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => return too_large("the environment"),
        Err(e) => return unverifiable("the environment", e),
    };
    let vars = loader_variables(&environ);
    drop(environ);
    if !vars.is_empty() {
        found.push((
            Kind::LoaderVariable,
            format!("its environment sets {}", list(&vars)),
        ));
    }
    // The code it has mapped.
    let maps = match read_bounded(&proc.join("maps"), MAX_MAPS_BYTES) {
        Ok(Some(m)) => match String::from_utf8(m) {
            Ok(m) => m,
            Err(e) => return unverifiable("the memory map", std::io::Error::other(e)),
        },
        Ok(None) => return too_large("the memory map"),
        Err(e) => return unverifiable("the memory map", e),
    };
    let bad = match writable_code(&proc, &maps, exe) {
        Ok(bad) => bad,
        Err(n) => {
            return Verdict::Refused(
                Kind::Unverifiable,
                format!(
                    "process {} maps code from over {n} places, too many to check",
                    p.pid
                ),
            );
        }
    };
    drop(maps);
    if !bad.is_empty() {
        found.push((
            Kind::Library,
            format!(
                "it runs code from {} (a non-root user can write there)",
                list(&bad)
            ),
        ));
    }
    // Still the process that connected (not a pid reused since)?
    if start_time(p.pid) != Some(p.start) {
        return Verdict::Refused(
            Kind::Unverifiable,
            format!("process {} exited while it was checked", p.pid),
        );
    }
    match found.first() {
        None => Verdict::Verified,
        Some((kind, _)) => Verdict::Refused(
            *kind,
            found
                .iter()
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// Not checked on other systems (macOS: no `/proc`; a `proc_pidpath` and `DYLD_*` check would
/// go here).
#[cfg(not(target_os = "linux"))]
pub fn verify(_process: Option<Process>, _thoth: &Path, _known: &[(u64, u64)]) -> Verdict {
    Verdict::Unchecked
}

/// Why the process at `proc` does not share the agent's user namespace, or its mount namespace
/// with the agent or with pid 1 (the agent's service may have a mount namespace of its own), if
/// it does not.
#[cfg(target_os = "linux")]
fn other_namespace(proc: &Path) -> Option<String> {
    let ns = |dir: &Path, which: &str| std::fs::read_link(dir.join("ns").join(which)).ok();
    let me = Path::new("/proc/self");
    if let Some(mine) = ns(me, "user")
        && ns(proc, "user").as_ref() != Some(&mine)
    {
        return Some(
            "it runs in another user namespace than the agent (a proxy Claude Desktop starts \
             runs in the agent's)"
                .into(),
        );
    }
    if let Some(mine) = ns(me, "mnt") {
        let theirs = ns(proc, "mnt");
        if theirs.is_none()
            || (theirs.as_ref() != Some(&mine) && theirs != ns(Path::new("/proc/1"), "mnt"))
        {
            return Some(
                "it runs in another mount namespace than the system's (a proxy Claude Desktop \
                 starts runs in the system's)"
                    .into(),
            );
        }
    }
    None
}

/// Whether the executable behind `exe` (`/proc/<pid>/exe`, whose target is `link`) is the
/// installed `thoth`: the same file, or (after an upgrade replaced it while the proxy ran) a
/// deleted (no links left) root-owned file the agent saw at that path (`known`), or, for one it
/// did not see (the agent restarted since), that was at that path in a root-owned directory.
/// With the file's identity as the memory map shows it.
#[cfg(target_os = "linux")]
fn exe_is_thoth(
    exe: &Path,
    link: &Path,
    thoth: &Path,
    known: &[(u64, u64)],
) -> std::io::Result<(bool, FileId)> {
    use std::os::unix::fs::MetadataExt;
    let running = std::fs::metadata(exe)?;
    let id = file_id(&running);
    if let Ok(installed) = std::fs::metadata(thoth)
        && (installed.dev(), installed.ino()) == (running.dev(), running.ino())
    {
        return Ok((true, id));
    }
    // A bind mount or another link of a root-owned binary has links left; a replaced one not.
    let replaced_root_file =
        running.nlink() == 0 && running.uid() == 0 && running.mode() & 0o022 == 0;
    if !replaced_root_file {
        return Ok((false, id));
    }
    if known.contains(&(running.dev(), running.ino())) {
        return Ok((true, id));
    }
    let replaced = format!("{} (deleted)", thoth.display());
    Ok((
        link.as_os_str() == replaced.as_str()
            && thoth
                .parent()
                .is_some_and(thoth_endpoint::state::root_owned),
        id,
    ))
}

/// The loader variables set (non-empty) in a NUL-separated environment block.
/// `LD_LIBRARY_PATH` is judged by what was loaded from it ([`writable_code`]), as `thoth run`
/// does: test runners set it to directories holding nothing of ours.
fn loader_variables(environ: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|b| *b == b'=')?;
            let name = std::str::from_utf8(&kv[..eq]).ok()?;
            (eq + 1 < kv.len()
                && name != "LD_LIBRARY_PATH"
                && thoth_hosts::claude::rewrite::is_loader_variable(name))
            .then(|| name.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The files of executable mappings in `maps` (of the process at `proc`) that a non-root user
/// could have written: owned by one, writable by group or others, in a directory one can
/// write, or anonymous (`memfd`); and executable memory no file backs. The executable itself (`exe`: device and inode, as the map
/// shows them) is judged by [`exe_is_thoth`]. `Err` with the limit when there are more than
/// [`MAX_CODE_MAPPINGS`] executable file mappings.
#[cfg(target_os = "linux")]
fn writable_code(proc: &Path, maps: &str, exe: Option<FileId>) -> Result<Vec<String>, usize> {
    use std::os::unix::fs::MetadataExt;
    let mut dirs: HashMap<PathBuf, bool> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut bad: Vec<String> = Vec::new();
    let mut code = 0usize;
    for line in maps.lines() {
        // address perms offset dev inode path (the path may hold spaces)
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(_), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = f.next().unwrap_or("").trim_start();
        if !perms.contains('x') {
            continue;
        }
        // Executable memory no file backs (a `thoth` has none; a library that copied its code
        // there and unmapped its file has). The kernel's own (`[vdso]`) are not.
        if inode == "0" && (path.is_empty() || path.starts_with("[anon")) {
            if seen.insert("") {
                bad.push("anonymous executable memory".to_owned());
            }
            continue;
        }
        if inode == "0" || !path.starts_with('/') {
            continue;
        }
        code += 1;
        if code > MAX_CODE_MAPPINGS {
            return Err(MAX_CODE_MAPPINGS);
        }
        let id = dev.split_once(':').and_then(|(major, minor)| {
            Some((
                u64::from_str_radix(major, 16).ok()?,
                u64::from_str_radix(minor, 16).ok()?,
                inode.parse::<u64>().ok()?,
            ))
        });
        if id.is_some() && id == exe {
            continue;
        }
        if !seen.insert(path) {
            continue;
        }
        let name = path.strip_suffix(" (deleted)").unwrap_or(path);
        let file_ok = if name.starts_with("/memfd:") {
            false
        } else {
            // The mapped file itself (root only may read these links), else the file now at
            // its path.
            let meta = std::fs::metadata(proc.join("map_files").join(range))
                .or_else(|_| std::fs::metadata(name));
            match meta {
                Ok(m) => m.uid() == 0 && m.mode() & 0o022 == 0,
                // Gone since: its directory decides.
                Err(_) => true,
            }
        };
        let mut dir_ok = || {
            let dir = Path::new(name)
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
            *dirs
                .entry(dir.clone())
                .or_insert_with(|| thoth_endpoint::state::root_owned(&dir))
        };
        if !(file_ok && dir_ok()) {
            bad.push(path.to_owned());
        }
    }
    Ok(bad)
}

/// Which call a process makes: policy is served to a verified proxy only; events are taken from
/// anyone (they are evidence of what a process did), and a tampered `thoth` is reported either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `GetPolicy` or `WatchPolicy`.
    Policy,
    /// `EmitEvents`.
    Events,
}

/// What the checks of every connection share: the installed `thoth` (its canonical path,
/// resolved at most once per [`RECHECK`], and the files seen there), and the bounds on checks
/// running at once ([`MAX_CHECKS`] in all, one per owner).
#[derive(Debug)]
pub struct Checks {
    pub(super) slots: Arc<tokio::sync::Semaphore>,
    owners: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    pub(super) installed: Mutex<Installed>,
    running: AtomicUsize,
    peak: AtomicUsize,
    runs: AtomicUsize,
}

/// The installed `thoth` as last resolved, and the (`st_dev`, inode) of the files seen there.
#[derive(Debug, Default)]
pub(super) struct Installed {
    pub(super) path: Option<(Result<PathBuf, String>, Instant)>,
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
    pub(super) fn installed(
        &self,
        config: &thoth_endpoint::config::AgentConfig,
    ) -> (Result<PathBuf, String>, Vec<(u64, u64)>) {
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
    pub(super) fn owner(&self, owner: u32) -> Arc<tokio::sync::Mutex<()>> {
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
pub(super) struct Running<'a>(&'a Checks);

impl<'a> Running<'a> {
    pub(super) fn new(c: &'a Checks) -> Running<'a> {
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
#[path = "peer_tests.rs"]
mod tests;
