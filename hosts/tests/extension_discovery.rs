//! Claude Desktop extensions on disk: the host finds a user's extensions (a symlinked one not
//! followed), reads their enabled state from the settings files, wraps them and inventories
//! them; hostile ids and settings never reach outside the settings directory.

mod common;

use std::path::Path;

use common::{THOTH, put};
use thoth_hosts::clients::claude_extension::{self, ClaudeExtension};
use thoth_hosts::file;
use thoth_hosts::format::manifest::NO_MCP_CONFIG;
use thoth_hosts::format::{self, Op};
use thoth_hosts::host::{Host, Os};
use thoth_hosts::inventory::{self, State};

fn read(name: &str) -> String {
    common::read_corpus("claude-extension", name)
}

#[test]
fn a_users_extensions_are_found_wrapped_and_inventoried() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ann");
    let app = home.join(".config/Claude");
    let exts = app.join(claude_extension::EXTENSIONS_DIR);
    let settings = app.join(claude_extension::SETTINGS_DIR);
    let node = read("valid-node-filesystem.json");
    let grep = read("valid-binary-overrides-every-kind.json");
    put(
        &exts.join("ant.dir.ant.anthropic.filesystem/manifest.json"),
        &node,
    );
    put(&exts.join("local.dxt.tools.grep-tool/manifest.json"), &grep);
    put(
        &exts.join("local.mcpb.example.hello-uv/manifest.json"),
        &read("valid-uv-no-mcp-config.json"),
    );
    // An extension directory that is a symlink is not followed.
    let elsewhere = tmp.path().join("elsewhere");
    put(&elsewhere.join("manifest.json"), &node);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&elsewhere, exts.join("evil.link")).unwrap();
    // Enabled by its settings; disabled by its settings; no settings file (not enabled).
    put(
        &settings.join("ant.dir.ant.anthropic.filesystem.json"),
        r#"{"isEnabled": true, "userConfig": {"allowed_directories": ["/home/ann/Documents"]}}"#,
    );
    put(
        &settings.join("local.dxt.tools.grep-tool.json"),
        r#"{"isEnabled": false}"#,
    );
    put(
        &app.join(claude_extension::REGISTRY),
        &read("registry-two-extensions.json"),
    );

    let host = &ClaudeExtension;
    let files = host.files(&home, Os::Linux);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(&app).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "Claude Extensions/ant.dir.ant.anthropic.filesystem/manifest.json",
            "Claude Extensions/local.dxt.tools.grep-tool/manifest.json",
            "Claude Extensions/local.mcpb.example.hello-uv/manifest.json",
            "extensions-installations.json",
        ]
    );
    let watch = host.watch_dirs(&home, Os::Linux);
    for d in [
        &exts,
        &settings,
        &app,
        &exts.join("local.dxt.tools.grep-tool"),
    ] {
        assert!(watch.contains(d), "{} not watched", d.display());
    }
    assert!(!watch.contains(&exts.join("evil.link")));
    assert_eq!(host.format(&files[0]), format::Format::Manifest);
    assert_eq!(host.format(&files[3]), format::Format::ManifestRegistry);
    assert_eq!(
        host.ctx(&files[1]).server,
        Some("local.dxt.tools.grep-tool")
    );

    // servers(): one entry per extension, the one that runs on the OS asked for.
    let text = std::fs::read_to_string(&files[1]).unwrap();
    let found = format::entries(&text, &host.format(&files[1])).unwrap();
    assert_eq!(found.len(), 4);
    for (os, cmd) in [
        (Os::Windows, "${__dirname}\\server\\grep-tool.exe"),
        (Os::MacOs, "${__dirname}/server/grep-tool-universal"),
        (Os::Linux, "${__dirname}/server/grep-tool"),
    ] {
        let one = host.servers(&files[1], &text, found.clone(), os);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].entry.command.as_deref(), Some(cmd));
    }
    assert!(!host.enabled(&files[1], &text, &found[0]));
    let ntext = std::fs::read_to_string(&files[0]).unwrap();
    let nfound = format::entries(&ntext, &host.format(&files[0])).unwrap();
    assert!(host.enabled(&files[0], &ntext, &nfound[0]));

    // The inventory before and after a wrap.
    let scan = |p: &Path| inventory::scan_file(host, p, THOTH, &[]);
    let before: Vec<_> = files.iter().map(|p| scan(p)).collect();
    assert!(before.iter().all(|f| f.error.is_none()), "{before:?}");
    let fs = &before[0].servers;
    assert_eq!(fs.len(), 1);
    assert_eq!(fs[0].name, "ant.dir.ant.anthropic.filesystem");
    assert_eq!(
        fs[0].state,
        State::NotGoverned("not wrapped by thoth".into())
    );
    assert!(fs[0].enabled);
    assert_eq!(
        fs[0].target,
        "node '${__dirname}/server/index.js' '${user_config.allowed_directories}'"
    );
    let uv = &before[2].servers[0];
    assert!(uv.state.reason().contains(NO_MCP_CONFIG), "{uv:?}");
    assert!(!uv.enabled, "no settings file: not enabled");
    let reg = &before[3].servers;
    let ids: Vec<(&str, bool)> = reg.iter().map(|s| (s.name.as_str(), s.enabled)).collect();
    assert_eq!(
        ids,
        [
            ("ant.dir.ant.anthropic.filesystem", true),
            ("local.dxt.ann.grep-tool", false)
        ]
    );

    for p in &files {
        let out = file::rewrite_file(host, p, &Op::wrap(THOTH), false).unwrap();
        assert_eq!(out.written, p != &files[2], "{}", p.display());
    }
    let after: Vec<_> = files.iter().map(|p| scan(p)).collect();
    for f in [&after[0], &after[1], &after[3]] {
        for srv in &f.servers {
            assert_eq!(srv.state, State::Governed, "{}: {srv:?}", f.path.display());
        }
    }
    assert_eq!(
        after[0].servers[0].target, fs[0].target,
        "the target is the original command line"
    );
    assert_eq!(after[3].servers.len(), 2);
    // And back, byte for byte.
    for p in &files {
        file::rewrite_file(host, p, &Op::Unwrap, false).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), node);
    assert_eq!(std::fs::read_to_string(&files[1]).unwrap(), grep);
    assert_eq!(
        std::fs::read_to_string(&files[3]).unwrap(),
        read("registry-two-extensions.json")
    );
}

#[test]
fn hostile_ids_and_settings_never_leave_the_settings_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("Claude");
    put(&tmp.path().join("secret.json"), r#"{"isEnabled": true}"#);
    put(
        &app.join("Claude Extensions Settings/ok.json"),
        r#"{"isEnabled": true}"#,
    );
    assert!(claude_extension::is_enabled(&app, "ok"));
    for id in ["../secret", "..", ".", "", "a/b", "a\\b"] {
        assert!(!claude_extension::is_enabled(&app, id), "{id:?}");
    }
    // Not JSON, not a bool: not enabled.
    put(
        &app.join("Claude Extensions Settings/bad.json"),
        "{isEnabled: true}",
    );
    put(
        &app.join("Claude Extensions Settings/str.json"),
        r#"{"isEnabled": "true"}"#,
    );
    assert!(!claude_extension::is_enabled(&app, "bad"));
    assert!(!claude_extension::is_enabled(&app, "str"));
    // A registry entry whose id tries to escape reads nothing outside.
    let reg = app.join(claude_extension::REGISTRY);
    let text = r#"{"extensions": {"../secret": {"manifest": {"name": "x", "server": {"mcp_config": {"command": "node"}}}}}}"#;
    put(&reg, text);
    let found = format::entries(text, &format::Format::ManifestRegistry).unwrap();
    assert!(!ClaudeExtension.enabled(&reg, text, &found[0]));
}
