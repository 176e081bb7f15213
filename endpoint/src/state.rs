//! The agent's state directory. It is shared with proxies only as far as they must read it (the
//! trust file and the last-known-good bundle, by name); everything else — the spool with every
//! user's tool arguments and results, the status naming every user's servers and configs, the
//! private key — is the agent's alone:
//!
//! ```text
//! (state dir)                     0711: others may open names they know, never list
//! trust.json                      tenant + root public key (0644): what proxies verify with
//! install.json                    the installer's manifest (0644)
//! identity/                       0700
//! identity/agent.key              the agent's private key (0600, made by the agent, never sent)
//! identity/agent.crt, ca.crt      its certificate and the pinned controller CA
//! identity/agent.json             agent id, tenant, certificate expiry
//! policy/                         0711
//! policy/last-known-good.json     the signed bundle as received (0644), written atomically
//! policy/applied-version          highest version ever applied (rollback floor, 0644: proxies
//!                                 check it too)
//! spool/                          0700; segments and cursors 0600
//! status.json                     the last status document (0600)
//! ```
//!
//! [`StateDir::create`] also repairs what an older version left open: anything not in the
//! readable list above loses its group and other permission bits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use thoth_proto::bundle::{VerifiedBundle, verify_bundle_keeping_expired};

/// Writes a file atomically (temp file in the same directory, fsync, rename, fsync the dir).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What proxies need to verify bundles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trust {
    /// The machine's tenant.
    pub tenant: String,
    /// The pinned root key (base64).
    pub root_public_key: String,
}

/// The agent's identity as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityInfo {
    /// Assigned at enrollment.
    pub agent_id: String,
    /// Tenant.
    pub tenant: String,
    /// Certificate expiry (Unix seconds).
    pub not_after: i64,
    /// When it was issued (Unix seconds).
    pub issued_at: i64,
}

/// Paths in a state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// Why the state directory cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or directory of it cannot be read, written or have its mode set.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The trust file is not what the agent writes.
    #[error("{}: {source}", path.display())]
    Trust {
        /// The trust file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The trust file's root key does not parse.
    #[error(transparent)]
    RootKey(#[from] crate::config::ConfigError),
    /// The last-known-good bundle does not verify.
    #[error("{} is refused: {source}", path.display())]
    LkgRefused {
        /// The bundle file.
        path: PathBuf,
        /// Why.
        source: thoth_proto::bundle::BundleError,
    },
}

fn io(path: &Path, e: std::io::Error) -> StateError {
    StateError::Io {
        path: path.to_owned(),
        source: e,
    }
}

/// A verified last-known-good bundle.
#[derive(Debug, Clone)]
pub struct Lkg {
    /// The bytes as received.
    pub bytes: Vec<u8>,
    /// What verified.
    pub bundle: VerifiedBundle,
    /// `Some(when)` when it has expired (still enforced; report stale).
    pub expired: Option<String>,
}

impl StateDir {
    /// A state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// Its root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the layout and (re)applies its modes: root and policy 0711, identity and spool
    /// 0700; files proxies read stay 0644, every other file and directory is closed to group
    /// and others (a repair of an install an older version left readable).
    pub fn create(&self) -> Result<(), StateError> {
        for (dir, mode) in [
            (self.root.clone(), 0o711),
            (self.root.join("policy"), 0o711),
            (self.root.join("identity"), 0o700),
            (self.root.join("spool"), 0o700),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io(&dir, e))?;
            }
            #[cfg(not(unix))]
            let _ = mode;
        }
        #[cfg(unix)]
        self.close_private()?;
        Ok(())
    }

    /// Takes group and other bits off everything in the state directory except what proxies
    /// read by name. Symlinks are not followed (their own mode means nothing).
    #[cfg(unix)]
    fn close_private(&self) -> Result<(), StateError> {
        use std::os::unix::fs::PermissionsExt;
        fn walk(path: &Path, public: &dyn Fn(&Path) -> bool) -> Result<(), StateError> {
            let meta = match std::fs::symlink_metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io(path, e)),
            };
            if meta.file_type().is_symlink() {
                return Ok(());
            }
            let mode = meta.permissions().mode() & 0o7777;
            if !public(path) && mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o077))
                    .map_err(|e| io(path, e))?;
            }
            if meta.is_dir() {
                for entry in std::fs::read_dir(path).map_err(|e| io(path, e))? {
                    walk(&entry.map_err(|e| io(path, e))?.path(), public)?;
                }
            }
            Ok(())
        }
        let readable = [
            self.root.clone(),
            self.trust_path(),
            self.root.join("install.json"),
            self.root.join("policy"),
            self.lkg_path(),
            self.applied_path(),
        ];
        walk(&self.root, &|p: &Path| readable.iter().any(|r| r == p))
    }

    /// The trust file.
    pub fn trust_path(&self) -> PathBuf {
        self.root.join("trust.json")
    }

    /// Writes the trust file.
    pub fn write_trust(&self, trust: &Trust) -> Result<(), StateError> {
        let p = self.trust_path();
        let bytes = serde_json::to_vec_pretty(trust).expect("trust serializes");
        write_atomic(&p, &bytes, 0o644).map_err(|e| io(&p, e))
    }

    /// Reads the trust file.
    pub fn read_trust(&self) -> Result<Trust, StateError> {
        let p = self.trust_path();
        let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
        serde_json::from_str(&text).map_err(|source| StateError::Trust { path: p, source })
    }

    /// The last-known-good bundle's path.
    pub fn lkg_path(&self) -> PathBuf {
        self.root.join("policy").join("last-known-good.json")
    }

    /// The rollback floor's path (the agent writes it, see [`StateDir::applied_floor`]).
    pub fn applied_path(&self) -> PathBuf {
        self.root.join("policy").join("applied-version")
    }

    /// The highest version ever applied here (0: none).
    pub fn applied_floor(&self) -> u64 {
        std::fs::read_to_string(self.applied_path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Loads and verifies the last-known-good bundle against `trust` (rollback floor included).
    /// `Ok(None)` when there is none.
    pub fn load_lkg(&self, trust: &Trust, now: SystemTime) -> Result<Option<Lkg>, StateError> {
        let p = self.lkg_path();
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&p, e)),
        };
        let root = super::config::parse_root_key(&trust.root_public_key)?;
        let floor = self.applied_floor();
        let (bundle, expired) = verify_bundle_keeping_expired(
            &bytes,
            &root,
            &trust.tenant,
            (floor > 0).then_some(floor),
            now,
        )
        .map_err(|source| StateError::LkgRefused { path: p, source })?;
        Ok(Some(Lkg {
            bytes,
            bundle,
            expired,
        }))
    }

    /// The agent's private key (the agent makes it on first use).
    pub fn key_path(&self) -> PathBuf {
        self.root.join("identity").join("agent.key")
    }

    /// The stored identity: info, certificate PEM, CA PEM.
    pub fn identity(&self) -> Option<(IdentityInfo, String, String)> {
        let dir = self.root.join("identity");
        let info: IdentityInfo =
            serde_json::from_str(&std::fs::read_to_string(dir.join("agent.json")).ok()?).ok()?;
        let cert = std::fs::read_to_string(dir.join("agent.crt")).ok()?;
        let ca = std::fs::read_to_string(dir.join("ca.crt")).ok()?;
        Some((info, cert, ca))
    }

    /// Stores a (new or renewed) certificate.
    pub fn save_identity(
        &self,
        info: &IdentityInfo,
        cert_pem: &str,
        ca_pem: &str,
    ) -> Result<(), StateError> {
        let dir = self.root.join("identity");
        for (name, bytes, mode) in [
            ("agent.crt", cert_pem.as_bytes().to_vec(), 0o600),
            ("ca.crt", ca_pem.as_bytes().to_vec(), 0o600),
            (
                "agent.json",
                serde_json::to_vec_pretty(info).expect("identity serializes"),
                0o600,
            ),
        ] {
            let p = dir.join(name);
            write_atomic(&p, &bytes, mode).map_err(|e| io(&p, e))?;
        }
        Ok(())
    }

    /// The status document's path.
    pub fn status_path(&self) -> PathBuf {
        self.root.join("status.json")
    }

    /// Writes the status document (0600: it names every user's servers and configs).
    pub fn write_status(&self, bytes: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.status_path(), bytes, 0o600)
    }
}

/// Whether `path` and every directory above it belong to root (uid 0) and are writable by no
/// one else, so an ordinary user can neither have written it nor swap it.
#[cfg(unix)]
pub fn root_owned(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    real.ancestors().all(|p| {
        std::fs::metadata(p).is_ok_and(|m| {
            // A sticky directory (/tmp) protects its entries, but not from being the parent of
            // a user's file: refuse it too.
            m.uid() == 0 && m.mode() & 0o022 == 0
        })
    })
}

#[cfg(not(unix))]
pub fn root_owned(_path: &Path) -> bool {
    // Windows: ProgramData\Thoth is locked to Administrators by the installer; the ACL check
    // is not done here yet, so managed mode is not detected from files on Windows.
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn start_closes_what_an_older_version_left_readable_and_keeps_what_proxies_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        // What an older agent left under UMask=0022 and StateDirectoryMode=0755.
        let files = [
            "trust.json",
            "install.json",
            "status.json",
            "identity/agent.crt",
            "identity/agent.json",
            "policy/last-known-good.json",
            "policy/applied-version",
            "spool/seg-00000000000000000001.log",
            "spool/acked",
            "spool/head",
            "spool/.tmp-abc",
        ];
        for f in files {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        for d in ["", "identity", "policy", "spool"] {
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let s = StateDir::new(&root);
        s.create().unwrap();
        let mode = |f: &str| {
            std::fs::symlink_metadata(root.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        // Proxies open these by name; nobody else lists the directory.
        assert_eq!(mode(""), 0o711);
        assert_eq!(mode("policy"), 0o711);
        for f in [
            "trust.json",
            "install.json",
            "policy/last-known-good.json",
            "policy/applied-version",
        ] {
            assert_eq!(mode(f), 0o644, "{f}");
        }
        // Everything else is the agent's alone.
        assert_eq!(mode("identity"), 0o700);
        assert_eq!(mode("spool"), 0o700);
        for f in files.iter().filter(|f| {
            f.starts_with("spool/") || f.starts_with("identity/") || **f == "status.json"
        }) {
            assert_eq!(mode(f), 0o600, "{f}");
        }
        // And what it writes from now on.
        s.write_status(b"{}").unwrap();
        assert_eq!(mode("status.json"), 0o600);
        s.save_identity(
            &IdentityInfo {
                agent_id: "a".into(),
                tenant: "acme".into(),
                not_after: 0,
                issued_at: 0,
            },
            "c",
            "ca",
        )
        .unwrap();
        for f in [
            "identity/agent.crt",
            "identity/ca.crt",
            "identity/agent.json",
        ] {
            assert_eq!(mode(f), 0o600, "{f}");
        }
    }
}
