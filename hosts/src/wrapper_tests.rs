use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

#[test]
fn the_canonical_form_names_server_and_client_and_round_trips() {
    let args = wrapped_args(
        "files",
        "cursor",
        &[],
        Markers::default(),
        "npx",
        &s(&["-y", "srv"]),
    );
    assert_eq!(
        args,
        s(&[
            "run", "--server", "files", "--client", "cursor", "--", "npx", "-y", "srv"
        ])
    );
    assert_eq!(wrapper_difference("files", "cursor", &args, &[]), None);
    let (cmd, a, m) = original_of(&args).unwrap();
    assert_eq!(
        (cmd.as_str(), a, m),
        ("npx", Some(s(&["-y", "srv"])), Markers::default())
    );
    // Another client's wrapper is drift: events would name the wrong client.
    let why = wrapper_difference("files", "vscode", &args, &[]).unwrap();
    assert!(why.contains("added --client cursor"), "{why}");
    assert!(why.contains("missing --client vscode"), "{why}");
    // A wrapper from before `--client` existed is drift too (re-wrapped by the agent).
    let old = s(&["run", "--server", "files", "--", "npx"]);
    let why = wrapper_difference("files", "claude-desktop", &old, &[]).unwrap();
    assert!(why.contains("missing --client claude-desktop"), "{why}");
}

#[test]
fn markers_restore_missing_keys() {
    let m = Markers {
        no_args: true,
        no_command: false,
    };
    let args = wrapped_args("b", "codex", &[], m, "/opt/mcp", &[]);
    assert_eq!(original_of(&args).unwrap(), ("/opt/mcp".into(), None, m));
    let m = Markers {
        no_args: false,
        no_command: true,
    };
    let args = wrapped_args("x", "claude-extension", &[], m, "node", &s(&["a.js"]));
    assert_eq!(
        original_of(&args).unwrap(),
        ("node".into(), Some(s(&["a.js"])), m)
    );
    // `--no-args` with arguments after the command cannot be restored faithfully.
    let bad = s(&["run", "--no-args", "--", "x", "y"]);
    assert!(original_of(&bad).is_none());
    // What it runs can still be read (an override that inherits the base's arguments).
    assert_eq!(inner_line(&bad), Some(("x".into(), s(&["y"]))));
    assert_eq!(inner_line(&s(&["run", "--"])), None);
}

#[test]
fn every_engine_decides_the_same_way() {
    let (thoth, extra) = ("/usr/bin/thoth", s(&["--state-dir", "/s"]));
    let strict = Op::wrap_strict(thoth, extra.clone());
    let entry = |v| Entry::from_json(&v);
    let plain = entry(serde_json::json!({"command": "npx", "args": ["srv"]}));
    let head = canonical_prefix("f", "cursor", &extra, Markers::default());
    assert_eq!(
        decide(&plain, "f", "cursor", &strict),
        Decision::Change(Change::Wrap {
            head: head.clone(),
            command: "npx".into()
        })
    );
    assert_eq!(
        decide(&plain, "f", "cursor", &Op::Unwrap),
        Decision::Leave(Left::Unchanged)
    );
    let args = wrapped_args(
        "f",
        "cursor",
        &extra,
        Markers::default(),
        "npx",
        &s(&["srv"]),
    );
    let wrapped = entry(serde_json::json!({"command": thoth, "args": args}));
    assert_eq!(
        decide(&wrapped, "f", "cursor", &strict),
        Decision::Leave(Left::Already)
    );
    assert_eq!(
        decide(&wrapped, "f", "cursor", &Op::Unwrap),
        Decision::Change(Change::Unwrap {
            command: "npx".into(),
            sep: head.len() - 1,
            markers: Markers::default()
        })
    );
    // Another thoth: updated when not strict; drift, re-wrapped, when strict.
    let other = entry(serde_json::json!({"command": "/opt/thoth", "args": args}));
    let loose = Op::Wrap {
        thoth: thoth.into(),
        extra: extra.clone(),
        strict: false,
    };
    assert_eq!(
        decide(&other, "f", "cursor", &loose),
        Decision::Change(Change::Update)
    );
    assert_eq!(
        decide(&other, "f", "cursor", &strict),
        Decision::Change(Change::Rewrap {
            diff: format!("command /opt/thoth instead of {thoth}"),
            keep: head.len(),
            head: head.clone()
        })
    );
    let no_cmd = entry(serde_json::json!({"command": thoth, "args": ["run", "--policy", "p"]}));
    assert!(matches!(
        decide(&no_cmd, "f", "cursor", &strict),
        Decision::Leave(Left::Skipped(why)) if why.contains("no command to keep")
    ));
    let remote = entry(serde_json::json!({"type": "http", "command": "x", "url": "https://x"}));
    assert_eq!(
        decide(&remote, "f", "cursor", &strict),
        Decision::Leave(Left::Remote)
    );
}

#[test]
fn remote_and_wrapped_are_told_apart() {
    let e = Entry::from_json(&serde_json::json!({"url": "https://x"}));
    assert!(e.is_remote());
    let e = Entry::from_json(&serde_json::json!({"type": "sse", "serverUrl": "https://x"}));
    assert!(e.is_remote());
    let e = Entry::from_json(&serde_json::json!({"type": "stdio", "command": "npx"}));
    assert!(!e.is_remote());
    let e = Entry::from_json(
        &serde_json::json!({"command": "/usr/bin/thoth", "args": ["run"], "env": {"LD_PRELOAD": "x"}, "disabled": true}),
    );
    assert!(e.is_wrapped() && e.disabled);
    assert_eq!(e.loader_variables(), vec!["LD_PRELOAD"]);
    let e = Entry::from_json(&serde_json::json!({"command": 3}));
    assert!(e.malformed.is_some());
}
