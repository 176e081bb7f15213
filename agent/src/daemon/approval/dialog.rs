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

use super::{CancelToken, Prompt, UserAnswer, UserChannel};

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "macos")]
pub mod macos;
#[cfg(windows)]
pub mod windows;

#[cfg(unix)]
mod child;

#[cfg(all(test, target_os = "linux"))]
mod tests;

/// The dialog's window title (tests find the window by it).
pub const TITLE: &str = "Thoth: approval needed";
/// The button that lets the call through.
pub const ALLOW: &str = "Allow";
/// The button that refuses it (the default button: Return or Escape deny).
pub const DENY: &str = "Deny";
/// The most characters of the argument preview shown.
pub const PREVIEW_CHARS: usize = 800;
/// The most characters of a name (client, server, tool) shown.
const NAME_CHARS: usize = 120;
/// The most characters of the policy's reason shown.
const REASON_CHARS: usize = 300;
/// The most lines of the argument preview shown.
const PREVIEW_LINES: usize = 20;

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

/// Whether `c` is never shown: control characters (C0, DEL, C1), bidi controls, and invisible
/// format characters that could hide or reorder what the user reads.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c as u32,
            0x00AD
                | 0x034F
                | 0x061C
                | 0x115F
                | 0x1160
                | 0x17B4
                | 0x17B5
                | 0x180B..=0x180F
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x206F
                | 0x3164
                | 0xFE00..=0xFE0F
                | 0xFEFF
                | 0xFFA0
                | 0xFFF0..=0xFFFB
                | 0xE0000..=0xE0FFF
        )
}

/// `s` on one line, hidden characters dropped (tabs and line breaks become spaces), cut to
/// `max` characters with an ellipsis.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        let c = match c {
            '\t' | '\n' | '\r' | '\u{2028}' | '\u{2029}' => ' ',
            c if hidden(c) => continue,
            c => c,
        };
        if n == max {
            out.push('…');
            break;
        }
        out.push(c);
        n += 1;
    }
    out
}

/// The argument preview as shown: hidden characters dropped (line breaks kept, at most
/// [`PREVIEW_LINES`] lines), cut to `max` characters with an ellipsis.
pub fn preview(s: &str, max: usize) -> String {
    let mut out = String::new();
    let (mut n, mut lines) = (0, 1);
    for c in s.chars() {
        let c = match c {
            '\r' => continue,
            '\n' | '\u{2028}' | '\u{2029}' => '\n',
            '\t' => ' ',
            c if hidden(c) => continue,
            c => c,
        };
        if c == '\n' {
            lines += 1;
        }
        if n == max || lines > PREVIEW_LINES {
            out.push('…');
            break;
        }
        out.push(c);
        n += 1;
    }
    out
}

/// What an approval covers, in words.
fn covers(remember: &str) -> String {
    match remember {
        "" | "once" => "Allow lets this exact call run once.".into(),
        "session" => "Allow lets this exact call run again for the rest of this session.".into(),
        d => format!(
            "Allow lets this exact call run again for {}.",
            one_line(d, 16)
        ),
    }
}

/// The dialog's text (plain; the helper is told not to read markup).
pub fn text(req: &Prompt, seconds_left: u64) -> String {
    let client = one_line(&req.client_name, NAME_CHARS);
    let who = if client.trim().is_empty() {
        "An AI assistant".to_owned()
    } else {
        format!("The AI assistant \"{client}\"")
    };
    let mut t = format!(
        "{who} wants to call a tool that needs your approval.\n\n\
         Server: {}\nTool: {}\n",
        one_line(&req.server, NAME_CHARS),
        one_line(&req.tool, NAME_CHARS),
    );
    let reason = one_line(&req.reason, REASON_CHARS);
    if !reason.trim().is_empty() {
        t.push_str(&format!("Why: {reason}\n"));
    }
    let args = preview(&req.content, PREVIEW_CHARS);
    t.push_str("Arguments:\n");
    t.push_str(if args.trim().is_empty() {
        "(none)"
    } else {
        &args
    });
    t.push_str(&format!(
        "\n\n{}\nNo answer within {seconds_left} s denies it.\nApproval {}",
        covers(&req.remember),
        one_line(&req.approval_id, 64),
    ));
    t
}

/// Seconds from now to `deadline`, rounded to the nearest (at least 1): what the dialog's own
/// timeout is set to.
#[cfg(unix)]
fn seconds_left(deadline: Instant) -> u64 {
    let ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    u64::try_from(ms.saturating_add(500) / 1000)
        .unwrap_or(u64::MAX)
        .max(1)
}
