use std::time::{Duration, SystemTime};

use base64::Engine;
use ed25519_dalek::SigningKey;
use thoth_endpoint::state::Trust;
use thoth_proto::bundle::{BundlePayload, certify, sign_bundle};

use super::*;

fn bundle(version: u64, valid_for: Duration) -> Vec<u8> {
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
        expires_at: humantime::format_rfc3339_seconds(now + valid_for).to_string(),
        policy: "servers: []\n".into(),
    };
    serde_json::to_vec(&sign_bundle(&p, &key, &cert)).unwrap()
}

fn trust() -> Trust {
    Trust {
        tenant: "acme".into(),
        root_public_key: base64::engine::general_purpose::STANDARD
            .encode(SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes()),
    }
}

#[test]
fn last_known_good_round_trips_and_refuses_rollback_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let s = StateDir::new(dir.path());
    s.create().unwrap();
    assert!(s.load_lkg(&trust(), SystemTime::now()).unwrap().is_none());
    let v3 = bundle(3, Duration::from_secs(3600));
    save_lkg(&s, &v3, 3).unwrap();
    assert_eq!(s.applied_floor(), 3);
    let lkg = s.load_lkg(&trust(), SystemTime::now()).unwrap().unwrap();
    assert_eq!(
        (lkg.bundle.payload.version, lkg.expired.is_none()),
        (3, true)
    );
    // Expired: still loaded, flagged.
    let later = SystemTime::now() + Duration::from_secs(7200);
    assert!(
        s.load_lkg(&trust(), later)
            .unwrap()
            .unwrap()
            .expired
            .is_some()
    );
    // An older bundle written in its place is a rollback.
    std::fs::write(s.lkg_path(), bundle(2, Duration::from_secs(3600))).unwrap();
    let err = s
        .load_lkg(&trust(), SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("rollback"), "{err}");
    // A tampered one is refused.
    let mut bad = v3.clone();
    let i = bad.len() / 2;
    bad[i] ^= 0x01;
    std::fs::write(s.lkg_path(), bad).unwrap();
    assert!(s.load_lkg(&trust(), SystemTime::now()).is_err());
    // The bundle is readable by proxies (the key is private: see identity's tests).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.lkg_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o004, 0o004);
    }
}
