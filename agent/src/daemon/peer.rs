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
//!   file (`memfd`).
//!
//! Not covered: code injected after the check by a process of the same user (ptrace, which the
//! kernel allows between processes of one user unless Yama forbids it), a library an
//! administrator installed in a root-owned directory, and other systems than Linux, where no
//! check is made ([`verify`] answers `Unchecked`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the local endpoint knows about a connection: tonic's Unix-socket information, and the
/// process that connected, identified when the connection was accepted.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Peer address and credentials.
    #[cfg(unix)]
    pub uds: tonic::transport::server::UdsConnectInfo,
    /// The connecting process (pid and start time), when it could be identified.
    pub process: Option<Process>,
}

/// A process, identified by pid and start time (so a reused pid is a different process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    /// Its pid, in the agent's pid namespace.
    pub pid: u32,
    /// Its start time (clock ticks after boot, `/proc/<pid>/stat` field 22).
    pub start: u64,
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

/// Checks the process behind a connection against the installed `thoth` at `thoth`
/// (blocking: reads `/proc`).
#[cfg(target_os = "linux")]
pub fn verify(process: Option<Process>, thoth: &Path) -> Verdict {
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
    // The executable.
    let exe_link = match std::fs::read_link(proc.join("exe")) {
        Ok(l) => l,
        Err(e) => return unverifiable("the executable", e),
    };
    match exe_is_thoth(&proc.join("exe"), &exe_link, thoth) {
        Ok(true) => {}
        Ok(false) => found.push((
            Kind::NotInstalledThoth,
            format!(
                "it runs {}, not the installed thoth ({})",
                exe_link.display(),
                thoth.display()
            ),
        )),
        Err(e) => return unverifiable("the executable", e),
    }
    // The environment block it started with.
    let environ = match std::fs::read(proc.join("environ")) {
        Ok(b) => b,
        Err(e) => return unverifiable("the environment", e),
    };
    let vars = loader_variables(&environ);
    if !vars.is_empty() {
        found.push((
            Kind::LoaderVariable,
            format!("its environment sets {}", vars.join(", ")),
        ));
    }
    // The code it has mapped.
    let maps = match std::fs::read_to_string(proc.join("maps")) {
        Ok(m) => m,
        Err(e) => return unverifiable("the memory map", e),
    };
    let bad = writable_code(&proc, &maps, &exe_link);
    if !bad.is_empty() {
        found.push((
            Kind::Library,
            format!(
                "it runs code from {} (a non-root user can write there)",
                bad.join(", ")
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
pub fn verify(_process: Option<Process>, _thoth: &Path) -> Verdict {
    Verdict::Unchecked
}

/// Whether the executable behind `exe` (`/proc/<pid>/exe`, whose target is `link`) is the
/// installed `thoth`: the same file, or (after an upgrade replaced it while the proxy ran) a
/// deleted root-owned file that was at that path in a root-owned directory.
#[cfg(target_os = "linux")]
fn exe_is_thoth(exe: &Path, link: &Path, thoth: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let running = std::fs::metadata(exe)?;
    if let Ok(installed) = std::fs::metadata(thoth)
        && (installed.dev(), installed.ino()) == (running.dev(), running.ino())
    {
        return Ok(true);
    }
    let replaced = format!("{} (deleted)", thoth.display());
    Ok(link.as_os_str() == replaced.as_str()
        && running.uid() == 0
        && running.mode() & 0o022 == 0
        && thoth.parent().is_some_and(crate::proxy::source::root_owned))
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
/// write, or anonymous (`memfd`). The executable itself (`exe`) is judged by [`exe_is_thoth`].
#[cfg(target_os = "linux")]
fn writable_code(proc: &Path, maps: &str, exe: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut dirs: HashMap<PathBuf, bool> = HashMap::new();
    let mut bad: Vec<String> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path (the path may hold spaces)
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(_), Some(_), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = f.next().unwrap_or("").trim_start();
        if !perms.contains('x') || inode == "0" || !path.starts_with('/') {
            continue;
        }
        if Path::new(path) == exe || bad.iter().any(|b| b == path) {
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
    bad
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

/// Checks the process behind a proxy call ([`verify`], off the async workers). A refused one
/// is reported as a `PROXY_TAMPERED` event (at most once an hour per user and kind); a policy
/// call from it is refused with `PERMISSION_DENIED` saying why, which a proxy takes as "no
/// policy" (it then denies every call: fail closed).
pub async fn gate(
    sh: &std::sync::Arc<super::Shared>,
    info: Option<&ConnInfo>,
    user: &str,
    call: Call,
) -> Result<(), tonic::Status> {
    let uid = info.and_then(ConnInfo::uid);
    let process = info.and_then(|i| i.process);
    let thoth = crate::claude::watch::thoth_path(sh);
    let verdict = match &thoth {
        Ok(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || verify(process, &path))
                .await
                .unwrap_or_else(|e| Verdict::Refused(Kind::Unverifiable, e.to_string()))
        }
        Err(e) => Verdict::Refused(
            Kind::Unverifiable,
            format!("the installed thoth is not known: {e}"),
        ),
    };
    let Verdict::Refused(kind, reason) = verdict else {
        return Ok(());
    };
    // Events from a process that is not thoth at all are not a proxy's (tests, tools): taken
    // without a report. A tampered thoth is reported whatever it calls.
    let report = call == Call::Policy || matches!(kind, Kind::LoaderVariable | Kind::Library);
    if report
        && let Some(held_back) =
            sh.peer_reports
                .should_raise(uid.unwrap_or(u32::MAX), kind, Instant::now())
    {
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
        let detail = serde_json::json!({
            "user": user,
            "uid": uid,
            "pid": process.map(|p| p.pid),
            "kind": kind.as_str(),
            "reason": reason,
            "call": match call { Call::Policy => "policy", Call::Events => "events" },
            "installedThoth": thoth.as_ref().ok().map(|p| p.display().to_string()),
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

/// How often the same finding for the same user is raised as an event.
pub const EVENT_PERIOD: Duration = Duration::from_secs(3600);

/// Which findings were raised lately, per (uid, kind), to raise each at most once a period
/// (the rest are counted and said in the next one).
#[derive(Debug, Default)]
pub struct Raised(Mutex<HashMap<(u32, Kind), (Instant, u64)>>);

impl Raised {
    /// Whether to raise `kind` for `uid` now; with how many were held back since the last one.
    pub fn should_raise(&self, uid: u32, kind: Kind, now: Instant) -> Option<u64> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 4096 {
            m.retain(|_, (t, _)| now.duration_since(*t) < EVENT_PERIOD);
        }
        match m.get_mut(&(uid, kind)) {
            Some((t, held)) if now.duration_since(*t) < EVENT_PERIOD => {
                *held += 1;
                None
            }
            Some((t, held)) => {
                let n = *held;
                *t = now;
                *held = 0;
                Some(n)
            }
            None => {
                m.insert((uid, kind), (now, 0));
                Some(0)
            }
        }
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
        let v = verify(Some(me), Path::new("/nonexistent/thoth"));
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
        );
        assert!(
            matches!(v, Verdict::Refused(Kind::Unverifiable, _)),
            "{v:?}"
        );
    }
}
