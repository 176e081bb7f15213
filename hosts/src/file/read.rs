//! Reading a user's config as root: no symlink, no FIFO, a size cap, the owner checked.

use std::path::Path;

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
pub(super) fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
