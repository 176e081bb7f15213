//! Discovery bounds what it looks at, but what names nothing cannot crowd out a real file: a
//! user who fills `~/.claude.json` with project keys, or `Claude Extensions/` with empty
//! directories, does not hide a real project's or extension's servers from the agent.

mod common;

use std::path::Path;

use common::put;
use thoth_hosts::host::Os;

/// `home`'s `~/.claude.json` names `junk` (project keys that name nothing) and then `project`,
/// which has a `.mcp.json`: Claude Code's files include the project's.
fn real_project_is_found(home: &Path, project: &Path, junk: impl Iterator<Item = String>) {
    put(
        &project.join(".mcp.json"),
        r#"{"mcpServers": {"shared": {"command": "npx", "args": []}}}"#,
    );
    let mut projects = serde_json::Map::new();
    for k in junk {
        projects.insert(k, serde_json::json!({}));
    }
    projects.insert(project.display().to_string(), serde_json::json!({}));
    put(
        &home.join(".claude.json"),
        &serde_json::json!({"projects": projects}).to_string(),
    );
    let code = thoth_hosts::host::by_id("claude-code").unwrap();
    let files = code.files(home, Os::current());
    assert!(
        files.contains(&project.join(".mcp.json")),
        "the real project was crowded out: {files:?}"
    );
}

#[test]
fn junk_project_keys_do_not_hide_a_real_project() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ann");
    let project = home.join("zz-real-project");
    // 1,500 keys that sort before the real one and name nothing.
    real_project_is_found(&home, &project, (0..1500).map(|i| format!("/a/{i:05}")));
}

#[test]
fn empty_extension_directories_do_not_hide_an_installed_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ann");
    let exts = Os::current()
        .app_data(&home)
        .join("Claude/Claude Extensions");
    for i in 0..1200 {
        std::fs::create_dir_all(exts.join(format!("aaa{i:05}"))).unwrap();
    }
    let manifest = exts.join("zzz.real/manifest.json");
    put(
        &manifest,
        r#"{"name": "real", "server": {"type": "binary", "mcp_config": {"command": "/opt/real", "args": []}}}"#,
    );
    let ext = thoth_hosts::host::by_id("claude-extension").unwrap();
    let files = ext.files(&home, Os::current());
    assert!(
        files.contains(&manifest),
        "the installed extension was crowded out: {} files",
        files.len()
    );
}

#[test]
fn keys_naming_the_same_directory_again_do_not_hide_a_real_project() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ann");
    let project = home.join("proj");
    // 1,500 spellings of the home itself (`/…/ann//`, `/…/ann///`…), sorted before the project.
    let spellings = (1..=1500).map(|i| format!("{}{}", home.display(), "/".repeat(i)));
    real_project_is_found(&home, &project, spellings);
}

#[test]
fn junk_files_beside_the_extensions_do_not_hide_them() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ann");
    let exts = Os::current()
        .app_data(&home)
        .join("Claude/Claude Extensions");
    std::fs::create_dir_all(&exts).unwrap();
    for i in 0..60_000 {
        std::fs::File::create(exts.join(format!("junk{i}"))).unwrap();
    }
    let mut want = Vec::new();
    for i in 0..10 {
        let m = exts.join(format!("ext{i}/manifest.json"));
        put(
            &m,
            r#"{"name": "x", "server": {"type": "binary", "mcp_config": {"command": "/opt/x", "args": []}}}"#,
        );
        want.push(m);
    }
    let ext = thoth_hosts::host::by_id("claude-extension").unwrap();
    let files = ext.files(&home, Os::current());
    for m in &want {
        assert!(
            files.contains(m),
            "{} crowded out by junk files",
            m.display()
        );
    }
}
