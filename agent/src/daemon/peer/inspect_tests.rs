use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
#[cfg(target_os = "linux")]
use crate::daemon::peer::tests::Mapping;

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
