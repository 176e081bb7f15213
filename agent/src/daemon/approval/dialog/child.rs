//! Running a dialog helper: spawn, wait for its exit, the deadline or a cancel, and kill it when
//! it is no longer wanted.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::super::types::CancelToken;

/// The most bytes kept of the helper's stdout and stderr.
const KEEP: usize = 4096;
/// How often a running helper is looked at.
const POLL: Duration = Duration::from_millis(50);

/// How a helper run ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// It exited by itself: its code (`None`: killed by a signal), stdout and stderr (heads).
    Exited {
        code: Option<i32>,
        #[cfg_attr(not(target_os = "macos"), allow(dead_code))]
        stdout: String,
        stderr: String,
    },
    /// Cancelled: it was killed.
    Cancelled,
    /// Still up past the deadline (plus grace): it was killed.
    Overdue,
    /// It could not be started.
    NotStarted(std::io::Error),
}

/// Reads up to [`KEEP`] bytes of `r` (then drains the rest) on a thread.
fn head<R: Read + Send + 'static>(r: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::sync_channel(1);
    if let Some(r) = r {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut r = r;
            let _ = r.by_ref().take(KEEP as u64).read_to_end(&mut buf);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
    }
    rx
}

/// Kills and reaps `child`.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` (stdin from /dev/null, stdout and stderr captured) until it exits, `cancel`, or
/// `deadline + grace`.
pub(super) fn run(
    mut cmd: Command,
    deadline: Instant,
    grace: Duration,
    cancel: &CancelToken,
) -> Ended {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ended::NotStarted(e),
    };
    let out = head(child.stdout.take());
    let err = head(child.stderr.take());
    let give_up = deadline + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                // The pipes close with the helper; a grandchild holding them is not waited for.
                let wait = Duration::from_millis(500);
                return Ended::Exited {
                    code: status.code(),
                    stdout: out.recv_timeout(wait).unwrap_or_default(),
                    stderr: err.recv_timeout(wait).unwrap_or_default(),
                };
            }
            Ok(None) => {}
            Err(_) => {
                kill(&mut child);
                return Ended::Overdue;
            }
        }
        if Instant::now() >= give_up {
            kill(&mut child);
            return Ended::Overdue;
        }
        if cancel.wait_timeout(POLL) {
            kill(&mut child);
            return Ended::Cancelled;
        }
    }
}

/// The first line of a helper's stderr worth showing (bounded, cleaned).
pub(super) fn first_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    super::shown::one_line(line, 200)
}
