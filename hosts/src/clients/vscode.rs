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
    let owner = crate::file::owner(home);
    let mut out = Vec::new();
    for product in PRODUCTS {
        let storage = os
            .app_data(home)
            .join(product)
            .join("User/workspaceStorage");
        let Ok(rd) = std::fs::read_dir(storage) else {
            continue;
        };
        for e in rd.flatten().take(1000) {
            let Ok((bytes, _)) = crate::file::read_config(&e.path().join("workspace.json")) else {
                continue;
            };
            let Some(folder) = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("folder").and_then(|f| f.as_str()).map(str::to_owned))
            else {
                continue;
            };
            let Some(path) = folder.strip_prefix("file://") else {
                continue;
            };
            let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
            let p = PathBuf::from(decoded.as_ref());
            if p.is_absolute() && p.is_dir() && owner.is_some() && crate::file::owner(&p) == owner {
                out.push(p);
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
        let owner = crate::file::owner(home);
        existing(candidates(home, os))
            .into_iter()
            .filter(|f| crate::file::owner(f) == owner)
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
