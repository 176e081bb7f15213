//! The compiled detectors of one policy: the one-pass `RegexSet` over raw text, the full
//! expressions of the enabled detectors, and the scan of one decoded string.

use std::ops::Range;
use std::sync::OnceLock;

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use thoth_policy::Pattern;

use super::detectors::{self, AWS_SECRET_KEY, DEFS, GENERIC, GENERIC_KEY, SUSPICIOUS_ESCAPE};

/// A validated match in one string.
#[derive(Debug, Clone)]
pub(super) struct Hit {
    /// Index into [`DEFS`].
    pub(super) def: usize,
    /// Byte range of the secret in the string.
    pub(super) range: Range<usize>,
}

/// Strings shorter than this hold no secret any detector finds (the shortest is a 13-digit
/// card number; `pwd=` and 12 characters is longer).
const MIN_LEN: usize = 12;

/// The compiled detectors.
pub(super) struct Engine {
    /// One member per enabled detector, then [`SUSPICIOUS_ESCAPE`].
    set: RegexSet,
    /// The [`DEFS`] index of each member of `set` (`None`: the escape member).
    members: Vec<Option<usize>>,
    /// The full expression of each enabled detector, by [`DEFS`] index.
    /// Compiled when first needed (a raw-pass hit is rare): a session that never meets a
    /// secret never pays their memory.
    full: Vec<Option<OnceLock<Regex>>>,
    /// `generic_secret`'s key expression for object members, when enabled.
    generic_key: Option<OnceLock<Regex>>,
    /// Object members whose key names an AWS secret key, when `aws_secret_key` is enabled.
    aws_key: Option<OnceLock<Regex>>,
    gcp: bool,
    allow: Vec<Pattern>,
}

fn build(pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .unwrap_or_else(|e| panic!("built-in DLP expression {pattern:?}: {e}"))
}

impl Engine {
    /// Compiles the detectors named in `enabled` (unknown ids are ignored: the policy parser
    /// rejects them).
    pub(super) fn new(enabled: &[String], allow: &[Pattern]) -> Engine {
        let mut members = Vec::new();
        let mut prefilters = Vec::new();
        let mut full = Vec::new();
        for (i, def) in DEFS.iter().enumerate() {
            let on = enabled.iter().any(|e| e == def.id);
            full.push(on.then(OnceLock::new));
            if on {
                members.push(Some(i));
                prefilters.push(def.prefilter);
            }
        }
        if !prefilters.is_empty() {
            members.push(None);
            prefilters.push(SUSPICIOUS_ESCAPE);
        }
        let set = RegexSetBuilder::new(&prefilters)
            .unicode(false)
            .build()
            .unwrap_or_else(|e| panic!("built-in DLP prefilters: {e}"));
        let on = |id: &str| enabled.iter().any(|e| e == id);
        Engine {
            set,
            members,
            full,
            generic_key: on(GENERIC).then(OnceLock::new),
            aws_key: on("aws_secret_key").then(OnceLock::new),
            gcp: on("gcp_service_account"),
            allow: allow.to_vec(),
        }
    }

    /// The ids of the enabled detectors, in `DLP_DETECTORS` order.
    pub(super) fn ids(&self) -> Vec<&'static str> {
        self.members.iter().flatten().map(|&i| DEFS[i].id).collect()
    }

    /// Whether nothing is enabled.
    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// One pass over raw text.
    pub(super) fn may_match(&self, raw: &[u8]) -> bool {
        !self.members.is_empty() && self.set.is_match(raw)
    }

    /// Whether the whole of `matched` is let through by an allow pattern.
    fn allowed(&self, matched: &str) -> bool {
        self.allow.iter().any(|p| p.is_match(matched))
    }

    /// The validated matches in one decoded string, in order of position. `generic_secret`
    /// matches that overlap another detector's are dropped.
    pub(super) fn scan(&self, s: &str, hits: &mut Vec<Hit>) {
        hits.clear();
        if s.len() < MIN_LEN || self.members.is_empty() {
            return;
        }
        let hay = s.as_bytes();
        for m in self.set.matches(hay).iter() {
            let Some(def) = self.members[m] else { continue };
            let Some(re) = self.full[def]
                .as_ref()
                .map(|c| c.get_or_init(|| build(DEFS[def].pattern)))
            else {
                continue;
            };
            for caps in re.captures_iter(hay) {
                let Some(range) = (DEFS[def].validate)(hay, &caps) else {
                    continue;
                };
                let range = snap(s, range);
                if range.is_empty() || self.allowed(&s[range.clone()]) {
                    continue;
                }
                hits.push(Hit { def, range });
            }
        }
        if hits.len() > 1 {
            hits.sort_by_key(|h| (h.range.start, h.range.end));
            let specific: Vec<Range<usize>> = hits
                .iter()
                .filter(|h| DEFS[h.def].id != GENERIC)
                .map(|h| h.range.clone())
                .collect();
            hits.retain(|h| {
                DEFS[h.def].id != GENERIC
                    || !specific
                        .iter()
                        .any(|r| r.start < h.range.end && h.range.start < r.end)
            });
        }
    }

    /// The detector an object member `key: value` (a string) reveals on its own: a key naming
    /// a secret (`"db_password": "…"`, `"SecretAccessKey": "…"`).
    pub(super) fn member(&self, key: &str, value: &str) -> Option<usize> {
        if key.len() > 96 || value.len() > 256 || self.allowed(value) {
            return None;
        }
        let v = value.as_bytes();
        if let Some(re) = self
            .aws_key
            .as_ref()
            .map(|c| c.get_or_init(|| build(AWS_SECRET_KEY)))
            && re.is_match(key.as_bytes())
            && v.len() == 40
            && detectors::aws_secret_ok(v)
        {
            return DEFS.iter().position(|d| d.id == "aws_secret_key");
        }
        if let Some(re) = self
            .generic_key
            .as_ref()
            .map(|c| c.get_or_init(|| build(GENERIC_KEY)))
            && re.is_match(key.as_bytes())
            && v.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"+/=_~!@#$%^&*.?-".contains(&b))
            && detectors::generic_value_ok(key.as_bytes(), v)
        {
            return DEFS.iter().position(|d| d.id == GENERIC);
        }
        None
    }

    /// Whether service-account objects (`{"type": "service_account", "private_key": …}`) are
    /// looked for.
    pub(super) fn gcp(&self) -> Option<usize> {
        if self.gcp {
            DEFS.iter().position(|d| d.id == "gcp_service_account")
        } else {
            None
        }
    }
}

/// Widens `r` to char boundaries of `s` (expressions are ASCII-only, so this is a safeguard).
fn snap(s: &str, r: Range<usize>) -> Range<usize> {
    let mut start = r.start.min(s.len());
    let mut end = r.end.min(s.len());
    while !s.is_char_boundary(start) {
        start -= 1;
    }
    while !s.is_char_boundary(end) {
        end += 1;
    }
    start..end
}
