//! DLP: secrets (and, when asked, personal data) in a call's arguments and results.
//!
//! CONTRACT STUB (issue 17): the public API below is what the relay uses; the detectors are
//! filled in by the DLP work.

use serde_json::Value;

/// One match: which detector, where, and a salted digest of the matched text (never the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The detector id (one of `thoth_policy::DLP_DETECTORS`).
    pub detector: &'static str,
    /// Where: `arguments.path.to[0]`, `result.content[0].text`, …
    pub location: String,
    /// Salted SHA-256 of the matched text, hex (32 digits).
    pub digest: String,
}

/// The salt of [`Finding::digest`]s.
pub struct Salt([u8; 32]);

impl Salt {
    /// A fresh random salt.
    pub fn random() -> Salt {
        let mut b = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        Salt(b)
    }

    /// The salted digest of `matched`.
    pub fn digest(&self, matched: &str) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.0);
        h.update(matched.as_bytes());
        hex::encode(&h.finalize()[..16])
    }
}

/// The detectors a policy enables, compiled once per policy and server.
pub struct Scanner {
    _enabled: Vec<String>,
}

impl Scanner {
    /// The scanner for these settings.
    pub fn new(dlp: &thoth_policy::Dlp) -> Scanner {
        Scanner {
            _enabled: dlp.detectors.clone(),
        }
    }

    /// One pass over raw JSON text: `false` means nothing in it can match.
    pub fn may_match(&self, _json_text: &[u8]) -> bool {
        false
    }

    /// Findings in every string of `value`; locations start with `root`.
    pub fn find(&self, _value: &Value, _root: &str, _salt: &Salt) -> Vec<Finding> {
        Vec::new()
    }

    /// Replaces every match in every string of `value` with `[REDACTED:<detector>]` and
    /// returns the findings.
    pub fn redact(&self, _value: &mut Value, _root: &str, _salt: &Salt) -> Vec<Finding> {
        Vec::new()
    }
}
