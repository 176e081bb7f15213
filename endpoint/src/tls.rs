//! Talking to the controller: TLS 1.3 with the controller CA pinned by fingerprint (the system
//! trust store is never used), and an optional client certificate.

use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

/// Why a TLS client configuration or a channel to the controller cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refuses the protocol versions.
    #[error("{0}")]
    Protocol(rustls::Error),
    /// The client certificate chain is not PEM.
    #[error("agent certificate: {0}")]
    CertificatePem(rustls::pki_types::pem::Error),
    /// The client key is not PEM.
    #[error("agent key: {0}")]
    KeyPem(rustls::pki_types::pem::Error),
    /// rustls refuses the client certificate and key.
    #[error("agent certificate: {0}")]
    Certificate(rustls::Error),
    /// The controller URL does not parse.
    #[error("controller_url {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The controller URL names no host.
    #[error("controller_url {0:?} has no host")]
    NoHost(String),
    /// The controller host is not a valid TLS server name.
    #[error("controller host {host:?}: {source}")]
    ServerName {
        /// The host.
        host: String,
        /// Why.
        source: rustls::pki_types::InvalidDnsNameError,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts the server's certificate only if its chain holds a CA whose SHA-256 is the pinned
/// fingerprint and the leaf verifies against that CA (name, validity, signature).
#[derive(Debug)]
pub struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedCa {
    /// Pins `fingerprint`.
    pub fn new(fingerprint: [u8; 32]) -> PinnedCa {
        PinnedCa {
            fingerprint,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.fingerprint)
        else {
            return Err(rustls::Error::General(
                "the controller's CA does not match the pinned ca_fingerprint".into(),
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client certificate and key, PEM.
#[derive(Clone)]
pub struct ClientCert {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Key, PEM.
    pub key_pem: String,
}

/// The rustls client configuration: TLS 1.3, h2, pinned CA, optional client certificate.
pub fn client_config(
    fingerprint: [u8; 32],
    client: Option<&ClientCert>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Protocol)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa::new(fingerprint)));
    let mut config = match client {
        Some(c) => {
            let chain = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(TlsError::CertificatePem)?;
            let key =
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).map_err(TlsError::KeyPem)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsError::Certificate)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A lazily connecting channel to the controller at `url` (`https://host:port`).
pub fn controller_channel(
    url: &str,
    fingerprint: [u8; 32],
    client: Option<&ClientCert>,
    request_timeout: Option<Duration>,
) -> Result<Channel, TlsError> {
    let bad_url = |e: &dyn std::fmt::Display| TlsError::Url {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    let uri: Uri = url.parse().map_err(|e| bad_url(&e))?;
    let host = uri
        .host()
        .ok_or_else(|| TlsError::NoHost(url.to_owned()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let server_name =
        ServerName::try_from(host.clone()).map_err(|source| TlsError::ServerName {
            host: host.clone(),
            source,
        })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(fingerprint, client)?));
    // The connector below does TLS itself; tonic must not try to (it refuses https:// without
    // its own TLS config), so the endpoint is named with http:// and the same authority.
    let plain = format!("http://{}", uri.authority().map_or("", |a| a.as_str()));
    let mut ep = Endpoint::from_shared(plain)
        .map_err(|e| bad_url(&e))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if let Some(t) = request_timeout {
        ep = ep.timeout(t);
    }
    let service = tower::service_fn(move |_: Uri| {
        let (connector, server_name, host) = (connector.clone(), server_name.clone(), host.clone());
        async move {
            let tcp = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(ep.connect_with_connector_lazy(service))
}

/// `sha256:<hex>` of the first certificate of a PEM text.
pub fn pem_fingerprint(pem: &str) -> Option<[u8; 32]> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some(Sha256::digest(der.as_ref()).into())
}

/// A lazily connecting channel to the agent's Unix socket.
#[cfg(unix)]
pub fn local_channel(socket: &std::path::Path) -> Result<Channel, TlsError> {
    let path = socket.to_path_buf();
    let ep =
        Endpoint::from_static("http://thoth-agent.local").connect_timeout(Duration::from_secs(2));
    Ok(
        ep.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        })),
    )
}
