//! Claude Code: `~/.claude.json` (strict JSON; the user's servers in top-level `mcpServers`,
//! each project's in `projects.<abs path>.mcpServers`) and each known project's `.mcp.json`
//! (`mcpServers`). Claude Code rewrites `~/.claude.json` itself, often: under the lock
//! `~/.claude.json.lock` (a directory), re-reading the file before each save, then writing a
//! temp file and renaming it over. The agent takes the same lock, and its replacement checks
//! that it displaced exactly what it read (see `file::replace`), so neither loses a write.

use std::path::{Path, PathBuf};

use crate::format::json::JsonFormat;
use crate::format::{Format, Found};
use crate::host::{Host, Os, existing};

/// The host.
pub struct ClaudeCode;

/// The user file's name (in the home directory).
pub const USER_FILE: &str = ".claude.json";
/// A project's shared file's name.
pub const PROJECT_FILE: &str = ".mcp.json";

fn user_file(home: &Path) -> PathBuf {
    home.join(USER_FILE)
}

/// The most projects of `~/.claude.json` looked at (each costs a few system calls).
const MAX_PROJECTS: usize = 1000;

/// The project directories `~/.claude.json` knows, kept only when they are directories (not
/// symbolic links to one) belonging to the home's owner (a user's file must not make root
/// rewrite someone else's project).
fn projects(home: &Path) -> Vec<PathBuf> {
    let Ok((bytes, _)) = crate::file::read_config_as(
        &user_file(home),
        crate::host::home_owner(home),
        crate::file::MAX_CONFIG_BYTES,
    ) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    let Some(projects) = v.get("projects").and_then(|p| p.as_object()) else {
        return Vec::new();
    };
    let owner = crate::host::home_owner(home);
    // Filtered first, then bounded: keys that name nothing, and keys that name the same
    // directory again (`/home/ann//p`), cannot crowd out a real project; projects that hold a
    // `.mcp.json` come first.
    let mut seen = std::collections::HashSet::new();
    let mut dirs: Vec<(bool, PathBuf)> = projects
        .keys()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .filter_map(|p| {
            let m = std::fs::symlink_metadata(&p).ok()?;
            #[cfg(unix)]
            let id = {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            };
            #[cfg(not(unix))]
            let id = p.clone();
            (m.is_dir() && seen.insert(id)).then_some(p)
        })
        .filter(|p| owner.is_some() && crate::host::owner(p) == owner)
        .map(|p| (std::fs::symlink_metadata(p.join(PROJECT_FILE)).is_ok(), p))
        .collect();
    dirs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut out: Vec<PathBuf> = dirs
        .into_iter()
        .take(MAX_PROJECTS)
        .map(|(_, p)| p)
        .collect();
    out.sort();
    out
}

impl Host for ClaudeCode {
    fn id(&self) -> &'static str {
        "claude-code"
    }
    fn name(&self) -> &'static str {
        "Claude Code"
    }
    fn files(&self, home: &Path, _: Os) -> Vec<PathBuf> {
        let owner = crate::host::home_owner(home);
        let mut files = existing(vec![user_file(home)]);
        files.extend(
            existing(
                projects(home)
                    .into_iter()
                    .map(|p| p.join(PROJECT_FILE))
                    .collect(),
            )
            .into_iter()
            .filter(|f| crate::host::owner(f) == owner),
        );
        files
    }
    fn watch_dirs(&self, home: &Path, _: Os) -> Vec<PathBuf> {
        let mut dirs = vec![home.to_path_buf()];
        dirs.extend(projects(home));
        dirs
    }
    fn format(&self, path: &Path) -> Format {
        if path.file_name().is_some_and(|n| n == PROJECT_FILE) {
            Format::Json(JsonFormat {
                jsonc: false,
                tables: &[&["mcpServers"]],
            })
        } else {
            Format::Json(JsonFormat {
                jsonc: false,
                tables: &[&["mcpServers"], &["projects", "*", "mcpServers"]],
            })
        }
    }
    fn enabled(&self, path: &Path, text: &str, found: &Found) -> bool {
        // A project's servers are turned off through `projects.<p>.disabledMcpServers`.
        if path.file_name().is_some_and(|n| n == USER_FILE)
            && let Some(project) = &found.scope
            && let Ok(v) =
                serde_json::from_str::<serde_json::Value>(text.trim_start_matches('\u{feff}'))
            && let Some(list) = v
                .pointer(&format!(
                    "/projects/{}/disabledMcpServers",
                    project.replace('~', "~0").replace('/', "~1")
                ))
                .and_then(|l| l.as_array())
            && list.iter().any(|n| n.as_str() == Some(&found.name))
        {
            return false;
        }
        !found.entry.disabled
    }
    fn lock_path(&self, path: &Path) -> Option<PathBuf> {
        path.file_name().is_some_and(|n| n == USER_FILE).then(|| {
            let mut p = path.as_os_str().to_owned();
            p.push(".lock");
            PathBuf::from(p)
        })
    }
    fn max_bytes(&self, path: &Path) -> u64 {
        // `~/.claude.json` keeps every project's history: it grows to megabytes.
        if path.file_name().is_some_and(|n| n == USER_FILE) {
            crate::file::MAX_CONFIG_BYTES
        } else {
            4 << 20
        }
    }
    fn rewrites_itself(&self) -> bool {
        true
    }
    fn pickup(&self) -> &'static str {
        "start a new Claude Code session (or run /mcp to reconnect the servers)"
    }
}
