//! Every Thoth CLI ends quietly when its reader goes away (`… | head`; issue 13, finding 18),
//! instead of panicking in `println!` on EPIPE: `thoth`, `thoth-agent`, `thothctl`,
//! `thoth-controller` and `thoth-installer`, the built binaries.

#![cfg(unix)]

use std::process::Command;

use thoth_e2e::fleet::bin;

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

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/examples")
}

#[test]
fn thoth_ends_quietly_when_its_reader_has_gone() {
    let mut cmd = Command::new(bin("thoth"));
    cmd.args(["policy", "validate"])
        .arg(examples().join("database.yaml"));
    assert_quiet_into_closed_pipe(cmd);
}

#[test]
fn thoth_agent_ends_quietly_when_its_reader_has_gone() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "controller_url = \"https://127.0.0.1:9\"\ntenant = \"acme\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"{}\"\nstate_dir = \"{}\"\n",
            "ab".repeat(32),
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                    .verifying_key()
                    .to_bytes()
            ),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin("thoth-agent"));
    cmd.args(["check-config", "--config"]).arg(&config);
    assert_quiet_into_closed_pipe(cmd);
}

#[test]
fn thothctl_ends_quietly_when_its_reader_has_gone() {
    let examples = examples();
    let mut cmd = Command::new(bin("thothctl"));
    cmd.args(["policy", "validate"]);
    for f in std::fs::read_dir(&examples).unwrap() {
        cmd.arg(f.unwrap().path());
    }
    assert_quiet_into_closed_pipe(cmd);
}

#[test]
fn thoth_controller_ends_quietly_when_its_reader_has_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("thoth-controller"));
    cmd.args(["init", "--data"]).arg(dir.path().join("data"));
    assert_quiet_into_closed_pipe(cmd);
}

#[test]
fn thoth_installer_ends_quietly_when_its_reader_has_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("thoth-installer"));
    cmd.args(["service", "--platform", "linux", "--prefix"])
        .arg(dir.path())
        .env_remove("THOTH_INSTALLER_PLATFORM");
    assert_quiet_into_closed_pipe(cmd);
}
