//! What a scan reports: [`Finding`]s, with the matched text only as a salted digest ([`Salt`]).

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

/// The salt of [`Finding::digest`]s: the same secret gives the same digest under one salt (so
/// the findings of a session can be correlated) and nothing that can be tested offline.
pub struct Salt([u8; 32]);

impl Salt {
    /// A fresh random salt.
    pub fn random() -> Salt {
        let mut b = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        Salt(b)
    }

    /// A given salt (say, one the agent hands out per user).
    pub fn from_bytes(bytes: [u8; 32]) -> Salt {
        Salt(bytes)
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
