//! Tests against a real X server, the real zenity and a scripted keyboard.

use super::*;

#[test]
fn allow_is_reached_by_tab_and_answers_allowed_as_the_user() {
    let Some(desk) = Desk::start() else { return };
    let a = desk.answer(
        &desk.dialog(),
        prompt("{\"path\":\"/tmp/x\"}"),
        |w| {
            assert_eq!(
                desk.window_uid(w),
                desk.uid,
                "the dialog runs as the asking user"
            )
        },
        // Deny is the default button: Tab moves to Allow, space presses it.
        &["Tab", "space"],
    );
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
    assert_eq!(
        desk.answer(&desk.dialog(), prompt("{}"), |_| {}, &["Return"]),
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
    let mut first = desk.ask(&d, prompt("{\"n\":1}"));
    let w = desk.window(&mut first);
    let first_pid = desk.window_pid(&w);
    let second = desk.ask(&d, prompt("{\"n\":2}"));
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
    let mut held = desk.ask(&d, prompt("{}"));
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
    // Markup that would not parse, an option-looking start, bidi overrides, escapes, non-ASCII.
    let mut p = prompt(
        "--help <b>bold</b> &amp; <span foreground='red'>x</span \u{202e}evil.exe\u{1b}[2J\nnaïve ✓",
    );
    p.tool = "--version".into();
    p.client_name = "<i>claude</i>\u{2066}".into();
    assert_eq!(
        desk.answer(&desk.dialog(), p, |_| {}, &["Tab", "space"]),
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
