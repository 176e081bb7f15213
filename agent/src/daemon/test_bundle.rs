//! Test support: policy bundles signed the way the controller signs them.

use std::time::{Duration, SystemTime};

use ed25519_dalek::SigningKey;
use thoth_proto::bundle::{BundlePayload, certify, sign_bundle};

/// A bundle of `policy` signed for tenant `acme` under the root key of seed 1.
pub(crate) fn signed_bundle(version: u64, policy: &str) -> Vec<u8> {
    let root = SigningKey::from_bytes(&[1; 32]);
    let key = SigningKey::from_bytes(&[2; 32]);
    let now = SystemTime::now();
    let cert = certify(
        &root,
        "k",
        &key.verifying_key(),
        now - Duration::from_secs(60),
        Duration::from_secs(86_400),
    );
    let p = BundlePayload {
        tenant: "acme".into(),
        version,
        issued_at: humantime::format_rfc3339_seconds(now).to_string(),
        expires_at: humantime::format_rfc3339_seconds(now + Duration::from_secs(3600)).to_string(),
        policy: policy.into(),
    };
    serde_json::to_vec(&sign_bundle(&p, &key, &cert)).unwrap()
}
