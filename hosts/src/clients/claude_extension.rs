//! Claude Desktop extensions (`.mcpb`, formerly `.dxt`). Claude unpacks each installed extension
//! into `<Claude app dir>/Claude Extensions/<id>/` (its `manifest.json` says how to run the
//! server), keeps its enabled state and user settings in `Claude Extensions Settings/<id>.json`
//! (`isEnabled`, `userConfig`; no file: not enabled), and records each install, with a full
//! copy of the manifest, in `extensions-installations.json` (`extensions.<id>.manifest`). Which
//! of the two copies Claude launches from is not documented, so both are wrapped (see
//! [`crate::format::manifest`]). An update of an extension rewrites its directory: the agent
//! watches it and wraps the new manifest again.

use std::path::{Path, PathBuf};

use crate::format::manifest::{self, BASE_TABLE};
use crate::format::{Ctx, Format, Found};
use crate::host::{Host, Os};

use super::claude_desktop::app_dirs;

/// The directory extensions are unpacked into, in Claude's app-data directory.
pub const EXTENSIONS_DIR: &str = "Claude Extensions";
/// The directory of the extensions' settings (`<id>.json`).
pub const SETTINGS_DIR: &str = "Claude Extensions Settings";
/// The registry of installed extensions, in Claude's app-data directory.
pub const REGISTRY: &str = "extensions-installations.json";
/// An extension's manifest.
pub const MANIFEST: &str = "manifest.json";
/// The most extensions read per app-data directory (a hostile home may hold millions of
/// directories; a real one holds a few).
pub const MAX_EXTENSIONS: usize = 1000;
/// The most entries of `Claude Extensions/` listed at all (a directory of a million junk files
/// is read in well under a second; past this, the rest is not looked at).
const MAX_LISTING: usize = 1_000_000;

/// The host.
pub struct ClaudeExtension;

/// The extensions' directories under one Claude app-data directory: real directories (not
/// symlinks: a symlink could lead a root agent into another user's files) holding a
/// `manifest.json`, sorted, at most [`MAX_EXTENSIONS`] (of the first `20 × MAX_EXTENSIONS`
/// entries read).
pub fn extension_dirs(app: &Path) -> Vec<PathBuf> {
    let dir = app.join(EXTENSIONS_DIR);
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Vec::new();
    }
    // Only directories that hold a manifest count, before the bound: empty or junk directories
    // cannot crowd out an installed extension.
    // Entries that are not directories cost no system call (their type comes with the
    // listing) and do not count; of the directories, at most 20 × MAX_EXTENSIONS are looked
    // into, and of those only the ones holding a manifest count.
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .take(MAX_LISTING)
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .take(20 * MAX_EXTENSIONS)
        .map(|e| e.path())
        .filter(|p| std::fs::symlink_metadata(p.join(MANIFEST)).is_ok_and(|m| m.is_file()))
        .collect();
    out.sort();
    out.truncate(MAX_EXTENSIONS);
    out
}

/// Whether `id` can name a file in a directory (no separator, not `.`/`..`, no NUL): ids come
/// from directory names and from the registry, which a user may write.
fn plain_id(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains(['/', '\\', '\0']) && id.len() <= 255
}

/// The extension id of a `manifest.json` (its directory's name).
fn id_of_manifest(path: &Path) -> Option<&str> {
    if path.file_name()? != MANIFEST {
        return None;
    }
    path.parent()?
        .file_name()?
        .to_str()
        .filter(|id| plain_id(id))
}

/// Claude's app-data directory for one of this host's files.
fn app_dir_of(path: &Path) -> Option<&Path> {
    if path.file_name()? == REGISTRY {
        return path.parent();
    }
    path.parent()?.parent()?.parent()
}

/// Whether the settings of extension `id` under `app` say it is enabled (no file, or one that
/// cannot be read: not enabled).
pub fn is_enabled(app: &Path, id: &str) -> bool {
    if !plain_id(id) {
        return false;
    }
    let path = app.join(SETTINGS_DIR).join(format!("{id}.json"));
    let Ok((bytes, _)) = crate::file::read_config(&path) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("isEnabled").and_then(serde_json::Value::as_bool))
        == Some(true)
}

impl Host for ClaudeExtension {
    fn id(&self) -> &'static str {
        "claude-extension"
    }
    fn name(&self) -> &'static str {
        "Claude Desktop extensions"
    }
    /// Every extension's `manifest.json` (a symlinked one is listed, and refused when read, so
    /// the refusal is seen), then the registry if present, per Claude app-data directory.
    fn files(&self, home: &Path, os: Os) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for app in app_dirs(home, os) {
            for dir in extension_dirs(&app) {
                let m = dir.join(MANIFEST);
                if std::fs::symlink_metadata(&m).is_ok_and(|m| !m.is_dir()) {
                    out.push(m);
                }
            }
            let r = app.join(REGISTRY);
            if std::fs::symlink_metadata(&r).is_ok_and(|m| !m.is_dir()) {
                out.push(r);
            }
        }
        out
    }
    fn watch_dirs(&self, home: &Path, os: Os) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for app in app_dirs(home, os) {
            out.push(app.join(EXTENSIONS_DIR));
            out.extend(extension_dirs(&app));
            out.push(app.join(SETTINGS_DIR));
            out.push(app);
        }
        out
    }
    fn max_bytes(&self, path: &Path) -> u64 {
        // A manifest is a few KiB; the registry holds a copy of every one.
        if path.file_name().is_some_and(|n| n == REGISTRY) {
            crate::file::MAX_CONFIG_BYTES
        } else {
            1 << 20
        }
    }
    fn format(&self, path: &Path) -> Format {
        if path.file_name().is_some_and(|n| n == REGISTRY) {
            Format::ManifestRegistry
        } else {
            Format::Manifest
        }
    }
    fn ctx<'a>(&'a self, path: &'a Path) -> Ctx<'a> {
        Ctx {
            client: self.id(),
            server: id_of_manifest(path),
        }
    }
    /// One server per extension: the entry that runs on `os` (the base with that platform's
    /// override applied).
    fn servers(&self, path: &Path, text: &str, found: Vec<Found>, os: Os) -> Vec<Found> {
        let Ok(value) = crate::format::json::parse(text, false) else {
            return found;
        };
        let platform = os.platform();
        if self.format(path) == Format::Manifest {
            let Some(first) = found.first() else {
                return found;
            };
            return vec![Found {
                table: BASE_TABLE.into(),
                scope: None,
                name: first.name.clone(),
                entry: manifest::effective(&value, platform),
            }];
        }
        let mut out: Vec<Found> = Vec::new();
        for f in found {
            let Some(id) = f.scope.clone() else { continue };
            if out.iter().any(|o| o.scope.as_deref() == Some(id.as_str())) {
                continue;
            }
            let entry =
                manifest::effective(&value["extensions"][id.as_str()]["manifest"], platform);
            out.push(Found {
                table: format!("extensions.{id}.manifest.{BASE_TABLE}"),
                scope: Some(id.clone()),
                name: id,
                entry,
            });
        }
        out
    }
    fn enabled(&self, path: &Path, _text: &str, found: &Found) -> bool {
        let Some(app) = app_dir_of(path) else {
            return false;
        };
        let id = match self.format(path) {
            Format::ManifestRegistry => found.scope.as_deref(),
            _ => id_of_manifest(path),
        };
        id.is_some_and(|id| is_enabled(app, id))
    }
    fn pickup(&self) -> &'static str {
        "quit Claude Desktop completely and reopen it (an extension update rewrites its \
         directory: the agent wraps it again)"
    }
}
