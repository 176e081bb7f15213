//! DLP: secrets (and, when asked, personal data) in a call's arguments and results.
//!
//! [`Scanner::may_match`] is one pass of a `RegexSet` (one cheap member per enabled detector)
//! over the raw JSON text; when it says no, nothing else runs. [`Scanner::find`] and
//! [`Scanner::redact`] then walk the decoded strings, run only the detectors whose member
//! matched, and validate each match (checksum, entropy, placeholders) before reporting it.
//! Findings never hold the matched text: only a salted digest. `docs/dlp.md` lists the
//! detectors and their limits.

mod checks;
mod detectors;
mod engine;
mod finding;
mod walk;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_detectors;

use serde_json::Value;

pub use finding::{Finding, Salt};
pub use walk::{MAX_DEPTH, MAX_FINDINGS};

/// The detectors a policy enables, compiled once per policy and server (`Send + Sync`: build
/// it when the policy changes and share it).
pub struct Scanner {
    engine: engine::Engine,
}

impl Scanner {
    /// The scanner for these settings.
    pub fn new(dlp: &thoth_policy::Dlp) -> Scanner {
        Scanner {
            engine: engine::Engine::new(&dlp.detectors, &dlp.allow_patterns),
        }
    }

    /// The ids of the detectors this scanner runs, in `thoth_policy::DLP_DETECTORS` order.
    pub fn detectors(&self) -> Vec<&'static str> {
        self.engine.ids()
    }

    /// The ids of every detector the proxy has, in `thoth_policy::DLP_DETECTORS` order.
    pub fn all_detectors() -> Vec<&'static str> {
        detectors::DEFS.iter().map(|d| d.id).collect()
    }

    /// One pass over raw JSON text: `false` means nothing in it can match. `true` also when
    /// the text holds a `\u` escape of a character secrets are made of (the raw pass cannot
    /// see through it; [`Scanner::find`] works on decoded strings).
    pub fn may_match(&self, json_text: &[u8]) -> bool {
        self.engine.may_match(json_text)
    }

    /// Findings in every string of `value` (object keys included); locations start with
    /// `root`. At most [`MAX_FINDINGS`].
    pub fn find(&self, value: &Value, root: &str, salt: &Salt) -> Vec<Finding> {
        if self.engine.is_empty() {
            return Vec::new();
        }
        let mut walk = walk::Walk::new(&self.engine, root, salt);
        walk.find(value, None, 0);
        walk.findings
    }

    /// Replaces every match in every string of `value` with `[REDACTED:<detector>]` and
    /// returns the findings (at most [`MAX_FINDINGS`]; every match is replaced even past it).
    /// Strings without a match are left untouched; the value stays valid JSON.
    pub fn redact(&self, value: &mut Value, root: &str, salt: &Salt) -> Vec<Finding> {
        if self.engine.is_empty() {
            return Vec::new();
        }
        let mut walk = walk::Walk::new(&self.engine, root, salt);
        walk.redact(value, None, 0);
        walk.findings
    }
}
