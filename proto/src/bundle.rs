//! Signed policy bundles (DESIGN: "Signed policy bundles", invariant 2).
//!
//! A bundle is a JSON envelope that carries the exact bytes that were signed, base64-encoded:
//! nothing is re-serialized before verification. Two signatures chain it to the root key that
//! agents pin at install: the root certifies an online policy-signing key (a [`KeyCertificate`],
//! itself signed bytes), and that key signs the [`BundlePayload`]. The signing key can rotate
//! without touching agents. [`verify_bundle`] is the one verification everyone uses.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The `format` of envelopes this code writes and reads.
pub const BUNDLE_FORMAT: &str = "thoth-bundle-v1";
/// What a certificate must allow its key to do.
pub const USAGE_POLICY_SIGNING: &str = "policy-signing";
/// Largest envelope accepted, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 8 << 20;

/// What is signed: the policy and its place in the tenant's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundlePayload {
    /// Tenant the policy is for.
    pub tenant: String,
    /// Strictly increasing per tenant.
    pub version: u64,
    /// RFC 3339, UTC.
    pub issued_at: String,
    /// RFC 3339, UTC. An expired bundle is not applied (the last good one stays in force).
    pub expires_at: String,
    /// The policy document (YAML or JSON text), validated by the receiver with `thoth-policy`.
    pub policy: String,
}

/// What the root signs about a policy-signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyCertificate {
    /// A name for the key (shown in errors and audit).
    pub key_id: String,
    /// The Ed25519 public key, base64.
    pub public_key: String,
    /// What the key may sign: [`USAGE_POLICY_SIGNING`].
    pub usage: String,
    /// RFC 3339: the key is valid from…
    pub not_before: String,
    /// …until (RFC 3339).
    pub not_after: String,
}

/// Bytes and the signature over them, both base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The exact bytes that were signed (JSON of a payload or a certificate).
    pub bytes: String,
    /// Ed25519 signature over `bytes` (decoded).
    pub signature: String,
}

/// The envelope, as stored and sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The signing key's certificate, signed by the root.
    pub certificate: Signed,
    /// The [`BundlePayload`], signed by the certified key.
    pub payload: Signed,
}

/// A bundle that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBundle {
    /// Its payload.
    pub payload: BundlePayload,
    /// Which signing key signed it.
    pub key_id: String,
}

/// Why a bundle is refused. Every variant means: change nothing, report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not an envelope this code reads.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// A signature is absent.
    #[error("the bundle is not signed ({0} signature missing)")]
    MissingSignature(&'static str),
    /// The certificate is not signed by the pinned root key.
    #[error("unknown signing key {key_id:?}: its certificate is not signed by the pinned root key")]
    UnknownKey {
        /// The key it names.
        key_id: String,
    },
    /// The certificate does not allow policy signing, or is outside its validity period.
    #[error("signing key {key_id:?} may not sign policy now: {why}")]
    KeyNotValid {
        /// The key.
        key_id: String,
        /// Why.
        why: String,
    },
    /// The payload's signature does not verify with the certified key.
    #[error("bad signature by key {key_id:?}: the bundle was altered or signed by another key")]
    BadSignature {
        /// The key.
        key_id: String,
    },
    /// For another tenant.
    #[error("bundle is for tenant {got:?}, this agent belongs to {expected:?}")]
    WrongTenant {
        /// This agent's tenant.
        expected: String,
        /// The bundle's.
        got: String,
    },
    /// Older than what is already applied.
    #[error("rollback refused: bundle version {version} is lower than {applied}, already applied")]
    Rollback {
        /// The bundle's version.
        version: u64,
        /// The highest applied.
        applied: u64,
    },
    /// Past its expiry: keep enforcing the last good bundle, and report stale.
    #[error("bundle version {version} expired at {expires_at}")]
    Expired {
        /// The bundle's version.
        version: u64,
        /// When it expired.
        expires_at: String,
    },
}

fn malformed(what: impl std::fmt::Display) -> BundleError {
    BundleError::Malformed(what.to_string())
}

fn time(s: &str, field: &str) -> Result<SystemTime, BundleError> {
    humantime::parse_rfc3339(s)
        .map_err(|e| malformed(format!("{field} {s:?} is not RFC 3339: {e}")))
}

fn decode_signed(s: &Signed, what: &'static str) -> Result<(Vec<u8>, Signature), BundleError> {
    if s.signature.is_empty() {
        return Err(BundleError::MissingSignature(what));
    }
    let bytes = B64
        .decode(&s.bytes)
        .map_err(|e| malformed(format!("{what} bytes: {e}")))?;
    let sig = B64
        .decode(&s.signature)
        .map_err(|e| malformed(format!("{what} signature: {e}")))?;
    let sig =
        Signature::from_slice(&sig).map_err(|e| malformed(format!("{what} signature: {e}")))?;
    Ok((bytes, sig))
}

/// Verifies a bundle envelope for `tenant`, against the pinned `root` key.
///
/// `applied` is the highest version already applied (rollback protection); a bundle with the same
/// version is accepted (re-delivery). `now` is passed in (no clock is read here).
pub fn verify_bundle(
    envelope: &[u8],
    root: &VerifyingKey,
    tenant: &str,
    applied: Option<u64>,
    now: SystemTime,
) -> Result<VerifiedBundle, BundleError> {
    let (bundle, expired) = verify(envelope, root, tenant, applied, now, false)?;
    match expired {
        Some(expires_at) => Err(BundleError::Expired {
            version: bundle.payload.version,
            expires_at,
        }),
        None => Ok(bundle),
    }
}

/// Like [`verify_bundle`], but a bundle whose only fault is its expiry is returned with
/// `Some(expires_at)`: for the last-known-good bundle, which is still enforced (and reported
/// stale) after it expires, so that expiry never stops enforcement. The signing key's certificate
/// having ended counts as expiry too. Every other check applies.
pub fn verify_bundle_keeping_expired(
    envelope: &[u8],
    root: &VerifyingKey,
    tenant: &str,
    applied: Option<u64>,
    now: SystemTime,
) -> Result<(VerifiedBundle, Option<String>), BundleError> {
    verify(envelope, root, tenant, applied, now, true)
}

fn verify(
    envelope: &[u8],
    root: &VerifyingKey,
    tenant: &str,
    applied: Option<u64>,
    now: SystemTime,
    keep_expired: bool,
) -> Result<(VerifiedBundle, Option<String>), BundleError> {
    if envelope.len() > MAX_BUNDLE_BYTES {
        return Err(malformed(format!(
            "{} bytes, over the {MAX_BUNDLE_BYTES} byte limit",
            envelope.len()
        )));
    }
    let env: SignedBundle = serde_json::from_slice(envelope).map_err(malformed)?;
    if env.format != BUNDLE_FORMAT {
        return Err(malformed(format!(
            "format {:?}, expected {BUNDLE_FORMAT:?}",
            env.format
        )));
    }
    // Root → signing key.
    let (cert_bytes, cert_sig) = decode_signed(&env.certificate, "certificate")?;
    let cert: KeyCertificate = serde_json::from_slice(&cert_bytes).map_err(malformed)?;
    root.verify_strict(&cert_bytes, &cert_sig)
        .map_err(|_| BundleError::UnknownKey {
            key_id: cert.key_id.clone(),
        })?;
    let not_valid = |why: String| BundleError::KeyNotValid {
        key_id: cert.key_id.clone(),
        why,
    };
    if cert.usage != USAGE_POLICY_SIGNING {
        return Err(not_valid(format!("its usage is {:?}", cert.usage)));
    }
    if now < time(&cert.not_before, "notBefore")? {
        return Err(not_valid(format!("valid only from {}", cert.not_before)));
    }
    let mut expired = None;
    if now > time(&cert.not_after, "notAfter")? {
        if !keep_expired {
            return Err(not_valid(format!("expired at {}", cert.not_after)));
        }
        expired = Some(cert.not_after.clone());
    }
    let key_bytes: [u8; 32] = B64
        .decode(&cert.public_key)
        .map_err(|e| malformed(format!("publicKey: {e}")))?
        .try_into()
        .map_err(|_| malformed("publicKey is not 32 bytes"))?;
    let key =
        VerifyingKey::from_bytes(&key_bytes).map_err(|e| malformed(format!("publicKey: {e}")))?;
    // Signing key → payload.
    let (payload_bytes, payload_sig) = decode_signed(&env.payload, "payload")?;
    key.verify_strict(&payload_bytes, &payload_sig)
        .map_err(|_| BundleError::BadSignature {
            key_id: cert.key_id.clone(),
        })?;
    let payload: BundlePayload = serde_json::from_slice(&payload_bytes).map_err(malformed)?;
    if payload.tenant != tenant {
        return Err(BundleError::WrongTenant {
            expected: tenant.to_owned(),
            got: payload.tenant,
        });
    }
    if let Some(applied) = applied
        && payload.version < applied
    {
        return Err(BundleError::Rollback {
            version: payload.version,
            applied,
        });
    }
    time(&payload.issued_at, "issuedAt")?;
    if now > time(&payload.expires_at, "expiresAt")? {
        expired.get_or_insert_with(|| payload.expires_at.clone());
    }
    Ok((
        VerifiedBundle {
            payload,
            key_id: cert.key_id,
        },
        expired,
    ))
}

fn sign(key: &SigningKey, bytes: Vec<u8>) -> Signed {
    let signature = key.sign(&bytes);
    Signed {
        bytes: B64.encode(&bytes),
        signature: B64.encode(signature.to_bytes()),
    }
}

/// The root certifies `key` for policy signing from `not_before` for `valid_for`.
pub fn certify(
    root: &SigningKey,
    key_id: &str,
    key: &VerifyingKey,
    not_before: SystemTime,
    valid_for: Duration,
) -> Signed {
    let cert = KeyCertificate {
        key_id: key_id.to_owned(),
        public_key: B64.encode(key.to_bytes()),
        usage: USAGE_POLICY_SIGNING.to_owned(),
        not_before: humantime::format_rfc3339_seconds(not_before).to_string(),
        not_after: humantime::format_rfc3339_seconds(not_before + valid_for).to_string(),
    };
    sign(
        root,
        serde_json::to_vec(&cert).expect("a certificate is always valid JSON"),
    )
}

/// Signs `payload` with `key`, whose certificate (from [`certify`]) travels with it.
pub fn sign_bundle(
    payload: &BundlePayload,
    key: &SigningKey,
    certificate: &Signed,
) -> SignedBundle {
    SignedBundle {
        format: BUNDLE_FORMAT.to_owned(),
        certificate: certificate.clone(),
        payload: sign(
            key,
            serde_json::to_vec(payload).expect("a payload is always valid JSON"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn payload(tenant: &str, version: u64) -> BundlePayload {
        BundlePayload {
            tenant: tenant.into(),
            version,
            issued_at: humantime::format_rfc3339_seconds(now()).to_string(),
            expires_at: humantime::format_rfc3339_seconds(now() + 7 * DAY).to_string(),
            policy: "servers: []\n".into(),
        }
    }

    fn bundle(p: &BundlePayload) -> Vec<u8> {
        let cert = certify(
            &key(1),
            "signing-1",
            &key(2).verifying_key(),
            now() - DAY,
            90 * DAY,
        );
        serde_json::to_vec(&sign_bundle(p, &key(2), &cert)).unwrap()
    }

    fn verify(
        env: &[u8],
        applied: Option<u64>,
        at: SystemTime,
    ) -> Result<VerifiedBundle, BundleError> {
        verify_bundle(env, &key(1).verifying_key(), "acme", applied, at)
    }

    #[test]
    fn a_good_bundle_verifies_and_keeps_its_signed_bytes() {
        let p = payload("acme", 3);
        let v = verify(&bundle(&p), Some(2), now()).unwrap();
        assert_eq!(v.payload, p);
        assert_eq!(v.key_id, "signing-1");
        assert!(
            verify(&bundle(&p), Some(3), now()).is_ok(),
            "re-delivery of the same version"
        );
    }

    #[test]
    fn every_case_design_lists_is_refused() {
        let good = bundle(&payload("acme", 5));
        let env: SignedBundle = serde_json::from_slice(&good).unwrap();
        let with = |f: &dyn Fn(&mut SignedBundle)| {
            let mut e = env.clone();
            f(&mut e);
            serde_json::to_vec(&e).unwrap()
        };
        // Missing or stripped signatures are errors, never skips.
        let r = verify(&with(&|e| e.payload.signature.clear()), None, now());
        assert_eq!(r, Err(BundleError::MissingSignature("payload")));
        let r = verify(&with(&|e| e.certificate.signature.clear()), None, now());
        assert_eq!(r, Err(BundleError::MissingSignature("certificate")));
        // A payload changed after signing.
        let tampered = with(&|e| {
            let mut p = payload("acme", 5);
            p.policy = "defaults: {unknown_servers: allow}\n".into();
            e.payload.bytes = B64.encode(serde_json::to_vec(&p).unwrap());
        });
        assert!(matches!(
            verify(&tampered, None, now()),
            Err(BundleError::BadSignature { .. })
        ));
        // Signed by a key the root never certified.
        let rogue_cert = certify(
            &key(9),
            "rogue",
            &key(2).verifying_key(),
            now() - DAY,
            90 * DAY,
        );
        let r = verify(&with(&|e| e.certificate = rogue_cert.clone()), None, now());
        assert!(matches!(r, Err(BundleError::UnknownKey { .. })), "{r:?}");
        // Certified key, but the payload was signed by another one.
        let other = sign_bundle(&payload("acme", 5), &key(3), &env.certificate);
        let r = verify(&serde_json::to_vec(&other).unwrap(), None, now());
        assert!(matches!(r, Err(BundleError::BadSignature { .. })), "{r:?}");
        // Wrong tenant, rollback, expiry, expired or future signing key.
        let r = verify(&bundle(&payload("globex", 5)), None, now());
        assert!(matches!(r, Err(BundleError::WrongTenant { .. })), "{r:?}");
        let r = verify(&good, Some(6), now());
        assert_eq!(
            r,
            Err(BundleError::Rollback {
                version: 5,
                applied: 6
            })
        );
        let r = verify(&good, None, now() + 8 * DAY);
        assert!(
            matches!(r, Err(BundleError::Expired { version: 5, .. })),
            "{r:?}"
        );
        let r = verify(&good, None, now() + 100 * DAY);
        assert!(matches!(r, Err(BundleError::KeyNotValid { .. })), "{r:?}");
        let r = verify(&good, None, now() - 2 * DAY);
        assert!(matches!(r, Err(BundleError::KeyNotValid { .. })), "{r:?}");
        // Malformed envelopes and payloads.
        for bad in [&b"not json"[..], b"{}", br#"{"format":"other","certificate":{"bytes":"","signature":""},"payload":{"bytes":"","signature":""}}"#] {
            assert!(matches!(verify(bad, None, now()), Err(BundleError::Malformed(_))), "{bad:?}");
        }
        let r = verify(&with(&|e| e.payload.signature = "!!".into()), None, now());
        assert!(matches!(r, Err(BundleError::Malformed(_))), "{r:?}");
    }

    #[test]
    fn every_single_byte_change_of_the_signed_payload_is_refused() {
        let good = bundle(&payload("acme", 5));
        let env: SignedBundle = serde_json::from_slice(&good).unwrap();
        let bytes = B64.decode(&env.payload.bytes).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let mut e = env.clone();
            e.payload.bytes = B64.encode(&b);
            let r = verify(&serde_json::to_vec(&e).unwrap(), None, now());
            assert!(r.is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn the_last_known_good_reading_keeps_an_expired_bundle_but_nothing_else() {
        let good = bundle(&payload("acme", 5));
        let root = key(1).verifying_key();
        let (v, expired) =
            verify_bundle_keeping_expired(&good, &root, "acme", None, now() + 8 * DAY).unwrap();
        assert_eq!((v.payload.version, expired.is_some()), (5, true));
        // Even past the signing key's certificate: still enforced, reported expired.
        let (_, expired) =
            verify_bundle_keeping_expired(&good, &root, "acme", None, now() + 100 * DAY).unwrap();
        assert!(expired.is_some());
        let (_, fresh) = verify_bundle_keeping_expired(&good, &root, "acme", None, now()).unwrap();
        assert_eq!(fresh, None);
        // Every other fault is still refused.
        assert!(
            verify_bundle_keeping_expired(&good, &key(9).verifying_key(), "acme", None, now())
                .is_err()
        );
        assert!(verify_bundle_keeping_expired(&good, &root, "globex", None, now()).is_err());
        assert!(verify_bundle_keeping_expired(&good, &root, "acme", Some(6), now()).is_err());
        let mut env: SignedBundle = serde_json::from_slice(&good).unwrap();
        env.payload.signature.clear();
        let stripped = serde_json::to_vec(&env).unwrap();
        assert!(
            verify_bundle_keeping_expired(&stripped, &root, "acme", None, now() + 8 * DAY).is_err()
        );
    }
}
