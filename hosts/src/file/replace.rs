//! Replacing a user's file atomically, keeping owner and mode, and never over a write someone
//! else made meanwhile.

use std::io::Write;
use std::path::Path;

#[cfg(unix)]
use super::lock::HostLock;
#[cfg(unix)]
use super::read::MAX_CONFIG_BYTES;
use super::read::parent_dir;
#[cfg(not(unix))]
use super::read::read_config;

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
pub(super) fn replace(
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
            before_exchange();
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

/// Atomically replaces `path` with `bytes` (temp file, then rename). With `expect`, refuses
/// (ErrorKind::Interrupted) if the file no longer holds those bytes.
#[cfg(not(unix))]
pub(super) fn replace(
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

/// The tests' hook, run just before the exchange (nothing outside tests).
#[cfg(all(
    unix,
    any(target_os = "linux", target_os = "android", target_os = "macos")
))]
fn before_exchange() {
    #[cfg(test)]
    BEFORE_EXCHANGE.with(|h| {
        if let Some(f) = h.borrow_mut().take() {
            f();
        }
    });
}

#[cfg(test)]
thread_local! {
    /// Runs once, in `replace`, after the last comparison and just before the exchange: a
    /// test's writer getting in where only the exchange check can see it.
    pub(super) static BEFORE_EXCHANGE: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}
