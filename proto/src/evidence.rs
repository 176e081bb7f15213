//! Signed chain heads as evidence: the `CHAIN_HEAD` record the controller stores (and its sinks
//! export) after it verified an agent's signed head, and the checks a verifier makes on it.
//!
//! The hash chain alone is unkeyed: whoever can rewrite a file can re-hash it. What makes an
//! exported chain evidence is the agent's signature over `(agentId, seq, hash)`, made with the
//! agent's private key (it never leaves the laptop) and checked against the agent's certificate,
//! which must chain to the fleet's CA and name that agent. A `CHAIN_HEAD` record carries the
//! signature and the certificate, so a file of events can be checked with nothing but the CA.
//!
//! One crypto backend: aws-lc-rs (through rustls-webpki).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde_json::Value;

/// `eventType` of a signed chain head record.
pub const CHAIN_HEAD: &str = crate::EventType::ChainHead.as_str();

/// The message a chain head signature covers (the agent signs these bytes).
pub fn head_message(agent_id: &str, seq: u64, hash: &str) -> Vec<u8> {
    format!("thoth-chain-head:v1:{agent_id}:{seq}:{hash}").into_bytes()
}

/// The identity an agent certificate carries (a URI subject-alternative name).
pub fn agent_uri(tenant: &str, agent_id: &str) -> String {
    format!("urn:thoth:agent:{tenant}:{agent_id}")
}

/// Why a `CHAIN_HEAD` record, its signature or certificate, or a CA file is refused.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// A string field of the record is missing.
    #[error("CHAIN_HEAD record: \"{0}\" is missing or not a string")]
    MissingField(&'static str),
    /// The record has no `detail` object.
    #[error("CHAIN_HEAD record: no detail object")]
    NoDetail,
    /// `detail.seq` is missing.
    #[error("CHAIN_HEAD record: \"seq\" is missing or not a number")]
    NoSeq,
    /// A binary field is not base64.
    #[error("CHAIN_HEAD record: \"{field}\" is not base64: {source}")]
    NotBase64 {
        /// The field.
        field: &'static str,
        /// The decoder's error.
        source: base64::DecodeError,
    },
    /// The certificate does not parse (as webpki reads it).
    #[error("the certificate does not parse: {0:?}")]
    Certificate(webpki::Error),
    /// The certificate does not parse (as x509-parser reads it, for its names).
    #[error("the certificate does not parse: {0}")]
    CertificateNames(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// The signature is not the certificate key's over the head.
    #[error("the signature does not verify with the certificate's key")]
    Signature,
    /// The certificate names another agent.
    #[error("the certificate does not name agent {agent_id:?} of tenant {tenant_id:?}")]
    WrongAgent {
        /// The agent the record is about.
        agent_id: String,
        /// Its tenant.
        tenant_id: String,
    },
    /// The record's timestamp does not parse.
    #[error("timestamp {timestamp:?}: {source}")]
    Timestamp {
        /// The timestamp as recorded.
        timestamp: String,
        /// The parser's error.
        source: humantime::TimestampError,
    },
    /// The record's timestamp is before the Unix epoch.
    #[error("timestamp before 1970")]
    BeforeEpoch,
    /// The certificate does not chain to the CA at the record's time.
    #[error("the certificate does not chain to the given CA (at {timestamp}): {source:?}")]
    NotChained {
        /// The record's timestamp.
        timestamp: String,
        /// webpki's verdict.
        source: webpki::Error,
    },
    /// A CA file entry is not a PEM certificate.
    #[error("not a PEM certificate: {0}")]
    NotPem(#[source] rustls_pki_types::pem::Error),
    /// A CA certificate cannot be a trust anchor.
    #[error("not a usable CA certificate: {0:?}")]
    UnusableCa(webpki::Error),
    /// The CA file holds no certificate.
    #[error("no certificate in the CA file")]
    NoCa,
}

/// A signed chain head as the controller records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// The tenant of the agent (from its certificate at ingest).
    pub tenant_id: String,
    /// The agent whose chain this is.
    pub agent_id: String,
    /// The last sequence number the signature covers.
    pub seq: u64,
    /// Hex SHA-256 of the event at `seq`.
    pub hash: String,
    /// ECDSA P-256 SHA-256 (ASN.1) signature over [`head_message`].
    pub signature: Vec<u8>,
    /// The agent's certificate (DER) whose key made the signature.
    pub certificate: Vec<u8>,
    /// When the controller verified and recorded it (RFC 3339): the time the certificate must
    /// have been valid at.
    pub timestamp: String,
}

impl SignedHead {
    /// The record the controller stores: a controller event (no `hash`: it is not on the agent's
    /// chain) whose `detail` holds the head, the signature and the certificate (base64).
    pub fn to_record(&self, event_id: &str) -> Value {
        serde_json::json!({
            "eventId": event_id,
            "eventType": CHAIN_HEAD,
            "timestamp": self.timestamp,
            "tenantId": self.tenant_id,
            "agentId": self.agent_id,
            "sourceType": "controller",
            "detail": {
                "seq": self.seq,
                "hash": self.hash,
                "signature": B64.encode(&self.signature),
                "certificate": B64.encode(&self.certificate),
            },
        })
    }

    /// Reads a `CHAIN_HEAD` record back.
    pub fn from_record(v: &Value) -> Result<SignedHead, EvidenceError> {
        let s = |v: &Value, k: &'static str| -> Result<String, EvidenceError> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(EvidenceError::MissingField(k))
        };
        let d = v
            .get("detail")
            .filter(|d| d.is_object())
            .ok_or(EvidenceError::NoDetail)?;
        let b = |k: &'static str| -> Result<Vec<u8>, EvidenceError> {
            B64.decode(s(d, k)?)
                .map_err(|source| EvidenceError::NotBase64 { field: k, source })
        };
        Ok(SignedHead {
            tenant_id: s(v, "tenantId")?,
            agent_id: s(v, "agentId")?,
            seq: d
                .get("seq")
                .and_then(Value::as_u64)
                .ok_or(EvidenceError::NoSeq)?,
            hash: s(d, "hash")?,
            signature: b("signature")?,
            certificate: b("certificate")?,
            timestamp: s(v, "timestamp")?,
        })
    }

    /// Checks the signature with the certificate's key, that the certificate names this agent,
    /// and, with `ca`, that it chains to the CA and was valid when the head was recorded.
    pub fn check(&self, ca: Option<&TrustAnchors>) -> Result<(), EvidenceError> {
        let der = CertificateDer::from(self.certificate.as_slice());
        let cert = webpki::EndEntityCert::try_from(&der).map_err(EvidenceError::Certificate)?;
        cert.verify_signature(
            webpki::aws_lc_rs::ECDSA_P256_SHA256,
            &head_message(&self.agent_id, self.seq, &self.hash),
            &self.signature,
        )
        .map_err(|_| EvidenceError::Signature)?;
        let want = agent_uri(&self.tenant_id, &self.agent_id);
        if !uri_names(&self.certificate)?.contains(&want) {
            return Err(EvidenceError::WrongAgent {
                agent_id: self.agent_id.clone(),
                tenant_id: self.tenant_id.clone(),
            });
        }
        if let Some(ca) = ca {
            let at = humantime::parse_rfc3339_weak(&self.timestamp).map_err(|source| {
                EvidenceError::Timestamp {
                    timestamp: self.timestamp.clone(),
                    source,
                }
            })?;
            cert.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &ca.anchors,
                &[],
                UnixTime::since_unix_epoch(
                    at.duration_since(std::time::UNIX_EPOCH)
                        .map_err(|_| EvidenceError::BeforeEpoch)?,
                ),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|source| EvidenceError::NotChained {
                timestamp: self.timestamp.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

fn uri_names(der: &[u8]) -> Result<Vec<String>, EvidenceError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(EvidenceError::CertificateNames)?;
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(u) = n {
                out.push((*u).to_owned());
            }
        }
    }
    Ok(out)
}

/// The CA certificates a signed head's certificate must chain to.
#[derive(Debug)]
pub struct TrustAnchors {
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustAnchors {
    /// From PEM (one or more certificates).
    pub fn from_pem(pem: &[u8]) -> Result<TrustAnchors, EvidenceError> {
        let mut anchors = Vec::new();
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(EvidenceError::NotPem)?;
            let a = webpki::anchor_from_trusted_cert(&c).map_err(EvidenceError::UnusableCa)?;
            anchors.push(a.to_owned());
        }
        if anchors.is_empty() {
            return Err(EvidenceError::NoCa);
        }
        Ok(TrustAnchors { anchors })
    }
}
