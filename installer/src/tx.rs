//! Install as a transaction: each file write is recorded and undone, newest first, on failure.

use std::path::{Path, PathBuf};

use thoth_endpoint::state::write_atomic;

use crate::error::InstallerError;

/// One reversible change.
enum Undo {
    Restore(PathBuf, Vec<u8>, u32),
    Remove(PathBuf),
    RemoveDir(PathBuf),
}

/// The writes of one install.
#[derive(Default)]
pub(crate) struct Tx {
    undo: Vec<Undo>,
    /// Every file install is responsible for (written or already right).
    pub written: Vec<PathBuf>,
}

impl Tx {
    /// Writes `bytes` at `path` with `mode` unless it is already so; true if anything changed.
    /// `step` names the step for failure injection (`THOTH_INSTALLER_FAIL_AT`).
    pub(crate) fn write(
        &mut self,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        step: &str,
    ) -> Result<bool, InstallerError> {
        if std::env::var("THOTH_INSTALLER_FAIL_AT").as_deref() == Ok(step) {
            return Err(InstallerError::Injected(step.to_owned()));
        }
        self.written.push(path.to_path_buf());
        let old = std::fs::read(path).ok();
        #[cfg(unix)]
        let old_mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0o644)
        };
        #[cfg(not(unix))]
        let old_mode = 0o644;
        if old.as_deref() == Some(bytes) {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if old_mode & 0o7777 != mode {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| InstallerError::io(path, e))?;
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        if let Some(dir) = path.parent() {
            self.dir(dir, 0o755)?;
        }
        write_atomic(path, bytes, mode).map_err(|e| InstallerError::io(path, e))?;
        self.undo.push(match old {
            Some(b) => Undo::Restore(path.to_path_buf(), b, old_mode),
            None => Undo::Remove(path.to_path_buf()),
        });
        Ok(true)
    }

    /// Creates `dir` (and missing parents) with `mode` if it does not exist, recording each one
    /// made for rollback; an existing directory is left as it is.
    pub(crate) fn dir(&mut self, dir: &Path, mode: u32) -> Result<(), InstallerError> {
        let mut missing = Vec::new();
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.exists() {
                break;
            }
            missing.push(p.to_path_buf());
            d = p.parent();
        }
        for p in missing.into_iter().rev() {
            std::fs::create_dir(&p).map_err(|e| InstallerError::io(&p, e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| InstallerError::io(&p, e))?;
            }
            self.undo.push(Undo::RemoveDir(p));
        }
        #[cfg(not(unix))]
        let _ = mode;
        Ok(())
    }

    /// Puts back everything written, newest first.
    pub(crate) fn rollback(self) {
        for u in self.undo.into_iter().rev() {
            match u {
                Undo::Restore(p, b, m) => {
                    let _ = write_atomic(&p, &b, m);
                }
                Undo::Remove(p) => {
                    let _ = std::fs::remove_file(&p);
                }
                Undo::RemoveDir(p) => {
                    let _ = std::fs::remove_dir(&p);
                }
            }
        }
    }
}
