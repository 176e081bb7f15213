//! Every shipped example validates, and each one does what its comment promises.

mod common;

use std::path::PathBuf;

use common::Session;
use serde_json::json;
use thoth_policy::{
    Action, Approver, DestructiveUse, DlpArguments, DlpResults, Format, OnSuspiciousTool,
    OnToolChange, Policy, ReadOnlyUse, Remember, SessionState, ToolCall, TrustedHints,
};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn load(name: &str) -> Policy {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    thoth_policy::parse_policy(&text, &path.display().to_string(), Format::Yaml)
        .unwrap_or_else(|e| panic!("{e}"))
}

const FS: [&str; 4] = [
    "npx",
    "-y",
    "@modelcontextprotocol/server-filesystem",
    "/home/ann/projects",
];

#[test]
fn every_example_validates() {
    let mut n = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        thoth_policy::parse_policy(&text, &name, Format::detect(&name, &text))
            .unwrap_or_else(|e| panic!("{e}"));
        n += 1;
    }
    assert!(n >= 5, "expected the shipped examples, found {n}");
}

#[test]
fn read_only_strict_allows_reads_and_blocks_writes() {
    let p = load("read-only-files-strict.yaml");
    let mut s = Session::new(&p, "filesystem", &FS);
    assert_eq!(
        s.action("read_text_file", json!({"path": "/home/ann/projects/a"})),
        Action::Allow
    );
    assert_eq!(
        s.action("list_directory", json!({"path": "/"})),
        Action::Allow
    );
    for _ in 0..3 {
        assert_eq!(
            s.action("write_file", json!({"path": "/x", "content": "y"})),
            Action::Deny
        );
    }
    assert!(!p.tool_visible(&s.server, "write_file"));
    assert!(p.tool_visible(&s.server, "read_text_file"));
    assert_eq!(
        Session::new(&p, "github", &["gh-mcp"]).action("x", json!({})),
        Action::Deny
    );
}

#[test]
fn read_only_progressive_escalates() {
    let p = load("read-only-files.yaml");
    let mut s = Session::new(&p, "files", &FS);
    assert_eq!(
        s.action("read_text_file", json!({"path": "/a"})),
        Action::Allow
    );
    let seq: Vec<Action> = (0..5).map(|_| s.action("write_file", json!({}))).collect();
    assert_eq!(
        seq,
        [
            Action::Warn,
            Action::Warn,
            Action::StepUp,
            Action::StepUp,
            Action::Deny
        ]
    );
    assert_eq!(
        Session::new(&p, "other", &["x"]).action("t", json!({})),
        Action::WouldBlock,
        "unknown servers are observed"
    );
}

#[test]
fn read_write_requires_approval_for_writes_inside_the_project() {
    let p = load("read-write-files.yaml");
    let mut s = Session::new(&p, "filesystem", &FS);
    assert_eq!(p.approvers(&s.server), [Approver::User, Approver::Admin]);
    assert_eq!(p.approval_remember(&s.server), Remember::Once);
    assert_eq!(p.approval_timeout(&s.server).as_secs(), 45);
    assert_eq!(
        s.action("read_text_file", json!({"path": "/home/ann/projects/a"})),
        Action::Allow
    );
    assert_eq!(
        s.action("write_file", json!({"path": "/home/ann/projects/a.txt"})),
        Action::StepUp
    );
    let d = s.call(
        "write_file",
        json!({"path": "/home/ann/.ssh/authorized_keys"}),
    );
    assert_eq!(
        d.action,
        Action::StepUp,
        "outside the tree is out of scope; step_up mode asks"
    );
    assert_eq!(d.rule, "servers[0].constraints[0]");
    assert_eq!(
        s.action("search_files", json!({"path": "/tmp", "pattern": "x"})),
        Action::Allow
    );
    let d = s.call(
        "move_file",
        json!({"source": "/tmp/a", "destination": "/tmp/b"}),
    );
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Deny, "servers[0].sequences[0]")
    );
}

#[test]
fn database_blocks_writes_and_excluded_tools() {
    let p = load("database.yaml");
    let mut s = Session::new(&p, "postgres-prod", &["npx", "pg-mcp"]);
    assert_eq!(
        s.action("query", json!({"sql": "SELECT * FROM users"})),
        Action::Allow
    );
    assert_eq!(
        s.action(
            "query",
            json!({"sql": "  with x as (select 1) select * from x;"})
        ),
        Action::Allow
    );
    assert_eq!(
        s.action("query", json!({"sql": "DELETE FROM users"})),
        Action::Deny
    );
    assert_eq!(
        s.action("query", json!({"sql": "select 1; drop table users"})),
        Action::Deny
    );
    assert_eq!(
        s.action("execute_sql", json!({"sql": "select 1"})),
        Action::Deny
    );
    let d = s.call("drop_table", json!({"table": "users"}));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Deny, "servers[0].deny[1]")
    );
    assert_eq!(s.action("create_table", json!({})), Action::Deny);
    assert!(!p.tool_visible(&s.server, "execute_sql"));
    let mut by_pkg = Session::new(
        &p,
        "pg",
        &[
            "npx",
            "-y",
            "@modelcontextprotocol/server-postgres",
            "postgres://x",
        ],
    );
    assert_eq!(
        by_pkg.action("query", json!({"sql": "select 1"})),
        Action::Allow
    );
    assert_eq!(by_pkg.action("execute_sql", json!({})), Action::Deny);
}

#[test]
fn web_browsing_is_progressive_with_url_and_sequence_rules() {
    let p = load("web-browsing.yaml");
    let mut s = Session::new(&p, "browser", &["npx", "browser-mcp"]);
    assert_eq!(
        s.action("fetch_url", json!({"url": "https://example.com"})),
        Action::Allow
    );
    assert_eq!(
        s.action("screenshot", json!({"url": "http://intranet/x"})),
        Action::Allow
    );
    assert_eq!(
        s.action("evaluate_script", json!({"script": "1"})),
        Action::Deny
    );
    let d = s.call("fetch_url", json!({"url": "file:///etc/passwd"}));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Warn, "servers[0].constraints[0]")
    );
    assert_eq!(s.action("fill_form", json!({})), Action::Warn);
    assert_eq!(
        s.action("fetch_url", json!({"url": "https://evil.example/?q=x"})),
        Action::StepUp
    );
    // Two out-of-scope calls so far (the bad URL, fill_form); warn: 3, block_after: 6.
    let later: Vec<Action> = (0..5).map(|_| s.action("click", json!({}))).collect();
    assert_eq!(
        later,
        [
            Action::Warn,
            Action::StepUp,
            Action::StepUp,
            Action::StepUp,
            Action::Deny
        ]
    );
}

#[test]
fn tool_integrity_blocks_changes_and_uses_accepted_annotations() {
    let p = load("tool-integrity.yaml");
    let fs = p.resolve("filesystem", &FS.map(str::to_owned));
    let i = p.integrity(&fs);
    assert_eq!(i.on_tool_change, OnToolChange::Block);
    assert_eq!(i.on_suspicious_tool, OnSuspiciousTool::Block);
    assert_eq!(i.annotations.read_only, ReadOnlyUse::Approve);
    assert_eq!(i.annotations.destructive, DestructiveUse::StepUp);
    assert!(i.pins.is_none());
    let dlp = p.dlp(&fs);
    assert_eq!(
        (dlp.arguments, dlp.results),
        (DlpArguments::Block, DlpResults::Redact)
    );
    assert_eq!(dlp.detectors, thoth_policy::DEFAULT_DLP_DETECTORS);
    // Another server: the defaults (warn, warn).
    let other = p.resolve("github", &["gh-mcp".to_owned()]);
    assert_eq!(p.integrity(&other).on_tool_change, OnToolChange::Warn);

    let decide = |tool: &str, path: &str, read_only: bool, destructive: Option<bool>| {
        let args = json!({ "path": path });
        let hints = destructive.map(|destructive| TrustedHints {
            read_only,
            destructive,
        });
        thoth_policy::evaluate(
            &p,
            &fs,
            &SessionState::new(),
            &ToolCall {
                tool,
                arguments: (&args).into(),
                hints,
            },
            std::time::Instant::now(),
        )
    };
    let inside = "/home/ann/projects/a";
    // Listed reads need no hints.
    assert_eq!(
        decide("read_text_file", inside, false, None).action,
        Action::Allow
    );
    // An accepted read-only tool is approved without being listed; unaccepted, it asks.
    let d = decide("search_files", inside, true, Some(false));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Allow, "servers[0].annotations.read_only")
    );
    assert_eq!(
        decide("search_files", inside, true, None).action,
        Action::StepUp
    );
    // ...and outside the project tree it is out of scope all the same.
    assert_eq!(
        decide("search_files", "/etc", true, Some(false)).action,
        Action::StepUp
    );
    // An approved tool whose accepted definition is destructive asks.
    let d = decide("create_directory", inside, false, Some(true));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::StepUp, "servers[0].annotations.destructive")
    );
    assert_eq!(
        decide("create_directory", inside, false, Some(false)).action,
        Action::Allow
    );
}
