//! Reading an MCP host's file the way a root process must read a file in a user's home, and
//! replacing it safely: atomic (temp file in the same directory, fsync, rename), keeping owner
//! and mode, with a one-time backup of the original, under the host's own lock when it has one,
//! and never over a write someone else made meanwhile.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The largest config read (most are a few KiB; Claude Code's `~/.claude.json` can reach a few
/// MiB of history; this bounds what a hostile file can make the agent or the installer hold in
/// memory).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads a config the way a root process must read a file in a user's home: never through a
/// symlink (`O_NOFOLLOW`), never blocking on a FIFO (`O_NONBLOCK`), only a regular file, at most
/// [`MAX_CONFIG_BYTES`], and, when running as root, only a file owned by the owner of its
/// directory (a hard link to someone else's file is refused). Returns the bytes and the
/// metadata of what was read.
pub fn read_config(path: &Path) -> std::io::Result<(Vec<u8>, std::fs::Metadata)> {
    read_config_as(path, None, MAX_CONFIG_BYTES)
}

/// [`read_config`] for the user `owner` (the uid owning the home the file was found in), at
/// most `max` bytes: as root, the opened file must belong to that user, so a directory on the
/// way that leads into another user's home (`~/.cursor` → `/home/bob/.cursor`), swapped in at
/// any time, cannot make root read that user's file on this user's behalf.
pub fn read_config_as(
    path: &Path,
    owner: Option<u32>,
    max: u64,
) -> std::io::Result<(Vec<u8>, std::fs::Metadata)> {
    use std::io::Read;
    let max = max.min(MAX_CONFIG_BYTES);
    let refuse = |kind, why: String| std::io::Error::new(kind, why);
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use rustix::fs::OFlags;
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32);
    }
    let file = opts.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            return refuse(
                std::io::ErrorKind::InvalidInput,
                "it is a symbolic link (not followed)".into(),
            );
        }
        e
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse(
            std::io::ErrorKind::InvalidInput,
            "not a regular file".into(),
        ));
    }
    if meta.len() > max {
        return Err(refuse(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} bytes, more than the {max} this MCP client's config can be",
                meta.len()
            ),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if rustix::process::geteuid().is_root()
            && let Some(uid) = owner
            && meta.uid() != uid
        {
            return Err(refuse(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "owned by uid {}, not by the home's owner (uid {uid}): not touched",
                    meta.uid()
                ),
            ));
        }
        if rustix::process::geteuid().is_root() {
            let dir = parent_dir(path);
            let dir_uid = std::fs::metadata(dir)?.uid();
            if meta.uid() != dir_uid {
                return Err(refuse(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "owned by uid {}, not by the owner of its directory (uid {dir_uid}): not touched",
                        meta.uid()
                    ),
                ));
            }
        }
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(refuse(
            std::io::ErrorKind::InvalidInput,
            "grew past the size limit while being read".into(),
        ));
    }
    Ok((bytes, meta))
}

/// The directory a path is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
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

/// How long a host's lock is waited for before the rewrite is given up (and retried later):
/// Claude Code holds it for milliseconds; a user holding it on purpose must not stall the
/// agent's one guardian thread.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(300);
/// A host lock older than this is stale (proper-lockfile's default, which Claude Code uses):
/// the rewrite goes on without it (the exchange check below still guards the write).
const LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(10);

/// Atomically replaces `path` with `bytes`, giving the new file `meta`'s mode and owner.
///
/// With `expect`, what is replaced must be exactly those bytes, else nothing is lost and the
/// call fails with ErrorKind::Interrupted (try again): where the system can exchange two names
/// atomically (Linux `renameat2(RENAME_EXCHANGE)`, macOS `renamex_np(RENAME_SWAP)`), the new file
/// is exchanged with the old and the displaced file is checked afterwards; if a writer got in
/// between the read and the exchange (in place or by its own rename), its file is put back.
/// Elsewhere the file is compared just before the rename (a narrow window remains). With `lock`
/// (a host's lock directory, beside `path`), the lock is held throughout, as the host would.
///
/// On Unix everything happens relative to one handle on the directory, opened without
/// following a symlink and (as root) only if it belongs to the file's owner: the temp file is
/// created, checked and renamed there, so swapping the directory (or one above it) for a
/// symlink mid-way cannot make root write anywhere else.
#[cfg(unix)]
fn replace(
    path: &Path,
    bytes: &[u8],
    meta: &std::fs::Metadata,
    expect: Option<&[u8]>,
    lock: Option<&Path>,
    sync_dir: bool,
) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

    use rustix::fs::{AtFlags, Mode, OFlags, openat, renameat, unlinkat};
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned());
    let dir = parent_dir(path);
    let name = CString::new(
        path.file_name()
            .ok_or_else(|| invalid("no file name"))?
            .as_bytes(),
    )
    .map_err(|_| invalid("a NUL in the file name"))?;
    let dirf = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::DIRECTORY | OFlags::NOFOLLOW).bits() as i32)
        .open(dir)?;
    if rustix::process::geteuid().is_root() && dirf.metadata()?.uid() != meta.uid() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "its directory does not belong to the file's owner",
        ));
    }
    // The host's lock, when it lives beside the file (it always does).
    let _lock = match lock {
        Some(l) if parent_dir(l) == dir => match l.file_name() {
            Some(n) => HostLock::take(
                &dirf,
                CString::new(n.as_bytes()).map_err(|_| invalid("a NUL in the lock name"))?,
                meta,
            )?,
            None => None,
        },
        _ => None,
    };
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp_name = CString::new(format!(
        ".thoth-tmp-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
    .expect("no NUL");
    let mut tmp = std::fs::File::from(openat(
        &dirf,
        tmp_name.as_c_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?);
    let unlink_tmp = || {
        let _ = unlinkat(&dirf, tmp_name.as_c_str(), AtFlags::empty());
    };
    let read_at = |n: &std::ffi::CStr| -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let f = std::fs::File::from(openat(
            &dirf,
            n,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
        let mut now = Vec::new();
        f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut now)?;
        Ok(now)
    };
    let raced = || std::io::Error::new(std::io::ErrorKind::Interrupted, "changed meanwhile");
    let result = (|| -> std::io::Result<()> {
        tmp.write_all(bytes)?;
        // Owner first, then the mode, and never setuid, setgid or sticky bits: a config is data.
        let fd_meta = tmp.metadata()?;
        if fd_meta.uid() != meta.uid() || fd_meta.gid() != meta.gid() {
            std::os::unix::fs::fchown(&tmp, Some(meta.uid()), Some(meta.gid()))?;
        }
        tmp.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o777))?;
        tmp.sync_all()?;
        let Some(expect) = expect else {
            return renameat(&dirf, tmp_name.as_c_str(), &dirf, name.as_c_str())
                .map_err(Into::into);
        };
        if read_at(name.as_c_str())? != expect {
            return Err(raced());
        }
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
        {
            use rustix::fs::{RenameFlags, renameat_with};
            let exchange = || {
                renameat_with(
                    &dirf,
                    tmp_name.as_c_str(),
                    &dirf,
                    name.as_c_str(),
                    RenameFlags::EXCHANGE,
                )
            };
            #[cfg(test)]
            tests::BEFORE_EXCHANGE.with(|h| {
                if let Some(f) = h.borrow_mut().take() {
                    f();
                }
            });
            match exchange() {
                Ok(()) => {
                    // The displaced file now sits at the temp name: was it what was read?
                    if read_at(tmp_name.as_c_str()).ok().as_deref() == Some(expect) {
                        return Ok(());
                    }
                    // Someone wrote between the read and the exchange: put their file back. If
                    // they wrote yet again since, what comes out is not ours: exchange once more
                    // so their newest stays, and drop the older one.
                    exchange()?;
                    if read_at(tmp_name.as_c_str()).ok().as_deref() != Some(bytes) {
                        exchange()?;
                    }
                    return Err(raced());
                }
                // A file system without the exchange: the check above, then a rename.
                Err(e)
                    if e == rustix::io::Errno::INVAL
                        || e == rustix::io::Errno::NOSYS
                        || e == rustix::io::Errno::NOTSUP => {}
                Err(e) => return Err(e.into()),
            }
        }
        renameat(&dirf, tmp_name.as_c_str(), &dirf, name.as_c_str())?;
        Ok(())
    })();
    // After a successful exchange the temp name holds the old file; after a failure, ours or a
    // superseded one: either way it goes.
    unlink_tmp();
    result?;
    if sync_dir {
        let _ = dirf.sync_all();
    }
    Ok(())
}

/// A host's lock directory held by the agent (proper-lockfile's protocol: whoever creates the
/// directory holds the lock; it is removed on release). Created for the file's owner, so the
/// host can clear it if the agent dies holding it.
#[cfg(unix)]
struct HostLock<'a> {
    dirf: &'a std::fs::File,
    name: std::ffi::CString,
}

#[cfg(unix)]
impl<'a> HostLock<'a> {
    /// Takes the lock, waiting up to [`LOCK_WAIT`]. `None`: a stale lock is in the way (older
    /// than [`LOCK_STALE`]); the caller goes on without one. Err(Interrupted): the host holds
    /// it (try again later).
    fn take(
        dirf: &'a std::fs::File,
        name: std::ffi::CString,
        meta: &std::fs::Metadata,
    ) -> std::io::Result<Option<HostLock<'a>>> {
        use std::os::unix::fs::MetadataExt;

        use rustix::fs::{AtFlags, Mode, chownat, mkdirat, statat};
        use rustix::process::{Gid, Uid};
        let start = std::time::Instant::now();
        loop {
            match mkdirat(dirf, name.as_c_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    if rustix::process::geteuid().is_root() {
                        let _ = chownat(
                            dirf,
                            name.as_c_str(),
                            Some(Uid::from_raw(meta.uid())),
                            Some(Gid::from_raw(meta.gid())),
                            AtFlags::SYMLINK_NOFOLLOW,
                        );
                    }
                    return Ok(Some(HostLock { dirf, name }));
                }
                Err(e) if e == rustix::io::Errno::EXIST => {
                    let st = match statat(dirf, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => st,
                        // Released between the two calls: try again.
                        Err(e) if e == rustix::io::Errno::NOENT => {
                            if start.elapsed() > LOCK_WAIT {
                                return Err(std::io::Error::new(
                                    std::io::ErrorKind::Interrupted,
                                    "the client's lock keeps changing",
                                ));
                            }
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let mtime = std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(st.st_mtime.max(0) as u64);
                    // Stale when old, and when dated in the future (a lock made to look
                    // fresh for ever).
                    let stale = match mtime.elapsed() {
                        Ok(age) => age > LOCK_STALE,
                        Err(ahead) => ahead.duration() > std::time::Duration::from_secs(5),
                    };
                    if stale {
                        return Ok(None);
                    }
                    if start.elapsed() > LOCK_WAIT {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::Interrupted,
                            "the client holds its lock on the file",
                        ));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(unix)]
impl Drop for HostLock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(
            self.dirf,
            self.name.as_c_str(),
            rustix::fs::AtFlags::REMOVEDIR,
        );
    }
}

/// Atomically replaces `path` with `bytes` (temp file, then rename). With `expect`, refuses
/// (ErrorKind::Interrupted) if the file no longer holds those bytes.
#[cfg(not(unix))]
fn replace(
    path: &Path,
    bytes: &[u8],
    meta: &std::fs::Metadata,
    expect: Option<&[u8]>,
    lock: Option<&Path>,
    sync_dir: bool,
) -> std::io::Result<()> {
    let _ = (meta, lock);
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".thoth-tmp-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    if let Some(expect) = expect
        && read_config(path)?.0 != expect
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

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use crate::clients::claude_desktop::ClaudeDesktop;

    thread_local! {
        /// Runs once, in `replace`, after the last comparison and just before the exchange: a
        /// test's writer getting in where only the exchange check can see it.
        pub(super) static BEFORE_EXCHANGE: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
            const { std::cell::RefCell::new(None) };
    }

    #[test]
    fn a_write_between_the_last_check_and_the_exchange_is_put_back() {
        use crate::clients::claude_code::ClaudeCode;
        let ours = "{\"numStartups\": 1, \"mcpServers\": {\"a\": {\"command\": \"npx\"}}}";
        let theirs = "{\"numStartups\": 2, \"mcpServers\": {\"a\": {\"command\": \"npx\"}}}";
        for in_place in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(".claude.json");
            std::fs::write(&path, ours).unwrap();
            let (p, d) = (path.clone(), dir.path().to_path_buf());
            BEFORE_EXCHANGE.with(|h| {
                *h.borrow_mut() = Some(Box::new(move || {
                    if in_place {
                        std::fs::write(&p, theirs).unwrap();
                    } else {
                        // As Claude Code saves: a temp file renamed over.
                        let tmp = d.join(".claude.json.tmp.1.2");
                        std::fs::write(&tmp, theirs).unwrap();
                        std::fs::rename(&tmp, &p).unwrap();
                    }
                }))
            });
            let r = rewrite_file(&ClaudeCode, &path, &Op::wrap("/t/thoth"), false);
            assert!(
                matches!(r, Err(FileError::Raced { .. })),
                "in place: {in_place}: {r:?}"
            );
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                theirs,
                "in place: {in_place}"
            );
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, [".claude.json", ".claude.json.thoth-backup"]);
            // Tried again, it wraps their version.
            let ok = rewrite_file(&ClaudeCode, &path, &Op::wrap("/t/thoth"), false).unwrap();
            assert!(ok.written && ok.after.contains("\"numStartups\": 2"));
        }
    }

    const CONFIG: &str = "{\"mcpServers\": {\"files\": {\"command\": \"npx\", \"args\": []}}}\n";

    #[test]
    fn a_symlink_a_fifo_and_an_oversized_file_are_refused_without_following_or_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("someone-elses.json");
        std::fs::write(&other, CONFIG).unwrap();
        let link = dir.path().join("claude_desktop_config.json");
        std::os::unix::fs::symlink(&other, &link).unwrap();
        let e = read_config(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // Rewriting through the link is refused too, and neither file changes.
        assert!(rewrite_file(&ClaudeDesktop, &link, &Op::wrap("/t/thoth"), false).is_err());
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&other).unwrap(), CONFIG);
        // A FIFO: refused at once (a blocking open would hang the agent or the installer).
        let fifo = dir.path().join("fifo.json");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let e = read_config(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // A sparse file far past the limit: refused without reading it.
        let big = dir.path().join("big.json");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_CONFIG_BYTES * 256)
            .unwrap();
        let e = read_config(&big).unwrap_err();
        assert!(e.to_string().contains("bytes"), "{e}");
        assert_eq!(read_config(&other).unwrap().0, CONFIG.as_bytes());
    }

    #[test]
    fn a_directory_that_is_a_symlink_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("elsewhere");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("claude_desktop_config.json"), CONFIG).unwrap();
        // ~/.config/Claude swapped for a symlink to another directory.
        let link = dir.path().join("Claude");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let r = rewrite_file(
            &ClaudeDesktop,
            &link.join("claude_desktop_config.json"),
            &Op::wrap("/t/thoth"),
            false,
        );
        assert!(r.is_err(), "written through a symlinked directory");
        assert_eq!(
            std::fs::read_to_string(real.join("claude_desktop_config.json")).unwrap(),
            CONFIG
        );
        // No temp file was left in either place.
        for d in [&real, dir.path()] {
            assert!(
                std::fs::read_dir(d).unwrap().all(|e| !e
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".thoth-tmp-")),
                "{}",
                d.display()
            );
        }
        // The same file through its real directory is wrapped.
        let ok = rewrite_file(
            &ClaudeDesktop,
            &real.join("claude_desktop_config.json"),
            &Op::wrap("/t/thoth"),
            false,
        )
        .unwrap();
        assert!(ok.written);
    }

    #[test]
    fn as_root_a_file_not_owned_by_its_directorys_owner_is_not_touched() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("not root: the ownership rule applies to root only");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("claude_desktop_config.json");
        std::fs::write(&p, CONFIG).unwrap();
        // As a hard link to another user's file would look: owned by someone else.
        std::os::unix::fs::chown(&p, Some(54321), Some(54321)).unwrap();
        let e = read_config(&p).unwrap_err();
        assert!(e.to_string().contains("not touched"), "{e}");
        assert!(rewrite_file(&ClaudeDesktop, &p, &Op::wrap("/t/thoth"), false).is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), CONFIG);
        // Owned like its directory: fine.
        std::os::unix::fs::chown(dir.path(), Some(54321), Some(54321)).unwrap();
        assert!(read_config(&p).is_ok());
    }

    #[test]
    fn as_root_a_file_reached_through_another_users_directory_is_refused_for_this_user() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("not root: ownership only matters to the root agent");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let (ann, bob) = (root.path().join("ann"), root.path().join("bob"));
        std::fs::create_dir_all(bob.join(".cursor")).unwrap();
        std::fs::create_dir_all(&ann).unwrap();
        let secret = bob.join(".cursor/mcp.json");
        std::fs::write(&secret, CONFIG).unwrap();
        for p in [&bob, &bob.join(".cursor"), &secret] {
            std::os::unix::fs::lchown(p, Some(41002), Some(41002)).unwrap();
        }
        std::os::unix::fs::lchown(&ann, Some(41001), Some(41001)).unwrap();
        // Ann's ~/.cursor leads into Bob's home (it could be swapped in after discovery).
        std::os::unix::fs::symlink(bob.join(".cursor"), ann.join(".cursor")).unwrap();
        let through = ann.join(".cursor/mcp.json");
        let e = read_config_as(&through, Some(41001), MAX_CONFIG_BYTES).unwrap_err();
        assert!(e.to_string().contains("not by the home's owner"), "{e}");
        let opts = Options {
            owner: Some(41001),
            ..Options::default()
        };
        let cursor = crate::host::by_id("cursor").unwrap();
        assert!(rewrite_file_with(cursor, &through, &Op::wrap("/t/thoth"), &opts).is_err());
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), CONFIG);
        let scanned =
            crate::inventory::scan_file_as(cursor, &through, "/t/thoth", &[], Some(41001));
        assert!(
            scanned.servers.is_empty() && scanned.error.is_some(),
            "{scanned:?}"
        );
        // For Bob, the same file is fine.
        assert!(read_config_as(&secret, Some(41002), MAX_CONFIG_BYTES).is_ok());
    }

    #[test]
    fn a_lock_dated_in_the_future_is_stale_and_a_held_lock_costs_little() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".claude.json");
        let text = "{\"mcpServers\": {\"fs\": {\"command\": \"npx\", \"args\": []}}}\n";
        std::fs::write(&path, text).unwrap();
        let code = crate::host::by_id("claude-code").unwrap();
        let lock = dir.path().join(".claude.json.lock");
        std::fs::create_dir(&lock).unwrap();
        // Touched to 2100: never "old", so it looked held for ever.
        let future = std::time::UNIX_EPOCH + std::time::Duration::from_secs(4_102_444_800);
        std::fs::File::open(&lock)
            .unwrap()
            .set_modified(future)
            .unwrap();
        let t0 = std::time::Instant::now();
        let out = rewrite_file(code, &path, &Op::wrap("/t/thoth"), false).unwrap();
        assert!(out.written, "a future-dated lock is stale");
        assert!(
            t0.elapsed() < std::time::Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
        // A fresh lock (held now): the rewrite gives up quickly, and goes through when told to
        // ignore it.
        std::fs::write(&path, text).unwrap();
        std::fs::File::open(&lock)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        let t0 = std::time::Instant::now();
        let e = rewrite_file(code, &path, &Op::wrap("/t/thoth"), false).unwrap_err();
        assert!(matches!(e, FileError::Raced { .. }), "{e}");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t0.elapsed()
        );
        let opts = Options {
            ignore_host_lock: true,
            ..Options::default()
        };
        assert!(
            rewrite_file_with(code, &path, &Op::wrap("/t/thoth"), &opts)
                .unwrap()
                .written
        );
        assert!(lock.is_dir(), "someone else's lock is left alone");
    }

    #[test]
    fn a_rewritten_file_never_gets_setuid_setgid_or_sticky_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claude_desktop_config.json");
        std::fs::write(&path, CONFIG).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o7644)).unwrap();
        let out = rewrite_file(&ClaudeDesktop, &path, &Op::wrap("/t/thoth"), false).unwrap();
        assert!(out.written);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
    }
}
