//! The process behind a local connection: identified (pid and start time) when the connection is
//! accepted, so that a pid reused later is not taken for it.

// libc for getsockopt(SO_PEERPIDFD): rustix has no wrapper for this socket option yet.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use super::verdict::Verdict;

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
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')': field 3 (state) is the first; field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}
