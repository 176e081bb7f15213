//! What an event's `content` holds: arguments or results, secrets masked, cut to a size cap.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// How content is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentLimits {
    /// Longest content kept, in bytes. Longer content is cut and its SHA-256 recorded.
    pub max_bytes: usize,
    /// More key words to mask, besides the built-in ones (lowercase, without `_` and `-`; a key
    /// containing one is masked). Set once per process, from the policy.
    pub extra_secret_keys: &'static [String],
}

impl Default for ContentLimits {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024,
            extra_secret_keys: &[],
        }
    }
}

/// A key or text folded for matching: lowercase, without `_` and `-`.
pub fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
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
    let k: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
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
    redact_with(value, &[]);
}

/// Masks the values of secret-looking keys and of keys containing one of `extra` (folded words).
pub fn redact_with(value: &mut Value, extra: &[String]) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let secret = is_secret_key(k)
                    || (!extra.is_empty() && {
                        let f = fold(k);
                        extra.iter().any(|w| f.contains(w.as_str()))
                    });
                if secret && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact_with(v, extra);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| redact_with(i, extra)),
        _ => {}
    }
}

/// Words whose presence (case, `-` and `_` ignored) in JSON text means a key might be secret.
/// Every key [`is_secret_key`] accepts contains one of them.
const SUSPECT_WORDS: [&[u8]; 8] = [
    b"pass",
    b"secret",
    b"key",
    b"auth",
    b"cookie",
    b"credential",
    b"bearer",
    b"token",
];

/// Whether JSON text may hold a secret-looking key (a cheap scan; `\u` escapes force the full
/// check).
fn may_hold_secrets(json: &str) -> bool {
    // Only a \u escape can spell a key's letters in disguise (`\"`, `\n`… cannot).
    if json.contains("\\u") {
        return true;
    }
    let folded: Vec<u8> = json
        .bytes()
        .filter(|b| *b != b'_' && *b != b'-')
        .map(|b| b.to_ascii_lowercase())
        .collect();
    (0..folded.len()).any(|i| {
        let rest = &folded[i..];
        // One pass: only positions starting a suspect word are compared.
        matches!(rest[0], b'p' | b's' | b'k' | b'a' | b'c' | b'b' | b't')
            && SUSPECT_WORDS.iter().any(|w| rest.starts_with(w))
    })
}

/// Masks secrets in the JSON text `json`, and cuts it to `limits`. Text that cannot hold a
/// secret-looking key is kept as it is (no re-serialization); text that is not JSON is kept as
/// a JSON string.
pub fn render_content(json: &str, limits: ContentLimits) -> RenderedContent {
    let json = json.trim();
    let extra = limits.extra_secret_keys;
    let suspect = may_hold_secrets(json)
        || (!extra.is_empty() && {
            let f = fold(json);
            extra.iter().any(|w| f.contains(w.as_str()))
        });
    let text = if suspect {
        match serde_json::from_str::<Value>(json) {
            Ok(mut value) => {
                redact_with(&mut value, extra);
                value.to_string()
            }
            Err(_) => Value::String(json.to_owned()).to_string(),
        }
    } else {
        json.to_owned()
    };
    if text.len() <= limits.max_bytes {
        return RenderedContent {
            text,
            truncated: false,
            sha256: None,
        };
    }
    let sha = hex::encode(Sha256::digest(text.as_bytes()));
    let mut end = limits.max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    RenderedContent {
        text: text[..end].to_owned(),
        truncated: true,
        sha256: Some(sha),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        let r = render_content(
            &json!({"path": "/a", "API-Key": "k", "nested": [{"password": "p", "max_tokens": 5}],
                   "headers": {"Authorization": "Bearer x"}, "refresh_token": "r"})
            .to_string(),
            ContentLimits::default(),
        );
        assert!(
            !r.text.contains("\"k\"") && !r.text.contains("Bearer") && !r.text.contains("\"p\"")
        );
        assert!(!r.text.contains("\"r\""));
        assert!(r.text.contains("\"max_tokens\":5"), "{}", r.text);
        assert!(r.text.contains("/a"));
    }

    #[test]
    fn text_without_secrets_is_kept_as_written_and_escapes_do_not_hide_keys() {
        let raw = r#"{"path": "/srv/a.txt",  "n": 1.50}"#;
        assert_eq!(render_content(raw, ContentLimits::default()).text, raw);
        let sneaky = r#"{"p\u0061ssword": "hunter2"}"#;
        assert!(
            !render_content(sneaky, ContentLimits::default())
                .text
                .contains("hunter2")
        );
        let split = r#"{"pass_word": "x1", "Cred-Ential": "x2"}"#;
        let r = render_content(split, ContentLimits::default()).text;
        assert!(!r.contains("x1") && !r.contains("x2"), "{r}");
        assert_eq!(
            render_content("not json", ContentLimits::default()).text,
            "not json"
        );
    }

    #[test]
    fn long_content_is_cut_with_its_hash() {
        let r = render_content(
            &json!({"s": "é".repeat(100)}).to_string(),
            ContentLimits {
                max_bytes: 51,
                ..ContentLimits::default()
            },
        );
        assert!(r.truncated);
        assert!(r.text.len() <= 51);
        assert_eq!(r.sha256.unwrap().len(), 64);
    }

    #[test]
    fn policy_words_mask_more_keys() {
        static EXTRA: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let extra = EXTRA.get_or_init(|| vec![fold("SSN"), fold("iban")]);
        let limits = ContentLimits {
            extra_secret_keys: extra,
            ..ContentLimits::default()
        };
        let r = render_content(
            r#"{"customer_ssn":"123-45-6789","IBAN":"FR76","name":"x"}"#,
            limits,
        );
        assert_eq!(
            r.text,
            r#"{"customer_ssn":"[REDACTED]","IBAN":"[REDACTED]","name":"x"}"#
        );
        let plain = render_content(r#"{"customer_ssn":"1"}"#, ContentLimits::default());
        assert!(plain.text.contains("\"1\""));
    }
}
