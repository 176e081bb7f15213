use super::*;
use crate::daemon::gate::gate;

#[test]
fn loader_variables_are_read_from_the_block() {
    let block =
        b"HOME=/h\0LD_PRELOAD=/tmp/x.so\0LD_AUDIT=\0LD_LIBRARY_PATH=/l\0DYLD_INSERT_LIBRARIES=/x\0";
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
    let mut s = thoth_endpoint::status::Status::default();
    s.note("PROXY_TAMPERED", "x".repeat(1 << 20));
    let kept = s.recent_events[0].detail.chars().count();
    assert!(kept <= thoth_endpoint::status::NOTE_CHARS + 1, "{kept}");
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
