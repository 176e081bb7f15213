//! The Linux dialog: the user's graphical session found from their own processes, and `zenity`
//! (or `kdialog`) run as that user.
//!
//! The session is the environment of one of the user's processes (`/proc/<pid>/environ`, real
//! and effective uid both the user's) that names a display. Only the session variables are taken
//! from it ([`SESSION_VARS`], and `LANG` when it is a UTF-8 locale), each bounded; the helper gets
//! nothing else but `PATH=/usr/bin:/bin` and `HOME` from the passwd entry. It runs with the user's
//! uid and primary gid (supplementary groups dropped: std clears them when root sets a uid).

// libc for getpwuid_r (the user's primary gid and home): rustix has no passwd lookup.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::super::types::{CancelToken, Prompt, UserAnswer};
use super::child::{self, Ended};

/// The variables taken from the session's process.
pub const SESSION_VARS: [&str; 5] = [
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
];
/// The `PATH` the helper gets.
pub const HELPER_PATH: &str = "/usr/bin:/bin";
/// The longest session variable value taken.
const MAX_VALUE: usize = 512;
/// The most `/proc` entries looked at.
const MAX_ENTRIES: usize = 100_000;
/// The most processes of the user whose environment is read.
const MAX_USER_PROCESSES: usize = 4096;
/// The most bytes read of a process's environment.
const MAX_ENVIRON: u64 = 256 * 1024;
/// How long past the deadline zenity may take to go away by itself before it is killed.
const ZENITY_GRACE: Duration = Duration::from_secs(2);

/// A dialog helper and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    /// GNOME's zenity (`--question --no-markup`, with a timeout).
    Zenity(PathBuf),
    /// KDE's kdialog (`--yesno`; no timeout of its own: killed at the deadline).
    Kdialog(PathBuf),
}

impl Tool {
    fn path(&self) -> &Path {
        match self {
            Tool::Zenity(p) | Tool::Kdialog(p) => p,
        }
    }
}

/// The Linux dialog's seams.
#[derive(Debug, Clone)]
pub struct Linux {
    /// Where processes are looked up (`/proc`; each entry named by its pid).
    pub proc_root: PathBuf,
    /// The helpers, in order of preference; the first that is an executable file is used.
    pub tools: Vec<Tool>,
    /// Where X11 display sockets are (`/tmp/.X11-unix`).
    pub x11_dir: PathBuf,
}

impl Linux {
    /// `/proc`, zenity then kdialog from `/usr/bin` or `/bin` (never the agent's own `PATH`).
    pub fn system() -> Self {
        Self {
            proc_root: "/proc".into(),
            tools: vec![
                Tool::Zenity("/usr/bin/zenity".into()),
                Tool::Zenity("/bin/zenity".into()),
                Tool::Kdialog("/usr/bin/kdialog".into()),
                Tool::Kdialog("/bin/kdialog".into()),
            ],
            x11_dir: "/tmp/.X11-unix".into(),
        }
    }

    /// The first helper installed.
    fn tool(&self) -> Option<&Tool> {
        self.tools.iter().find(|t| {
            std::fs::metadata(t.path())
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    /// Shows `req` to `uid`; see the module docs.
    pub(super) fn ask(
        &self,
        uid: u32,
        req: &Prompt,
        deadline: Instant,
        cancel: &CancelToken,
    ) -> UserAnswer {
        match self.command(uid, req, deadline) {
            Ok((cmd, tool, user)) => {
                let grace = match tool {
                    Tool::Zenity(_) => ZENITY_GRACE,
                    Tool::Kdialog(_) => Duration::ZERO,
                };
                answer(child::run(cmd, deadline, grace, cancel), &tool, user)
            }
            Err(why) => UserAnswer::Unavailable(why),
        }
    }

    /// The helper's command for `uid`, the helper, and the user's name; or why none can run.
    pub fn command(
        &self,
        uid: u32,
        req: &Prompt,
        deadline: Instant,
    ) -> Result<(Command, Tool, String), String> {
        let account = account(uid).ok_or_else(|| format!("uid {uid} has no passwd entry"))?;
        let user = account.name.clone();
        let euid = rustix::process::geteuid().as_raw();
        if euid != 0 && euid != uid {
            return Err(format!(
                "the agent runs as uid {euid} and cannot show a dialog to {user} (uid {uid})"
            ));
        }
        let session = find_session(&self.proc_root, uid).ok_or_else(|| {
            format!(
                "no graphical session of {user} (uid {uid}): none of their processes has DISPLAY \
                 or WAYLAND_DISPLAY"
            )
        })?;
        if !self.reachable(&session) {
            return Err(format!(
                "the display of {user}'s session is gone ({})",
                session.display_names()
            ));
        }
        let tool = self.tool().cloned().ok_or_else(|| {
            let looked: Vec<String> = self
                .tools
                .iter()
                .map(|t| t.path().display().to_string())
                .collect();
            format!(
                "no dialog helper installed (zenity or kdialog; looked for {})",
                looked.join(", ")
            )
        })?;
        let secs = super::shown::seconds_left(deadline);
        let mut cmd = Command::new(tool.path());
        cmd.args(argv(&tool, req, secs))
            .env_clear()
            .envs(session.env(account.home.as_deref()))
            .current_dir("/")
            .process_group(0);
        if euid == 0 {
            cmd.uid(uid).gid(account.gid);
        }
        Ok((cmd, tool, user))
    }

    /// Whether the session's display still exists (a local X socket or a Wayland socket; a
    /// remote X display is assumed to).
    fn reachable(&self, s: &Session) -> bool {
        if let Some(w) = s.get("WAYLAND_DISPLAY") {
            let path = if w.starts_with('/') {
                PathBuf::from(w)
            } else {
                match s.get("XDG_RUNTIME_DIR") {
                    Some(dir) => Path::new(dir).join(w),
                    None => PathBuf::new(),
                }
            };
            if !path.as_os_str().is_empty() && std::fs::symlink_metadata(&path).is_ok() {
                return true;
            }
        }
        match s.get("DISPLAY").map(x11_local_number) {
            Some(Some(n)) => std::fs::symlink_metadata(self.x11_dir.join(format!("X{n}"))).is_ok(),
            Some(None) => true,
            None => false,
        }
    }
}

/// The display number of a local X display (`:0`, `:1.0`, `unix:2`); `None` for a remote one.
fn x11_local_number(display: &str) -> Option<u32> {
    let rest = display
        .strip_prefix(':')
        .or_else(|| display.strip_prefix("unix:"))?;
    let n = rest.split('.').next()?;
    n.parse().ok()
}

/// What a helper's end means.
fn answer(ended: Ended, tool: &Tool, user: String) -> UserAnswer {
    let name = tool
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match ended {
        Ended::Exited { code: Some(0), .. } => UserAnswer::Allowed { by: user },
        // GTK exits 1 when it cannot open the display, like a Deny.
        Ended::Exited {
            code: Some(1),
            stderr,
            ..
        } if stderr.contains("cannot open display") => UserAnswer::Unavailable(format!(
            "{name} cannot open {user}'s display: {}",
            child::first_line(&stderr)
        )),
        Ended::Exited { code: Some(1), .. } => UserAnswer::Denied { by: user },
        Ended::Exited { code: Some(5), .. } if matches!(tool, Tool::Zenity(_)) => {
            UserAnswer::NoAnswer
        }
        Ended::Exited {
            code: Some(c),
            stderr,
            ..
        } => UserAnswer::Unavailable(format!(
            "{name} failed (exit {c}): {}",
            child::first_line(&stderr)
        )),
        Ended::Exited { code: None, .. } | Ended::Cancelled | Ended::Overdue => {
            UserAnswer::NoAnswer
        }
        Ended::NotStarted(e) => UserAnswer::Unavailable(format!("cannot start {name}: {e}")),
    }
}

/// The helper's arguments (the text is one argument, `--text=…`, so it can never be read as an
/// option).
pub fn argv(tool: &Tool, req: &Prompt, seconds_left: u64) -> Vec<String> {
    let text = super::shown::text(req, seconds_left);
    match tool {
        Tool::Zenity(_) => vec![
            "--question".into(),
            "--no-markup".into(),
            format!("--title={}", super::shown::TITLE),
            format!("--text={text}"),
            format!("--ok-label={}", super::shown::ALLOW),
            format!("--cancel-label={}", super::shown::DENY),
            "--default-cancel".into(),
            format!("--timeout={seconds_left}"),
            "--width=560".into(),
        ],
        // kdialog has no plain-text switch: the text is made rich text (`<qt>`) with every
        // character that could be markup escaped.
        Tool::Kdialog(_) => vec![
            "--title".into(),
            super::shown::TITLE.into(),
            "--yes-label".into(),
            super::shown::ALLOW.into(),
            "--no-label".into(),
            super::shown::DENY.into(),
            "--yesno".into(),
            format!("<qt>{}</qt>", html_escape(&text)),
        ],
    }
}

/// `s` as HTML text (line breaks as `<br>`).
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("<br>"),
            c => out.push(c),
        }
    }
    out
}

/// A graphical session: the process it was found in and its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The process whose environment it is.
    pub pid: u32,
    /// The [`SESSION_VARS`] it had (valid ones only), in that order.
    pub vars: Vec<(&'static str, String)>,
    /// Its `LANG` when that is a UTF-8 locale.
    pub lang: Option<String>,
    start: u64,
}

impl Session {
    fn get(&self, k: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    }

    fn display_names(&self) -> String {
        let mut v = Vec::new();
        for k in ["DISPLAY", "WAYLAND_DISPLAY"] {
            if let Some(d) = self.get(k) {
                v.push(format!("{k}={}", super::shown::one_line(d, 64)));
            }
        }
        v.join(", ")
    }

    /// The helper's whole environment.
    pub fn env(&self, home: Option<&Path>) -> Vec<(String, String)> {
        let mut env = vec![("PATH".to_owned(), HELPER_PATH.to_owned())];
        if let Some(h) = home.and_then(Path::to_str) {
            env.push(("HOME".into(), h.into()));
        }
        // GLib reads non-ASCII arguments in the locale's charset: a UTF-8 locale is needed.
        let lang = self.lang.clone().unwrap_or_else(|| "C.UTF-8".into());
        env.push(("LANG".into(), lang));
        env.extend(self.vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    }

    /// The session with only the paths the agent may look at for `uid`: `XDG_RUNTIME_DIR`
    /// only when it is exactly `/run/user/<uid>`, `WAYLAND_DISPLAY` only as a plain name (in
    /// that directory) or a path under it. Anything else is dropped without touching the file
    /// system: the agent runs as root, and whether a display "exists" must not tell the caller
    /// whether some other path does. `None` when no display is left.
    pub fn confined(mut self, uid: u32) -> Option<Session> {
        let run = format!("/run/user/{uid}");
        let under_run = |p: &str| {
            p.strip_prefix(run.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|r| {
                    !r.is_empty() && r.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
                })
        };
        self.vars.retain(|(k, v)| match *k {
            "XDG_RUNTIME_DIR" => *v == run,
            "WAYLAND_DISPLAY" => (!v.contains('/') && v != "." && v != "..") || under_run(v),
            _ => true,
        });
        if self.get("XDG_RUNTIME_DIR").is_none() {
            // A plain Wayland name means nothing without the runtime directory.
            self.vars
                .retain(|(k, v)| *k != "WAYLAND_DISPLAY" || v.starts_with('/'));
        }
        self.vars
            .iter()
            .any(|(n, _)| matches!(*n, "DISPLAY" | "WAYLAND_DISPLAY"))
            .then_some(self)
    }

    /// How good a session it is: a local display first, then the most variables, then the
    /// newest process.
    fn rank(&self) -> (bool, usize, u64) {
        let local = self.get("WAYLAND_DISPLAY").is_some()
            || self
                .get("DISPLAY")
                .is_some_and(|d| x11_local_number(d).is_some());
        (local, self.vars.len(), self.start)
    }
}

/// The best graphical session of `uid` among the processes under `proc_root`.
pub fn find_session(proc_root: &Path, uid: u32) -> Option<Session> {
    sessions(proc_root, uid)
        .into_iter()
        .max_by_key(Session::rank)
}

/// Every process of `uid` under `proc_root` (bounded) whose environment names a display.
pub fn sessions(proc_root: &Path, uid: u32) -> Vec<Session> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut read = 0;
    for entry in dir.take(MAX_ENTRIES).flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| {
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse::<u32>().ok())
                .flatten()
        }) else {
            continue;
        };
        let dir = entry.path();
        let Some(start) = owned_by(&dir, uid) else {
            continue;
        };
        if read == MAX_USER_PROCESSES {
            break;
        }
        read += 1;
        let Some(env) = read_bounded(&dir.join("environ"), MAX_ENVIRON) else {
            continue;
        };
        // The pid may have been reused while reading: the same process still, or nothing.
        if owned_by(&dir, uid) != Some(start) {
            continue;
        }
        if let Some(s) = session_of(pid, start, &env).and_then(|s| s.confined(uid)) {
            found.push(s);
        }
    }
    found
}

/// The start time of the process in `dir` when its real and effective uid are `uid`.
fn owned_by(dir: &Path, uid: u32) -> Option<u64> {
    let status = read_bounded(&dir.join("status"), 64 * 1024)?;
    let status = String::from_utf8_lossy(&status);
    let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = ids.split_whitespace().map(str::parse::<u32>);
    if ids.next()?.ok()? != uid || ids.next()?.ok()? != uid {
        return None;
    }
    let stat = read_bounded(&dir.join("stat"), 8 * 1024)?;
    let stat = String::from_utf8_lossy(&stat);
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 (starttime) is the 20th after the name.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The session in one process's environment (NUL-separated `KEY=VALUE`), if it names a display.
pub fn session_of(pid: u32, start: u64, environ: &[u8]) -> Option<Session> {
    let mut vars: Vec<(&'static str, String)> = Vec::new();
    let mut lang = None;
    let mut seen_lang = false;
    for kv in environ.split(|b| *b == 0) {
        let Some(eq) = kv.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (k, v) = (&kv[..eq], &kv[eq + 1..]);
        if k == b"LANG" && !seen_lang {
            seen_lang = true;
            lang = std::str::from_utf8(v)
                .ok()
                .filter(|v| utf8_locale(v))
                .map(str::to_owned);
            continue;
        }
        let Some(name) = SESSION_VARS.iter().find(|n| n.as_bytes() == k) else {
            continue;
        };
        // The first of a name is the one getenv returns.
        if vars.iter().any(|(n, _)| n == name) {
            continue;
        }
        if let Some(v) = std::str::from_utf8(v).ok().filter(|v| valid(name, v)) {
            vars.push((name, v.to_owned()));
        }
    }
    if !vars
        .iter()
        .any(|(n, _)| matches!(*n, "DISPLAY" | "WAYLAND_DISPLAY"))
    {
        return None;
    }
    vars.sort_by_key(|(n, _)| SESSION_VARS.iter().position(|s| s == n));
    Some(Session {
        pid,
        vars,
        lang,
        start,
    })
}

/// Whether `v` is an acceptable value of the session variable `name`.
fn valid(name: &str, v: &str) -> bool {
    if v.is_empty() || v.len() > MAX_VALUE || v.chars().any(|c| c.is_control()) {
        return false;
    }
    match name {
        "DISPLAY" => {
            v.contains(':')
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:/-[]".contains(&b))
        }
        "WAYLAND_DISPLAY" => v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b)),
        "XAUTHORITY" | "XDG_RUNTIME_DIR" => v.starts_with('/'),
        _ => true,
    }
}

/// Whether `v` names a UTF-8 locale (`de_DE.UTF-8`, `C.utf8`).
fn utf8_locale(v: &str) -> bool {
    v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
        && v.split('@')
            .next()
            .and_then(|l| l.rsplit_once('.'))
            .is_some_and(|(_, cs)| {
                cs.eq_ignore_ascii_case("utf-8") || cs.eq_ignore_ascii_case("utf8")
            })
}

/// Up to `max` bytes of the file at `p`.
fn read_bounded(p: &Path, max: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(p).ok()?.take(max).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// The parts of a passwd entry the dialog needs.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    gid: u32,
    home: Option<PathBuf>,
}

/// `uid`'s passwd entry.
fn account(uid: u32) -> Option<Account> {
    let mut size = 16 * 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: passwd is plain data; all-zero is a valid value (null pointers, zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwuid_r writes into the buffers we own, sized as given.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
        if rc == libc::ERANGE && size < 1024 * 1024 {
            size *= 4;
            continue;
        }
        if rc != 0 || out.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name and pw_dir point into `buf`, NUL-terminated by getpwuid_r.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned();
        let home = (!pwd.pw_dir.is_null())
            .then(|| {
                // SAFETY: as above.
                unsafe { std::ffi::CStr::from_ptr(pwd.pw_dir) }
                    .to_str()
                    .ok()
                    .filter(|h| h.starts_with('/') && !h.chars().any(char::is_control))
                    .map(PathBuf::from)
            })
            .flatten();
        return Some(Account {
            name,
            gid: pwd.pw_gid,
            home,
        });
    }
}
