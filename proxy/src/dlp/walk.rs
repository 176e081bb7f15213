//! The walk over a JSON value: every string (object keys included) is scanned decoded, findings
//! carry a location (`result.content[0].text`, `arguments["a.b"]`), and redaction rewrites only
//! the matched text.

use std::fmt::Write as _;
use std::ops::Range;

use serde_json::{Map, Value};

use super::detectors::{DEFS, GENERIC};
use super::engine::{Engine, Hit};
use super::finding::{Finding, Salt};

/// At most this many findings are returned per scanned value (one message's arguments or
/// result); redaction goes on past it.
pub const MAX_FINDINGS: usize = 64;

/// Values nested deeper than this are not scanned (`serde_json` refuses to parse past 128).
pub const MAX_DEPTH: usize = 256;

/// Rescans of a redacted string (see [`Walk::string`]).
const MAX_ROUNDS: usize = 3;

/// Keys longer than this are shown cut in locations.
const MAX_KEY_IN_LOCATION: usize = 64;

/// One walk: the findings so far and the current location.
pub(super) struct Walk<'a> {
    engine: &'a Engine,
    salt: &'a Salt,
    path: String,
    hits: Vec<Hit>,
    /// What was found (at most [`MAX_FINDINGS`]).
    pub(super) findings: Vec<Finding>,
}

impl<'a> Walk<'a> {
    /// A walk whose locations start with `root`.
    pub(super) fn new(engine: &'a Engine, root: &str, salt: &'a Salt) -> Walk<'a> {
        Walk {
            engine,
            salt,
            path: root.to_owned(),
            hits: Vec::new(),
            findings: Vec::new(),
        }
    }

    fn record(&mut self, def: usize, matched: &str) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                detector: DEFS[def].id,
                location: self.path.clone(),
                digest: self.salt.digest(matched),
            });
        }
    }

    /// Scans `s` (at the current location), records its findings and returns the redacted
    /// text when anything matched. `forced`: the whole string is a secret of that detector
    /// (an object member whose key names a secret), unless a specific detector matched in it.
    fn string(&mut self, s: &str, forced: Option<usize>) -> Option<String> {
        let mut hits = std::mem::take(&mut self.hits);
        self.engine.scan(s, &mut hits);
        let forced = forced.filter(|&f| DEFS[f].id != GENERIC || hits.is_empty());
        let out = if let Some(f) = forced {
            for h in &hits {
                self.record(h.def, &s[h.range.clone()]);
            }
            self.record(f, s);
            Some(format!("[REDACTED:{}]", DEFS[f].id))
        } else if hits.is_empty() {
            None
        } else {
            for h in &hits {
                self.record(h.def, &s[h.range.clone()]);
            }
            let mut text = redact_text(s, &hits);
            // A match rejected for its neighbour (`ghp_…` followed by `-----BEGIN …`) can become
            // one once the neighbour is redacted: rescan until nothing is left.
            for _ in 0..MAX_ROUNDS {
                self.engine.scan(&text, &mut hits);
                if hits.is_empty() {
                    break;
                }
                for h in &hits {
                    self.record(h.def, &text[h.range.clone()]);
                }
                text = redact_text(&text, &hits);
            }
            Some(text)
        };
        self.hits = hits;
        out
    }

    /// The location label of key `k`, redacted when the key itself holds a secret (recorded).
    fn key(&mut self, k: &str) -> Option<String> {
        self.string(k, None)
    }

    fn member_forced(&self, gcp: Option<usize>, k: &str, v: &Value) -> Option<usize> {
        let Value::String(s) = v else { return None };
        if k == "private_key" && gcp.is_some() {
            return gcp;
        }
        self.engine.member(k, s)
    }

    /// Records the findings in `v`.
    pub(super) fn find(&mut self, v: &Value, forced: Option<usize>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Value::String(s) => {
                self.string(s, forced);
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let len = self.path.len();
                    let _ = write!(self.path, "[{i}]");
                    self.find(x, None, depth + 1);
                    self.path.truncate(len);
                }
            }
            Value::Object(m) => {
                let gcp = self.engine.gcp().filter(|_| is_service_account(m));
                for (k, x) in m {
                    let len = self.path.len();
                    let label = self.key(k);
                    push_segment(&mut self.path, label.as_deref().unwrap_or(k));
                    let forced = self.member_forced(gcp, k, x);
                    self.find(x, forced, depth + 1);
                    self.path.truncate(len);
                }
            }
            _ => {}
        }
    }

    /// Records the findings in `v` and rewrites what matched.
    pub(super) fn redact(&mut self, v: &mut Value, forced: Option<usize>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Value::String(s) => {
                if let Some(new) = self.string(s, forced) {
                    *s = new;
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    let len = self.path.len();
                    let _ = write!(self.path, "[{i}]");
                    self.redact(x, None, depth + 1);
                    self.path.truncate(len);
                }
            }
            Value::Object(m) => {
                let gcp = self.engine.gcp().filter(|_| is_service_account(m));
                let mut renames = Vec::new();
                for (k, x) in m.iter_mut() {
                    let len = self.path.len();
                    let label = self.key(k);
                    push_segment(&mut self.path, label.as_deref().unwrap_or(k));
                    let forced = self.member_forced(gcp, k, x);
                    self.redact(x, forced, depth + 1);
                    self.path.truncate(len);
                    if let Some(label) = label {
                        renames.push((k.clone(), label));
                    }
                }
                if !renames.is_empty() {
                    rename_keys(m, &renames);
                }
            }
            _ => {}
        }
    }
}

fn is_service_account(m: &Map<String, Value>) -> bool {
    m.get("type").and_then(Value::as_str) == Some("service_account")
        && m.get("private_key")
            .and_then(Value::as_str)
            .is_some_and(|k| k.starts_with("-----BEGIN"))
}

/// Rebuilds `m` with redacted keys (order kept; a key that would collide gets `~2`, `~3`…).
fn rename_keys(m: &mut Map<String, Value>, renames: &[(String, String)]) {
    let old = std::mem::take(m);
    for (k, v) in old {
        let mut key = match renames.iter().find(|(from, _)| *from == k) {
            Some((_, to)) => to.clone(),
            None => k,
        };
        let base = key.clone();
        let mut n = 2;
        while m.contains_key(&key) {
            key = format!("{base}~{n}");
            n += 1;
        }
        m.insert(key, v);
    }
}

/// `s` with each matched range (overlaps merged) replaced by `[REDACTED:<detector>]`.
pub(super) fn redact_text(s: &str, hits: &[Hit]) -> String {
    let mut ranges: Vec<(Range<usize>, usize)> =
        hits.iter().map(|h| (h.range.clone(), h.def)).collect();
    ranges.sort_by_key(|(r, _)| (r.start, std::cmp::Reverse(r.end)));
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    let mut i = 0;
    while i < ranges.len() {
        let (Range { start, mut end }, def) = ranges[i].clone();
        i += 1;
        while i < ranges.len() && ranges[i].0.start < end {
            end = end.max(ranges[i].0.end);
            i += 1;
        }
        let start = start.max(at);
        out.push_str(&s[at..start]);
        out.push_str("[REDACTED:");
        out.push_str(DEFS[def].id);
        out.push(']');
        at = end.max(start);
    }
    out.push_str(&s[at..]);
    out
}

/// Appends `.key`, or `["key"]` when the key is not a plain name (cut past 64 characters).
fn push_segment(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key.len() <= MAX_KEY_IN_LOCATION
        && key.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphabetic() || b == b'_' || (i > 0 && (b.is_ascii_digit() || b == b'-'))
        });
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        return;
    }
    let shown: String = if key.chars().count() > MAX_KEY_IN_LOCATION {
        key.chars()
            .take(MAX_KEY_IN_LOCATION)
            .chain(std::iter::once('…'))
            .collect()
    } else {
        key.to_owned()
    };
    path.push('[');
    path.push_str(&Value::String(shown).to_string());
    path.push(']');
}
