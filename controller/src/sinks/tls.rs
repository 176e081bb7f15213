//! The TLS client configuration the network sinks share (syslog over TLS, https URLs).

use std::path::Path;
use std::sync::Arc;

use super::error::SinkError;

/// A connector trusting only the CA in `ca_file` (PEM).
pub(super) fn tls_connector(
    ca_file: Option<&Path>,
) -> Result<tokio_rustls::TlsConnector, SinkError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let ca = ca_file.ok_or(SinkError::NoCaFile)?;
    let pem = std::fs::read(ca).map_err(|source| SinkError::CaFile {
        path: ca.to_owned(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(|source| SinkError::CaPem {
                path: ca.to_owned(),
                source,
            })?)
            .map_err(SinkError::Tls)?;
    }
    // The same provider as the server's (aws-lc-rs), named here so sinks need not know the server.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SinkError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
