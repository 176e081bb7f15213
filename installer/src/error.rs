//! Why the installer failed, each cause with the exit status it maps to (`thoth-installer
//! --help` documents them; MDM scripts act on them).

use std::io;
use std::path::PathBuf;

/// A failure of `install`, `uninstall` or `status`. Foreign errors come in through explicit
/// `map_err` into the variant that says what was being done, never through a blanket `From`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InstallerError {
    /// A bad argument or setting, the message says which (exit 2; nothing changed).
    #[error("{0}")]
    BadInput(String),
    /// A program to install cannot be read (exit 2).
    #[error("cannot read {}: {source} (use --from DIR)", path.display())]
    MissingProgram { path: PathBuf, source: io::Error },
    /// The installer cannot find its own path (exit 1).
    #[error("cannot find this program's own path: {0}")]
    SelfPath(#[source] io::Error),
    /// Reading, writing or removing `path` failed (exit 4 when permission was denied, else 1).
    #[error("{}: {source}{}", path.display(), if source.kind() == io::ErrorKind::PermissionDenied { " (run as root)" } else { "" })]
    Io { path: PathBuf, source: io::Error },
    /// `THOTH_INSTALLER_FAIL_AT` named this step (tests of the rollback; exit 1).
    #[error("injected failure at {0}")]
    Injected(String),
    /// The install manifest does not parse (exit 1).
    #[error("{}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A document the installer writes does not serialize (exit 1).
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    /// The bin directory root runs programs from is writable by others (exit 1).
    #[error(
        "{} is owned by uid {uid} with mode {mode:o}: whoever can write there could replace the programs root runs; make it root-owned and not world-writable",
        dir.display()
    )]
    UnsafeBinDir { dir: PathBuf, uid: u32, mode: u32 },
    /// Windows: the ACLs of the settings directory could not be set (exit 1).
    #[error("cannot restrict access to {}: {}", dir.display(), failures.join("; "))]
    Acl { dir: PathBuf, failures: Vec<String> },
    /// The files are installed, the service did not start (exit 7).
    #[error(
        "the files are installed but the agent service could not be started (see above); run install again once fixed"
    )]
    ServiceNotStarted,
    /// An install failed part-way and was rolled back (the exit status of the cause).
    #[error("{0}; the previous installation was put back")]
    RolledBack(Box<InstallerError>),
    /// Uninstall went on past failures and left files (the exit status of the first failure).
    #[error(
        "uninstalled from {} with {} file(s) left (above); {restored} MCP client config(s) restored",
        root.display(),
        failures.len()
    )]
    FilesLeft {
        root: PathBuf,
        failures: Vec<InstallerError>,
        restored: usize,
    },
}

impl InstallerError {
    /// An IO error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> InstallerError {
        InstallerError::Io {
            path: path.into(),
            source,
        }
    }

    /// The process exit status for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            InstallerError::BadInput(_) | InstallerError::MissingProgram { .. } => 2,
            InstallerError::Io { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                4
            }
            InstallerError::ServiceNotStarted => 7,
            InstallerError::RolledBack(cause) => cause.exit_code(),
            InstallerError::FilesLeft { failures, .. } => {
                failures.first().map_or(1, InstallerError::exit_code)
            }
            InstallerError::SelfPath(_)
            | InstallerError::Io { .. }
            | InstallerError::Injected(_)
            | InstallerError::Manifest { .. }
            | InstallerError::Json(_)
            | InstallerError::UnsafeBinDir { .. }
            | InstallerError::Acl { .. } => 1,
        }
    }
}

/// A bad argument or setting: exit 2.
pub(crate) fn bad(msg: impl Into<String>) -> InstallerError {
    InstallerError::BadInput(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_maps_to_its_documented_exit_status() {
        let denied = || InstallerError::io("/x", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(bad("x").exit_code(), 2);
        assert_eq!(denied().exit_code(), 4);
        assert!(denied().to_string().ends_with(" (run as root)"));
        let other = InstallerError::io("/x", io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(other.exit_code(), 1);
        assert!(!other.to_string().contains("run as root"));
        assert_eq!(InstallerError::ServiceNotStarted.exit_code(), 7);
        let rolled = InstallerError::RolledBack(Box::new(denied()));
        assert_eq!(rolled.exit_code(), 4);
        assert!(
            rolled
                .to_string()
                .ends_with("; the previous installation was put back")
        );
        let left = InstallerError::FilesLeft {
            root: "/".into(),
            failures: vec![denied(), bad("y")],
            restored: 0,
        };
        assert_eq!(left.exit_code(), 4);
        assert!(left.to_string().contains("with 2 file(s) left"));
    }
}
