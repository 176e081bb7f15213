//! Reading an MCP host's file the way a root process must read a file in a user's home, and
//! replacing it safely: atomic (temp file in the same directory, fsync, rename), keeping owner
//! and mode, with a one-time backup of the original, under the host's own lock when it has one,
//! and never over a write someone else made meanwhile.
//!
//! `read` is the reading, `replace` the replacement (with `lock`, the host's lock); this file
//! puts them together for one rewrite.

#[cfg(unix)]
mod lock;
mod read;
mod replace;

use std::path::{Path, PathBuf};

pub use read::{MAX_CONFIG_BYTES, read_config, read_config_as};
use replace::replace;

use crate::format::{self, ConfigError, Op, Report};
use crate::host::Host;

/// Suffix of the one-time backup.
pub const BACKUP_SUFFIX: &str = ".thoth-backup";

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

/// How [`rewrite_file_with`] works.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Compute the result only; write nothing.
    pub dry_run: bool,
    /// The uid owning the home the file was found in: as root, a file of anyone else is
    /// refused (see [`read_config_as`]). The agent and the installer always give it.
    pub owner: Option<u32>,
    /// Do not take the host's lock (the agent, after the lock has been held against it for
    /// too long: the exchange check still keeps the host's saves).
    pub ignore_host_lock: bool,
}

/// Rewrites one file of `host` (or, with `dry_run`, computes the result only).
pub fn rewrite_file(
    host: &dyn Host,
    path: &Path,
    op: &Op,
    dry_run: bool,
) -> Result<FileOutcome, FileError> {
    rewrite_file_with(
        host,
        path,
        op,
        &Options {
            dry_run,
            ..Options::default()
        },
    )
}

/// Rewrites one file of `host` as `opts` say.
pub fn rewrite_file_with(
    host: &dyn Host,
    path: &Path,
    op: &Op,
    opts: &Options,
) -> Result<FileOutcome, FileError> {
    let dry_run = opts.dry_run;
    let (bytes, meta) =
        read_config_as(path, opts.owner, host.max_bytes(path)).map_err(|source| {
            FileError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let before = String::from_utf8(bytes).map_err(|_| FileError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    let result =
        format::rewrite(&before, &host.format(path), op, &host.ctx(path)).map_err(|source| {
            FileError::Config {
                path: path.to_path_buf(),
                source,
            }
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
    if matches!(op, Op::Wrap { .. }) {
        let mut backup = path.as_os_str().to_owned();
        backup.push(BACKUP_SUFFIX);
        let backup = PathBuf::from(backup);
        if !backup.exists() {
            // The directory is synced once, by the replacement below (same directory).
            replace(&backup, before.as_bytes(), &meta, None, None, false).map_err(werr)?;
        }
    }
    replace(
        path,
        result.text.as_bytes(),
        &meta,
        Some(before.as_bytes()),
        host.lock_path(path)
            .filter(|_| !opts.ignore_host_lock)
            .as_deref(),
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

#[cfg(test)]
#[cfg(unix)]
mod tests;
