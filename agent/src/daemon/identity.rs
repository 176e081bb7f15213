//! The agent's key: its private key, made on first use (0600, never sent), and a certificate
//! request for it at enrollment and renewal. In the daemon, not in thoth-endpoint, so that the
//! proxy and the installer do not link rcgen.

use thoth_endpoint::state::{StateDir, StateError, write_atomic};

/// Why the key or a certificate request cannot be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum KeyError {
    /// The key file cannot be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The private key cannot be made or read, or the CSR made.
    #[error("{0}")]
    Key(rcgen::Error),
}

/// The agent's private key, made (0600) on first use.
pub(super) fn key_or_new(state: &StateDir) -> Result<String, KeyError> {
    let p = state.key_path();
    match std::fs::read_to_string(&p) {
        Ok(k) => Ok(k),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(KeyError::Key)?;
            let pem = key.serialize_pem();
            write_atomic(&p, pem.as_bytes(), 0o600)
                .map_err(|source| StateError::Io { path: p, source })?;
            Ok(pem)
        }
        Err(source) => Err(StateError::Io { path: p, source }.into()),
    }
}

/// A CSR (DER) for the stored key.
pub(super) fn csr(state: &StateDir) -> Result<Vec<u8>, KeyError> {
    let key = rcgen::KeyPair::from_pem(&key_or_new(state)?).map_err(KeyError::Key)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(KeyError::Key)?;
    Ok(csr.der().to_vec())
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
