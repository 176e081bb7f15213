//! A host's own lock on its file (Claude Code's `~/.claude.json.lock`, proper-lockfile's
//! protocol), held by the agent while it replaces the file.

/// How long a host's lock is waited for before the rewrite is given up (and retried later):
/// Claude Code holds it for milliseconds; a user holding it on purpose must not stall the
/// agent's one guardian thread.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(300);
/// A host lock older than this is stale (proper-lockfile's default, which Claude Code uses):
/// the rewrite goes on without it (the exchange check in `replace` still guards the write).
const LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(10);

/// A host's lock directory held by the agent (proper-lockfile's protocol: whoever creates the
/// directory holds the lock; it is removed on release). Created for the file's owner, so the
/// host can clear it if the agent dies holding it.
pub(super) struct HostLock<'a> {
    dirf: &'a std::fs::File,
    name: std::ffi::CString,
}

impl<'a> HostLock<'a> {
    /// Takes the lock, waiting up to [`LOCK_WAIT`]. `None`: a stale lock is in the way (older
    /// than [`LOCK_STALE`]); the caller goes on without one. Err(Interrupted): the host holds
    /// it (try again later).
    pub(super) fn take(
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

impl Drop for HostLock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(
            self.dirf,
            self.name.as_c_str(),
            rustix::fs::AtFlags::REMOVEDIR,
        );
    }
}
