//! Helpers shared by the tests that run the real `thoth` binary (the proxy crate's, and the
//! agent's `proxy_check`, which includes this file).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `thoth` binary: Cargo's for the proxy crate's own tests; for another crate's tests (the
/// agent's include this file), the one `cargo build --workspace --bins` put beside their
/// `deps/` folder.
pub(crate) fn thoth() -> std::path::PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_thoth") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..")
        .join("thoth");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// One `tools/call` a test sends.
pub(crate) const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/tmp/x"}}}"#;

/// Runs `thoth run --server s ARGS -- cat` in `dir` with `env` (and none of the runner's
/// `THOTH_*` or loader variables; pending events kept in `dir`), sends [`CALL`]; returns (the
/// first line back, the proxy's log).
pub(crate) fn one_call(
    dir: &Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &std::ffi::OsStr)],
) -> (Value, String) {
    let mut cmd = Command::new(thoth());
    cmd.arg("run")
        .args(["--server", "s"])
        .args(args)
        .args(["--", "cat"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("THOTH_") || k == "LD_PRELOAD" || k.starts_with("DYLD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", dir).env("XDG_STATE_HOME", dir.join("xdg"));
    cmd.env("THOTH_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{CALL}").unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("an answer within 30 s");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "thoth run did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}\n{err}")),
        err,
    )
}
