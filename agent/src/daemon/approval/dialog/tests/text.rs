//! The dialog's arguments, text and session discovery, without a desktop.

use super::*;

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
            c == '\n' || !super::super::hidden(c),
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
        preview.chars().count() <= super::super::PREVIEW_CHARS + 1,
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
    let shown = super::super::preview(&many, super::super::PREVIEW_CHARS);
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
    let t = super::super::text(&prompt(&content), 30);
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
        assert!(
            l.chars().count() <= super::super::shown::ARG_LINE_CHARS + 1,
            "{l}"
        );
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
    let shown = super::super::arguments(&serde_json::Value::Object(many).to_string());
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
    assert!(super::super::arguments(noted).contains("2 more: mode, owner"));
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
