//! The controller's data directory: keys, certificates, config and database.
//!
//! ```text
//! controller.toml        settings (commented template)
//! ca.crt  ca.key         the controller CA (agents pin ca.crt by fingerprint)
//! server.crt server.key  the TLS server certificate
//! root.key root.pub      the Ed25519 root key agents pin; it certifies policy-signing keys
//! signing/<id>.key       policy-signing keys, each with <id>.cert (root-signed), ACTIVE names one
//! admin/                 the first admin credential for thothctl (ca.crt, client.crt, client.key)
//! controller.db          the SQLite store
//! .initialized           written last by init: a directory without it is (re)initialized
//! ```
//! Private keys are written with mode 0600, every file atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use thoth_proto::bundle::{Signed, certify};

use crate::config::{ControllerConfig, TEMPLATE};
use crate::pki::{Ca, Identity, Role};

/// CA lifetime.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Server and admin certificate lifetime.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(2 * 365 * 86_400);
/// Policy-signing key certificate lifetime.
pub const SIGNING_KEY_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// The default data directory: `$THOTH_CONTROLLER_DATA`, else `$XDG_DATA_HOME/thoth-controller`,
/// else `~/.local/share/thoth-controller` (defined in thoth-client, where `thothctl` finds the
/// local admin credential too).
pub use thoth_client::default_data_dir as default_dir;

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename), with
/// `mode` on Unix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Why a data directory cannot be made, loaded or added to.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// `init` on a directory already initialized.
    #[error("{} is already initialized; nothing was changed (remove it to start over)", .0.display())]
    AlreadyInitialized(PathBuf),
    /// `load` on a directory not initialized.
    #[error(
        "{} is not an initialized controller data directory (run `thoth-controller init --data {}`)",
        .0.display(),
        .0.display()
    )]
    NotInitialized(PathBuf),
    /// A directory cannot be made.
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `controller.toml` is refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A certificate or key of the CA cannot be made or loaded.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// An Ed25519 key file is not base64.
    #[error("{what}: {source}")]
    KeyEncoding {
        /// Which key.
        what: String,
        /// Why.
        source: base64::DecodeError,
    },
    /// An Ed25519 key file does not hold 32 bytes.
    #[error("{0}: not a 32-byte Ed25519 key")]
    KeyLength(String),
    /// `signing/ACTIVE` names no usable key.
    #[error("{}: bad key id", .0.display())]
    BadKeyId(PathBuf),
    /// A signing key's certificate does not read.
    #[error("{key_id}.cert: {reason}")]
    SigningCertificate {
        /// The key.
        key_id: String,
        /// Why.
        reason: String,
    },
    /// A signing key's certificate cannot be written.
    #[error("{0}")]
    Serialize(serde_json::Error),
    /// An admin credential cannot be recorded.
    #[error(transparent)]
    AdminCertificate(crate::admins::RecordError),
    /// The store refuses the admin credential.
    #[error("recording the admin credential: {0}")]
    RecordAdmin(crate::store::StoreError),
}

fn read(path: &Path) -> Result<String, DataDirError> {
    fs::read_to_string(path).map_err(|source| DataDirError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DataDirError> {
    write_atomic(path, bytes, mode).map_err(|source| DataDirError::Write {
        path: path.to_owned(),
        source,
    })
}

fn create(path: &Path) -> Result<(), DataDirError> {
    fs::create_dir_all(path).map_err(|source| DataDirError::Create {
        path: path.to_owned(),
        source,
    })
}

/// An Ed25519 key as a file: the base64 of its 32-byte seed.
pub fn key_to_text(key: &SigningKey) -> String {
    format!("{}\n", B64.encode(key.to_bytes()))
}

/// Reads [`key_to_text`].
pub fn key_from_text(text: &str, what: &str) -> Result<SigningKey, DataDirError> {
    let bytes: [u8; 32] = B64
        .decode(text.trim())
        .map_err(|source| DataDirError::KeyEncoding {
            what: what.to_owned(),
            source,
        })?
        .try_into()
        .map_err(|_| DataDirError::KeyLength(what.to_owned()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// A fresh Ed25519 key.
pub fn new_ed25519() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// The active policy-signing key.
#[derive(Clone)]
pub struct SigningIdentity {
    /// Its id.
    pub key_id: String,
    /// The key.
    pub key: SigningKey,
    /// Its root-signed certificate.
    pub certificate: Signed,
    /// When that certificate ends (Unix seconds).
    pub not_after: i64,
    /// When it begins.
    pub not_before: i64,
}

/// What `init` reports.
pub struct InitReport {
    /// Where.
    pub dir: PathBuf,
    /// `sha256:…` of the CA certificate.
    pub ca_fingerprint: String,
    /// Root public key, base64.
    pub root_public_key: String,
}

/// An initialized data directory, loaded.
pub struct DataDir {
    /// Where.
    pub dir: PathBuf,
    /// Settings.
    pub config: ControllerConfig,
    /// CA.
    pub ca: Ca,
    /// Server certificate, PEM.
    pub server_cert_pem: String,
    /// Server key, PEM.
    pub server_key_pem: String,
    /// Root key.
    pub root: SigningKey,
    /// Active signing key.
    pub signing: SigningIdentity,
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Is `dir` an initialized data directory?
pub fn is_initialized(dir: &Path) -> bool {
    dir.join(".initialized").is_file()
}

/// Creates everything in `dir` (which may exist, but must not be initialized).
pub fn init(dir: &Path, server_names: Option<&[String]>) -> Result<InitReport, DataDirError> {
    if is_initialized(dir) {
        return Err(DataDirError::AlreadyInitialized(dir.to_owned()));
    }
    fs::create_dir_all(dir.join("signing"))
        .and_then(|()| fs::create_dir_all(dir.join("admin")))
        .map_err(|source| DataDirError::Create {
            path: dir.to_owned(),
            source,
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    let now = SystemTime::now();
    let config_path = dir.join("controller.toml");
    if !config_path.exists() {
        write(&config_path, TEMPLATE.as_bytes(), 0o644)?;
    }
    let config = ControllerConfig::load(&config_path)?;
    let names: Vec<String> =
        server_names.map_or_else(|| config.server_names.clone(), <[_]>::to_vec);
    let ca = Ca::generate("Thoth controller CA", now, CA_VALIDITY)?;
    write(&dir.join("ca.crt"), ca.cert_pem().as_bytes(), 0o644)?;
    write(&dir.join("ca.key"), ca.key_pem().as_bytes(), 0o600)?;
    let server = ca.issue_server(&names, now, SERVER_VALIDITY)?;
    write(&dir.join("server.crt"), server.cert_pem.as_bytes(), 0o644)?;
    write(&dir.join("server.key"), server.key_pem.as_bytes(), 0o600)?;
    let root = new_ed25519();
    write(&dir.join("root.key"), key_to_text(&root).as_bytes(), 0o600)?;
    let root_pub = B64.encode(root.verifying_key().to_bytes());
    write(
        &dir.join("root.pub"),
        format!("{root_pub}\n").as_bytes(),
        0o644,
    )?;
    new_signing_key(dir, &root, now)?;
    let admin_cert = write_admin_credential(
        &dir.join("admin"),
        &ca,
        &Identity::Admin {
            name: "admin".into(),
            role: Role::Admin,
            tenant: None,
        },
        now,
    )?;
    record_admin_credential(dir, &admin_cert, "init")?;
    write(&dir.join(".initialized"), b"1\n", 0o644)?;
    Ok(InitReport {
        dir: dir.to_path_buf(),
        ca_fingerprint: ca.fingerprint(),
        root_public_key: root_pub,
    })
}

/// Writes `ca.crt`, `client.crt` and `client.key` for an admin identity into `out`; returns the
/// certificate (PEM), for [`record_admin_credential`].
pub fn write_admin_credential(
    out: &Path,
    ca: &Ca,
    identity: &Identity,
    now: SystemTime,
) -> Result<String, DataDirError> {
    create(out)?;
    let issued = ca.issue_client(identity, now, SERVER_VALIDITY)?;
    write(&out.join("ca.crt"), ca.cert_pem().as_bytes(), 0o644)?;
    write(&out.join("client.crt"), issued.cert_pem.as_bytes(), 0o644)?;
    write(&out.join("client.key"), issued.key_pem.as_bytes(), 0o600)?;
    Ok(issued.cert_pem)
}

/// Records an issued admin credential in the data directory's store (`thothctl admins list`
/// shows it, `thothctl admins revoke` can revoke it). Works while the controller runs.
pub fn record_admin_credential(
    dir: &Path,
    cert_pem: &str,
    source: &str,
) -> Result<(), DataDirError> {
    let der = crate::pki::cert_pem_to_der(cert_pem)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let record =
        crate::admins::record_for(&der, source, now).map_err(DataDirError::AdminCertificate)?;
    let store = crate::store::sqlite::SqliteStore::open(&dir.join("controller.db"))
        .map_err(DataDirError::RecordAdmin)?;
    crate::store::AdminStore::record_admin(&store, &record).map_err(DataDirError::RecordAdmin)?;
    Ok(())
}

/// Makes a policy-signing key, has the root certify it, and makes it the active one.
pub fn new_signing_key(
    dir: &Path,
    root: &SigningKey,
    now: SystemTime,
) -> Result<SigningIdentity, DataDirError> {
    let key = new_ed25519();
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace([':', '-'], "");
    let key_id = format!(
        "signing-{}-{}",
        stamp.trim_end_matches('Z'),
        &hex::encode(key.verifying_key().to_bytes())[..8]
    );
    let not_before = now - Duration::from_secs(300);
    let certificate = certify(
        root,
        &key_id,
        &key.verifying_key(),
        not_before,
        SIGNING_KEY_VALIDITY,
    );
    let sdir = dir.join("signing");
    create(&sdir)?;
    write(
        &sdir.join(format!("{key_id}.key")),
        key_to_text(&key).as_bytes(),
        0o600,
    )?;
    let cert_json = serde_json::to_vec_pretty(&certificate).map_err(DataDirError::Serialize)?;
    write(&sdir.join(format!("{key_id}.cert")), &cert_json, 0o644)?;
    write(
        &sdir.join("ACTIVE"),
        format!("{key_id}\n").as_bytes(),
        0o644,
    )?;
    Ok(SigningIdentity {
        key_id,
        key,
        certificate,
        not_before: unix(not_before),
        not_after: unix(not_before + SIGNING_KEY_VALIDITY),
    })
}

fn load_signing(dir: &Path) -> Result<SigningIdentity, DataDirError> {
    let sdir = dir.join("signing");
    let key_id = read(&sdir.join("ACTIVE"))?.trim().to_owned();
    if key_id.is_empty() || key_id.contains(['/', '\\']) || key_id.starts_with('.') {
        return Err(DataDirError::BadKeyId(sdir.join("ACTIVE")));
    }
    let key = key_from_text(&read(&sdir.join(format!("{key_id}.key")))?, &key_id)?;
    let bad_cert = |e: &dyn std::fmt::Display| DataDirError::SigningCertificate {
        key_id: key_id.clone(),
        reason: e.to_string(),
    };
    let certificate: Signed = serde_json::from_str(&read(&sdir.join(format!("{key_id}.cert")))?)
        .map_err(|e| bad_cert(&e))?;
    let bytes = B64.decode(&certificate.bytes).map_err(|e| bad_cert(&e))?;
    let cert: thoth_proto::bundle::KeyCertificate =
        serde_json::from_slice(&bytes).map_err(|e| bad_cert(&e))?;
    let t = |s: &str| humantime::parse_rfc3339(s).map(unix).unwrap_or(0);
    Ok(SigningIdentity {
        key_id,
        key,
        not_before: t(&cert.not_before),
        not_after: t(&cert.not_after),
        certificate,
    })
}

impl DataDir {
    /// Loads an initialized directory.
    pub fn load(dir: &Path) -> Result<DataDir, DataDirError> {
        if !is_initialized(dir) {
            return Err(DataDirError::NotInitialized(dir.to_owned()));
        }
        let config = ControllerConfig::load(&dir.join("controller.toml"))?;
        let ca = Ca::load(&read(&dir.join("ca.crt"))?, &read(&dir.join("ca.key"))?)?;
        let root = key_from_text(&read(&dir.join("root.key"))?, "root.key")?;
        let signing = load_signing(dir)?;
        Ok(DataDir {
            dir: dir.to_path_buf(),
            config,
            server_cert_pem: read(&dir.join("server.crt"))?,
            server_key_pem: read(&dir.join("server.key"))?,
            ca,
            root,
            signing,
        })
    }

    /// The database path.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("controller.db")
    }
}
