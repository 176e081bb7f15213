//! thoth-client: connecting to a controller as an admin (`thothctl`), an agent, or an enrolling
//! machine; the local controller's default directories; a key and CSR made on this machine; and
//! verifying the events a controller stored ([`evidence`]). No storage, no server: `thothctl`
//! and the dev tools are built on this crate, not on `thoth-controller`.

#![forbid(unsafe_code)]

pub mod evidence;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Why credentials cannot be read or made, or a controller cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A credential file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key or CSR cannot be made.
    #[error("{0}")]
    Key(rcgen::Error),
    /// The controller URL is not https.
    #[error("controller URL {0:?} must start with https:// (the controller only speaks TLS)")]
    NotHttps(String),
    /// The controller URL does not parse.
    #[error("bad controller URL {url:?}: {source}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The TLS settings (CA, certificate, key) are refused.
    #[error("TLS settings: {0}")]
    Tls(tonic::transport::Error),
    /// The connection failed: what happened (the whole error chain) and what to do.
    #[error("cannot connect to the controller at {url}: {detail}\n  hint: {hint}")]
    Connect {
        /// The controller URL.
        url: String,
        /// The transport error and its sources, joined with `: `.
        detail: String,
        /// What to do about it.
        hint: &'static str,
    },
}

/// PEM credentials for one client.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The controller CA.
    pub ca_pem: String,
    /// Client certificate (absent for enrollment).
    pub cert_pem: Option<String>,
    /// Client key.
    pub key_pem: Option<String>,
}

impl Credentials {
    /// Reads `ca.crt`, `client.crt` and `client.key` from a directory.
    pub fn from_dir(dir: &Path) -> Result<Credentials, ClientError> {
        let read = |name: &str| -> Result<String, ClientError> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| ClientError::Read { path, source })
        };
        Ok(Credentials {
            ca_pem: read("ca.crt")?,
            cert_pem: Some(read("client.crt")?),
            key_pem: Some(read("client.key")?),
        })
    }
}

/// The default controller data directory: `$THOTH_CONTROLLER_DATA`, else
/// `$XDG_DATA_HOME/thoth-controller`, else `~/.local/share/thoth-controller`. The controller
/// keeps its data there; `thothctl` on the same machine finds the first admin credential in it.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("THOTH_CONTROLLER_DATA").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("thoth-controller");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/thoth-controller")
}

/// The default credentials directory for thothctl: `$THOTHCTL_CREDENTIALS`, else the local
/// controller's `admin/`.
pub fn default_credentials_dir() -> PathBuf {
    std::env::var_os("THOTHCTL_CREDENTIALS")
        .filter(|d| !d.is_empty())
        .map_or_else(|| default_data_dir().join("admin"), PathBuf::from)
}

/// A new P-256 key and a CSR for it (DER): the private key is made here and never leaves.
pub fn new_key_and_csr() -> Result<(String, Vec<u8>), ClientError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(ClientError::Key)?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(ClientError::Key)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// An endpoint for `url` (`https://host:port`) with our TLS settings. `request_timeout` applies
/// to unary calls; leave it `None` for long-lived subscriptions.
pub fn endpoint(
    url: &str,
    creds: &Credentials,
    request_timeout: Option<Duration>,
) -> Result<Endpoint, ClientError> {
    if !url.starts_with("https://") {
        return Err(ClientError::NotHttps(url.to_owned()));
    }
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&creds.ca_pem));
    if let (Some(cert), Some(key)) = (&creds.cert_pem, &creds.key_pem) {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(|source| ClientError::BadUrl {
            url: url.to_owned(),
            source,
        })?
        .tls_config(tls)
        .map_err(ClientError::Tls)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    if let Some(t) = request_timeout {
        ep = ep.timeout(t);
    }
    Ok(ep)
}

/// Connects now (so an unreachable controller or a TLS failure is reported here).
pub async fn connect(
    url: &str,
    creds: &Credentials,
    request_timeout: Option<Duration>,
) -> Result<Channel, ClientError> {
    let ep = endpoint(url, creds, request_timeout)?;
    ep.connect()
        .await
        .map_err(|e| describe_connect_error(url, &e))
}

/// Turns a transport error into words a person can act on.
fn describe_connect_error(url: &str, e: &tonic::transport::Error) -> ClientError {
    let mut msg = e.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    let hint = connect_hint(&msg);
    ClientError::Connect {
        url: url.to_owned(),
        detail: msg,
        hint,
    }
}

/// The hint for a connection failure, from its message chain. Only a certificate the client
/// refused is blamed on the CA: a connection the controller closed or reset during the handshake
/// (its connection limits, an overload) or one that timed out says so instead.
fn connect_hint(msg: &str) -> &'static str {
    let has = |needles: &[&str]| needles.iter().any(|n| msg.contains(n));
    if has(&["Connection refused"]) {
        "is the controller running? (start it with `thoth-controller serve`)"
    } else if has(&[
        "invalid peer certificate",
        "UnknownIssuer",
        "BadSignature",
        "NotValidForName",
        "certificate verify",
        "CertNotValidForName",
    ]) {
        "the controller's certificate does not match the CA you gave (wrong ca.crt, or wrong controller?)"
    } else if has(&[
        "CertificateRequired",
        "certificate required",
        "BadCertificate",
        "bad certificate",
        "UnknownCA",
        "unknown ca",
        "CertificateRevoked",
        "certificate revoked",
        "CertificateExpired",
        "certificate expired",
    ]) {
        "the controller refused your client certificate (expired, revoked, or from another controller?)"
    } else if has(&["timed out", "deadline", "Timeout", "elapsed"]) {
        "the controller did not answer in time: it may be overloaded or at its connection limits, or the address is wrong or filtered by a firewall"
    } else if has(&[
        "eof",
        "EOF",
        "Connection reset",
        "connection reset",
        "Broken pipe",
        "closed",
    ]) {
        "the controller closed the connection before it was set up: it may be at its connection limits (max_connections, max_unauthenticated_per_address) or restarting; try again, and see thoth_connections_refused_total in its metrics"
    } else {
        "check the controller URL"
    }
}

/// What enrolling produced: the agent's credentials and identity.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// CA, certificate and the locally made key.
    pub credentials: Credentials,
    /// Assigned id.
    pub agent_id: String,
    /// Tenant.
    pub tenant: String,
    /// Certificate expiry (Unix seconds).
    pub not_after: i64,
}

/// Enrolls: makes a key pair here (the private key never leaves), sends a CSR with the token.
pub async fn enroll(
    url: &str,
    ca_pem: &str,
    token: &str,
    tenant: &str,
    hostname: &str,
) -> Result<Enrolled, tonic::Status> {
    let (key_pem, csr) = new_key_and_csr().map_err(|e| tonic::Status::internal(e.to_string()))?;
    let creds = Credentials {
        ca_pem: ca_pem.to_owned(),
        cert_pem: None,
        key_pem: None,
    };
    let channel = connect(url, &creds, Some(Duration::from_secs(30)))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let resp = thoth_proto::fleet::enrollment_client::EnrollmentClient::new(channel)
        .enroll(thoth_proto::fleet::EnrollRequest {
            token: token.to_owned(),
            csr_der: csr,
            hostname: hostname.to_owned(),
            labels: Default::default(),
            tenant: tenant.to_owned(),
        })
        .await?
        .into_inner();
    Ok(Enrolled {
        credentials: Credentials {
            ca_pem: resp.ca_certificate_pem,
            cert_pem: Some(resp.certificate_pem),
            key_pem: Some(key_pem),
        },
        agent_id: resp.agent_id,
        tenant: resp.tenant,
        not_after: resp.not_after_unix,
    })
}
