//! VS Code (and VS Code Insiders): the user profile's `mcp.json` (`servers`) and `settings.json`
//! (`"mcp": {"servers": …}`), each profile's, and each recently opened workspace's
//! `.vscode/mcp.json` (found through `workspaceStorage/*/workspace.json`). All JSONC: comments
//! and trailing commas are read and kept.

use std::path::{Path, PathBuf};

use crate::format::Format;
use crate::format::json::JsonFormat;
use crate::host::{Host, Os, existing};

/// The host.
pub struct VsCode;

/// The most workspace folders found per product.
const MAX_WORKSPACES: usize = 1000;

/// The product directories under the app-data directory.
const PRODUCTS: [&str; 2] = ["Code", "Code - Insiders"];

fn user_dirs(home: &Path, os: Os) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for product in PRODUCTS {
        let user = os.app_data(home).join(product).join("User");
        dirs.push(user.clone());
        if let Ok(rd) = std::fs::read_dir(user.join("profiles")) {
            let mut profiles: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            profiles.sort();
            dirs.extend(profiles.into_iter().filter(|p| p.is_dir()));
        }
    }
    dirs
}

/// The folders of recently opened workspaces, kept only when they belong to the home's owner.
fn workspaces(home: &Path, os: Os) -> Vec<PathBuf> {
    workspaces_of(home, os, &PRODUCTS)
}

/// Whether `p` is a directory itself, not a symbolic link to one (a folder named in a user's
/// file is not followed elsewhere).
pub(crate) fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// The local folder a workspace's `folder` URI names (`file:///home/ann/my%20project`; on
/// Windows `file:///c%3A/Users/ann/p`), if it is one: other schemes (`vscode-remote://`) and
/// hosts (`file://server/share`) are not local folders.
pub(crate) fn folder_path(uri: &str) -> Option<PathBuf> {
    let path = uri.strip_prefix("file://")?;
    if !path.starts_with('/') {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let bytes = decoded.as_bytes();
    // `/c:/Users/…`: a drive letter.
    let drive =
        bytes.len() >= 3 && bytes[0] == b'/' && bytes[1].is_ascii_alphabetic() && bytes[2] == b':';
    let p = PathBuf::from(if drive { &decoded[1..] } else { &decoded[..] });
    (p.is_absolute() && !decoded.contains('\0')).then_some(p)
}

/// The folders of the workspaces recently opened in these VS Code-family products (directory
/// names under the app-data directory: `Code`, `Cursor`…), found through
/// `User/workspaceStorage/*/workspace.json`; kept only when they are directories (not symbolic
/// links to one) belonging to the home's owner (a user's file must not make root rewrite someone else's folder).
pub(crate) fn workspaces_of(home: &Path, os: Os, products: &[&str]) -> Vec<PathBuf> {
    let owner = crate::host::home_owner(home);
    let mut out = Vec::new();
    for product in products {
        let storage = os
            .app_data(home)
            .join(product)
            .join("User/workspaceStorage");
        let Ok(rd) = std::fs::read_dir(storage) else {
            continue;
        };
        // The most recently used first; each `workspace.json` is a line of JSON (read at most
        // 64 KiB of it); at most MAX_WORKSPACES folders found per product, of at most
        // 20 × MAX_WORKSPACES entries looked at.
        // Entries that are not directories cost no system call and do not count.
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = rd
            .take(1_000_000)
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .take(20 * MAX_WORKSPACES)
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().unwrap_or(std::time::UNIX_EPOCH), e.path()))
            })
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut found = 0;
        for (_, dir) in entries {
            if found >= MAX_WORKSPACES {
                break;
            }
            let Ok((bytes, _)) =
                crate::file::read_config_as(&dir.join("workspace.json"), owner, 64 << 10)
            else {
                continue;
            };
            let Some(p) = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("folder")
                        .and_then(|f| f.as_str())
                        .and_then(folder_path)
                })
            else {
                continue;
            };
            if is_real_dir(&p) && owner.is_some() && crate::host::owner(&p) == owner {
                out.push(p);
                found += 1;
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn candidates(home: &Path, os: Os) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in user_dirs(home, os) {
        files.push(dir.join("mcp.json"));
        files.push(dir.join("settings.json"));
    }
    for w in workspaces(home, os) {
        files.push(w.join(".vscode/mcp.json"));
    }
    files
}

impl Host for VsCode {
    fn id(&self) -> &'static str {
        "vscode"
    }
    fn name(&self) -> &'static str {
        "VS Code"
    }
    fn files(&self, home: &Path, os: Os) -> Vec<PathBuf> {
        let owner = crate::host::home_owner(home);
        existing(candidates(home, os))
            .into_iter()
            .filter(|f| crate::host::owner(f) == owner)
            .collect()
    }
    fn watch_dirs(&self, home: &Path, os: Os) -> Vec<PathBuf> {
        let mut dirs = user_dirs(home, os);
        dirs.extend(workspaces(home, os).into_iter().map(|w| w.join(".vscode")));
        dirs
    }
    fn format(&self, path: &Path) -> Format {
        if path.file_name().is_some_and(|n| n == "settings.json") {
            Format::Json(JsonFormat {
                jsonc: true,
                tables: &[&["mcp", "servers"]],
            })
        } else {
            Format::Json(JsonFormat {
                jsonc: true,
                tables: &[&["servers"]],
            })
        }
    }
    fn pickup(&self) -> &'static str {
        "VS Code reloads the file; restart each server from the MCP view (or the MCP: List Servers command)"
    }
}

#[cfg(test)]
mod tests {
    use super::folder_path;
    use std::path::PathBuf;

    #[test]
    fn workspace_uris_name_local_folders_only() {
        assert_eq!(
            folder_path("file:///home/ann/my%20project"),
            Some(PathBuf::from("/home/ann/my project"))
        );
        assert_eq!(
            folder_path("file:///home/ann/100%25%20done"),
            Some(PathBuf::from("/home/ann/100% done"))
        );
        assert_eq!(
            folder_path("vscode-remote://ssh-remote%2Bbox/home/ann/p"),
            None
        );
        assert_eq!(folder_path("file://server/share/p"), None);
        assert_eq!(folder_path("file:///home/ann/%00x"), None);
        assert_eq!(folder_path("file:///home/ann/%FF"), None);
        // A Windows drive: the leading slash goes (the path is absolute on Windows only).
        if cfg!(windows) {
            assert_eq!(
                folder_path("file:///c%3A/Users/ann/p"),
                Some(PathBuf::from("c:/Users/ann/p"))
            );
        } else {
            assert_eq!(folder_path("file:///c%3A/Users/ann/p"), None);
        }
    }
}
