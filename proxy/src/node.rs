//! A Node.js runtime for Claude Desktop extensions whose server command is plain `node`.
//!
//! An extension (`.mcpb`) of type `node` says `"command": "node"`; Claude Desktop starts it with
//! its own runtime, so it works on a laptop without Node.js. Wrapped, the command is `thoth run
//! … -- node server.js`, and `thoth` must find a `node` itself. GUI apps get a stripped `PATH`
//! (on macOS, `/usr/bin:/bin:/usr/sbin:/sbin`), so a Node.js that is installed is often not on
//! it. When `--client claude-extension` is given, the command is exactly `node` (or `node.exe`)
//! and no `node` is on `PATH`, the runtime is looked for in this order (the debug log says which
//! was used):
//!
//! 1. well-known Node.js locations: `/opt/homebrew/bin/node`, `/usr/local/bin/node`,
//!    `/usr/bin/node`; on Windows `%ProgramFiles%\nodejs\node.exe`;
//! 2. Claude's own Electron binary, run as Node (`ELECTRON_RUN_AS_NODE=1` in the server's
//!    environment): the parent process's executable when its file name is `Claude` (or
//!    `claude.exe`; Linux only, through `/proc/PPID/exe`), then
//!    `/Applications/Claude.app/Contents/MacOS/Claude`, `~/Applications/Claude.app/…`, and on
//!    Windows `%LOCALAPPDATA%\AnthropicClaude\claude.exe`;
//! 3. none: `thoth run` says so on stderr and in every tool call's denial.
//!
//! UNVERIFIED: whether Claude's shipped binary honours `ELECTRON_RUN_AS_NODE` depends on its
//! Electron "RunAsNode" fuse, which has not been checked on a real Claude Desktop build. Public
//! research says Claude Desktop on macOS runs `node` extensions in an Electron UtilityProcess
//! (not by running its binary as Node), and that its Helper binaries cannot be used as `node`.
//! Step 2 is therefore a best effort: if the fuse is off, Claude's binary starts as the app,
//! not as Node, and the server will not answer. Installing Node.js (step 1) is the dependable
//! fix, and the failure message says so.
//!
//! The search lists are a seam ([`Search`]) so this is testable on any OS: the environment
//! variable `THOTH_NODE_LOCATIONS` (a `PATH`-style list; empty for none) replaces the
//! well-known Node.js locations, and `THOTH_CLAUDE_LOCATIONS` the Claude app locations. Both
//! only choose among programs the user could run anyway (`thoth run` runs the user's own
//! command line, as the user).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The `--client` value whose `node` servers get this treatment.
pub const EXTENSION_CLIENT: &str = "claude-extension";

/// What `thoth run` tells the user (stderr) and the model (each denial) when no runtime is
/// found.
pub const NO_RUNTIME: &str = "node is not installed and Claude's bundled runtime could not be \
     used: install Node.js (https://nodejs.org) so this extension's server can start";

/// Where to look (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// The `PATH` the server would be started with.
    pub path: Option<OsString>,
    /// Well-known Node.js locations, in order.
    pub node_locations: Vec<PathBuf>,
    /// The parent process's executable, if known.
    pub parent_exe: Option<PathBuf>,
    /// Claude's binary at its usual install locations, in order.
    pub claude_locations: Vec<PathBuf>,
}

impl Search {
    /// The search of this process: its `PATH`, its parent, this OS's locations (or the ones
    /// `THOTH_NODE_LOCATIONS` / `THOTH_CLAUDE_LOCATIONS` name).
    pub fn from_env() -> Search {
        let list = |var: &str, default: Vec<PathBuf>| match std::env::var_os(var) {
            Some(v) => std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            None => default,
        };
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Search {
            path: std::env::var_os("PATH"),
            node_locations: list("THOTH_NODE_LOCATIONS", default_node_locations()),
            parent_exe: parent_exe(),
            claude_locations: list(
                "THOTH_CLAUDE_LOCATIONS",
                default_claude_locations(home.as_deref()),
            ),
        }
    }
}

fn default_node_locations() -> Vec<PathBuf> {
    if cfg!(windows) {
        std::env::var_os("ProgramFiles")
            .map(|p| vec![PathBuf::from(p).join("nodejs").join("node.exe")])
            .unwrap_or_default()
    } else {
        [
            "/opt/homebrew/bin/node",
            "/usr/local/bin/node",
            "/usr/bin/node",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect()
    }
}

fn default_claude_locations(home: Option<&Path>) -> Vec<PathBuf> {
    if cfg!(windows) {
        std::env::var_os("LOCALAPPDATA")
            .map(|p| vec![PathBuf::from(p).join("AnthropicClaude").join("claude.exe")])
            .unwrap_or_default()
    } else {
        let app = "Claude.app/Contents/MacOS/Claude";
        let mut v = vec![PathBuf::from("/Applications").join(app)];
        if let Some(h) = home {
            v.push(h.join("Applications").join(app));
        }
        v
    }
}

/// The parent process's executable (Linux: `/proc/PPID/exe`; elsewhere unknown).
fn parent_exe() -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        let ppid = rustix::process::getppid()?;
        std::fs::read_link(format!("/proc/{}/exe", ppid.as_raw_nonzero())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// How the server's `node` is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// Nothing to do: not an extension, not plain `node`, or `node` is on `PATH`.
    AsIs,
    /// This Node.js binary (found at a well-known location).
    Node(PathBuf),
    /// Claude's binary, with `ELECTRON_RUN_AS_NODE=1`.
    ClaudeAsNode(PathBuf),
    /// No runtime: [`NO_RUNTIME`].
    Missing,
}

impl Runtime {
    /// The program to start instead of `node`, and the environment variables to add.
    pub fn program(&self) -> Option<(&Path, Vec<(&'static str, &'static str)>)> {
        match self {
            Runtime::Node(p) => Some((p, Vec::new())),
            Runtime::ClaudeAsNode(p) => Some((p, vec![("ELECTRON_RUN_AS_NODE", "1")])),
            Runtime::AsIs | Runtime::Missing => None,
        }
    }
}

/// Whether `program` is plain `node` (no directory).
fn is_plain_node(program: &str) -> bool {
    program == "node" || program.eq_ignore_ascii_case("node.exe")
}

/// Whether a file name is Claude's binary's.
fn is_claude_binary(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "Claude" || n.eq_ignore_ascii_case("claude.exe"))
}

/// An executable regular file (following symlinks).
fn executable(p: &Path) -> bool {
    let Ok(m) = std::fs::metadata(p) else {
        return false;
    };
    if !m.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// `name` in a directory of `path`, as the OS would find it.
pub fn on_path(name: &str, path: Option<&OsString>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(path)
        .filter(|d| !d.as_os_str().is_empty())
        .flat_map(|d| {
            let mut c = vec![d.join(name)];
            if cfg!(windows) && !name.to_ascii_lowercase().ends_with(".exe") {
                c.push(d.join(format!("{name}.exe")));
            }
            c
        })
        .find(|p| executable(p))
}

/// How to run `argv` for `client` (see the module documentation).
pub fn resolve(client: Option<&str>, argv: &[String], search: &Search) -> Runtime {
    if client != Some(EXTENSION_CLIENT) || !argv.first().is_some_and(|p| is_plain_node(p)) {
        return Runtime::AsIs;
    }
    if on_path(&argv[0], search.path.as_ref()).is_some() {
        return Runtime::AsIs;
    }
    if let Some(p) = search.node_locations.iter().find(|p| executable(p)) {
        return Runtime::Node(p.clone());
    }
    let parent = search.parent_exe.iter().filter(|p| is_claude_binary(p));
    if let Some(p) = parent
        .chain(search.claude_locations.iter())
        .find(|p| executable(p))
    {
        return Runtime::ClaudeAsNode(p.clone());
    }
    Runtime::Missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        p
    }

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_order_is_path_then_node_locations_then_claude() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let node = exe(d.path(), "node");
        let claude = exe(d.path(), "Claude");
        let mut s = Search {
            path: Some(empty.clone().into_os_string()),
            node_locations: vec![d.path().join("missing-node"), node.clone()],
            parent_exe: Some(claude.clone()),
            claude_locations: vec![],
        };
        let ext = Some(EXTENSION_CLIENT);
        let run = argv(&["node", "server.js"]);
        assert_eq!(resolve(ext, &run, &s), Runtime::Node(node.clone()));
        // Not an extension, or not plain node: untouched.
        assert_eq!(resolve(Some("claude-desktop"), &run, &s), Runtime::AsIs);
        assert_eq!(resolve(None, &run, &s), Runtime::AsIs);
        assert_eq!(
            resolve(ext, &argv(&["/opt/node", "server.js"]), &s),
            Runtime::AsIs
        );
        assert_eq!(resolve(ext, &argv(&["python3", "s.py"]), &s), Runtime::AsIs);
        // node on PATH: used as it is.
        exe(&bin, "node");
        s.path = Some(bin.clone().into_os_string());
        assert_eq!(resolve(ext, &run, &s), Runtime::AsIs);
        // No Node.js anywhere: the parent when it is Claude.
        s.path = Some(empty.into_os_string());
        s.node_locations.clear();
        assert_eq!(
            resolve(ext, &run, &s),
            Runtime::ClaudeAsNode(claude.clone())
        );
        // A parent not named Claude is not used; the install locations are.
        let app = exe(&bin, "Claude");
        s.parent_exe = Some(node.clone());
        s.claude_locations = vec![d.path().join("nope/Claude"), app.clone()];
        assert_eq!(resolve(ext, &run, &s), Runtime::ClaudeAsNode(app));
        s.claude_locations.clear();
        assert_eq!(resolve(ext, &run, &s), Runtime::Missing);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_that_is_not_executable_is_not_a_runtime() {
        let d = tempfile::tempdir().unwrap();
        let node = d.path().join("node");
        std::fs::write(&node, "").unwrap();
        let s = Search {
            path: None,
            node_locations: vec![node, d.path().to_path_buf()],
            parent_exe: None,
            claude_locations: vec![],
        };
        assert_eq!(
            resolve(Some(EXTENSION_CLIENT), &argv(&["node", "x.js"]), &s),
            Runtime::Missing
        );
    }
}
