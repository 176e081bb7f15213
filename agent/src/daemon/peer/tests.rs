// libc for fork, pipe, mmap and waitpid: the tests make real processes with real mappings.
#![allow(unsafe_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::daemon::gate::gate;

#[test]
fn a_user_sees_only_their_own_failed_checks_in_the_status() {
    let mut s = thoth_endpoint::status::Status::default();
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

/// An agent whose installed thoth is this test binary (so this process passes the check).
#[cfg(target_os = "linux")]
fn agent_of_this_binary(dir: &Path) -> Arc<crate::daemon::Shared> {
    let text = include_str!("../../../thoth-agent.example.toml");
    let mut c: thoth_endpoint::config::AgentConfig = toml::from_str(text).unwrap();
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

/// Review H1: a status note kept its whole detail (a reason as large as a memory map),
/// cloned for every local call and written to status.json every 500 ms.
#[test]
fn a_status_note_is_cut() {
    let mut s = thoth_endpoint::status::Status::default();
    s.note("PROXY_TAMPERED", "x".repeat(1 << 20));
    let kept = s.recent_events[0].detail.chars().count();
    assert!(kept <= thoth_endpoint::status::NOTE_CHARS + 1, "{kept}");
}

/// A child of this process (forked, so it runs this test binary) that has mapped one page
/// of each of `fds` and of the files at `paths` executable (fd -1: anonymous memory), until
/// dropped.
#[cfg(target_os = "linux")]
pub(super) struct Mapping(pub(super) Process);

#[cfg(target_os = "linux")]
impl Mapping {
    pub(super) fn start(fds: &[libc::c_int]) -> Mapping {
        Mapping::with(fds, &[])
    }

    pub(super) fn with(fds: &[libc::c_int], paths: &[std::ffi::CString]) -> Mapping {
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
                        || libc::mmap(std::ptr::null_mut(), 4096, prot, libc::MAP_PRIVATE, fd, 0)
                            == libc::MAP_FAILED
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

/// A connection's verdict is reported once: a policy call after an events call (whose
/// refusal of a process that is not thoth is not reported) still reports it.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_refusal_is_reported_once_when_a_policy_call_meets_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../../thoth-agent.example.toml");
    let mut c: thoth_endpoint::config::AgentConfig = toml::from_str(text).unwrap();
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
