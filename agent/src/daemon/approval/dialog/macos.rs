//! The macOS dialog: `osascript` in the console user's session, started through
//! `launchctl asuser <uid> sudo -u #<uid>` so it runs as the user in their GUI bootstrap
//! namespace. The text, title and timeout are passed as arguments to a fixed script
//! (`on run argv`), never spliced into AppleScript source.
//!
//! Not verified on a Mac: built from the documented behaviour of `launchctl asuser`, `sudo` and
//! `display dialog` (which returns `gave up:true` when `giving up after` passes).

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use super::super::types::{CancelToken, Prompt, UserAnswer};
use super::child::{self, Ended};

/// The fixed script: argv is (text, title, seconds, allow label, deny label).
pub const SCRIPT: &str = r#"on run argv
set r to display dialog (item 1 of argv) with title (item 2 of argv) buttons {(item 5 of argv), (item 4 of argv)} default button (item 5 of argv) giving up after ((item 3 of argv) as integer) with icon caution
if gave up of r then return "timeout"
return "button:" & (button returned of r)
end run"#;

/// The macOS dialog.
#[derive(Debug, Clone, Copy, Default)]
pub struct Macos;

/// The command that shows `req` to `uid` (named `user`) for `secs` seconds.
pub fn command(uid: u32, req: &Prompt, secs: u64) -> Command {
    let mut cmd = Command::new("/bin/launchctl");
    cmd.args(["asuser", &uid.to_string(), "/usr/bin/sudo", "-n", "-u"])
        .arg(format!("#{uid}"))
        .args(["/usr/bin/osascript", "-e", SCRIPT])
        .arg(super::shown::text(req, secs))
        .arg(super::shown::TITLE)
        .arg(secs.to_string())
        .arg(super::shown::ALLOW)
        .arg(super::shown::DENY)
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .current_dir("/");
    cmd
}

impl Macos {
    pub(super) fn ask(
        &self,
        uid: u32,
        req: &Prompt,
        deadline: Instant,
        cancel: &CancelToken,
    ) -> UserAnswer {
        let user = crate::daemon::sys::login_name(uid).unwrap_or_else(|| format!("uid {uid}"));
        match std::fs::metadata("/dev/console").map(|m| m.uid()) {
            Ok(console) if console == uid => {}
            Ok(_) => {
                return UserAnswer::Unavailable(format!(
                    "{user} (uid {uid}) is not the user logged in at the console"
                ));
            }
            Err(e) => return UserAnswer::Unavailable(format!("no console session: {e}")),
        }
        let secs = super::shown::seconds_left(deadline);
        let ended = child::run(
            command(uid, req, secs),
            deadline,
            Duration::from_secs(2),
            cancel,
        );
        match ended {
            Ended::Exited {
                code: Some(0),
                stdout,
                ..
            } => match stdout.trim() {
                s if s == format!("button:{}", super::shown::ALLOW) => {
                    UserAnswer::Allowed { by: user }
                }
                s if s == format!("button:{}", super::shown::DENY) => {
                    UserAnswer::Denied { by: user }
                }
                _ => UserAnswer::NoAnswer,
            },
            Ended::Exited { stderr, .. } => UserAnswer::Unavailable(format!(
                "osascript could not show the dialog: {}",
                child::first_line(&stderr)
            )),
            Ended::Cancelled | Ended::Overdue => UserAnswer::NoAnswer,
            Ended::NotStarted(e) => UserAnswer::Unavailable(format!("cannot start launchctl: {e}")),
        }
    }
}
