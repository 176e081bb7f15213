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
fn start_time(pid: u32) -> Option<u64> {
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
            && thoth.parent().is_some_and(crate::proxy::source::root_owned),
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
                && crate::claude::rewrite::is_loader_variable(name))
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
                .or_insert_with(|| crate::proxy::source::root_owned(&dir))
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
    slots: Arc<tokio::sync::Semaphore>,
    owners: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    installed: Mutex<Installed>,
    running: AtomicUsize,
    peak: AtomicUsize,
    runs: AtomicUsize,
}

/// The installed `thoth` as last resolved, and the (`st_dev`, inode) of the files seen there.
#[derive(Debug, Default)]
struct Installed {
    path: Option<(Result<PathBuf, String>, Instant)>,
    known: VecDeque<(u64, u64)>,
}

/// Files remembered as the installed `thoth` (upgrades while proxies still run the old one).
const KNOWN_BINARIES: usize = 16;

impl Checks {
    /// For an agent with `config`: notes the installed `thoth` it finds now.
    pub fn new(config: &super::config::AgentConfig) -> Checks {
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
    fn installed(
        &self,
        config: &super::config::AgentConfig,
    ) -> (Result<PathBuf, String>, Vec<(u64, u64)>) {
        let cached = {
            let i = self.installed.lock().unwrap_or_else(|p| p.into_inner());
            i.path
                .as_ref()
                .filter(|(_, at)| at.elapsed() < RECHECK)
                .map(|(p, _)| p.clone())
        };
        let path = cached.unwrap_or_else(|| crate::claude::watch::canonical_thoth(config));
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
    fn owner(&self, owner: u32) -> Arc<tokio::sync::Mutex<()>> {
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
struct Running<'a>(&'a Checks);

impl<'a> Running<'a> {
    fn new(c: &'a Checks) -> Running<'a> {
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

/// Runs one check of `process` (for `owner`): one at a time per owner, [`MAX_CHECKS`] in all,
/// on a blocking thread. With the installed `thoth`'s path, or why it is not known.
async fn check(
    sh: &Arc<super::Shared>,
    process: Option<Process>,
    owner: u32,
) -> (Verdict, Option<PathBuf>) {
    // Both held by the blocking task, which runs on when the call is dropped: a caller who
    // gives up does not free a place for another check before this one ends.
    let mine = sh.peer_checks.owner(owner).lock_owned().await;
    let Ok(slot) = Arc::clone(&sh.peer_checks.slots).acquire_owned().await else {
        return (
            Verdict::Refused(Kind::Unverifiable, "the agent is stopping".into()),
            None,
        );
    };
    let shared = Arc::clone(sh);
    tokio::task::spawn_blocking(move || {
        let _held = (slot, mine);
        let c = &shared.peer_checks;
        let _running = Running::new(c);
        match c.installed(&shared.config) {
            (Ok(path), known) => (verify(process, &path, &known), Some(path)),
            (Err(e), _) => (
                Verdict::Refused(
                    Kind::Unverifiable,
                    format!("the installed thoth is not known: {e}"),
                ),
                None,
            ),
        }
    })
    .await
    .unwrap_or_else(|e| (Verdict::Refused(Kind::Unverifiable, e.to_string()), None))
}

/// The verdict on the process behind a connection: its last one while younger than
/// [`RECHECK`] (and while the process that connected still runs), else a new check.
/// With whether to report it: a refusal worth reporting for `call` (any for a policy call, a
/// tampered thoth's for events) that this connection's verdict has not been reported for.
async fn verdict_of(
    sh: &Arc<super::Shared>,
    info: Option<&ConnInfo>,
    owner: u32,
    call: Call,
) -> (Verdict, bool) {
    let reportable = |v: &Verdict| match v {
        Verdict::Refused(kind, _) => {
            call == Call::Policy || matches!(kind, Kind::LoaderVariable | Kind::Library)
        }
        _ => false,
    };
    let Some(info) = info else {
        let v = check(sh, None, owner).await.0;
        let report = reportable(&v);
        return (v, report);
    };
    let mut last = info.checked.lock().await;
    if let Some((v, at, reported)) = &mut *last
        && at.elapsed() < RECHECK
    {
        // The socket may have been handed on: the process that connected must still be there.
        #[cfg(target_os = "linux")]
        if let Some(p) = info.process
            && start_time(p.pid) != Some(p.start)
        {
            return (
                Verdict::Refused(
                    Kind::Unverifiable,
                    format!("process {} that connected has exited", p.pid),
                ),
                false,
            );
        }
        let report = !*reported && reportable(v);
        *reported |= report;
        return (v.clone(), report);
    }
    let (v, _) = check(sh, info.process, owner).await;
    let report = reportable(&v);
    *last = Some((v.clone(), Instant::now(), report));
    (v, report)
}

/// Checks the process behind a proxy call ([`verify`], off the async workers, once per
/// connection per [`RECHECK`]; `owner` is the caller's budget key, see `local::Owners`). A
/// refused one is reported as a `PROXY_TAMPERED` event (at most once an hour per owner and
/// kind, and [`MAX_RAISED`] an hour in all); a policy call from it is refused with
/// `PERMISSION_DENIED` saying why, which a proxy takes as "no policy" (it then denies every
/// call: fail closed).
pub async fn gate(
    sh: &Arc<super::Shared>,
    info: Option<&ConnInfo>,
    user: &str,
    owner: u32,
    call: Call,
) -> Result<(), tonic::Status> {
    let uid = info.and_then(ConnInfo::uid);
    let process = info.and_then(|i| i.process);
    // Events from a process that is not thoth at all are not a proxy's (tests, tools): taken
    // without a report. A tampered thoth is reported whatever it calls, once per check.
    let (verdict, report) = verdict_of(sh, info, owner, call).await;
    let Verdict::Refused(kind, reason) = verdict else {
        return Ok(());
    };
    if report && let Some(held_back) = sh.peer_reports.should_raise(owner, kind, Instant::now()) {
        let what = match call {
            Call::Policy => "policy refused",
            Call::Events => "its events are kept",
        };
        tracing::warn!(
            event = "PROXY_TAMPERED",
            user,
            pid = process.map(|p| p.pid),
            "a proxy of {user} failed the agent's check ({what}): {reason}"
        );
        let installed = sh
            .peer_checks
            .installed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .path
            .as_ref()
            .and_then(|(p, _)| p.as_ref().ok().map(|p| p.display().to_string()));
        let detail = serde_json::json!({
            "user": user,
            "uid": uid,
            "pid": process.map(|p| p.pid),
            "kind": kind.as_str(),
            "reason": reason,
            "call": match call { Call::Policy => "policy", Call::Events => "events" },
            "installedThoth": installed,
            "heldBack": held_back,
        });
        if let Some(sp) = sh.spool.get() {
            sp.append(sh.agent_event("PROXY_TAMPERED", detail));
        }
        sh.update_status(|s| s.note("PROXY_TAMPERED", format!("{user}: {reason} ({what})")));
    }
    match call {
        Call::Events => Ok(()),
        Call::Policy => Err(tonic::Status::permission_denied(format!(
            "the agent does not serve policy to this process: {reason}. Every call is denied \
             until the MCP server runs through the installed thoth without them"
        ))),
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
mod tests {
    use super::*;

    #[test]
    fn loader_variables_are_read_from_the_block() {
        let block = b"HOME=/h\0LD_PRELOAD=/tmp/x.so\0LD_AUDIT=\0LD_LIBRARY_PATH=/l\0DYLD_INSERT_LIBRARIES=/x\0";
        assert_eq!(
            loader_variables(block),
            vec!["DYLD_INSERT_LIBRARIES".to_owned(), "LD_PRELOAD".to_owned()]
        );
        assert!(loader_variables(b"PATH=/bin\0").is_empty());
    }

    #[test]
    fn findings_are_raised_once_a_period_per_user_and_kind() {
        let r = Raised::default();
        let t = Instant::now();
        assert_eq!(r.should_raise(1000, Kind::Library, t), Some(0));
        assert_eq!(r.should_raise(1000, Kind::Library, t), None);
        assert_eq!(r.should_raise(1000, Kind::LoaderVariable, t), Some(0));
        assert_eq!(r.should_raise(1001, Kind::Library, t), Some(0));
        assert_eq!(
            r.should_raise(1000, Kind::Library, t + EVENT_PERIOD),
            Some(1)
        );
    }

    #[test]
    fn a_user_sees_only_their_own_failed_checks_in_the_status() {
        let mut s = crate::daemon::status::Status::default();
        s.note(
            "PROXY_TAMPERED",
            "ann: its environment sets LD_PRELOAD (policy refused)",
        );
        s.note(
            "PROXY_TAMPERED",
            "bob: it runs /home/bob/thoth (policy refused)",
        );
        let ann = s.clone().only_for(1000, "ann");
        let notes: Vec<&str> = ann
            .recent_events
            .iter()
            .map(|n| n.detail.as_str())
            .collect();
        assert_eq!(
            notes,
            ["ann: its environment sets LD_PRELOAD (policy refused)"]
        );
        assert_eq!(s.recent_events.len(), 2);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_not_the_installed_thoth() {
        let me = Process {
            pid: std::process::id(),
            start: start_time(std::process::id()).unwrap(),
        };
        let v = verify(Some(me), Path::new("/nonexistent/thoth"), &[]);
        assert!(
            matches!(v, Verdict::Refused(Kind::NotInstalledThoth, _)),
            "{v:?}"
        );
        // A pid reused since the connection: refused as such.
        let v = verify(
            Some(Process {
                start: me.start + 1,
                ..me
            }),
            &std::env::current_exe().unwrap(),
            &[],
        );
        assert!(
            matches!(v, Verdict::Refused(Kind::Unverifiable, _)),
            "{v:?}"
        );
    }

    /// An agent whose installed thoth is this test binary (so this process passes the check).
    #[cfg(target_os = "linux")]
    fn agent_of_this_binary(dir: &Path) -> Arc<crate::daemon::Shared> {
        let text = include_str!("../../thoth-agent.example.toml");
        let mut c: crate::daemon::config::AgentConfig = toml::from_str(text).unwrap();
        c.state_dir = dir.join("state");
        c.socket_path = dir.join("agent.sock");
        c.wrap_configs = false;
        c.thoth_path = Some(std::env::current_exe().unwrap());
        crate::daemon::Shared::new(c).unwrap()
    }

    #[cfg(target_os = "linux")]
    fn conn_of_this_process() -> ConnInfo {
        ConnInfo {
            uds: tonic::transport::server::UdsConnectInfo {
                peer_addr: None,
                peer_cred: None,
            },
            process: Some(Process {
                pid: std::process::id(),
                start: start_time(std::process::id()).unwrap(),
            }),
            checked: Arc::default(),
        }
    }

    /// Review H1: every GetPolicy/WatchPolicy/EmitEvents call ran a full /proc check on a new
    /// blocking thread, with no bound on how many ran at once. Now a connection is checked once
    /// (again only after RECHECK), one owner runs one check at a time, MAX_CHECKS run in all.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_is_checked_once_and_few_checks_run_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let sh = agent_of_this_binary(dir.path());
        let conn = conn_of_this_process();
        for _ in 0..50 {
            gate(&sh, Some(&conn), "ann", 1000, Call::Policy)
                .await
                .unwrap();
        }
        assert_eq!(
            sh.peer_checks.runs(),
            1,
            "checks for 50 calls on one connection"
        );

        // 64 connections of one owner at once: one check at a time.
        let calls = (0..64).map(|_| {
            let sh = Arc::clone(&sh);
            tokio::spawn(async move {
                let conn = conn_of_this_process();
                gate(&sh, Some(&conn), "ann", 1000, Call::Events).await
            })
        });
        for c in futures_util::future::join_all(calls).await {
            c.unwrap().unwrap();
        }
        assert_eq!(sh.peer_checks.runs(), 65);
        assert_eq!(sh.peer_checks.peak(), 1, "checks of one owner at once");

        // 64 owners at once: MAX_CHECKS at most.
        let calls = (0..64u32).map(|i| {
            let sh = Arc::clone(&sh);
            tokio::spawn(async move {
                let conn = conn_of_this_process();
                gate(&sh, Some(&conn), "bob", 2000 + i, Call::Events).await
            })
        });
        for c in futures_util::future::join_all(calls).await {
            c.unwrap().unwrap();
        }
        assert_eq!(sh.peer_checks.runs(), 129);
        assert!(
            sh.peer_checks.peak() <= MAX_CHECKS,
            "{} checks at once",
            sh.peer_checks.peak()
        );
    }

    /// Review H1: a process with many long-named executable mappings made every reason (log
    /// line, event, status note, the error sent back) as large as its memory map. Now a reason
    /// names a few and counts the rest.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_reason_names_a_few_writable_libraries_and_counts_the_rest() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // ~4 KiB paths: nested directories of 250-character names.
        let mut deep = dir.path().to_path_buf();
        for i in 0..15 {
            deep.push(format!("{i:0>250}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        let mut files = Vec::new();
        for i in 0..150 {
            let f = deep.join(format!("lib{i}.so"));
            std::fs::write(&f, vec![0u8; 4096]).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
            files.push(std::fs::File::open(&f).unwrap());
        }
        let fds: Vec<libc::c_int> = files.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        let child = Mapping::start(&fds);
        let v = verify(Some(child.0), &std::env::current_exe().unwrap(), &[]);
        drop(child);
        let Verdict::Refused(Kind::Library, reason) = v else {
            panic!("{v:?}");
        };
        assert!(reason.len() < 4096, "a reason of {} bytes", reason.len());
        assert!(reason.contains("and 142 more"), "{reason}");
    }

    /// Review H1: the memory map was read whole and every executable mapping examined. Now
    /// past MAX_MAPS_BYTES or MAX_CODE_MAPPINGS the process is refused as unverifiable.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_map_too_large_to_check_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("maps");
        std::fs::write(&big, vec![b'x'; MAX_MAPS_BYTES as usize + 1]).unwrap();
        assert!(read_bounded(&big, MAX_MAPS_BYTES).unwrap().is_none());
        std::fs::write(&big, vec![b'x'; 10]).unwrap();
        assert_eq!(
            read_bounded(&big, MAX_MAPS_BYTES).unwrap().unwrap().len(),
            10
        );

        let line = |i: usize| {
            format!(
                "7f{i:010x}000-7f{i:010x}fff r-xp 00000000 fe:00 {} /usr/lib/x{i}.so\n",
                i + 1
            )
        };
        let many: String = (0..=MAX_CODE_MAPPINGS).map(line).collect();
        let proc = Path::new("/proc/self");
        assert_eq!(writable_code(proc, &many, None), Err(MAX_CODE_MAPPINGS));
        let few: String = (0..MAX_CODE_MAPPINGS).map(line).collect();
        assert!(writable_code(proc, &few, None).is_ok());
    }

    /// Review M1: a mapping whose path reads as the executable's was skipped by its name; a
    /// bind mount in a private mount namespace made any file read so. Now only the executable's
    /// own device and inode are skipped.
    #[cfg(target_os = "linux")]
    #[test]
    fn only_the_executables_own_file_is_skipped_not_its_name() {
        let maps = "7f0000000000-7f0000001000 r-xp 00000000 fe:00 999 /memfd:thoth\n\
                    7f0000002000-7f0000003000 r-xp 00000000 fe:00 123 /memfd:thoth\n";
        let bad = writable_code(Path::new("/proc/self"), maps, Some((0xfe, 0, 123))).unwrap();
        assert_eq!(bad, ["/memfd:thoth"]);
        assert_eq!(major_minor(0xfe00), (0xfe, 0));
        assert_eq!(major_minor((259 << 8) | 3), (259, 3));
    }

    /// Review M1: in a user namespace of their own (`unshare -Urm`), a user can bind any
    /// root-owned binary over the installed thoth's path and hide directories: what the agent
    /// sees of paths says nothing there. Such a process is refused as unverifiable.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_process_in_another_user_namespace_is_refused() {
        let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
        let started = |cmd| started_sleep(cmd, &sleep);
        let mut plain = std::process::Command::new(&sleep);
        plain.arg("30");
        let (mut child, p) = started(plain).unwrap();
        let v = verify(Some(p), &sleep, &[]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(v, Verdict::Verified, "the control");

        let mut inside = std::process::Command::new("unshare");
        inside.arg("-U").arg(&sleep).arg("30");
        match started(inside) {
            Ok((mut child, p)) => {
                let v = verify(Some(p), &sleep, &[]);
                child.kill().unwrap();
                child.wait().unwrap();
                assert!(
                    matches!(&v, Verdict::Refused(Kind::Unverifiable, r) if r.contains("user namespace")),
                    "{v:?}"
                );
            }
            // This system forbids unprivileged user namespaces: the attack is not open here.
            Err(status) => eprintln!("unshare -U failed ({status}): user namespaces are off"),
        }
    }

    /// Review M2: PROXY_TAMPERED was limited per raw uid, so a user's 65,536 sub-uids could
    /// raise ~260,000 events an hour, and the map of those raised never shrank. Now the caller
    /// keys by owner, MAX_RAISED are raised per period in all (the rest counted into the next
    /// one), and the map is bounded.
    #[test]
    fn tampered_reports_are_capped_over_every_owner() {
        let r = Raised::default();
        let t = Instant::now();
        let raised = (0..10_000u32)
            .filter(|u| r.should_raise(100_000 + u, Kind::Library, t).is_some())
            .count() as u64;
        assert_eq!(raised, MAX_RAISED);
        assert!(r.0.lock().unwrap().by.len() <= MAX_RAISED_KEYS);
        // The next period's first event says how many were held back.
        let next = r.should_raise(1000, Kind::Library, t + EVENT_PERIOD);
        assert_eq!(next, Some(10_000 - MAX_RAISED));
    }

    /// Review H1: a status note kept its whole detail (a reason as large as a memory map),
    /// cloned for every local call and written to status.json every 500 ms.
    #[test]
    fn a_status_note_is_cut() {
        let mut s = crate::daemon::status::Status::default();
        s.note("PROXY_TAMPERED", "x".repeat(1 << 20));
        let kept = s.recent_events[0].detail.chars().count();
        assert!(kept <= crate::daemon::status::NOTE_CHARS + 1, "{kept}");
    }

    /// A child of this process (forked, so it runs this test binary) that has mapped one page
    /// of each of `fds` and of the files at `paths` executable (fd -1: anonymous memory), until
    /// dropped.
    #[cfg(target_os = "linux")]
    struct Mapping(Process);

    #[cfg(target_os = "linux")]
    impl Mapping {
        fn start(fds: &[libc::c_int]) -> Mapping {
            Mapping::with(fds, &[])
        }

        fn with(fds: &[libc::c_int], paths: &[std::ffi::CString]) -> Mapping {
            let mut pipe = [0 as libc::c_int; 2];
            // SAFETY: pipe writes two descriptors into the array we own.
            assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
            // SAFETY: the child makes system calls only (no allocation) on data made before the
            // fork, then waits to be killed.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "{}", std::io::Error::last_os_error());
            if pid == 0 {
                unsafe {
                    for &fd in fds {
                        let flags = if fd < 0 {
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
                        } else {
                            libc::MAP_PRIVATE
                        };
                        let prot = libc::PROT_READ | libc::PROT_EXEC;
                        if libc::mmap(std::ptr::null_mut(), 4096, prot, flags, fd, 0)
                            == libc::MAP_FAILED
                        {
                            libc::_exit(1);
                        }
                    }
                    for path in paths {
                        let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                        let prot = libc::PROT_READ | libc::PROT_EXEC;
                        if fd < 0
                            || libc::mmap(
                                std::ptr::null_mut(),
                                4096,
                                prot,
                                libc::MAP_PRIVATE,
                                fd,
                                0,
                            ) == libc::MAP_FAILED
                        {
                            libc::_exit(1);
                        }
                        libc::close(fd);
                    }
                    libc::write(pipe[1], b"x".as_ptr().cast(), 1);
                    loop {
                        libc::pause();
                    }
                }
            }
            let mut byte = 0u8;
            // SAFETY: plain reads and closes of the pipe we made.
            let n = unsafe {
                libc::close(pipe[1]);
                let n = libc::read(pipe[0], (&raw mut byte).cast(), 1);
                libc::close(pipe[0]);
                n
            };
            let pid = u32::try_from(pid).unwrap();
            let m = Mapping(Process::of(pid).unwrap());
            assert_eq!(n, 1, "the child could not map its files");
            m
        }
    }

    #[cfg(target_os = "linux")]
    impl Drop for Mapping {
        fn drop(&mut self) {
            let pid = self.0.pid as libc::pid_t;
            // SAFETY: our own child, killed and reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }

    /// Review M1(b): a preloaded library could copy its code into anonymous executable memory
    /// and unmap its file; mappings no file backs were skipped. A thoth has none: now refused.
    #[cfg(target_os = "linux")]
    #[test]
    fn anonymous_executable_memory_is_refused() {
        let me = std::env::current_exe().unwrap();
        let clean = Mapping::start(&[]);
        assert_eq!(verify(Some(clean.0), &me, &[]), Verdict::Verified);
        drop(clean);
        let child = Mapping::start(&[-1]);
        let v = verify(Some(child.0), &me, &[]);
        drop(child);
        assert!(
            matches!(&v, Verdict::Refused(Kind::Library, r) if r.contains("anonymous executable memory")),
            "{v:?}"
        );
    }

    /// A connection's verdict is reported once: a policy call after an events call (whose
    /// refusal of a process that is not thoth is not reported) still reports it.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cached_refusal_is_reported_once_when_a_policy_call_meets_it() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../../thoth-agent.example.toml");
        let mut c: crate::daemon::config::AgentConfig = toml::from_str(text).unwrap();
        c.state_dir = dir.path().join("state");
        c.socket_path = dir.path().join("agent.sock");
        c.wrap_configs = false;
        c.thoth_path = Some(std::fs::canonicalize("/bin/sleep").unwrap());
        let sh = crate::daemon::Shared::new(c).unwrap();
        let conn = conn_of_this_process();
        let notes = |sh: &crate::daemon::Shared| {
            sh.status()
                .recent_events
                .iter()
                .filter(|n| n.event_type == "PROXY_TAMPERED")
                .count()
        };
        gate(&sh, Some(&conn), "ann", 1000, Call::Events)
            .await
            .unwrap();
        assert_eq!(notes(&sh), 0);
        for _ in 0..3 {
            let e = gate(&sh, Some(&conn), "ann", 1000, Call::Policy)
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
        }
        assert_eq!(notes(&sh), 1);
        assert_eq!(sh.peer_checks.runs(), 1);
    }

    /// Starts `cmd`, which ends up running `sleep` (its canonical path); waits (with a
    /// deadline) until it does. `Err` when it exits first.
    #[cfg(target_os = "linux")]
    fn started_sleep(
        mut cmd: std::process::Command,
        sleep: &Path,
    ) -> Result<(std::process::Child, Process), std::process::ExitStatus> {
        let mut child = cmd.spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            if exe.as_deref() == Some(sleep) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(status);
            }
            assert!(Instant::now() < deadline, "{pid} did not start sleep");
            std::thread::yield_now();
        }
        Ok((child, Process::of(pid).unwrap()))
    }

    /// Review M1: a mount namespace of its own (root made it, or a user inside their own user
    /// namespace): the agent's view of paths says nothing there. Refused as unverifiable.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_process_in_another_mount_namespace_is_refused() {
        let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
        let mut inside = std::process::Command::new("unshare");
        inside.arg("-m").arg(&sleep).arg("30");
        match started_sleep(inside, &sleep) {
            Ok((mut child, p)) => {
                let v = verify(Some(p), &sleep, &[]);
                child.kill().unwrap();
                child.wait().unwrap();
                assert!(
                    matches!(&v, Verdict::Refused(Kind::Unverifiable, r) if r.contains("mount namespace")),
                    "{v:?}"
                );
            }
            // Not root here: only a user namespace of one's own gives a mount namespace, which
            // the user namespace test covers.
            Err(status) => eprintln!("unshare -m failed ({status}): not root"),
        }
    }

    /// A call dropped while its check runs (the blocking check runs on) keeps its owner's
    /// place until the check ends: an owner cannot run more checks at once by giving up calls.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_call_keeps_its_owners_place_until_its_check_ends() {
        let dir = tempfile::tempdir().unwrap();
        let sh = agent_of_this_binary(dir.path());
        // A process whose check takes a while: many libraries, each in a directory of its own.
        let paths: Vec<std::ffi::CString> = (0..1500)
            .map(|i| {
                let d = dir.path().join(format!("d{i}"));
                std::fs::create_dir(&d).unwrap();
                let f = d.join("lib.so");
                std::fs::write(&f, [0u8; 4096]).unwrap();
                std::ffi::CString::new(f.into_os_string().into_encoded_bytes()).unwrap()
            })
            .collect();
        let slow = Mapping::with(&[], &paths);
        let deadline = Instant::now() + Duration::from_secs(20);
        for _ in 0..16 {
            let before = sh.peer_checks.runs();
            let call = {
                let sh = Arc::clone(&sh);
                let conn = ConnInfo {
                    process: Some(slow.0),
                    ..conn_of_this_process()
                };
                tokio::spawn(async move { gate(&sh, Some(&conn), "ann", 1000, Call::Events).await })
            };
            while sh.peer_checks.runs() == before {
                assert!(Instant::now() < deadline, "the check did not start");
                tokio::task::yield_now().await;
            }
            call.abort();
        }
        drop(slow);
        assert_eq!(sh.peer_checks.peak(), 1, "checks of one owner at once");
    }
}
