//! Joining a thread with a time limit.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Waits for a thread to finish, at most `limit`; `false` if it did not (it is left running).
pub(crate) fn join_within<T: Send + 'static>(
    handle: thread::JoinHandle<T>,
    limit: Duration,
) -> bool {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = handle.join();
        let _ = tx.send(());
    });
    rx.recv_timeout(limit).is_ok()
}
