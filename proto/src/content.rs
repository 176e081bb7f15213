//! What an event's `content` holds: arguments or results, secrets masked, cut to a size cap.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// How content is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentLimits {
    /// Longest content kept, in bytes. Longer content is cut and its SHA-256 recorded.
    pub max_bytes: usize,
}

impl Default for ContentLimits {
    fn default() -> Self {
        Self { max_bytes: 16 * 1024 }
    }
}

/// Content ready for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedContent {
    /// The (possibly cut) JSON text.
    pub text: String,
    /// Whether it was cut.
    pub truncated: bool,
    /// SHA-256 (hex) of the full masked text, when it was cut.
    pub sha256: Option<String>,
}

/// The text shown in place of a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Whether a key looks like it holds a secret: `password`, `token`, `api_key`, `authorization`…
/// (case, `-` and `_` ignored). Counts such as `max_tokens` are not secrets.
pub fn is_secret_key(key: &str) -> bool {
    let k: String =
        key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
    const CONTAINS: [&str; 10] = [
        "password",
        "passwd",
        "secret",
        "apikey",
        "authorization",
        "cookie",
        "privatekey",
        "credential",
        "accesskey",
        "bearer",
    ];
    CONTAINS.iter().any(|w| k.contains(w)) || k.ends_with("token") || k == "auth"
}

/// Masks the values of secret-looking keys, at any depth.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Masks secrets in `value`, serializes it, and cuts it to `limits`.
pub fn render_content(mut value: Value, limits: ContentLimits) -> RenderedContent {
    redact(&mut value);
    let text = value.to_string();
    if text.len() <= limits.max_bytes {
        return RenderedContent { text, truncated: false, sha256: None };
    }
    let sha = hex::encode(Sha256::digest(text.as_bytes()));
    let mut end = limits.max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    RenderedContent { text: text[..end].to_owned(), truncated: true, sha256: Some(sha) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        let r = render_content(
            json!({"path": "/a", "API-Key": "k", "nested": [{"password": "p", "max_tokens": 5}],
                   "headers": {"Authorization": "Bearer x"}, "refresh_token": "r"}),
            ContentLimits::default(),
        );
        assert!(!r.text.contains("\"k\"") && !r.text.contains("Bearer") && !r.text.contains("\"p\""));
        assert!(!r.text.contains("\"r\""));
        assert!(r.text.contains("\"max_tokens\":5"), "{}", r.text);
        assert!(r.text.contains("/a"));
    }

    #[test]
    fn long_content_is_cut_with_its_hash() {
        let r = render_content(json!({"s": "é".repeat(100)}), ContentLimits { max_bytes: 51 });
        assert!(r.truncated);
        assert!(r.text.len() <= 51);
        assert_eq!(r.sha256.unwrap().len(), 64);
    }
}
