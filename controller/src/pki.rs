//! The controller's certificate authority: the CA itself, the server certificate, admin
//! certificates, agent certificates from CSRs, and reading a verified peer certificate back into
//! an identity (DESIGN "Identity and transport", invariant 5).
//!
//! Identity lives in one URI subject-alternative name, so nothing else in a certificate (its
//! common name, anything a CSR asked for) can name a tenant or an agent:
//! `urn:thoth:agent:<tenant>:<agent-id>` and `urn:thoth:admin:<role>:<tenant|*>:<name>`.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};

/// Longest tenant name.
pub const MAX_TENANT_LEN: usize = 63;

/// Roles an admin certificate can carry, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads policy, agents, tokens.
    Viewer,
    /// Viewer, and decides approvals (the approval issue).
    Approver,
    /// Viewer, and pushes and rolls back policy, manages tokens, revokes agents.
    Operator,
    /// Everything, including the audit log and signing-key rotation.
    Admin,
}

impl Role {
    /// Its name, as written in certificates and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a name, certificate, key or CSR is refused, or a certificate cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Not one of the four roles.
    #[error("unknown role {0:?} (expected viewer, approver, operator or admin)")]
    UnknownRole(String),
    /// Not a tenant name.
    #[error(
        "invalid tenant {0:?}: use 1-{MAX_TENANT_LEN} lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    Tenant(String),
    /// Not an admin name.
    #[error("invalid admin name {0:?}: use 1-64 printable ASCII characters, no spaces or ':'")]
    AdminName(String),
    /// The client certificate does not parse.
    #[error("unreadable client certificate: {0}")]
    ClientCertificate(String),
    /// Its subjectAltName extension does not parse.
    #[error("bad subjectAltName: {0}")]
    SubjectAltName(x509_parser::error::X509Error),
    /// It names no Thoth identity.
    #[error("the client certificate carries no Thoth identity")]
    NoIdentity,
    /// It names two.
    #[error("the client certificate carries two Thoth identities")]
    TwoIdentities,
    /// Its Thoth identity does not parse.
    #[error("malformed Thoth identity {0:?}")]
    MalformedIdentity(String),
    /// A key or certificate cannot be made.
    #[error("{0}")]
    Generate(rcgen::Error),
    /// The CA key does not load.
    #[error("CA key: {0}")]
    CaKey(rcgen::Error),
    /// The CA certificate does not load.
    #[error("CA certificate: {0}")]
    CaCertificate(rcgen::Error),
    /// A server name is neither a DNS name nor an IP address.
    #[error("server name {name:?}: {source}")]
    ServerName {
        /// The name.
        name: String,
        /// Why.
        source: rcgen::Error,
    },
    /// An identity does not fit a certificate URI.
    #[error("identity: {0}")]
    IdentityUri(rcgen::Error),
    /// The CSR's self-signature does not verify.
    #[error("the CSR's signature does not verify")]
    CsrSignature,
    /// The CSR does not parse.
    #[error("unreadable CSR: {0}")]
    Csr(rcgen::Error),
    /// A certificate is not PEM.
    #[error("certificate PEM: {0}")]
    CertificatePem(rustls::pki_types::pem::Error),
    /// A certificate does not parse.
    #[error("certificate: {0}")]
    Certificate(String),
}

impl std::str::FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "approver" => Ok(Role::Approver),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(PkiError::UnknownRole(other.to_owned())),
        }
    }
}

/// Who a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An enrolled agent.
    Agent {
        /// Its tenant.
        tenant: String,
        /// Its id.
        agent_id: String,
    },
    /// A `thothctl` user.
    Admin {
        /// The person or automation it was issued to.
        name: String,
        /// What it may do.
        role: Role,
        /// The one tenant it may act on; `None` for all tenants.
        tenant: Option<String>,
    },
}

/// Checks a tenant name: 1–63 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_tenant(tenant: &str) -> Result<(), PkiError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_LEN
        && tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && tenant.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(PkiError::Tenant(tenant.to_owned()))
    }
}

/// Checks an admin name: 1–64 printable ASCII characters other than `:`.
pub fn check_admin_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if ok {
        Ok(())
    } else {
        Err(PkiError::AdminName(name.to_owned()))
    }
}

impl Identity {
    fn uri(&self) -> String {
        match self {
            Identity::Agent { tenant, agent_id } => format!("urn:thoth:agent:{tenant}:{agent_id}"),
            Identity::Admin { name, role, tenant } => format!(
                "urn:thoth:admin:{role}:{}:{name}",
                tenant.as_deref().unwrap_or("*")
            ),
        }
    }

    fn parse_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix("urn:thoth:")?;
        if let Some(rest) = rest.strip_prefix("agent:") {
            let (tenant, agent_id) = rest.split_once(':')?;
            check_tenant(tenant).ok()?;
            if agent_id.is_empty() || agent_id.contains(':') {
                return None;
            }
            return Some(Identity::Agent {
                tenant: tenant.to_owned(),
                agent_id: agent_id.to_owned(),
            });
        }
        let rest = rest.strip_prefix("admin:")?;
        let mut parts = rest.splitn(3, ':');
        let role = parts.next()?.parse().ok()?;
        let tenant = parts.next()?;
        let name = parts.next()?;
        check_admin_name(name).ok()?;
        let tenant = if tenant == "*" {
            None
        } else {
            check_tenant(tenant).ok()?;
            Some(tenant.to_owned())
        };
        Some(Identity::Admin {
            name: name.to_owned(),
            role,
            tenant,
        })
    }

    /// Reads the identity of a certificate that TLS has already verified against our CA.
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, PkiError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| PkiError::ClientCertificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(PkiError::SubjectAltName)?
            .ok_or(PkiError::NoIdentity)?;
        let mut found = None;
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name
                && uri.starts_with("urn:thoth:")
            {
                if found.is_some() {
                    return Err(PkiError::TwoIdentities);
                }
                found = Some(
                    Identity::parse_uri(uri)
                        .ok_or_else(|| PkiError::MalformedIdentity((*uri).to_owned()))?,
                );
            }
        }
        found.ok_or(PkiError::NoIdentity)
    }
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
}

/// The controller's CA: its certificate and key.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn err(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e)
}

fn time(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes[0] &= 0x7f; // a positive INTEGER
    SerialNumber::from_slice(&bytes)
}

fn leaf_params(
    common_name: &str,
    not_before: SystemTime,
    valid_for: Duration,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Thoth");
    params.distinguished_name = dn;
    // A little slack for clocks that run behind.
    params.not_before = time(not_before - Duration::from_secs(300));
    params.not_after = time(not_before + valid_for);
    params.serial_number = Some(serial());
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

impl Ca {
    /// Makes a new CA valid for `valid_for`.
    pub fn generate(name: &str, now: SystemTime, valid_for: Duration) -> Result<Ca, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "Thoth");
        params.distinguished_name = dn;
        params.not_before = time(now - Duration::from_secs(300));
        params.not_after = time(now + valid_for);
        params.serial_number = Some(serial());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(err)?;
        let pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ca::load(&pem, &key_pem)
    }

    /// Loads a CA from its PEM certificate and key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(PkiError::CaKey)?;
        let der = cert_pem_to_der(cert_pem)?;
        let issuer =
            Issuer::from_ca_cert_der(&der.clone().into(), key).map_err(PkiError::CaCertificate)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            cert_der: der,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key, PEM (for writing at init).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// `sha256:<hex>` of the CA certificate's DER: what agents pin.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// A TLS server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(
        &self,
        names: &[String],
        now: SystemTime,
        valid_for: Duration,
    ) -> Result<CertAndKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut params = leaf_params("thoth-controller", now, valid_for);
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into().map_err(|source| {
                    PkiError::ServerName {
                        name: name.clone(),
                        source,
                    }
                })?),
            };
            params.subject_alt_names.push(san);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn client_params(
        &self,
        identity: &Identity,
        now: SystemTime,
        valid_for: Duration,
    ) -> Result<CertificateParams, PkiError> {
        let cn = match identity {
            Identity::Agent { agent_id, .. } => agent_id.clone(),
            Identity::Admin { name, .. } => name.clone(),
        };
        let mut params = leaf_params(&cn, now, valid_for);
        params.subject_alt_names = vec![SanType::URI(
            identity.uri().try_into().map_err(PkiError::IdentityUri)?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(params)
    }

    /// A client certificate with a fresh key (admin certificates, test agents).
    pub fn issue_client(
        &self,
        identity: &Identity,
        now: SystemTime,
        valid_for: Duration,
    ) -> Result<CertAndKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let params = self.client_params(identity, now, valid_for)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for the key of a CSR (DER). The CSR's self-signature must verify;
    /// everything else it asks for is ignored.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        identity: &Identity,
        now: SystemTime,
        valid_for: Duration,
    ) -> Result<String, PkiError> {
        let csr = parse_csr(csr_der)?;
        let params = self.client_params(identity, now, valid_for)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(err)?;
        Ok(cert.pem())
    }
}

/// Parses and verifies a CSR (DER), with a clear error.
pub fn parse_csr(csr_der: &[u8]) -> Result<CertificateSigningRequestParams, PkiError> {
    CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => PkiError::CsrSignature,
        other => PkiError::Csr(other),
    })
}

/// `sha256:<hex>` of DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// The DER of the first certificate in a PEM text.
pub fn cert_pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(PkiError::CertificatePem)
}

/// The expiry (Unix seconds) of a PEM certificate.
pub fn not_after_unix(cert_pem: &str) -> Result<i64, PkiError> {
    let der = cert_pem_to_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::Certificate(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn identities_round_trip_through_certificates() {
        let now = SystemTime::now();
        let ca = Ca::generate("test CA", now, 365 * DAY).unwrap();
        let ids = [
            Identity::Agent {
                tenant: "acme".into(),
                agent_id: "agt-1".into(),
            },
            Identity::Admin {
                name: "alice@example.com".into(),
                role: Role::Viewer,
                tenant: Some("acme".into()),
            },
            Identity::Admin {
                name: "root".into(),
                role: Role::Admin,
                tenant: None,
            },
        ];
        for id in ids {
            let issued = ca.issue_client(&id, now, DAY).unwrap();
            let der = cert_pem_to_der(&issued.cert_pem).unwrap();
            assert_eq!(Identity::from_cert_der(&der).unwrap(), id);
        }
    }

    #[test]
    fn a_csr_gets_our_identity_not_the_one_it_asks_for() {
        let now = SystemTime::now();
        let ca = Ca::generate("test CA", now, 365 * DAY).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::URI(
            "urn:thoth:admin:admin:*:mallory".try_into().unwrap(),
        ));
        let csr = params.serialize_request(&key).unwrap();
        let id = Identity::Agent {
            tenant: "acme".into(),
            agent_id: "agt-2".into(),
        };
        let pem = ca.sign_csr(csr.der(), &id, now, DAY).unwrap();
        let der = cert_pem_to_der(&pem).unwrap();
        assert_eq!(Identity::from_cert_der(&der).unwrap(), id);
        let mut bad = csr.der().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(ca.sign_csr(&bad, &id, now, DAY).is_err());
        assert!(ca.sign_csr(b"not a csr", &id, now, DAY).is_err());
    }

    #[test]
    fn malformed_identities_are_refused() {
        for uri in [
            "urn:thoth:agent:ACME:x",
            "urn:thoth:agent:acme:",
            "urn:thoth:admin:root:*:bob",
            "urn:thoth:admin:admin:*:",
            "urn:thoth:other:x",
        ] {
            assert_eq!(Identity::parse_uri(uri), None, "{uri}");
        }
        assert!(check_tenant("default").is_ok());
        assert!(check_tenant("-x").is_err());
        assert!(check_tenant(&"a".repeat(64)).is_err());
    }
}
