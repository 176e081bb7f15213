//! The host-adapter model: each MCP client ("host") is one [`Host`] — where its files are per OS
//! and per user, their format and server tables, which entries are enabled, whether the host
//! rewrites its file itself, and what a user must do to pick up a change. Everything else (the
//! rewrite, safe replacement, discovery, the inventory, the agent's guardian) is shared. Adding
//! a client is one new file in `clients/` and one line in [`all`].

use std::path::{Path, PathBuf};

use crate::format::{Ctx, Format, Found};

/// The operating systems hosts store files for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// Linux.
    Linux,
    /// macOS.
    MacOs,
    /// Windows.
    Windows,
}

impl Os {
    /// The OS this binary runs on.
    pub fn current() -> Os {
        if cfg!(target_os = "macos") {
            Os::MacOs
        } else if cfg!(windows) {
            Os::Windows
        } else {
            Os::Linux
        }
    }

    /// The key extension manifests use for it (`platform_overrides`).
    pub fn platform(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::MacOs => "darwin",
            Os::Windows => "win32",
        }
    }

    /// A user's application-data directory under their home (`~/Library/Application Support`,
    /// `%APPDATA%` = `AppData/Roaming`, `~/.config`).
    pub fn app_data(self, home: &Path) -> PathBuf {
        match self {
            Os::MacOs => home.join("Library/Application Support"),
            Os::Windows => home.join("AppData/Roaming"),
            Os::Linux => home.join(".config"),
        }
    }
}

/// One MCP client.
pub trait Host: Send + Sync + 'static {
    /// Its id, as `--client` and in events, configs and the inventory (`claude-desktop`).
    fn id(&self) -> &'static str;
    /// Its name for people (`Claude Desktop`).
    fn name(&self) -> &'static str;
    /// The files it reads its servers from for the user whose home is `home` on `os`; only
    /// those that exist are returned. May read the host's own files (within the size limit) to
    /// find more (Claude Code's projects).
    fn files(&self, home: &Path, os: Os) -> Vec<PathBuf>;
    /// The directories whose changes may add, replace or remove one of its files (watched by
    /// the agent; they need not exist). Default: the parents of [`Host::files`]' candidates.
    fn watch_dirs(&self, home: &Path, os: Os) -> Vec<PathBuf>;
    /// The format of one of its files.
    fn format(&self, path: &Path) -> Format;
    /// The rewrite context for `path`: this host's id, and the server name when it is not the
    /// entry's key.
    fn ctx<'a>(&'a self, path: &'a Path) -> Ctx<'a> {
        let _ = path;
        Ctx {
            client: self.id(),
            server: None,
        }
    }
    /// The servers of one file as the host runs them on `os`, from its entries (`text`: the
    /// file's text). Default: every entry as it is. An extension collapses its base and
    /// platform overrides into the one entry that runs on `os`.
    fn servers(&self, path: &Path, text: &str, found: Vec<Found>, os: Os) -> Vec<Found> {
        let _ = (path, text, os);
        found
    }
    /// Whether the host runs the server (`text`: the file's text). Default: the entry does not
    /// say it is disabled.
    fn enabled(&self, path: &Path, text: &str, found: &Found) -> bool {
        let _ = (path, text);
        !found.entry.disabled
    }
    /// The lock file the host takes while it rewrites `path` (Claude Code: `~/.claude.json.lock`,
    /// a directory); the agent takes it too, so neither loses the other's write.
    fn lock_path(&self, path: &Path) -> Option<PathBuf> {
        let _ = path;
        None
    }
    /// The largest file of this host read (a hostile file must not make the agent read or hold
    /// more; every host file is read at each heartbeat). Default 4 MiB.
    fn max_bytes(&self, path: &Path) -> u64 {
        let _ = path;
        4 << 20
    }
    /// Whether the host rewrites its own file while it runs (the agent must neither lose those
    /// writes nor fight them).
    fn rewrites_itself(&self) -> bool {
        false
    }
    /// What a user must do for a change to take effect.
    fn pickup(&self) -> &'static str;
}

/// The uid owning `path` (not following a symlink); on other systems `Some(0)` for anything
/// that exists (ownership is not compared there).
pub fn owner(path: &Path) -> Option<u32> {
    let m = std::fs::symlink_metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(m.uid())
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Some(0)
    }
}

/// The uid owning a home directory, following a symlink: homes are listed by the system
/// (`/home/ann` may be a link to `/data/ann`, made by an administrator), unlike the files and
/// directories inside them, which are a user's to make and are never followed.
pub fn home_owner(home: &Path) -> Option<u32> {
    let m = std::fs::metadata(home).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(m.uid())
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Some(0)
    }
}

/// The parents of `paths` (for [`Host::watch_dirs`]).
pub fn parents(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The existing regular files among `paths` (symlinks are not followed, and are refused later
/// with a reason; they are listed so the refusal is seen).
pub fn existing(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir()))
        .collect()
}

/// Every host Thoth knows, in a stable order.
pub fn all() -> &'static [&'static dyn Host] {
    use crate::clients::*;
    &[
        &claude_desktop::ClaudeDesktop,
        &claude_extension::ClaudeExtension,
        &claude_code::ClaudeCode,
        &cursor::Cursor,
        &vscode::VsCode,
        &windsurf::Windsurf,
        &codex::Codex,
    ]
}

/// The host with this id.
pub fn by_id(id: &str) -> Option<&'static dyn Host> {
    all().iter().copied().find(|h| h.id() == id)
}

/// Every host id, comma-separated (for messages).
pub fn ids() -> String {
    all().iter().map(|h| h.id()).collect::<Vec<_>>().join(", ")
}

/// Which hosts are managed: every host (the default), or the ones named. An unknown id is an
/// error naming the known ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFilter(Option<Vec<String>>);

impl HostFilter {
    /// Every host.
    pub fn all() -> HostFilter {
        HostFilter(None)
    }

    /// Only these hosts (checked).
    pub fn only(ids: &[String]) -> Result<HostFilter, String> {
        for id in ids {
            if by_id(id).is_none() {
                return Err(format!(
                    "unknown MCP client {id:?} (known: {})",
                    self::ids()
                ));
            }
        }
        Ok(HostFilter(Some(ids.to_vec())))
    }

    /// Whether `host` is managed.
    pub fn allows(&self, host: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i == host))
    }

    /// The managed hosts.
    pub fn hosts(&self) -> Vec<&'static dyn Host> {
        all()
            .iter()
            .copied()
            .filter(|h| self.allows(h.id()))
            .collect()
    }

    /// Both at once: a host is managed when each filter allows it.
    pub fn and(&self, other: &HostFilter) -> HostFilter {
        match (&self.0, &other.0) {
            (None, o) => HostFilter(o.clone()),
            (s, None) => HostFilter(s.clone()),
            (Some(a), Some(b)) => {
                HostFilter(Some(a.iter().filter(|i| b.contains(i)).cloned().collect()))
            }
        }
    }
}

/// One host file of one user.
#[derive(Clone)]
pub struct HostFile {
    /// The host.
    pub host: &'static dyn Host,
    /// The user's home.
    pub home: PathBuf,
    /// The file.
    pub path: PathBuf,
}

impl std::fmt::Debug for HostFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFile")
            .field("host", &self.host.id())
            .field("home", &self.home)
            .field("path", &self.path)
            .finish()
    }
}

/// Every existing file of the managed hosts under each home, on this OS. Each is read only as
/// the home's owner (`file::Options::owner`, `inventory::scan_file_as`): a file of anyone else
/// (a user who points `~/.cursor` at another user's, or a file an administrator left in the
/// home) is listed, and refused with its reason when read, so it is seen and never read on
/// this user's behalf.
pub fn discover(homes: &[PathBuf], filter: &HostFilter) -> Vec<HostFile> {
    let os = Os::current();
    let mut out = Vec::new();
    for home in homes {
        let home_owner = home_owner(home);
        for host in filter.hosts() {
            if home_owner.is_none() {
                continue;
            }
            for path in host.files(home, os) {
                out.push(HostFile {
                    host,
                    home: home.clone(),
                    path,
                });
            }
        }
    }
    out
}

/// The host whose file `path` is, judged by its name and place (for `--client`-less CLI use
/// and for watch events).
pub fn host_of(path: &Path, home: &Path) -> Option<&'static dyn Host> {
    let os = Os::current();
    all()
        .iter()
        .copied()
        .find(|h| h.files(home, os).iter().any(|p| p == path))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_home_that_is_a_link_made_by_the_system_is_still_governed() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("not root: ownership only matters to the root agent");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("data/ann");
        std::fs::create_dir_all(real.join(".cursor")).unwrap();
        std::fs::write(real.join(".cursor/mcp.json"), r#"{"mcpServers": {}}"#).unwrap();
        for p in [&real, &real.join(".cursor"), &real.join(".cursor/mcp.json")] {
            std::os::unix::fs::lchown(p, Some(41001), Some(41001)).unwrap();
        }
        // /home/ann -> /data/ann, made by root.
        std::fs::create_dir_all(root.path().join("home")).unwrap();
        let home = root.path().join("home/ann");
        std::os::unix::fs::symlink(&real, &home).unwrap();
        let found = discover(std::slice::from_ref(&home), &HostFilter::all());
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
