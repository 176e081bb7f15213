//! Finding Claude Desktop configs, and replacing one safely: atomic (temp file in the same
//! directory, fsync, rename), keeping owner and mode, with a one-time backup of the original,
//! and never over a file someone changed meanwhile.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::rewrite::{self, ConfigError, Report};

/// The config file's name.
pub const FILE_NAME: &str = "claude_desktop_config.json";
/// Suffix of the one-time backup.
pub const BACKUP_SUFFIX: &str = ".thoth-backup";

/// Where Claude Desktop keeps its config, relative to a home directory, on each OS.
pub const RELATIVE_PATHS: [&str; 4] = [
    "Library/Application Support/Claude/claude_desktop_config.json",
    ".config/Claude/claude_desktop_config.json",
    "AppData/Roaming/Claude/claude_desktop_config.json",
    "AppData/Local/Packages/Claude_pzs8sxrjxfjjc/LocalCache/Roaming/Claude/claude_desktop_config.json",
];

/// This user's config path on this OS.
pub fn default_path() -> Option<PathBuf> {
    if cfg!(windows) {
        return std::env::var_os("APPDATA")
            .map(|a| PathBuf::from(a).join("Claude").join(FILE_NAME));
    }
    let home = PathBuf::from(std::env::var_os("HOME")?);
    Some(if cfg!(target_os = "macos") {
        home.join("Library/Application Support/Claude")
            .join(FILE_NAME)
    } else {
        home.join(".config/Claude").join(FILE_NAME)
    })
}

/// The homes under `users_root` (default: `/Users` on macOS, `/home` elsewhere, plus `/root`).
pub fn homes(users_root: Option<&Path>) -> Vec<PathBuf> {
    let root = users_root.map_or_else(
        || {
            PathBuf::from(if cfg!(target_os = "macos") {
                "/Users"
            } else {
                "/home"
            })
        },
        Path::to_path_buf,
    );
    let mut homes: Vec<PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    if users_root.is_none() && Path::new("/root").is_dir() {
        homes.push(PathBuf::from("/root"));
    }
    homes.sort();
    homes
}

/// Every existing config under the homes.
pub fn discover(users_root: Option<&Path>) -> Vec<PathBuf> {
    homes(users_root)
        .iter()
        .flat_map(|h| RELATIVE_PATHS.iter().map(move |r| h.join(r)))
        .filter(|p| p.is_file())
        .collect()
}

/// What to do to a file.
#[derive(Debug, Clone)]
pub enum Op {
    /// Wrap with this absolute thoth path.
    Wrap(String),
    /// Wrap with this thoth path and these extra `thoth run` options.
    WrapWith(String, Vec<String>),
    /// Unwrap.
    Unwrap,
}

/// Why a file was not rewritten.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Cannot read it.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not UTF-8, not JSON, or the wrong shape: never rewritten.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ConfigError,
    },
    /// Not UTF-8.
    #[error("{path} is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// Cannot write it.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Someone changed it while we worked: nothing was written (try again).
    #[error("{path} changed while it was being rewritten; nothing was written")]
    Raced {
        /// The file.
        path: PathBuf,
    },
}

/// The result of [`rewrite_file`].
#[derive(Debug, Clone)]
pub struct FileOutcome {
    /// Per entry.
    pub report: Report,
    /// The file was replaced.
    pub written: bool,
    /// Text before.
    pub before: String,
    /// Text after (equal to `before` when nothing changed).
    pub after: String,
}

/// Rewrites one file (or, with `dry_run`, computes the result only).
pub fn rewrite_file(path: &Path, op: &Op, dry_run: bool) -> Result<FileOutcome, FileError> {
    let bytes = std::fs::read(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let before = String::from_utf8(bytes).map_err(|_| FileError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    let result = match op {
        Op::Wrap(thoth) => rewrite::wrap(&before, thoth),
        Op::WrapWith(thoth, extra) => rewrite::wrap_with(&before, thoth, extra),
        Op::Unwrap => rewrite::unwrap(&before),
    }
    .map_err(|source| FileError::Config {
        path: path.to_path_buf(),
        source,
    })?;
    let changed = result.text != before;
    if dry_run || !changed {
        return Ok(FileOutcome {
            report: result.report,
            written: false,
            after: result.text,
            before,
        });
    }
    let werr = |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(werr)?;
    if matches!(op, Op::Wrap(_) | Op::WrapWith(..)) {
        let mut backup = path.as_os_str().to_owned();
        backup.push(BACKUP_SUFFIX);
        let backup = PathBuf::from(backup);
        if !backup.exists() {
            // The directory is synced once, by the replacement below (same directory).
            replace(&backup, before.as_bytes(), &meta, None, false).map_err(werr)?;
        }
    }
    replace(
        path,
        result.text.as_bytes(),
        &meta,
        Some(before.as_bytes()),
        true,
    )
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::Interrupted {
            FileError::Raced {
                path: path.to_path_buf(),
            }
        } else {
            werr(e)
        }
    })?;
    Ok(FileOutcome {
        report: result.report,
        written: true,
        after: result.text,
        before,
    })
}

/// Atomically replaces `path` with `bytes`, giving the new file `meta`'s mode and owner. With
/// `expect`, refuses (ErrorKind::Interrupted) if the file no longer holds those bytes.
fn replace(
    path: &Path,
    bytes: &[u8],
    meta: &std::fs::Metadata,
    expect: Option<&[u8]>,
    sync_dir: bool,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".thoth-tmp-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        let fd_meta = tmp.as_file().metadata()?;
        if fd_meta.uid() != meta.uid() || fd_meta.gid() != meta.gid() {
            std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()))?;
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    tmp.as_file().sync_all()?;
    if let Some(expect) = expect
        && std::fs::read(path)? != expect
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "changed meanwhile",
        ));
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if sync_dir && let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A unified diff of a rewrite, for `--dry-run`.
pub fn diff(path: &Path, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(
            &path.display().to_string(),
            &format!("{} (rewritten)", path.display()),
        )
        .to_string()
}
