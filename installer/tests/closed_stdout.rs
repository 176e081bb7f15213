//! `thoth-installer … | head` ends quietly when the reader goes away (issue 13, finding 18),
//! instead of panicking in `println!` on EPIPE; an install still finishes.

#![cfg(unix)]

use std::process::Command;

/// Runs `cmd` with its stdout a pipe whose reading end is already closed (`… | head` after
/// `head` has exited): the program must end quietly — success, or killed by SIGPIPE as a shell
/// filter is — and never panic.
fn assert_quiet_into_closed_pipe(mut cmd: std::process::Command) {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{cmd:?}: {stderr}"
    );
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{cmd:?} ended with {:?}: {stderr}",
        out.status
    );
}

#[test]
fn thoth_installer_ends_quietly_when_its_reader_has_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thoth-installer"));
    cmd.args(["service", "--platform", "linux", "--prefix"])
        .arg(dir.path())
        .env_remove("THOTH_INSTALLER_PLATFORM");
    assert_quiet_into_closed_pipe(cmd);
}
