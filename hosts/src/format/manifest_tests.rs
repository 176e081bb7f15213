use super::*;

const THOTH: &str = "/usr/local/bin/thoth";
const CTX: Ctx<'static> = Ctx {
    client: "claude-extension",
    server: Some("ant.dir.files"),
};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

const ALL_KINDS: &str = r#"{
  "name": "files",
  "server": {
    "type": "binary",
    "mcp_config": {
      "command": "${__dirname}/bin/srv",
      "args": ["--root", "${user_config.root}"],
      "env": {"K": "v"},
      "platform_overrides": {
        "win32": {"command": "${__dirname}/bin/srv.exe", "args": ["--win"]},
        "darwin": {"command": "${__dirname}/bin/srv-mac"},
        "linux": {"args": ["--linux", "${HOME}"]},
        "freebsd": {"env": {"X": "1"}}
      }
    }
  }
}
"#;

#[test]
fn every_kind_of_override_runs_through_thoth_and_unwraps_to_the_bytes() {
    let w = rewrite(ALL_KINDS, &Op::wrap_strict(THOTH, vec![]), &CTX).unwrap();
    assert_eq!(
        w.report.wrapped,
        s(&[
            "ant.dir.files",
            "ant.dir.files (win32)",
            "ant.dir.files (darwin)",
            "ant.dir.files (linux)"
        ])
    );
    let v: Value = serde_json::from_str(&w.text).unwrap();
    let head = |m: &[&str]| {
        let mut h = s(&[
            "run",
            "--server",
            "ant.dir.files",
            "--client",
            "claude-extension",
        ]);
        h.extend(s(m));
        h.push("--".into());
        h
    };
    let line = |p| {
        let e = effective(&v, p);
        assert_eq!(e.command.as_deref(), Some(THOTH), "{p}");
        e.args.unwrap()
    };
    let mut want = head(&["--no-args"]);
    want.extend(s(&[
        "${__dirname}/bin/srv-mac",
        "--root",
        "${user_config.root}",
    ]));
    assert_eq!(line("darwin"), want);
    let mut want = head(&[]);
    want.extend(s(&["${__dirname}/bin/srv.exe", "--win"]));
    assert_eq!(line("win32"), want);
    let mut want = head(&["--no-command"]);
    want.extend(s(&["${__dirname}/bin/srv", "--linux", "${HOME}"]));
    assert_eq!(line("linux"), want);
    let again = rewrite(&w.text, &Op::wrap_strict(THOTH, vec![]), &CTX).unwrap();
    assert_eq!(again.text, w.text);
    assert_eq!(again.report.already.len(), 4, "{:?}", again.report);
    let u = rewrite(&w.text, &Op::Unwrap, &CTX).unwrap();
    assert_eq!(u.text, ALL_KINDS);
    assert_eq!(u.report.unwrapped.len(), 4);
}

#[test]
fn a_stale_inherited_copy_is_rebuilt() {
    let w = rewrite(ALL_KINDS, &Op::wrap_strict(THOTH, vec![]), &CTX).unwrap();
    // The base's arguments and command change under the wrapper (an edit by hand).
    let edited = w
        .text
        .replacen(
            "\"--root\", \"${user_config.root}\"]",
            "\"--root\", \"/x\"]",
            1,
        )
        .replacen(
            "\"${__dirname}/bin/srv\", \"--root\"",
            "\"/opt/srv2\", \"--root\"",
            1,
        );
    assert_ne!(edited, w.text);
    let r = rewrite(&edited, &Op::wrap_strict(THOTH, vec![]), &CTX).unwrap();
    let v: Value = serde_json::from_str(&r.text).unwrap();
    let (darwin, linux) = (effective(&v, "darwin"), effective(&v, "linux"));
    let d = wrapper::inner_line(darwin.args.as_deref().unwrap()).unwrap();
    assert_eq!(d.1, s(&["--root", "/x"]), "{}", r.text);
    let l = wrapper::inner_line(linux.args.as_deref().unwrap()).unwrap();
    assert_eq!(l.0, "/opt/srv2", "{}", r.text);
    assert_eq!(r.report.rewrapped.len(), 2, "{:?}", r.report);
    let again = rewrite(&r.text, &Op::wrap_strict(THOTH, vec![]), &CTX).unwrap();
    assert_eq!(again.text, r.text);
}

#[test]
fn duplicate_keys_in_an_override_edit_only_the_last_and_unwrap_to_the_bytes() {
    // A reader keeps the last of repeated keys; only that one is edited, so the earlier
    // ones stay as written and unwrapping gives back every byte.
    let text = r#"{
  "name": "dup",
  "server": {
    "mcp_config": {
      "command": "node",
      "args": ["a.js"],
      "platform_overrides": {
        "darwin": {"command": "first", "command": "second"},
        "linux": {"args": ["x"], "args": ["y", "z"]}
      }
    }
  }
}
"#;
    for op in [Op::wrap(THOTH), Op::wrap_strict(THOTH, vec![])] {
        let w = rewrite(text, &op, &CTX).unwrap();
        assert_eq!(w.report.wrapped.len(), 3, "{:?}", w.report);
        assert!(w.text.contains(r#""command": "first""#), "{}", w.text);
        assert!(w.text.contains(r#""args": ["x"]"#), "{}", w.text);
        let v: Value = serde_json::from_str(&w.text).unwrap();
        let d = effective(&v, "darwin");
        let d = wrapper::inner_line(d.args.as_deref().unwrap()).unwrap();
        assert_eq!(d, ("second".into(), s(&["a.js"])), "{}", w.text);
        let again = rewrite(&w.text, &op, &CTX).unwrap();
        assert_eq!(again.text, w.text);
        let u = rewrite(&w.text, &Op::Unwrap, &CTX).unwrap();
        assert_eq!(u.text, text);
    }
    // Another thoth's wrapper, updated (not strict): the last command only.
    let w = rewrite(text, &Op::wrap("/old/thoth"), &CTX).unwrap();
    let up = rewrite(&w.text, &Op::wrap(THOTH), &CTX).unwrap();
    assert_eq!(up.report.updated.len(), 2, "{:?}", up.report);
    let u = rewrite(&up.text, &Op::Unwrap, &CTX).unwrap();
    assert_eq!(u.text, text);
}

#[test]
fn no_mcp_config_is_reported_and_untouched() {
    let text = r#"{"name": "u", "server": {"type": "uv", "entry_point": "src/server.py"}}"#;
    let w = rewrite(text, &Op::wrap(THOTH), &CTX).unwrap();
    assert_eq!(w.text, text);
    assert_eq!(
        w.report.skipped,
        vec![("ant.dir.files".into(), NO_MCP_CONFIG.into())]
    );
    let e = entries(text).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].entry.malformed.as_deref(), Some(NO_MCP_CONFIG));
}
