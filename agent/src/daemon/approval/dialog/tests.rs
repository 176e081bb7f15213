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

#[test]
fn allow_is_reached_by_tab_and_answers_allowed_as_the_user() {
    let Some(desk) = Desk::start() else { return };
    let d = desk.dialog();
    let mut h = ask_in_thread(
        &d,
        desk.uid,
        prompt("{\"path\":\"/tmp/x\"}"),
        Duration::from_secs(30),
        CancelToken::new(),
    );
    let w = desk.window(&mut h);
    assert_eq!(
        desk.window_uid(&w),
        desk.uid,
        "the dialog runs as the asking user"
    );
    // Deny is the default button: Tab moves to Allow, space presses it.
    desk.keys(&w, &["Tab", "space"]);
    let (a, _) = h.join();
    assert_eq!(
        a,
        UserAnswer::Allowed {
            by: desk.user.clone()
        }
    );
    desk.gone();
}

#[test]
fn return_presses_the_default_deny() {
    let Some(desk) = Desk::start() else { return };
    let d = desk.dialog();
    let mut h = ask_in_thread(
        &d,
        desk.uid,
        prompt("{}"),
        Duration::from_secs(30),
        CancelToken::new(),
    );
    let w = desk.window(&mut h);
    desk.keys(&w, &["Return"]);
    assert_eq!(
        h.join().0,
        UserAnswer::Denied {
            by: desk.user.clone()
        }
    );
    desk.gone();
}

#[test]
fn no_answer_by_the_deadline_is_no_answer_and_the_dialog_goes() {
    let Some(desk) = Desk::start() else { return };
    let d = desk.dialog();
    let mut h = ask_in_thread(
        &d,
        desk.uid,
        prompt("{}"),
        Duration::from_secs(3),
        CancelToken::new(),
    );
    desk.window(&mut h);
    let (a, took) = h.join();
    assert_eq!(a, UserAnswer::NoAnswer);
    assert!(
        took >= Duration::from_millis(2500),
        "answered early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3) + Duration::from_secs(3),
        "late: {took:?}"
    );
    desk.gone();
}

#[test]
fn cancel_closes_the_dialog_at_once() {
    let Some(desk) = Desk::start() else { return };
    let d = desk.dialog();
    let cancel = CancelToken::new();
    let mut h = ask_in_thread(
        &d,
        desk.uid,
        prompt("{}"),
        Duration::from_secs(60),
        cancel.clone(),
    );
    desk.window(&mut h);
    let t0 = Instant::now();
    cancel.cancel();
    let (a, _) = h.join();
    assert_eq!(a, UserAnswer::NoAnswer);
    assert!(t0.elapsed() < Duration::from_secs(5));
    desk.gone();
}

#[test]
fn one_dialog_at_a_time_per_user_the_second_waits_its_turn() {
    let Some(desk) = Desk::start() else { return };
    let d = desk.dialog();
    let mut first = ask_in_thread(
        &d,
        desk.uid,
        prompt("{\"n\":1}"),
        Duration::from_secs(30),
        CancelToken::new(),
    );
    let w = desk.window(&mut first);
    let first_pid = desk.window_pid(&w);
    let second = ask_in_thread(
        &d,
        desk.uid,
        prompt("{\"n\":2}"),
        Duration::from_secs(30),
        CancelToken::new(),
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        desk.windows().len(),
        1,
        "a second dialog while the first is up"
    );
    desk.keys(&w, &["Return"]);
    assert_eq!(
        first.join().0,
        UserAnswer::Denied {
            by: desk.user.clone()
        }
    );
    // The second comes up once the first is answered.
    let end = Instant::now() + Duration::from_secs(10);
    let w2 = loop {
        // (X may give the second window the first one's id: told apart by their processes.)
        if let Some(w2) = desk
            .windows()
            .into_iter()
            .find(|x| desk.window_pid(x) != first_pid)
        {
            break w2;
        }
        assert!(Instant::now() < end, "the second dialog never came");
        std::thread::sleep(Duration::from_millis(50));
    };
    desk.keys(&w2, &["Tab", "space"]);
    assert_eq!(
        second.join().0,
        UserAnswer::Allowed {
            by: desk.user.clone()
        }
    );

    // A waiting request whose deadline passes before its turn is NoAnswer, without a dialog.
    let mut held = ask_in_thread(
        &d,
        desk.uid,
        prompt("{}"),
        Duration::from_secs(30),
        CancelToken::new(),
    );
    let w3 = desk.window(&mut held);
    let t0 = Instant::now();
    let (late, _) = ask_in_thread(
        &d,
        desk.uid,
        prompt("{}"),
        Duration::from_secs(1),
        CancelToken::new(),
    )
    .join();
    assert_eq!(late, UserAnswer::NoAnswer);
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(desk.windows(), vec![w3.clone()]);
    desk.keys(&w3, &["Return"]);
    assert!(matches!(held.join().0, UserAnswer::Denied { .. }));
}

#[test]
fn hostile_text_is_shown_plain_by_the_real_zenity() {
    let Some(desk) = Desk::start() else { return };
    let d = desk.dialog();
    // Markup that would not parse, an option-looking start, bidi overrides, escapes, non-ASCII.
    let mut p = prompt(
        "--help <b>bold</b> &amp; <span foreground='red'>x</span \u{202e}evil.exe\u{1b}[2J\nnaïve ✓",
    );
    p.tool = "--version".into();
    p.client_name = "<i>claude</i>\u{2066}".into();
    let mut h = ask_in_thread(&d, desk.uid, p, Duration::from_secs(30), CancelToken::new());
    let w = desk.window(&mut h);
    desk.keys(&w, &["Tab", "space"]);
    assert_eq!(
        h.join().0,
        UserAnswer::Allowed {
            by: desk.user.clone()
        }
    );
}

#[test]
fn the_helper_gets_only_the_session_variables_and_runs_as_the_user() {
    let Some(desk) = Desk::start() else { return };
    // A stand-in helper that records who it runs as, its environment and its arguments.
    let bin = desk.dir.path().join("bin");
    let out = desk.dir.path().join("out");
    std::fs::create_dir(&bin).unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let helper = bin.join("zenity");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nid -u > {o}/uid\nid -G > {o}/groups\nenv > {o}/env\n\
             for a in \"$@\"; do printf '%s\\0' \"$a\"; done > {o}/argv\nexit 1\n",
            o = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = DesktopDialog::linux(desk.linux(Tool::Zenity(helper)));
    let p = prompt("{\"a\":1}");
    let a = d.ask(
        desk.uid,
        &p,
        Instant::now() + Duration::from_secs(20),
        CancelToken::new(),
    );
    assert_eq!(
        a,
        UserAnswer::Denied {
            by: desk.user.clone()
        }
    );

    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    assert_eq!(read("uid").trim(), desk.uid.to_string());
    if euid() == 0 {
        // Root's supplementary groups are not carried over: only the user's primary group.
        assert_eq!(read("groups").trim(), desk.uid.to_string(), "groups");
    }
    let mut keys: Vec<String> = read("env")
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
        .filter(|k| k != "PWD" && k != "SHLVL" && k != "_")
        .collect();
    keys.sort();
    let mut want = vec!["DISPLAY", "HOME", "LANG", "PATH"];
    if crate::daemon::local::login_name(desk.uid).is_none() {
        want.retain(|k| *k != "HOME");
    }
    assert_eq!(keys, want, "{}", read("env"));
    assert!(read("env").contains("PATH=/usr/bin:/bin\n"));
    assert!(read("env").contains(&format!("DISPLAY={}\n", desk.display)));
    assert!(read("env").contains("LANG=C.UTF-8\n"));

    let argv = read("argv");
    let argv: Vec<&str> = argv.split('\0').filter(|a| !a.is_empty()).collect();
    let secs = argv
        .iter()
        .find_map(|a| a.strip_prefix("--timeout="))
        .unwrap();
    let secs: u64 = secs.parse().unwrap();
    assert!((19..=20).contains(&secs), "{secs}");
    let want = linux::argv(&Tool::Zenity("z".into()), &p, secs);
    assert_eq!(argv, want.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn argv_is_plain_text_with_nothing_hidden() {
    let evil = format!(
        "<b>x</b>&amp;\u{202e}gpj.exe\u{2067}\u{200b}\u{feff}\u{1b}[31m\u{9b}\r\n\tnext\0nul{}",
        "y".repeat(5000)
    );
    let mut p = prompt(&evil);
    p.tool = "--help\nfake: line".into();
    p.server = "s\u{202e}rev".into();
    p.remember = "15m".into();
    let argv = linux::argv(&Tool::Zenity("/usr/bin/zenity".into()), &p, 42);
    assert_eq!(
        &argv[..3],
        [
            "--question",
            "--no-markup",
            "--title=Thoth: approval needed"
        ]
    );
    assert!(argv.contains(&"--ok-label=Allow".to_owned()));
    assert!(argv.contains(&"--cancel-label=Deny".to_owned()));
    assert!(argv.contains(&"--default-cancel".to_owned()));
    assert!(argv.contains(&"--timeout=42".to_owned()));
    let text = argv[3]
        .strip_prefix("--text=")
        .expect("the text is one --text= argument");
    for c in text.chars() {
        assert!(
            c == '\n' || !super::hidden(c),
            "hidden {:?} shown in {text:?}",
            c
        );
    }
    assert!(
        text.contains("<b>x</b>&amp;gpj.exe"),
        "markup kept as text: {text}"
    );
    assert!(
        text.contains("Tool: --help fake: line\n"),
        "names on one line: {text}"
    );
    assert!(text.contains("Server: srev\n"));
    assert!(text.contains("The AI assistant \"claude-code\""));
    assert!(text.contains("for 15m."));
    assert!(text.contains("42 s"));
    assert!(text.contains("Approval 0193c4a2-7b3e-7000-8000-000000000001"));
    let args = text.split("Arguments:\n").nth(1).unwrap();
    let preview = args.split("\n\n").next().unwrap();
    assert!(
        preview.chars().count() <= super::PREVIEW_CHARS + 1,
        "{}",
        preview.len()
    );
    assert!(preview.ends_with('…'));

    // kdialog reads rich text: everything escaped, inside <qt>.
    let k = linux::argv(&Tool::Kdialog("/usr/bin/kdialog".into()), &p, 42);
    assert_eq!(
        k[..7],
        [
            "--title",
            "Thoth: approval needed",
            "--yes-label",
            "Allow",
            "--no-label",
            "Deny",
            "--yesno"
        ]
    );
    let body = k[7]
        .strip_prefix("<qt>")
        .and_then(|b| b.strip_suffix("</qt>"))
        .unwrap();
    assert!(body.contains("&lt;b&gt;x&lt;/b&gt;&amp;amp;"), "{body}");
    assert!(!body.replace("<br>", "").contains('<'), "{body}");

    // Many lines are cut too.
    let many = (0..100)
        .map(|i| format!("line {i}"))
        .collect::<Vec<_>>()
        .join("\n");
    let shown = super::preview(&many, super::PREVIEW_CHARS);
    assert!(
        shown.lines().count() <= 20 && shown.ends_with('…'),
        "{shown}"
    );
}

#[test]
fn session_of_takes_only_valid_session_variables() {
    let env = b"DISPLAY=:1\0DISPLAY=:9\0XAUTHORITY=relative\0SECRET=x\0\
        DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1/bus\0XDG_RUNTIME_DIR=/run/user/1\n\0\
        LANG=de_DE.UTF-8\0WAYLAND_DISPLAY=../../x;rm\0garbage\0=\0\xff\xfe=1\0";
    let s = linux::session_of(7, 1, env).unwrap();
    assert_eq!(
        s.vars,
        vec![
            ("DISPLAY", ":1".to_owned()),
            (
                "DBUS_SESSION_BUS_ADDRESS",
                "unix:path=/run/user/1/bus".to_owned()
            )
        ]
    );
    assert_eq!(s.lang.as_deref(), Some("de_DE.UTF-8"));
    let long = format!("DISPLAY=:{}\0", "1".repeat(600));
    assert_eq!(linux::session_of(7, 1, long.as_bytes()), None, "too long");
    assert_eq!(linux::session_of(7, 1, b"DISPLAY=:0\x1b]0;x\0"), None);
    assert_eq!(linux::session_of(7, 1, b"HOME=/root\0"), None, "no display");
    let latin =
        linux::session_of(7, 1, b"WAYLAND_DISPLAY=wayland-0\0LANG=de_DE.ISO-8859-1\0").unwrap();
    assert_eq!(latin.lang, None, "a non-UTF-8 LANG is not taken");
    let env = latin.env(Some(Path::new("/home/ann")));
    assert!(env.contains(&("LANG".into(), "C.UTF-8".into())));
}

#[test]
fn the_real_proc_scan_finds_the_users_session_and_no_one_elses() {
    let (uid, _) = target();
    let marker = format!(":{}", 60000 + std::process::id() % 5000);
    let mut mine = session_process(uid, &[("DISPLAY", &marker), ("XAUTHORITY", "/tmp/xa")]);
    let found = linux::sessions(Path::new("/proc"), uid);
    let s = found.iter().find(|s| s.pid == mine.id());
    let other = linux::sessions(Path::new("/proc"), uid.wrapping_add(1));
    let _ = mine.kill();
    let _ = mine.wait();
    let s = s.expect("the session process is found");
    assert_eq!(
        s.vars,
        vec![
            ("DISPLAY", marker.clone()),
            ("XAUTHORITY", "/tmp/xa".to_owned())
        ]
    );
    assert!(
        other.iter().all(|s| s.pid != mine.id()),
        "found under another uid"
    );
}

#[test]
fn unavailable_says_why() {
    let (uid, user) = target();
    let dir = tempfile::tempdir().unwrap();
    let dead = format!(":{}", 59000 + std::process::id() % 900);
    let mut gone = session_process(uid, &[("DISPLAY", &dead)]);
    let zenity = Tool::Zenity("/usr/bin/zenity".into());
    let ask = |l: Linux, uid: u32| {
        DesktopDialog::linux(l).ask(
            uid,
            &prompt("{}"),
            Instant::now() + Duration::from_secs(5),
            CancelToken::new(),
        )
    };
    let unavailable = |a: UserAnswer| match a {
        UserAnswer::Unavailable(w) => w,
        a => panic!("not unavailable: {a:?}"),
    };
    let view = proc_view(&dir.path().join("a"), &[gone.id()]);

    // No session at all.
    let empty = proc_view(&dir.path().join("b"), &[]);
    let w = unavailable(ask(
        Linux {
            proc_root: empty,
            tools: vec![zenity.clone()],
            x11_dir: "/tmp/.X11-unix".into(),
        },
        uid,
    ));
    assert!(
        w.contains("no graphical session") && w.contains(&user),
        "{w}"
    );

    // A session whose display is gone.
    let w = unavailable(ask(
        Linux {
            proc_root: view.clone(),
            tools: vec![zenity.clone()],
            x11_dir: dir.path().into(),
        },
        uid,
    ));
    assert!(
        w.contains("display") && w.contains("gone") && w.contains(&dead),
        "{w}"
    );

    // Never another user's session: the uid asked for has none in view (only `uid` has one).
    let someone = if euid() == 0 { 0 } else { uid.wrapping_add(1) };
    let w = unavailable(ask(
        Linux {
            proc_root: view.clone(),
            tools: vec![zenity.clone()],
            x11_dir: "/tmp/.X11-unix".into(),
        },
        someone,
    ));
    assert!(!w.is_empty());
    let _ = gone.kill();
    let _ = gone.wait();

    // A remote display zenity cannot open: GTK's exit 1 is not taken for a Deny.
    if Path::new("/usr/bin/zenity").exists() {
        let mut remote = session_process(uid, &[("DISPLAY", "127.0.0.1:97")]);
        let view = proc_view(&dir.path().join("c"), &[remote.id()]);
        let a = ask(
            Linux {
                proc_root: view.clone(),
                tools: vec![zenity.clone()],
                x11_dir: "/tmp/.X11-unix".into(),
            },
            uid,
        );
        let w = unavailable(a);
        assert!(w.contains("cannot open"), "{w}");
        let none = Tool::Zenity(dir.path().join("no-zenity"));
        let w = unavailable(ask(
            Linux {
                proc_root: view,
                tools: vec![none],
                x11_dir: "/tmp/.X11-unix".into(),
            },
            uid,
        ));
        assert!(
            w.contains("no dialog helper") && w.contains("no-zenity"),
            "{w}"
        );
        let _ = remote.kill();
        let _ = remote.wait();
    }
}

/// Review (High): the dialog showed the first 800 characters / 20 lines of the JSON as the
/// client ordered it, so a long `content` hid `path`. Now one line per key, short values
/// first, and the keys that did not fit are named.
#[test]
fn every_argument_is_shown_or_named_short_values_first() {
    let content = serde_json::json!({
        "content": "Meeting notes… ".repeat(30),
        "path": "/home/alice/.bashrc",
    })
    .to_string();
    let t = super::text(&prompt(&content), 30);
    let args = t.split("Arguments:\n").nth(1).unwrap();
    let first = args.lines().next().unwrap();
    assert_eq!(first, "path: /home/alice/.bashrc", "{t}");
    assert!(
        args.lines()
            .nth(1)
            .unwrap()
            .starts_with("content: Meeting notes")
    );
    for l in args.split("\n\n").next().unwrap().lines() {
        assert!(l.chars().count() <= super::shown::ARG_LINE_CHARS + 1, "{l}");
    }
    // Too many keys: the rest are named, not dropped.
    let many: serde_json::Map<String, serde_json::Value> = (0..40)
        .map(|i| {
            (
                format!("k{i:02}"),
                serde_json::Value::from("v".repeat(10 + i)),
            )
        })
        .collect();
    let shown = super::arguments(&serde_json::Value::Object(many).to_string());
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines.len() <= 20, "{shown}");
    let and = lines.last().unwrap();
    assert!(and.starts_with("and: k"), "{shown}");
    for i in 0..40 {
        let k = format!("k{i:02}");
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{k}: "))) || and.contains(&k),
            "{k} missing: {shown}"
        );
    }
    // The proxy's note about keys it could not fit is shown.
    let noted = r#"{"a":"1","…keys not shown":"2 more: mode, owner"}"#;
    assert!(super::arguments(noted).contains("2 more: mode, owner"));
}

/// Review (Low): the agent (root) stat'ed the WAYLAND_DISPLAY / XDG_RUNTIME_DIR a user's
/// process named, and said "display gone" or went on depending on whether the path existed: a
/// file-existence oracle. Only `/run/user/<uid>` is taken now; other paths are dropped unread.
#[test]
fn a_session_names_only_paths_under_the_users_runtime_dir() {
    let s = |env: &[u8]| linux::session_of(7, 1, env).unwrap();
    let kept = s(b"WAYLAND_DISPLAY=wayland-0\0XDG_RUNTIME_DIR=/run/user/1000\0")
        .confined(1000)
        .unwrap();
    assert_eq!(kept.vars.len(), 2, "{kept:?}");
    assert!(
        s(b"WAYLAND_DISPLAY=/run/user/1000/wayland-1\0")
            .confined(1000)
            .is_some()
    );
    for env in [
        &b"WAYLAND_DISPLAY=/etc/passwd\0"[..],
        b"WAYLAND_DISPLAY=passwd\0XDG_RUNTIME_DIR=/etc\0",
        b"WAYLAND_DISPLAY=passwd\0XDG_RUNTIME_DIR=/run/user/1000/../../../etc\0",
        b"WAYLAND_DISPLAY=/run/user/1000/../../../etc/passwd\0",
        b"WAYLAND_DISPLAY=/run/user/10000/wayland-0\0",
        b"WAYLAND_DISPLAY=wayland-0\0XDG_RUNTIME_DIR=/run/user/1001\0",
        b"WAYLAND_DISPLAY=../etc/passwd\0XDG_RUNTIME_DIR=/run/user/1000\0",
    ] {
        assert_eq!(
            s(env).confined(1000),
            None,
            "{:?}",
            String::from_utf8_lossy(env)
        );
    }
    let x = s(b"DISPLAY=:1\0WAYLAND_DISPLAY=/etc/passwd\0XDG_RUNTIME_DIR=/etc\0")
        .confined(1000)
        .unwrap();
    assert_eq!(x.vars, vec![("DISPLAY", ":1".to_owned())]);

    // End to end: whether the named path exists does not change the answer.
    let (uid, _) = target();
    let dir = tempfile::tempdir().unwrap();
    let none = Tool::Zenity(dir.path().join("no-zenity"));
    let mut answers = Vec::new();
    for (i, (w, x)) in [
        ("/etc/passwd", "/etc"),
        ("/nonexistent-thoth", "/nonexistent-thoth-dir"),
        ("passwd", "/etc"),
        ("missing", "/etc"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = session_process(uid, &[("WAYLAND_DISPLAY", w), ("XDG_RUNTIME_DIR", x)]);
        let view = proc_view(&dir.path().join(i.to_string()), &[p.id()]);
        let a = DesktopDialog::linux(Linux {
            proc_root: view,
            tools: vec![none.clone()],
            x11_dir: dir.path().into(),
        })
        .ask(
            uid,
            &prompt("{}"),
            Instant::now() + Duration::from_secs(5),
            CancelToken::new(),
        );
        let _ = p.kill();
        let _ = p.wait();
        match a {
            UserAnswer::Unavailable(w) => answers.push(w),
            a => panic!("not unavailable: {a:?}"),
        }
    }
    assert!(answers[0].contains("no graphical session"), "{answers:?}");
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
}
