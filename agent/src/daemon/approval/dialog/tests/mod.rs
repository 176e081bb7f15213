//! The Linux dialog against real processes: a real X server (Xvfb), the real zenity run as the
//! target user, answered by a scripted keyboard (xdotool). Without Xvfb, zenity or xdotool these
//! tests say so and pass, except under CI where they fail (`scripts/setup-peers` installs them).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::super::{CancelToken, Prompt, UserAnswer, UserChannel};
use super::DesktopDialog;
use super::linux::{self, Linux, Tool};

/// The real-desktop tests share one keyboard: one at a time.
static DESK: Mutex<()> = Mutex::new(());

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The user the dialogs are for: `nobody` when the tests run as root (so the dialog really
/// changes user), else the test's own user.
fn target() -> (u32, String) {
    let uid = if euid() == 0 { 65534 } else { euid() };
    let name = crate::daemon::local::login_name(uid).expect("the target uid has a passwd entry");
    (uid, name)
}

/// Whether the real-desktop peers are installed; under CI their absence fails.
fn have_desktop() -> bool {
    let missing: Vec<&str> = ["/usr/bin/Xvfb", "/usr/bin/zenity", "/usr/bin/xdotool"]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI: {missing:?} missing (run scripts/setup-peers)"
    );
    eprintln!("SKIPPED: {missing:?} missing (run scripts/setup-peers)");
    false
}

fn prompt(content: &str) -> Prompt {
    Prompt {
        approval_id: "0193c4a2-7b3e-7000-8000-000000000001".into(),
        client_name: "claude-code".into(),
        server: "filesystem".into(),
        tool: "write_file".into(),
        content: content.into(),
        reason: "writes need approval".into(),
        arguments_sha256: "ab".repeat(32),
        remember: "once".into(),
        requested_unix_ms: 1,
        expires_unix_ms: 2,
    }
}

/// Runs `cmd` to its end or kills it after `limit`.
fn run_for(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if child.try_wait().ok()?.is_some() {
            return child.wait_with_output().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A process of `uid` carrying `env` (and nothing else), sleeping.
fn session_process(uid: u32, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new("/bin/sleep");
    cmd.arg("120").env_clear().envs(env.iter().copied());
    if euid() == 0 {
        cmd.uid(uid).gid(uid);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let child = cmd.spawn().expect("spawn the session process");
    // Its environment is readable once it has exec'd.
    let environ = PathBuf::from(format!("/proc/{}/environ", child.id()));
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if std::fs::read(&environ).is_ok_and(|e| !e.is_empty())
            && std::fs::read_link(format!("/proc/{}/exe", child.id()))
                .is_ok_and(|p| p.ends_with("sleep"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// A `/proc` that shows only the given processes (links to their real `/proc` entries), so
/// the tests never find the session of a real desktop on the machine.
fn proc_view(dir: &Path, pids: &[u32]) -> PathBuf {
    let root = dir.join("proc");
    std::fs::create_dir_all(&root).unwrap();
    for pid in pids {
        std::os::unix::fs::symlink(format!("/proc/{pid}"), root.join(pid.to_string())).unwrap();
    }
    root
}

/// A real X server and a session process of the target user on it.
struct Desk {
    xvfb: Child,
    session: Child,
    display: String,
    dir: tempfile::TempDir,
    uid: u32,
    user: String,
    // Last: the next test's X server starts only once this one is gone.
    _turn: MutexGuard<'static, ()>,
}

impl Drop for Desk {
    fn drop(&mut self) {
        for c in [&mut self.session, &mut self.xvfb] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Desk {
    fn start() -> Option<Desk> {
        if !have_desktop() {
            return None;
        }
        let turn = DESK.lock().unwrap_or_else(|e| e.into_inner());
        let mut xvfb = Command::new("/usr/bin/Xvfb")
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                "1024x768x24",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let mut line = String::new();
        BufReader::new(xvfb.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("Xvfb's display number");
        let n: u32 = line
            .trim()
            .parse()
            .expect("Xvfb printed its display number");
        let display = format!(":{n}");
        let (uid, user) = target();
        let session = session_process(
            uid,
            &[
                ("DISPLAY", display.as_str()),
                ("SECRET_TOKEN", "do-not-pass"),
                ("GTK_MODULES", "evil"),
                ("PATH", "/tmp/evil"),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(Desk {
            _turn: turn,
            xvfb,
            session,
            display,
            dir,
            uid,
            user,
        })
    }

    fn linux(&self, tool: Tool) -> Linux {
        Linux {
            proc_root: proc_view(
                &self.dir.path().join(format!("v{}", rand_suffix())),
                &[self.session.id()],
            ),
            tools: vec![tool],
            x11_dir: "/tmp/.X11-unix".into(),
        }
    }

    fn dialog(&self) -> Arc<DesktopDialog> {
        Arc::new(DesktopDialog::linux(
            self.linux(Tool::Zenity("/usr/bin/zenity".into())),
        ))
    }

    fn xdotool(&self, args: &[&str]) -> Option<Output> {
        let mut cmd = Command::new("/usr/bin/xdotool");
        cmd.args(args).env_clear().env("DISPLAY", &self.display);
        run_for(cmd, Duration::from_secs(10))
    }

    /// The dialog windows on screen now.
    fn windows(&self) -> Vec<String> {
        self.xdotool(&[
            "search",
            "--onlyvisible",
            "--name",
            "^Thoth: approval needed$",
        ])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    }

    /// Waits for the dialog window of `asking` (up to 10 s) and returns it.
    fn window(&self, asking: &mut Asking) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(w) = self.windows().into_iter().next() {
                return w;
            }
            if asking.0.as_ref().is_some_and(|h| h.is_finished()) && self.windows().is_empty() {
                let (a, took) = asking.join_now();
                panic!("the ask ended without a dialog window after {took:?}: {a:?}");
            }
            assert!(Instant::now() < end, "no dialog window appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until no dialog window is up.
    fn gone(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        while !self.windows().is_empty() {
            assert!(Instant::now() < end, "the dialog window stayed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Focuses `w` and types `keys`.
    fn keys(&self, w: &str, keys: &[&str]) {
        let o = self
            .xdotool(&["windowfocus", "--sync", w])
            .expect("windowfocus");
        assert!(o.status.success(), "windowfocus: {o:?}");
        for k in keys {
            let o = self.xdotool(&["key", k]).expect("xdotool key");
            assert!(o.status.success(), "key {k}: {o:?}");
        }
    }

    /// The process that owns window `w`.
    fn window_pid(&self, w: &str) -> String {
        let o = self.xdotool(&["getwindowpid", w]).expect("getwindowpid");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    /// The uid of the process that owns window `w`.
    fn window_uid(&self, w: &str) -> u32 {
        let pid = self.window_pid(w);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .expect("a uid")
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// An ask running on a thread.
struct Asking(Option<std::thread::JoinHandle<(UserAnswer, Duration)>>);

impl Asking {
    /// Its answer (it has ended).
    fn join_now(&mut self) -> (UserAnswer, Duration) {
        self.0.take().expect("joined once").join().unwrap()
    }

    /// Its answer and how long it took.
    fn join(mut self) -> (UserAnswer, Duration) {
        self.join_now()
    }
}

/// Asks on a thread.
fn ask_in_thread(
    d: &Arc<DesktopDialog>,
    uid: u32,
    p: Prompt,
    within: Duration,
    cancel: CancelToken,
) -> Asking {
    let d = Arc::clone(d);
    Asking(Some(std::thread::spawn(move || {
        let t0 = Instant::now();
        let a = d.ask(uid, &p, t0 + within, cancel);
        (a, t0.elapsed())
    })))
}

impl Desk {
    /// Asks `p` on a thread with 30 s to answer, not cancelled.
    fn ask(&self, d: &Arc<DesktopDialog>, p: Prompt) -> Asking {
        ask_in_thread(d, self.uid, p, Duration::from_secs(30), CancelToken::new())
    }

    /// Asks `p`, waits for its window, hands it to `seen`, types `keys` and returns the answer.
    fn answer(
        &self,
        d: &Arc<DesktopDialog>,
        p: Prompt,
        seen: impl FnOnce(&str),
        keys: &[&str],
    ) -> UserAnswer {
        let mut h = self.ask(d, p);
        let w = self.window(&mut h);
        seen(&w);
        self.keys(&w, keys);
        h.join().0
    }
}

mod desktop;
mod text;
