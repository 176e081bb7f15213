use super::*;
use crate::format::Op;
use crate::wrapper::NotGoverned;

const FMT: JsonFormat = JsonFormat {
    jsonc: false,
    tables: &[&["mcpServers"]],
};
const CTX: Ctx<'static> = Ctx {
    client: "claude-desktop",
    server: None,
};

fn wrap(text: &str, thoth: &str) -> Result<Rewritten, ConfigError> {
    rewrite(text, &FMT, &Op::wrap(thoth), &CTX)
}

fn wrap_with(text: &str, thoth: &str, extra: &[String]) -> Result<Rewritten, ConfigError> {
    rewrite(text, &FMT, &Op::wrap_strict(thoth, extra.to_vec()), &CTX)
}

fn unwrap(text: &str) -> Result<Rewritten, ConfigError> {
    rewrite(text, &FMT, &Op::Unwrap, &CTX)
}

fn is_wrapped(v: &Value) -> bool {
    Entry::from_json(v).is_wrapped()
}

fn loader_variables(v: &Value) -> Vec<String> {
    Entry::from_json(v).loader_variables()
}

fn governed(name: &str, v: &Value, thoth: &str, extra: &[String]) -> Result<(), NotGoverned> {
    crate::wrapper::governed(name, "claude-desktop", &Entry::from_json(v), thoth, extra)
}

const THOTH: &str = "/usr/local/bin/thoth";

#[test]
fn wraps_and_unwraps_keeping_everything_else() {
    let text = "{\n  \"globalShortcut\": \"Ctrl+Space\",\n  \"mcpServers\": {\n    \"files\": {\n      \"command\": \"npx\",\n      \"args\": [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"/Users/ann\"],\n      \"env\": {\"TOKEN\": \"s3cr\\u00e9t\"}\n    },\n    \"bare\": {\"command\": \"/opt/mcp\"},\n    \"remote\": {\"url\": \"https://x\"}\n  }\n}\n";
    let w = wrap(text, THOTH).unwrap();
    assert_eq!(w.report.wrapped, vec!["files", "bare"]);
    assert_eq!(w.report.remote, vec!["remote"]);
    let v: Value = serde_json::from_str(&w.text).unwrap();
    assert_eq!(v["mcpServers"]["files"]["command"], THOTH);
    assert_eq!(
        v["mcpServers"]["files"]["args"],
        serde_json::json!([
            "run",
            "--server",
            "files",
            "--client",
            "claude-desktop",
            "--",
            "npx",
            "-y",
            "@modelcontextprotocol/server-filesystem",
            "/Users/ann"
        ])
    );
    assert_eq!(
        v["mcpServers"]["bare"]["args"],
        serde_json::json!([
            "run",
            "--server",
            "bare",
            "--client",
            "claude-desktop",
            "--no-args",
            "--",
            "/opt/mcp"
        ])
    );
    // Untouched bytes: the escape in env and the shortcut line.
    assert!(w.text.contains("\"TOKEN\": \"s3cr\\u00e9t\""), "{}", w.text);
    assert!(
        w.text
            .starts_with("{\n  \"globalShortcut\": \"Ctrl+Space\",\n")
    );
    // Idempotent, and unwrap restores the exact value.
    let again = wrap(&w.text, THOTH).unwrap();
    assert_eq!(again.text, w.text);
    assert!(!again.report.changed());
    let u = unwrap(&w.text).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&u.text).unwrap(),
        serde_json::from_str::<Value>(text).unwrap()
    );
    // A wrapper pointing at an old thoth is updated.
    let moved = wrap(&w.text, "/opt/thoth/bin/thoth").unwrap();
    assert_eq!(moved.report.updated, vec!["files", "bare"]);
}

#[test]
fn a_wrapper_altered_before_the_separator_is_drift_and_re_wrapped() {
    let text = r#"{"mcpServers": {"files": {"command": "/usr/local/bin/thoth", "args": ["run", "--server", "files", "--client", "claude-desktop", "--policy", "/home/ann/allow.yaml", "--agent-socket", "/home/ann/nosock", "--state-dir", "/home/ann/st", "--", "npx", "-y", "server-filesystem", "/home/ann"], "env": {"LD_PRELOAD": "/home/ann/faketime.so"}}, "bare": {"command": "/usr/local/bin/thoth", "args": ["run", "--server", "bare", "--client", "claude-desktop", "--no-args", "--", "/opt/mcp"]}}}"#;
    let v: Value = serde_json::from_str(text).unwrap();
    let files = &v["mcpServers"]["files"];
    assert!(is_wrapped(files), "it looks wrapped: that was the hole");
    let why = governed("files", files, THOTH, &[])
        .unwrap_err()
        .to_string();
    assert!(why.contains("added --policy /home/ann/allow.yaml --agent-socket /home/ann/nosock --state-dir /home/ann/st"), "{why}");
    assert!(governed("bare", &v["mcpServers"]["bare"], THOTH, &[]).is_ok());
    // The agent's socket is part of the canonical form.
    let extra = vec!["--agent-socket".to_owned(), "/run/x.sock".to_owned()];
    assert!(governed("bare", &v["mcpServers"]["bare"], THOTH, &extra).is_err());
    // Another server's name is drift too.
    assert!(governed("other", &v["mcpServers"]["bare"], THOTH, &[]).is_err());

    let w = wrap_with(text, THOTH, &[]).unwrap();
    assert_eq!(w.report.rewrapped.len(), 1, "{:?}", w.report);
    assert_eq!(w.report.rewrapped[0].0, "files");
    assert!(w.report.rewrapped[0].1.contains("--policy"));
    assert_eq!(w.report.already, vec!["bare"]);
    let after: Value = serde_json::from_str(&w.text).unwrap();
    assert_eq!(
        after["mcpServers"]["files"]["args"],
        serde_json::json!([
            "run",
            "--server",
            "files",
            "--client",
            "claude-desktop",
            "--",
            "npx",
            "-y",
            "server-filesystem",
            "/home/ann"
        ])
    );
    // Only command and args change: env stays (the proxy refuses to run with it, and the
    // entry is reported).
    assert_eq!(after["mcpServers"]["files"]["env"], files["env"]);
    assert_eq!(
        loader_variables(&after["mcpServers"]["files"]),
        ["LD_PRELOAD"]
    );
    let again = wrap_with(&w.text, THOTH, &[]).unwrap();
    assert!(!again.report.changed());
    // wrap-config (standalone) keeps options a user added on purpose.
    assert!(wrap(text, THOTH).unwrap().report.rewrapped.is_empty());
}

#[test]
fn a_wrapper_running_another_thoth_is_not_governed_and_is_drift_for_the_agent() {
    // The user's own program named `thoth`, with the canonical arguments.
    let text = r#"{"mcpServers": {"files": {"command": "/home/ann/bin/thoth", "args": ["run", "--server", "files", "--client", "claude-desktop", "--", "npx", "server-filesystem", "/home/ann"]}}}"#;
    let v: Value = serde_json::from_str(text).unwrap();
    let files = &v["mcpServers"]["files"];
    assert!(is_wrapped(files));
    let why = governed("files", files, THOTH, &[])
        .unwrap_err()
        .to_string();
    assert!(
        why.contains("command /home/ann/bin/thoth instead of /usr/local/bin/thoth"),
        "{why}"
    );
    // The agent (strict) re-wraps it as drift, saying so; it is not a path update.
    let w = wrap_with(text, THOTH, &[]).unwrap();
    assert!(w.report.updated.is_empty(), "{:?}", w.report);
    assert_eq!(w.report.rewrapped.len(), 1, "{:?}", w.report);
    assert!(
        w.report.rewrapped[0]
            .1
            .contains("command /home/ann/bin/thoth"),
        "{:?}",
        w.report
    );
    let after: Value = serde_json::from_str(&w.text).unwrap();
    assert_eq!(after["mcpServers"]["files"]["command"], THOTH);
    assert!(governed("files", &after["mcpServers"]["files"], THOTH, &[]).is_ok());
    // Altered arguments too: both said.
    let both = text.replace(
        r#""claude-desktop", "--""#,
        r#""claude-desktop", "--policy", "/tmp/p", "--""#,
    );
    let w = wrap_with(&both, THOTH, &[]).unwrap();
    let diff = &w.report.rewrapped[0].1;
    assert!(
        diff.contains("command /home/ann/bin/thoth") && diff.contains("added --policy /tmp/p"),
        "{diff}"
    );
    // wrap-config (standalone, not strict) still just points it at this thoth.
    assert_eq!(wrap(text, THOTH).unwrap().report.updated, ["files"]);
}

#[test]
fn invalid_or_misshapen_files_are_refused_with_a_position() {
    for bad in [
        "{\"mcpServers\": {},}",
        "{\n // c\n}",
        "{\"mcpServers\": {\"a\": {",
        "",
    ] {
        match wrap(bad, THOTH) {
            Err(ConfigError::Invalid { line, .. }) => assert!(line >= 1, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(matches!(
        wrap("{\"mcpServers\": []}", THOTH),
        Err(ConfigError::Shape(_))
    ));
    assert!(matches!(wrap("[1]", THOTH), Err(ConfigError::Shape(_))));
    let r = wrap("{\"x\": 1}", THOTH).unwrap();
    assert_eq!(r.text, "{\"x\": 1}");
}

#[test]
fn a_typed_remote_entry_with_a_decoy_command_is_remote_and_never_looks_governed() {
    let fmt = JsonFormat {
        jsonc: true,
        tables: &[&["servers"]],
    };
    let ctx = Ctx {
        client: "vscode",
        server: None,
    };
    let text = r#"{"servers": {"looks-local": {"type": "http", "url": "https://exfil.example/mcp", "command": "node", "args": ["server.js"]}, "ok": {"type": "stdio", "command": "npx", "args": []}}}"#;
    let w = rewrite(text, &fmt, &Op::wrap(THOTH), &ctx).unwrap();
    assert_eq!(w.report.remote, ["looks-local"], "{:?}", w.report);
    assert_eq!(w.report.wrapped, ["ok"], "{:?}", w.report);
    let v: Value = serde_json::from_str(&w.text).unwrap();
    assert_eq!(v["servers"]["looks-local"]["command"], "node");
    let e = Entry::from_json(&v["servers"]["looks-local"]);
    assert!(e.is_remote());
    // A wrapper an older thoth put on such an entry is still taken out.
    let old = r#"{"servers": {"x": {"type": "sse", "url": "https://x", "command": "/usr/local/bin/thoth", "args": ["run", "--server", "x", "--client", "vscode", "--", "node", "s.js"]}}}"#;
    let u = rewrite(old, &fmt, &Op::Unwrap, &ctx).unwrap();
    assert_eq!(u.report.unwrapped, ["x"], "{:?}", u.report);
    let v: Value = serde_json::from_str(&u.text).unwrap();
    assert_eq!(v["servers"]["x"]["command"], "node");
}

#[test]
fn only_an_exact_stdio_type_is_local_and_a_url_beside_a_command_is_never_governed() {
    let fmt = JsonFormat {
        jsonc: true,
        tables: &[&["servers"]],
    };
    let ctx = Ctx {
        client: "vscode",
        server: None,
    };
    // VS Code runs a server locally only for `"type": "stdio"`, exactly.
    let text = r#"{"servers": {"a": {"type": "STDIO", "command": "npx", "url": "https://evil/mcp"}, "b": {"type": ["stdio"], "command": "npx", "url": "https://evil/mcp"}, "c": {"transport": "sse", "command": "node", "args": ["evil.js"]}, "d": {"command": "node", "url": "https://x/mcp"}}}"#;
    let w = rewrite(text, &fmt, &Op::wrap(THOTH), &ctx).unwrap();
    assert_eq!(w.report.remote, ["a", "b"], "{:?}", w.report);
    // `transport` is no client's key: the command runs, so it is wrapped.
    assert_eq!(w.report.wrapped, ["c", "d"], "{:?}", w.report);
    let v: Value = serde_json::from_str(&w.text).unwrap();
    let d = Entry::from_json(&v["servers"]["d"]);
    assert!(d.is_wrapped() && d.also_names_a_url());
    let host = crate::host::by_id("vscode").unwrap();
    let path = std::path::Path::new("mcp.json");
    let found = crate::format::entries(&w.text, &host.format(path)).unwrap();
    let state = |name: &str| {
        let f = found.iter().find(|f| f.name == name).unwrap();
        crate::inventory::server_info(host, path, &w.text, f, THOTH, &[]).state
    };
    assert!(
        matches!(state("d"), crate::inventory::State::NotGoverned(why) if why.contains("also names a URL")),
        "a wrapped command beside a URL is not counted as governed"
    );
    assert_eq!(state("c"), crate::inventory::State::Governed);
    assert_eq!(state("a"), crate::inventory::State::Remote);
}
