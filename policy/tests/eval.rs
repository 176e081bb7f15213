//! The enforcement table of DESIGN.md, rule by rule.

mod common;

use common::{Session, parse};
use serde_json::json;
use thoth_policy::{Action, Mode};

fn policy_in(mode: &str) -> thoth_policy::Policy {
    parse(&format!(
        "servers:\n  - name: fs\n    enforcement: {mode}\n    approved_scope: [\"read_*\"]\n    \
         deny: [\"delete_*\"]\n    step_up: [sudo]\n"
    ))
}

#[test]
fn observe_allows_everything_and_flags_what_would_block() {
    let p = policy_in("observe");
    let mut s = Session::new(&p, "fs", &["node", "server.js"]);
    assert_eq!(s.action("read_file", json!({})), Action::Allow);
    let d = s.call("write_file", json!({}));
    assert_eq!((d.action, d.mode), (Action::WouldBlock, Mode::Observe));
    assert_eq!(d.rule, "servers[0].approved_scope");
    assert_eq!(s.action("delete_file", json!({})), Action::WouldBlock);
    assert_eq!(s.action("sudo", json!({})), Action::WouldBlock);
    assert!(Action::WouldBlock.forwards());
}

#[test]
fn block_denies_outside_scope_and_deny_list() {
    let p = policy_in("block");
    let mut s = Session::new(&p, "fs", &[]);
    let ok = s.call("read_text_file", json!({}));
    assert_eq!(
        (ok.action, ok.rule.as_str()),
        (Action::Allow, "servers[0].approved_scope[0]")
    );
    let d = s.call("write_file", json!({}));
    assert_eq!((d.action, d.mode), (Action::Deny, Mode::Block));
    assert!(
        d.reason
            .contains("\"write_file\" is not in the approved scope of server \"fs\"")
    );
    let d = s.call("delete_all", json!({}));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Deny, "servers[0].deny[0]")
    );
    // block mode stays blocked: no escalation, no warm-up.
    for _ in 0..5 {
        assert_eq!(s.action("write_file", json!({})), Action::Deny);
    }
}

#[test]
fn step_up_asks_for_approval_outside_scope_and_for_listed_tools() {
    let p = policy_in("step_up");
    let mut s = Session::new(&p, "fs", &[]);
    assert_eq!(s.action("read_x", json!({})), Action::Allow);
    assert_eq!(s.action("write_file", json!({})), Action::StepUp);
    assert_eq!(s.action("delete_x", json!({})), Action::Deny);
    let d = s.call("sudo", json!({}));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::StepUp, "servers[0].step_up[0]")
    );
}

#[test]
fn progressive_escalates_warn_then_step_up_then_block() {
    let p = parse(
        "defaults:\n  progressive: {warn: 2, block_after: 4}\nservers:\n  - name: fs\n    \
         enforcement: progressive\n    approved_scope: [\"read_*\"]\n    deny: [rm]\n",
    );
    let mut s = Session::new(&p, "fs", &[]);
    let seq: Vec<Action> = (0..6)
        .map(|_| {
            // In-scope calls in between never count towards the escalation.
            assert_eq!(s.action("read_file", json!({})), Action::Allow);
            s.action("write_file", json!({}))
        })
        .collect();
    assert_eq!(
        seq,
        [
            Action::Warn,
            Action::Warn,
            Action::StepUp,
            Action::StepUp,
            Action::Deny,
            Action::Deny
        ]
    );
    assert_eq!(
        s.action("rm", json!({})),
        Action::Deny,
        "deny list is immediate"
    );
    // A new session starts over.
    let mut fresh = Session::new(&p, "fs", &[]);
    let d = fresh.call("write_file", json!({}));
    assert_eq!(d.action, Action::Warn);
    assert!(
        d.reason.contains("out-of-scope call 1 of 2"),
        "{}",
        d.reason
    );
}

#[test]
fn per_server_thresholds_override_defaults() {
    let p = parse(
        "servers:\n  - name: fs\n    enforcement: progressive\n    progressive: {warn: 0, block_after: 1}\n",
    );
    let mut s = Session::new(&p, "fs", &[]);
    assert_eq!(s.action("x", json!({})), Action::StepUp);
    assert_eq!(s.action("x", json!({})), Action::Deny);
}

#[test]
fn unknown_servers_follow_the_default() {
    for (setting, action, mode) in [
        ("allow", Action::Allow, Mode::Allow),
        ("observe", Action::WouldBlock, Mode::Observe),
        ("block", Action::Deny, Mode::Block),
    ] {
        let p = parse(&format!(
            "defaults:\n  unknown_servers: {setting}\nservers:\n  - name: fs\n"
        ));
        let mut s = Session::new(&p, "github", &["npx", "server-github"]);
        assert_eq!(s.server.entry, None);
        let d = s.call("create_issue", json!({}));
        assert_eq!(
            (d.action, d.mode, d.rule.as_str()),
            (action, mode, "defaults.unknown_servers")
        );
    }
    // The default default is to fail closed.
    let p = parse("servers: []\n");
    assert_eq!(
        Session::new(&p, "x", &[]).action("t", json!({})),
        Action::Deny
    );
}

#[test]
fn servers_match_by_name_glob_and_by_command_token() {
    let p = parse(
        "servers:\n  - name: \"db-*\"\n    approved_scope: [a]\n  - command: \"@modelcontextprotocol/server-filesystem\"\n    approved_scope: [b]\n  - name: both\n    command: \"*python*\"\n    approved_scope: [c]\n",
    );
    let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(p.resolve("db-prod", &argv(&["x"])).entry, Some(0));
    assert_eq!(
        p.resolve(
            "files",
            &argv(&[
                "npx",
                "-y",
                "@modelcontextprotocol/server-filesystem@2026.8.31",
                "/d"
            ])
        )
        .entry,
        Some(1)
    );
    assert_eq!(
        p.resolve(
            "files",
            &argv(&["npx", "@modelcontextprotocol/server-filesystem", "/d"])
        )
        .entry,
        Some(1)
    );
    assert_eq!(
        p.resolve("both", &argv(&["/usr/bin/python3", "s.py"]))
            .entry,
        Some(2)
    );
    assert_eq!(p.resolve("both", &argv(&["node", "s.js"])).entry, None);
    assert_eq!(
        p.resolve("files", &argv(&["npx", "@evil/server-filesystem-clone"]))
            .entry,
        None
    );
}

#[test]
fn argument_constraints() {
    let p = parse(
        r#"
servers:
  - name: fs
    approved_scope: ["*"]
    constraints:
      - tool: "read_*"
        arg: path
        path_glob: ["/srv/data/**"]
      - tool: fetch
        arg: url
        regex: "https://[a-z.]+/.*"
      - tool: query
        arg: options.mode
        one_of: [read, explain]
      - tool: tag
        arg: label
        regex: "[a-z]+"
        allow_missing: true
"#,
    );
    let mut s = Session::new(&p, "fs", &[]);
    assert_eq!(
        s.action("read_file", json!({"path": "/srv/data/a/b.txt"})),
        Action::Allow
    );
    let d = s.call("read_file", json!({"path": "/srv/data/../../etc/passwd"}));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Deny, "servers[0].constraints[0]")
    );
    assert!(
        d.reason.contains("outside the allowed paths"),
        "{}",
        d.reason
    );
    assert_eq!(
        s.action("read_file", json!({"path": ["/srv/data/a", "/etc/x"]})),
        Action::Deny
    );
    assert_eq!(
        s.action("read_file", json!({"path": ["/srv/data/a", "/srv/data/b"]})),
        Action::Allow
    );
    assert_eq!(s.action("read_file", json!({"path": 7})), Action::Deny);
    let d = s.call("read_file", json!({}));
    assert!(d.reason.contains("missing"), "{}", d.reason);
    assert_eq!(
        s.action("fetch", json!({"url": "https://example.com/x"})),
        Action::Allow
    );
    assert_eq!(
        s.action("fetch", json!({"url": "http://example.com/x"})),
        Action::Deny
    );
    assert_eq!(
        s.action("query", json!({"options": {"mode": "explain"}})),
        Action::Allow
    );
    assert_eq!(
        s.action("query", json!({"options": {"mode": "write"}})),
        Action::Deny
    );
    assert_eq!(s.action("tag", json!({})), Action::Allow);
    assert_eq!(s.action("tag", json!({"label": "UPPER"})), Action::Deny);
    assert_eq!(
        s.action("other", json!({"path": "/etc/passwd"})),
        Action::Allow
    );
}

#[test]
fn constraint_violation_escalates_like_out_of_scope() {
    let p = parse(
        "servers:\n  - name: fs\n    enforcement: observe\n    approved_scope: [\"*\"]\n    constraints: [{tool: w, arg: p, path_glob: [\"/ok/**\"]}]\n",
    );
    let mut s = Session::new(&p, "fs", &[]);
    assert_eq!(s.action("w", json!({"p": "/no"})), Action::WouldBlock);
}

#[test]
fn sequence_rules_fire_only_after_the_earlier_tool_and_within_the_window() {
    let p = parse(
        r#"
servers:
  - name: fs
    approved_scope: ["*"]
    sequences:
      - {after: "read_*", then: send_email, action: deny, reason: exfiltration}
      - {after: search, then: move, action: step_up, within_secs: 60}
      - {after: list, then: move, action: warn}
"#,
    );
    let mut s = Session::new(&p, "fs", &[]);
    assert_eq!(s.action("send_email", json!({})), Action::Allow);
    assert_eq!(s.action("read_secret", json!({})), Action::Allow);
    let d = s.call("send_email", json!({}));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Deny, "servers[0].sequences[0]")
    );
    assert!(
        d.reason.contains("exfiltration") && d.reason.contains("read_*"),
        "{}",
        d.reason
    );

    assert_eq!(s.action("move", json!({})), Action::Allow);
    assert_eq!(s.action("search", json!({})), Action::Allow);
    s.advance(30);
    assert_eq!(s.action("list", json!({})), Action::Allow);
    // Both rules match: the stricter one wins.
    assert_eq!(s.action("move", json!({})), Action::StepUp);
    s.advance(31);
    assert_eq!(s.action("move", json!({})), Action::Warn);
}

#[test]
fn a_denied_earlier_call_does_not_arm_a_sequence_rule() {
    let p = parse(
        "servers:\n  - name: fs\n    approved_scope: [b]\n    sequences: [{after: a, then: b, action: deny}]\n",
    );
    let mut s = Session::new(&p, "fs", &[]);
    assert_eq!(s.action("a", json!({})), Action::Deny);
    assert_eq!(s.action("b", json!({})), Action::Allow);
}

#[test]
fn hide_unapproved_filters_tool_lists() {
    let p = parse(
        "servers:\n  - name: fs\n    approved_scope: [\"read_*\"]\n    step_up: [write]\n    deny: [read_secret]\n    hide_unapproved: true\n  - name: open\n    approved_scope: [a]\n",
    );
    let fs = p.resolve("fs", &[]);
    assert!(p.filters_tools(&fs));
    assert!(p.tool_visible(&fs, "read_file"));
    assert!(p.tool_visible(&fs, "write"));
    assert!(!p.tool_visible(&fs, "read_secret"));
    assert!(!p.tool_visible(&fs, "delete"));
    let open = p.resolve("open", &[]);
    assert!(!p.filters_tools(&open));
    assert!(p.tool_visible(&open, "anything"));
}

#[test]
fn evaluation_is_pure() {
    let p = policy_in("progressive");
    let s = Session::new(&p, "fs", &[]);
    let args = json!({"a": 1});
    let call = thoth_policy::ToolCall {
        tool: "write",
        arguments: (&args).into(),
        hints: None,
    };
    let a = thoth_policy::evaluate(&p, &s.server, &s.state, &call, s.now);
    let b = thoth_policy::evaluate(&p, &s.server, &s.state, &call, s.now);
    assert_eq!(a, b);
}

/// A file system made of symlinks only, resolved the way the proxy's resolver does.
struct Links(&'static [(&'static str, &'static str)]);

impl thoth_policy::PathResolver for Links {
    fn resolve(&self, path: &str) -> Result<Vec<String>, thoth_policy::ResolveError> {
        let mut out = path.to_owned();
        for _ in 0..8 {
            let Some((from, to)) = self
                .0
                .iter()
                .find(|(from, _)| out == *from || out.starts_with(&format!("{from}/")))
            else {
                break;
            };
            out = format!("{to}{}", &out[from.len()..]);
        }
        Ok(vec![out])
    }
}

#[test]
fn path_constraints_match_the_resolved_path() {
    let p = parse(
        "servers:\n  - name: fs\n    approved_scope: [\"*\"]\n    constraints: [{tool: \"*\", arg: path, path_glob: [\"/tmp/pub/**\"]}]\n",
    );
    let server = p.resolve("fs", &[]);
    let links = Links(&[
        ("/tmp/pub/link.txt", "/tmp/notes.txt"),
        ("/tmp/pub/dir", "/home/ann/private"),
        ("/tmp", "/private/tmp"),
    ]);
    let decide = |path: &str| {
        let args = json!({ "path": path });
        thoth_policy::evaluate_with(
            &p,
            &server,
            &thoth_policy::SessionState::new(),
            &thoth_policy::ToolCall {
                tool: "read_file",
                arguments: (&args).into(),
                hints: None,
            },
            std::time::Instant::now(),
            &links,
        )
    };
    // A symlinked file and a write through a symlinked directory land outside: refused, and the
    // reason names where the path really goes.
    let d = decide("/tmp/pub/link.txt");
    assert_eq!(d.action, Action::Deny);
    assert!(d.reason.contains("/private/tmp/notes.txt"), "{}", d.reason);
    assert_eq!(decide("/tmp/pub/dir/new.txt").action, Action::Deny);
    // The allowed tree itself sits behind a symlink (/tmp → /private/tmp): still allowed.
    assert_eq!(decide("/tmp/pub/a.txt").action, Action::Allow);
    // Lexically the same paths pass, which is the hole this closes.
    let mut s = Session::new(&p, "fs", &[]);
    assert_eq!(
        s.action("r", json!({"path": "/tmp/pub/link.txt"})),
        Action::Allow
    );
}

#[test]
fn approval_settings_come_from_the_entry_else_the_defaults() {
    use std::time::Duration;
    use thoth_policy::{Approver, Remember};
    let p = parse(
        "defaults:\n  enforcement: step_up\n  unknown_servers: block\n  approvers: [admin]\n  \
         approval_remember: 2h\n  approval_timeout_secs: 30\nservers:\n  - name: fs\n    \
         approvers: [user]\n    approval_remember: session\n    approval_timeout_secs: 90\n  \
         - name: db\n    approval_remember: once\n",
    );
    let fs = p.resolve("fs", &[]);
    assert_eq!(p.approvers(&fs), [Approver::User]);
    assert_eq!(p.approval_remember(&fs), Remember::Session);
    assert_eq!(p.approval_timeout(&fs), Duration::from_secs(90));
    let db = p.resolve("db", &[]);
    assert_eq!(p.approvers(&db), [Approver::Admin]);
    assert_eq!(p.approval_remember(&db), Remember::Once);
    assert_eq!(p.approval_timeout(&db), Duration::from_secs(30));
    let unknown = p.resolve("other", &[]);
    assert_eq!(p.approvers(&unknown), [Approver::Admin]);
    assert_eq!(p.approval_remember(&unknown).to_string(), "2h");
    let bare = parse("servers:\n  - name: fs\n    enforcement: step_up\n");
    let fs = bare.resolve("fs", &[]);
    assert_eq!(
        (bare.approvers(&fs), bare.approval_remember(&fs)),
        (vec![Approver::User, Approver::Admin], Remember::Once)
    );
    let wire: Vec<String> = bare
        .approvers(&fs)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(wire, ["user", "admin"]);
}
