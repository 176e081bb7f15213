//! The user channel: a native dialog in the calling user's graphical session.
//!
//! [`DesktopDialog`] implements [`UserChannel`]. It shows at most one dialog at a time per OS
//! user (a second request waits its turn within its own deadline), only ever to the uid it is
//! asked for, and always as that user (never as the agent's root). Everything shown is cleaned
//! here first: no control, bidi or invisible format characters, every field cut to a readable
//! length, and the platform helper is told to show plain text (no markup).
//!
//! - Linux ([`linux`]): the session is found from the user's own processes (`/proc`); `zenity`
//!   (or `kdialog`) runs as the user with a clean environment holding only the session's display
//!   variables.
//! - macOS ([`macos`]): `osascript` in the console user's session through `launchctl asuser`;
//!   built but not verified on a Mac.
//! - Windows: not built yet; the channel says so ([`UserAnswer::Unavailable`]).

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::types::{CancelToken, Prompt, UserAnswer, UserChannel};

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "macos")]
pub mod macos;
#[cfg(windows)]
pub mod windows;

#[cfg(unix)]
mod child;
mod shown;

#[cfg(all(test, target_os = "linux"))]
use shown::hidden;
pub use shown::{ALLOW, DENY, PREVIEW_CHARS, TITLE, arguments, one_line, preview, text};

#[cfg(all(test, target_os = "linux"))]
mod tests;

/// The platform's dialog.
#[derive(Debug)]
enum Platform {
    #[cfg(target_os = "linux")]
    Linux(linux::Linux),
    #[cfg(target_os = "macos")]
    Macos(macos::Macos),
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    None,
}

/// A native dialog on the calling user's desktop; see the module docs.
#[derive(Debug)]
pub struct DesktopDialog {
    platform: Platform,
    turns: Turns,
}

impl Default for DesktopDialog {
    fn default() -> Self {
        Self::new()
    }
}

impl DesktopDialog {
    /// The system's dialog: on Linux sessions from `/proc` and zenity or kdialog from `/usr/bin`
    /// or `/bin`; on macOS `osascript`; elsewhere none (every ask is unavailable).
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        let platform = Platform::Linux(linux::Linux::system());
        #[cfg(target_os = "macos")]
        let platform = Platform::Macos(macos::Macos);
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        let platform = Platform::None;
        Self {
            platform,
            turns: Turns::default(),
        }
    }

    /// A Linux dialog with its seams set (where sessions are looked up, which helper runs).
    #[cfg(target_os = "linux")]
    pub fn linux(linux: linux::Linux) -> Self {
        Self {
            platform: Platform::Linux(linux),
            turns: Turns::default(),
        }
    }
}

impl UserChannel for DesktopDialog {
    fn ask(&self, uid: u32, req: &Prompt, deadline: Instant, cancel: CancelToken) -> UserAnswer {
        let Some(_turn) = self.turns.take(uid, deadline, &cancel) else {
            return UserAnswer::NoAnswer;
        };
        if cancel.is_cancelled() || Instant::now() >= deadline {
            return UserAnswer::NoAnswer;
        }
        match &self.platform {
            #[cfg(target_os = "linux")]
            Platform::Linux(l) => l.ask(uid, req, deadline, &cancel),
            #[cfg(target_os = "macos")]
            Platform::Macos(m) => m.ask(uid, req, deadline, &cancel),
            #[cfg(not(any(target_os = "linux", target_os = "macos")))]
            Platform::None => {
                let _ = req;
                unsupported()
            }
        }
    }
}

/// The answer where no dialog is built.
#[cfg(windows)]
fn unsupported() -> UserAnswer {
    windows::unavailable()
}

/// The answer where no dialog is built.
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn unsupported() -> UserAnswer {
    UserAnswer::Unavailable("no approval dialog on this operating system".into())
}

/// Whose dialog is up: one at a time per uid.
#[derive(Debug, Default)]
struct Turns {
    busy: Mutex<HashSet<u32>>,
    freed: Condvar,
}

/// A uid's turn; ends on drop.
struct Turn<'a> {
    turns: &'a Turns,
    uid: u32,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut busy = self.turns.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.remove(&self.uid);
        self.turns.freed.notify_all();
    }
}

impl Turns {
    /// Waits for `uid`'s turn until `deadline` or `cancel`; `None` when it did not come.
    fn take(&self, uid: u32, deadline: Instant, cancel: &CancelToken) -> Option<Turn<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if busy.insert(uid) {
                return Some(Turn { turns: self, uid });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            // Cancellation has its own condvar: look at it again at least every 100 ms.
            let slice = left.min(Duration::from_millis(100));
            busy = self
                .freed
                .wait_timeout(busy, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
