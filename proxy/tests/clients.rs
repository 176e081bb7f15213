//! The CLI for every MCP client, run as the real `thoth` binary with `HOME` set to a temp dir:
//! `wrap-config` / `unwrap-config` (dry run, guessing the client from the file's place, byte-
//! exact round trips), `thoth clients --json`, `thoth status` across clients, and unknown
//! clients refused with the list of known ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

/// Runs `thoth ARGS` with `HOME=home` and none of the runner's `THOTH_*` variables; returns
/// (exit code, stdout, stderr).
fn thoth(home: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(common::thoth());
    cmd.args(args)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("xdg"));
    for (k, _) in std::env::vars() {
        if k.starts_with("THOTH_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(home: &Path, rel: &str, text: &str) -> PathBuf {
    let p = home.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn this_thoth() -> String {
    std::fs::canonicalize(common::thoth())
        .unwrap()
        .display()
        .to_string()
}

/// One config per JSON host, where that host keeps it on Linux, with a comment where the host
/// allows them, CRLF in one, and a remote server in one.
const FILES: [(&str, &str, &str, &str); 5] = [
    (
        "claude-desktop",
        ".config/Claude/claude_desktop_config.json",
        "{\r\n  \"mcpServers\": {\r\n    \"fs\": {\"command\": \"npx\", \"args\": [\"-y\", \"srv\"]}\r\n  }\r\n}\r\n",
        "/mcpServers/fs",
    ),
    (
        "cursor",
        ".cursor/mcp.json",
        "{\n\t\"mcpServers\": {\n\t\t\"fs\": {\"command\": \"npx\", \"args\": [\"-y\", \"srv\"]},\n\t\t\"web\": {\"url\": \"https://example.com/mcp\"}\n\t}\n}",
        "/mcpServers/fs",
    ),
    (
        "windsurf",
        ".codeium/windsurf/mcp_config.json",
        "{\"mcpServers\":{\"fs\":{\"command\":\"npx\",\"args\":[\"-y\",\"srv\"],\"env\":{\"A\":\"\\u00e9\"}}}}\n",
        "/mcpServers/fs",
    ),
    (
        "vscode",
        ".config/Code/User/mcp.json",
        "{\n  // my servers\n  \"servers\": {\n    \"fs\": {\n      \"type\": \"stdio\",\n      \"command\": \"npx\", /* inline */\n      \"args\": [\"-y\", \"srv\",],\n    },\n  },\n}\n",
        "/servers/fs",
    ),
    (
        "claude-code",
        ".claude.json",
        "{\n  \"numStartups\": 3,\n  \"mcpServers\": {\n    \"fs\": {\n      \"type\": \"stdio\",\n      \"command\": \"npx\",\n      \"args\": [\n        \"-y\",\n        \"srv\"\n      ]\n    }\n  }\n}",
        "/mcpServers/fs",
    ),
];

/// Parses a host file (JSONC allowed) into JSON.
fn parse(client: &str, text: &str) -> Value {
    if client != "vscode" {
        return serde_json::from_str(text).unwrap();
    }
    // Strip the comments and trailing commas this test's VS Code file has.
    let t = text
        .replace("// my servers", "")
        .replace("/* inline */", "")
        .replace(",]", "]")
        .replace(",\n    }", "\n    }")
        .replace(",\n  }", "\n  }")
        .replace(",\n}", "\n}");
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"))
}

#[test]
fn wrap_dry_run_and_unwrap_for_every_json_client() {
    for (client, rel, original, pointer) in FILES {
        let home = tempfile::tempdir().unwrap();
        let path = write(home.path(), rel, original);
        let p = path.to_str().unwrap();
        // Dry run: a diff, nothing written.
        let (code, out, err) = thoth(
            home.path(),
            &["wrap-config", "--client", client, "--dry-run"],
        );
        assert_eq!(code, 0, "{client}: {err}");
        assert!(
            out.contains("+") && out.contains("wrapped: fs"),
            "{client}: {out}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            original,
            "{client}: dry run wrote"
        );
        // Wrap this user's file of the client (no FILE).
        let (code, out, err) = thoth(home.path(), &["wrap-config", "--client", client]);
        assert_eq!(code, 0, "{client}: {err}");
        assert!(out.contains("wrapped: fs"), "{client}: {out}");
        assert!(out.contains("updated;"), "{client}: {out}");
        let text = std::fs::read_to_string(&path).unwrap();
        let v = parse(client, &text);
        let entry = v.pointer(pointer).unwrap();
        assert_eq!(entry["command"], this_thoth(), "{client}: {text}");
        let args: Vec<String> = serde_json::from_value(entry["args"].clone()).unwrap();
        assert_eq!(
            args,
            [
                "run", "--server", "fs", "--client", client, "--", "npx", "-y", "srv"
            ],
            "{client}"
        );
        if client == "vscode" {
            assert!(
                text.contains("// my servers") && text.contains("/* inline */"),
                "{text}"
            );
        }
        if client == "claude-desktop" {
            assert!(text.contains("\r\n") && !text.replace("\r\n", "").contains('\n'));
        }
        if client == "cursor" {
            assert!(
                out.contains("left alone (remote: runs elsewhere, cannot be wrapped): web"),
                "{out}"
            );
        }
        // Again: nothing to do. The file names no client: it is guessed from its place.
        let (code, out, err) = thoth(home.path(), &["wrap-config", p]);
        assert_eq!(code, 0, "{client}: {err}");
        assert!(
            out.contains("already governed: fs") && out.contains("nothing to change"),
            "{client}: {out}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "{client}: wrap is idempotent"
        );
        // `thoth clients` calls it governed.
        let (_, out, err) = thoth(
            home.path(),
            &[
                "clients",
                "--json",
                "--client",
                client,
                "--agent-socket",
                "/nonexistent/sock",
            ],
        );
        let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
        let fs = &doc["clients"][0]["files"][0]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "fs")
            .cloned()
            .unwrap();
        assert_eq!(fs["state"], "governed", "{client}: {doc}");
        // Unwrap restores the bytes.
        let (code, out, err) = thoth(home.path(), &["unwrap-config", "--client", client, p]);
        assert_eq!(code, 0, "{client}: {err}");
        assert!(out.contains("unwrapped: fs"), "{client}: {out}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            original,
            "{client}: not restored byte for byte"
        );
    }
}

#[test]
fn a_file_that_does_not_parse_is_never_touched() {
    let home = tempfile::tempdir().unwrap();
    let bad = "{\n  // a comment is not JSON\n  \"mcpServers\": {}\n}\n";
    let path = write(home.path(), ".cursor/mcp.json", bad);
    let (code, _, err) = thoth(home.path(), &["wrap-config", "--client", "cursor"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 2, column") && err.contains("not changed"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
}

#[test]
fn unknown_and_unguessable_clients_are_refused_with_the_known_ones() {
    let home = tempfile::tempdir().unwrap();
    let f = write(
        home.path(),
        "somewhere/servers.json",
        "{\"mcpServers\": {}}",
    );
    for args in [
        vec!["wrap-config", "--client", "emacs"],
        vec!["unwrap-config", "--client", "emacs"],
        vec!["clients", "--client", "emacs"],
        vec!["status", "--client", "emacs"],
    ] {
        let (code, _, err) = thoth(home.path(), &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("\"emacs\""), "{args:?}: {err}");
        for id in [
            "claude-desktop",
            "claude-code",
            "cursor",
            "vscode",
            "windsurf",
            "codex",
        ] {
            assert!(err.contains(id), "{args:?} does not list {id}: {err}");
        }
    }
    let (code, _, err) = thoth(home.path(), &["wrap-config", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--client") && err.contains("cursor"), "{err}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"mcpServers\": {}}");
    // No file for the client: said, exit 1.
    let (code, _, err) = thoth(home.path(), &["wrap-config", "--client", "windsurf"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Windsurf has no config"), "{err}");
}

/// A home with Claude Desktop (one server wrapped, one not), Cursor (a disabled server), VS
/// Code (JSONC, a remote server), Claude Code (a project's disabled server) and an invalid
/// Windsurf file.
fn mixed_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    write(
        h,
        ".config/Claude/claude_desktop_config.json",
        r#"{"mcpServers": {"fs": {"command": "npx", "args": ["-y", "srv"]}, "git": {"command": "uvx", "args": ["mcp-server-git"]}}}"#,
    );
    let (code, _, err) = thoth(h, &["wrap-config", "--client", "claude-desktop"]);
    assert_eq!(code, 0, "{err}");
    // Unwrap git again by hand: back to its original entry.
    let p = h.join(".config/Claude/claude_desktop_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["mcpServers"]["git"] = serde_json::json!({"command": "uvx", "args": ["mcp-server-git"]});
    std::fs::write(&p, v.to_string()).unwrap();
    write(
        h,
        ".cursor/mcp.json",
        r#"{"mcpServers": {"off": {"command": "node", "args": ["s.js"], "disabled": true}}}"#,
    );
    write(
        h,
        ".config/Code/User/mcp.json",
        "{\n  // comment\n  \"servers\": {\n    \"api\": {\"type\": \"http\", \"url\": \"https://example.com/mcp\"},\n  },\n}\n",
    );
    let project = h.join("proj");
    std::fs::create_dir_all(&project).unwrap();
    write(
        h,
        ".claude.json",
        &serde_json::json!({
            "mcpServers": {"notes": {"type": "stdio", "command": "python3", "args": ["notes.py"]}},
            "projects": {project.display().to_string(): {
                "mcpServers": {"db": {"command": "db-mcp", "args": []}},
                "disabledMcpServers": ["db"]
            }}
        })
        .to_string(),
    );
    write(
        h,
        ".codeium/windsurf/mcp_config.json",
        "{\"mcpServers\": {\n  \"x\": {,}\n}}",
    );
    home
}

fn server<'a>(doc: &'a Value, client: &str, name: &str) -> &'a Value {
    let c = doc["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == client)
        .unwrap_or_else(|| panic!("no {client}: {doc}"));
    c["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["servers"].as_array().unwrap())
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {client}/{name}: {doc}"))
}

#[test]
fn clients_json_lists_every_client_file_and_server() {
    let home = mixed_home();
    let (code, out, err) = thoth(
        home.path(),
        &["clients", "--json", "--agent-socket", "/nonexistent/sock"],
    );
    assert_eq!(code, 1, "an unreadable file: exit 1: {err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(doc["thoth"], this_thoth());
    assert_eq!(doc["agent"], false);
    assert_eq!(server(&doc, "claude-desktop", "fs")["state"], "governed");
    assert_eq!(server(&doc, "claude-desktop", "fs")["governed"], true);
    let git = server(&doc, "claude-desktop", "git");
    assert_eq!(git["state"], "not governed", "{doc}");
    assert_eq!(git["why"], "not wrapped by thoth");
    assert_eq!(git["target"], "uvx mcp-server-git");
    let off = server(&doc, "cursor", "off");
    assert_eq!(off["state"], "disabled", "{doc}");
    assert_eq!(off["enabled"], false);
    assert_eq!(off["governed"], false);
    let api = server(&doc, "vscode", "api");
    assert_eq!(api["state"], "remote", "{doc}");
    assert_eq!(api["transport"], "http");
    assert_eq!(api["target"], "https://example.com/mcp");
    assert_eq!(
        server(&doc, "claude-code", "notes")["state"],
        "not governed"
    );
    let db = server(&doc, "claude-code", "db");
    assert_eq!(db["state"], "disabled", "{doc}");
    assert!(db["scope"].as_str().unwrap().ends_with("/proj"), "{db}");
    let windsurf = doc["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "windsurf")
        .unwrap();
    let error = windsurf["files"][0]["error"].as_str().unwrap();
    assert!(error.contains("line 2, column"), "{error}");
    // Every known client is listed, found or not.
    let ids: Vec<&str> = doc["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for id in [
        "claude-desktop",
        "claude-extension",
        "claude-code",
        "cursor",
        "vscode",
        "windsurf",
        "codex",
    ] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    assert_eq!(doc["servers"], 6, "{doc}");
    assert_eq!(doc["governed"], 1, "{doc}");
    // The table, grouped by client and file; the error with its position.
    let (_, out, _) = thoth(
        home.path(),
        &["clients", "--agent-socket", "/nonexistent/sock"],
    );
    for needle in [
        "Claude Desktop (claude-desktop); to apply a change: quit Claude Desktop",
        "claude_desktop_config.json",
        "fs        governed",
        "git       not governed: not wrapped by thoth",
        "off       disabled, not governed",
        "api       remote: https://example.com/mcp",
        "cannot read it: ",
        "line 2, column",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    // One client only.
    let (code, out, _) = thoth(
        home.path(),
        &[
            "clients",
            "--json",
            "--client",
            "cursor",
            "--agent-socket",
            "/nonexistent/sock",
        ],
    );
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["clients"].as_array().unwrap().len(), 1);
}

#[test]
fn status_covers_every_client() {
    let home = mixed_home();
    let (code, out, _) = thoth(
        home.path(),
        &["status", "--json", "--agent-socket", "/nonexistent/sock"],
    );
    assert_eq!(code, 1);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let counts: Vec<(String, u64, u64)> = doc["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["servers"].as_u64().unwrap(),
                c["governed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        counts.contains(&("claude-desktop".into(), 2, 1)),
        "{counts:?}"
    );
    assert!(counts.contains(&("cursor".into(), 1, 0)), "{counts:?}");
    assert!(counts.contains(&("claude-code".into(), 2, 0)), "{counts:?}");
    let problems = doc["problems"].to_string();
    // Enabled, not governed servers are problems; a disabled one and a remote one are not.
    assert!(
        problems.contains("git") && problems.contains("notes [claude-code]"),
        "{problems}"
    );
    assert!(
        !problems.contains("off") && !problems.contains("api"),
        "{problems}"
    );
    assert!(
        problems.contains("Windsurf config cannot be read"),
        "{problems}"
    );
    assert!(
        doc["claudeConfig"]
            .as_str()
            .unwrap()
            .ends_with("claude_desktop_config.json")
    );
    // The text: counts per client.
    let (_, out, _) = thoth(
        home.path(),
        &["status", "--agent-socket", "/nonexistent/sock"],
    );
    assert!(
        out.contains("Claude Desktop     1 of 2 servers governed"),
        "{out}"
    );
    assert!(
        out.contains("Cursor             0 of 1 servers governed"),
        "{out}"
    );
    // One file, as one client; and the deprecated --claude-config still works.
    let cfg = home
        .path()
        .join(".config/Claude/claude_desktop_config.json");
    for args in [
        vec![
            "--config",
            cfg.to_str().unwrap(),
            "--client",
            "claude-desktop",
        ],
        vec!["--config", cfg.to_str().unwrap()],
        vec!["--claude-config", cfg.to_str().unwrap()],
    ] {
        let mut a = vec!["status", "--json", "--agent-socket", "/nonexistent/sock"];
        a.extend(args.iter().copied());
        let (_, out, err) = thoth(home.path(), &a);
        let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
        let names: Vec<&str> = doc["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["fs", "git"], "{args:?}: {doc}");
    }
}

#[test]
fn wrap_and_unwrap_codex_toml_and_an_extension_manifest() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let toml =
        "# my codex\n[mcp_servers.fs]\ncommand = \"npx\"\nargs = ['-y', \"srv\"] # literal\n";
    let codex = write(h, ".codex/config.toml", toml);
    let manifest = "{\n  \"manifest_version\": \"0.2\",\n  \"name\": \"x\",\n  \"server\": {\n    \"type\": \"node\",\n    \"entry_point\": \"server/index.js\",\n    \"mcp_config\": {\n      \"command\": \"node\",\n      \"args\": [\"${__dirname}/server/index.js\"]\n    }\n  }\n}\n";
    let ext = write(
        h,
        "elsewhere/Claude Extensions/ant.dir.x/manifest.json",
        manifest,
    );
    let (code, out, err) = thoth(h, &["wrap-config", "--client", "codex"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("wrapped: fs") && out.contains("Codex session"),
        "{out}"
    );
    let text = std::fs::read_to_string(&codex).unwrap();
    assert!(
        text.contains("\"--client\", \"codex\", \"--\", \"npx\", '-y', \"srv\"]")
            && text.contains("# my codex")
            && text.contains("# literal"),
        "{text}"
    );
    let (code, _, err) = thoth(h, &["unwrap-config", codex.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&codex).unwrap(), toml);
    // An extension's manifest: FILE with --client, and guessed from its place.
    for args in [
        vec!["--client", "claude-extension", ext.to_str().unwrap()],
        vec![ext.to_str().unwrap()],
    ] {
        let mut a = vec!["wrap-config"];
        a.extend(args.iter().copied());
        let (code, out, err) = thoth(h, &a);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("wrapped: ant.dir.x"), "{out}");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&ext).unwrap()).unwrap();
        let c = &v["server"]["mcp_config"];
        assert_eq!(c["command"], this_thoth());
        let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
        assert_eq!(
            args,
            [
                "run",
                "--server",
                "ant.dir.x",
                "--client",
                "claude-extension",
                "--",
                "node",
                "${__dirname}/server/index.js"
            ]
        );
        let (code, _, err) = thoth(
            h,
            &[
                "unwrap-config",
                "--client",
                "claude-extension",
                ext.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read_to_string(&ext).unwrap(), manifest);
    }
}
