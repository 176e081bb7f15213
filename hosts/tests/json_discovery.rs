//! Each JSON host (Claude Code, Cursor, VS Code, Windsurf) finds its files in a home laid out
//! for each OS, every file under a watched directory; a project or workspace reached through a
//! symbolic link, or owned by someone else, is not found (nor read through).

mod common;

use std::path::{Path, PathBuf};

use common::{THOTH, put};
use thoth_hosts::clients::{
    claude_code::ClaudeCode, cursor::Cursor, vscode::VsCode, windsurf::Windsurf,
};
use thoth_hosts::file;
use thoth_hosts::format::Op;
use thoth_hosts::host::{Host, Os};

/// A home laid out for `os`, with every JSON host's files; returns the files each host must
/// find.
fn lay_out_home(
    home: &Path,
    os: Os,
    project: &Path,
    workspace: &Path,
) -> Vec<(&'static str, PathBuf)> {
    let servers = "{\"mcpServers\": {\"a\": {\"command\": \"npx\"}}}";
    let mut want = Vec::new();
    // Claude Code: the user file names two projects; only the one with a .mcp.json counts.
    let claude = home.join(".claude.json");
    let url = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap();
    put(
        &claude,
        &format!(
            "{{\"projects\": {{{}: {{\"mcpServers\": {{}}}}, \"/nonexistent/p\": {{}}, \"relative/p\": {{}}}}}}",
            url(project)
        ),
    );
    want.push(("claude-code", claude));
    put(&project.join(".mcp.json"), servers);
    want.push(("claude-code", project.join(".mcp.json")));
    // Cursor and Windsurf: in the home, whatever the OS.
    put(&home.join(".cursor/mcp.json"), servers);
    want.push(("cursor", home.join(".cursor/mcp.json")));
    put(&home.join(".codeium/windsurf/mcp_config.json"), servers);
    want.push(("windsurf", home.join(".codeium/windsurf/mcp_config.json")));
    // VS Code: the profile's mcp.json and settings.json, a named profile's, Insiders', and a
    // workspace's .vscode/mcp.json found through workspaceStorage.
    let app = match os {
        Os::Linux => home.join(".config"),
        Os::MacOs => home.join("Library/Application Support"),
        Os::Windows => home.join("AppData/Roaming"),
    };
    for f in [
        "Code/User/mcp.json",
        "Code/User/settings.json",
        "Code/User/profiles/-5a1b2c3d/mcp.json",
        "Code - Insiders/User/mcp.json",
    ] {
        put(&app.join(f), "{}");
        want.push(("vscode", app.join(f)));
    }
    let encoded = workspace
        .display()
        .to_string()
        .replace('%', "%25")
        .replace(' ', "%20");
    put(
        &app.join("Code/User/workspaceStorage/0f3c9a/workspace.json"),
        &format!("{{\"folder\": \"file://{encoded}\"}}"),
    );
    put(
        &app.join("Code/User/workspaceStorage/77aa01/workspace.json"),
        "{\"folder\": \"vscode-remote://ssh-remote%2Bbox/home/ann/p\"}",
    );
    put(
        &app.join("Code/User/workspaceStorage/garbage/workspace.json"),
        "not json",
    );
    put(&workspace.join(".vscode/mcp.json"), "{\"servers\": {}}");
    want.push(("vscode", workspace.join(".vscode/mcp.json")));
    // Cursor's projects, through Cursor's own workspaceStorage: the workspace's .cursor/mcp.json
    // (its .vscode one is VS Code's), and the home opened as a project (its .cursor/mcp.json is
    // the user file, listed once).
    put(
        &app.join("Cursor/User/workspaceStorage/ab12/workspace.json"),
        &format!("{{\"folder\": \"file://{encoded}\"}}"),
    );
    let home_uri = home.display().to_string().replace(' ', "%20");
    put(
        &app.join("Cursor/User/workspaceStorage/cd34/workspace.json"),
        &format!("{{\"folder\": \"file://{home_uri}\"}}"),
    );
    put(&workspace.join(".cursor/mcp.json"), servers);
    want.push(("cursor", workspace.join(".cursor/mcp.json")));
    want
}

/// Under `tmp`: a home laid out for Linux, a project and a workspace its files name; and the
/// files each host must find.
#[cfg(unix)]
fn linux_home(tmp: &Path) -> (PathBuf, PathBuf, PathBuf, Vec<(&'static str, PathBuf)>) {
    let home = tmp.join("home/ann");
    let project = tmp.join("src/project");
    let workspace = tmp.join("work/ws");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::create_dir_all(&workspace).unwrap();
    let want = lay_out_home(&home, Os::Linux, &project, &workspace);
    (home, project, workspace, want)
}

/// How many of `host`'s files in the Linux `home` end with `suffix`.
#[cfg(unix)]
fn count_files(home: &Path, host: &dyn Host, suffix: &str) -> usize {
    host.files(home, Os::Linux)
        .iter()
        .filter(|f| f.ends_with(suffix))
        .count()
}

#[cfg(unix)]
#[test]
fn a_project_or_workspace_that_is_a_symlink_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, project, workspace, _) = linux_home(tmp.path());
    let count = |host: &dyn Host, suffix: &str| count_files(&home, host, suffix);
    assert_eq!(count(&ClaudeCode, ".mcp.json"), 1);
    assert_eq!(count(&VsCode, ".vscode/mcp.json"), 1);
    assert_eq!(count(&Cursor, ".cursor/mcp.json"), 2);
    // The same folders, named through symbolic links in the user's files.
    let real_project = tmp.path().join("src/project-real");
    let real_workspace = tmp.path().join("work/ws-real");
    std::fs::rename(&project, &real_project).unwrap();
    std::fs::rename(&workspace, &real_workspace).unwrap();
    std::os::unix::fs::symlink(&real_project, &project).unwrap();
    std::os::unix::fs::symlink(&real_workspace, &workspace).unwrap();
    assert_eq!(count(&ClaudeCode, ".mcp.json"), 0);
    assert_eq!(count(&VsCode, ".vscode/mcp.json"), 0);
    assert_eq!(count(&Cursor, ".cursor/mcp.json"), 1);
}

#[test]
fn each_host_finds_its_files_in_a_home_laid_out_for_each_os() {
    for os in [Os::Linux, Os::MacOs, Os::Windows] {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home/ann");
        let project = tmp.path().join("src/my project");
        let workspace = tmp.path().join("work/a space%20and %");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::create_dir_all(&workspace).unwrap();
        let want = lay_out_home(&home, os, &project, &workspace);
        for host in [&ClaudeCode as &dyn Host, &Cursor, &VsCode, &Windsurf] {
            let mut found = host.files(&home, os);
            found.sort();
            let mut expected: Vec<PathBuf> = want
                .iter()
                .filter(|(h, _)| *h == host.id())
                .map(|(_, p)| p.clone())
                .collect();
            expected.sort();
            assert_eq!(found, expected, "{} on {os:?}", host.id());
            // Every file found lies under a watched directory.
            let dirs = host.watch_dirs(&home, os);
            for f in &found {
                assert!(
                    dirs.iter().any(|d| f.parent() == Some(d.as_path())),
                    "{}: {} not watched ({dirs:?})",
                    host.id(),
                    f.display()
                );
            }
        }
        // Another OS's layout is not this one's (VS Code's app-data differs).
        let other = if os == Os::Linux {
            Os::MacOs
        } else {
            Os::Linux
        };
        assert!(
            !VsCode
                .files(&home, other)
                .iter()
                .any(|f| f.ends_with("Code/User/mcp.json")),
            "{os:?}"
        );
    }
}

/// Whether this process runs as root (a file it creates is owned by uid 0).
#[cfg(unix)]
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid() == 0
}

#[test]
fn projects_and_workspaces_of_someone_else_are_not_found() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::chown;
        if !is_root() {
            eprintln!("NOTE: not root: the ownership refusal (chown) is not exercised here");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (home, project, workspace, want) = linux_home(tmp.path());
        let ann = 4242;
        for (_, p) in &want {
            chown(p, Some(ann), Some(ann)).unwrap();
        }
        // Everything in Ann's home is hers (workspaceStorage's workspace.json files included:
        // they are read only as hers).
        fn chown_all(dir: &std::path::Path, uid: u32) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                std::os::unix::fs::lchown(&p, Some(uid), Some(uid)).unwrap();
                if e.file_type().unwrap().is_dir() {
                    chown_all(&p, uid);
                }
            }
        }
        chown_all(&home, ann);
        for d in [
            &home,
            &project,
            &workspace,
            &workspace.join(".vscode"),
            &workspace.join(".cursor"),
            &home.join(".cursor"),
        ] {
            chown(d, Some(ann), Some(ann)).unwrap();
        }
        let count = |host: &dyn Host, suffix: &str| count_files(&home, host, suffix);
        assert_eq!(count(&ClaudeCode, ".mcp.json"), 1);
        assert_eq!(count(&VsCode, ".vscode/mcp.json"), 1);
        // The project directory belongs to someone else: its .mcp.json is not Ann's to have
        // root rewrite.
        chown(&project, Some(777), Some(777)).unwrap();
        assert_eq!(count(&ClaudeCode, ".mcp.json"), 0);
        // Ann's directory, but the file is someone else's (a hard link would look so).
        chown(&project, Some(ann), Some(ann)).unwrap();
        chown(project.join(".mcp.json"), Some(777), Some(777)).unwrap();
        assert_eq!(count(&ClaudeCode, ".mcp.json"), 0);
        // The same for a VS Code workspace, and for a Cursor project.
        assert_eq!(count(&Cursor, ".cursor/mcp.json"), 2);
        chown(&workspace, Some(777), Some(777)).unwrap();
        assert_eq!(count(&VsCode, ".vscode/mcp.json"), 0);
        assert_eq!(count(&Cursor, ".cursor/mcp.json"), 1);
        chown(&workspace, Some(ann), Some(ann)).unwrap();
        chown(workspace.join(".vscode/mcp.json"), Some(777), Some(777)).unwrap();
        assert_eq!(count(&VsCode, ".vscode/mcp.json"), 0);
        // A symlinked project .mcp.json is listed (so its refusal is seen) but never read
        // through: rewriting it fails and the target is unchanged.
        let target = tmp.path().join("elsewhere.json");
        std::fs::write(&target, "{\"mcpServers\": {\"a\": {\"command\": \"x\"}}}").unwrap();
        std::fs::remove_file(project.join(".mcp.json")).unwrap();
        std::os::unix::fs::symlink(&target, project.join(".mcp.json")).unwrap();
        std::os::unix::fs::lchown(project.join(".mcp.json"), Some(ann), Some(ann)).unwrap();
        let link = project.join(".mcp.json");
        if ClaudeCode.files(&home, Os::Linux).contains(&link) {
            assert!(file::rewrite_file(&ClaudeCode, &link, &Op::wrap(THOTH), false).is_err());
        }
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "{\"mcpServers\": {\"a\": {\"command\": \"x\"}}}"
        );
    }
}
