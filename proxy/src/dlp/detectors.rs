//! The detectors: for each id of `thoth_policy::DLP_DETECTORS`, a cheap prefilter (a member of
//! the one-pass `RegexSet` run over the raw JSON text), the full expression run on decoded
//! strings, and a validation (checksum, entropy, placeholder) that gives the range to redact.
//!
//! Every expression is ASCII-only (`(?-u)`, no Unicode classes or word boundaries), so matched
//! ranges always start and end on ASCII bytes. Prefilters must match the raw JSON text whenever
//! the full expression matches the decoded string: they hold no word boundary and accept `\/`
//! where a `/` is expected; escapes that could hide a secret (`\u0041`…) are caught separately
//! ([`SUSPICIOUS_ESCAPE`]).

use std::ops::Range;

use regex::bytes::Captures;

use super::checks;

/// Gives the range of the secret in `hay` from a match of the full expression, or `None` when
/// validation rejects it.
pub(super) type Validate = fn(hay: &[u8], caps: &Captures) -> Option<Range<usize>>;

/// One detector.
pub(super) struct Def {
    /// Its id (`thoth_policy::DLP_DETECTORS`).
    pub(super) id: &'static str,
    /// The member of the raw-text `RegexSet`.
    pub(super) prefilter: &'static str,
    /// The expression run on decoded strings.
    pub(super) pattern: &'static str,
    /// The validation after a match.
    pub(super) validate: Validate,
}

/// A `\uXXXX` escape of a character that secrets are made of (letters, digits, `+/=_-.:@` and
/// space): honest encoders escape only quotes, control and non-ASCII characters (and Go's
/// `<`, `>`, `&`), so such an escape may be hiding a secret from the raw pass.
pub(super) const SUSPICIOUS_ESCAPE: &str = r"\\u00(?:2[0bBdDeEfF]|3[0-9aAdD]|[4-7][0-9a-fA-F])";

/// The id of the detector whose findings give way to any other detector's on the same text.
pub(super) const GENERIC: &str = "generic_secret";

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn is_b64(b: u8) -> bool {
    B64.contains(&b)
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn next_is(hay: &[u8], at: usize, f: fn(u8) -> bool) -> bool {
    hay.get(at).is_some_and(|&b| f(b))
}

fn group(caps: &Captures, i: usize) -> Option<Range<usize>> {
    caps.get(i).map(|m| m.range())
}

fn whole(caps: &Captures) -> Range<usize> {
    caps.get(0).map_or(0..0, |m| m.range())
}

fn v_plain(_: &[u8], caps: &Captures) -> Option<Range<usize>> {
    Some(whole(caps))
}

/// A 40-character AWS secret access key: mixed case, a digit or `/`/`+`, not hex (a SHA-1).
pub(super) fn aws_secret_ok(v: &[u8]) -> bool {
    v.len() == 40
        && !checks::is_hex(v)
        && v.iter().any(u8::is_ascii_lowercase)
        && v.iter().any(u8::is_ascii_uppercase)
        && v.iter()
            .any(|&b| b.is_ascii_digit() || b == b'/' || b == b'+')
        && checks::entropy(v) >= 3.5
}

fn v_aws_secret(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    let r = group(caps, 1).or_else(|| group(caps, 2))?;
    if next_is(hay, r.end, |b| is_b64(b) || b == b'=') {
        return None;
    }
    aws_secret_ok(&hay[r.clone()]).then_some(r)
}

/// The value of `"private_key"` in a service-account JSON document held in a string.
fn v_gcp(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    let from = whole(caps).start.saturating_sub(64 * 1024);
    let to = (whole(caps).end + 64 * 1024).min(hay.len());
    let window = &hay[from..to];
    let at = memchr::memmem::find(window, b"\"private_key\"")
        .or_else(|| memchr::memmem::find(window, b"private_key\\\""))?;
    let mut i = from + at + "\"private_key".len();
    while i < hay.len() && matches!(hay[i], b'"' | b'\\' | b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    if hay.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while i < hay.len() && matches!(hay[i], b'"' | b'\\' | b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    if !hay[i..].starts_with(b"-----BEGIN") {
        return None;
    }
    let start = i;
    let len = memchr::memchr(b'"', &hay[start..]).unwrap_or(hay.len() - start);
    let mut end = start + len;
    if end > start && hay[end - 1] == b'\\' {
        end -= 1;
    }
    Some(start..end)
}

fn v_azure(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    let r = group(caps, 1)?;
    if next_is(hay, r.end, is_b64) {
        return None;
    }
    (checks::entropy(&hay[r.clone()]) >= 4.0).then_some(r)
}

/// A token: not followed by more token characters, with a random-looking body.
fn v_token(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    let r = whole(caps);
    if next_is(hay, r.end, is_token) {
        return None;
    }
    // The random part: after the prefix (`ghp_`, `xoxb-`, `sk_live_`…), letters and digits.
    let v = &hay[r.clone()];
    let from = v
        .iter()
        .position(|&b| b == b'_' || b == b'-')
        .map_or(0, |i| i + 1);
    let body: Vec<u8> = v[from..]
        .iter()
        .copied()
        .filter(u8::is_ascii_alphanumeric)
        .collect();
    (checks::classes(&body) >= 2 && checks::entropy(&body) >= 3.0).then_some(r)
}

fn v_private_key(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    let r = whole(caps);
    // The body: a run of base64 near the header (after optional `Proc-Type:` lines).
    let near = &hay[r.end..(r.end + 400).min(hay.len())];
    let mut run = 0;
    let has_body = near.iter().any(|&b| {
        run = if is_b64(b) { run + 1 } else { 0 };
        run >= 40
    });
    if !has_body {
        return None;
    }
    let rest = &hay[r.end..];
    let end = match memchr::memmem::find(rest, b"-----END") {
        Some(at) => {
            let after = r.end + at + "-----END".len();
            match memchr::memmem::find(&hay[after..(after + 64).min(hay.len())], b"-----") {
                Some(close) => after + close + 5,
                None => after,
            }
        }
        None => {
            let n = rest
                .iter()
                .take_while(|&&b| is_b64(b) || b == b'=' || b.is_ascii_whitespace() || b == b'\\')
                .count();
            r.end + n
        }
    };
    Some(r.start..end)
}

fn v_jwt(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    let r = whole(caps);
    if next_is(hay, r.end, is_token) {
        return None;
    }
    let v = &hay[r.clone()];
    let mut parts = v.split(|&b| b == b'.');
    let header = checks::base64url_decode(parts.next()?)?;
    let payload = checks::base64url_decode(parts.next()?)?;
    let header_ok = header.first() == Some(&b'{')
        && (memchr::memmem::find(&header, b"\"alg\"").is_some()
            || memchr::memmem::find(&header, b"\"typ\"").is_some());
    (header_ok && payload.first() == Some(&b'{')).then_some(r)
}

fn v_connection(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    let r = group(caps, 2)?;
    let pw = &hay[r.clone()];
    (!checks::is_placeholder(pw)).then_some(r)
}

/// Key names that hold no secret although they say "token" (pagination, CSRF, counters).
fn harmless_key(key: &[u8]) -> bool {
    let k = key.to_ascii_lowercase();
    const HARMLESS: [&[u8]; 12] = [
        b"page",
        b"next",
        b"continuation",
        b"sync",
        b"cursor",
        b"csrf",
        b"xsrf",
        b"resume",
        b"max",
        b"count",
        b"progress",
        b"num",
    ];
    HARMLESS
        .iter()
        .any(|h| memchr::memmem::find(&k, h).is_some())
}

/// The checks of a `generic_secret` value (also used for object members whose key names a
/// secret).
pub(super) fn generic_value_ok(key: &[u8], v: &[u8]) -> bool {
    if harmless_key(key) || v.len() < 12 || v.len() > 256 || checks::is_placeholder(v) {
        return false;
    }
    // A dotted path (`self.token.value`, `os.environ.x`) is code, not a secret.
    let dotted = v.contains(&b'.')
        && v.split(|&b| b == b'.').all(|p| {
            p.first()
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
                && p.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
        });
    !dotted
        && checks::has_letter_and_digit(v)
        && checks::classes(v) >= 2
        && checks::entropy(v) >= 3.5
}

fn v_generic(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    // The key: the word, with up to 30 name characters before it (`DB_` of `DB_PASSWORD`:
    // found here rather than by the expression, which then starts at a literal) and after it.
    let at = whole(caps).start;
    let is_name = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let before = hay[..at]
        .iter()
        .rev()
        .take(30)
        .take_while(|b| is_name(b))
        .count();
    let after = hay[at..].iter().take_while(|b| is_name(b)).count();
    let key = at - before..at + after;
    let r = group(caps, 1)?;
    if next_is(hay, r.end, |b| {
        b.is_ascii_graphic() && !b"\"'`,;)]}&<>".contains(&b)
    }) {
        return None;
    }
    generic_value_ok(&hay[key], &hay[r.clone()]).then_some(r)
}

fn v_openai(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    let r = whole(caps);
    if next_is(hay, r.end, is_token) {
        return None;
    }
    let v = &hay[r.clone()];
    (v.iter().any(u8::is_ascii_uppercase)
        && v.iter().any(u8::is_ascii_lowercase)
        && v.iter().any(u8::is_ascii_digit)
        && checks::entropy(v) >= 3.5)
        .then_some(r)
}

fn v_card(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    let r = whole(caps);
    let before = r.start.checked_sub(1).map(|i| hay[i]);
    let after = hay.get(r.end).copied();
    // Not part of a decimal, a version or a longer run of digits and separators.
    if matches!(before, Some(b'.' | b',' | b'-' | b'/' | b'+'))
        || matches!(after, Some(b'.' | b',' | b'-' | b'/'))
            && hay.get(r.end + 1).is_some_and(u8::is_ascii_digit)
    {
        return None;
    }
    let v = &hay[r.clone()];
    let digits: Vec<u8> = v.iter().copied().filter(u8::is_ascii_digit).collect();
    let seps: Vec<u8> = v.iter().copied().filter(|b| !b.is_ascii_digit()).collect();
    if !seps.is_empty() {
        if seps.iter().any(|&s| s != seps[0]) {
            return None;
        }
        let groups: Vec<usize> = v.split(|&b| b == seps[0]).map(<[u8]>::len).collect();
        let ok = matches!(groups.as_slice(), [4, 6, 5] | [4, 6, 4])
            || (groups.len() >= 4
                && groups[..groups.len() - 1].iter().all(|&g| g == 4)
                && (1..=4).contains(&groups[groups.len() - 1]));
        if !ok {
            return None;
        }
    }
    (checks::card_issuer_ok(&digits) && checks::luhn(&digits)).then_some(r)
}

fn v_iban(hay: &[u8], caps: &Captures) -> Option<Range<usize>> {
    let r = whole(caps);
    let v = &hay[r.clone()];
    let compact: Vec<u8> = v.iter().copied().filter(|&b| b != b' ').collect();
    // Try the whole match, then without trailing groups (a word after the IBAN).
    let mut n = compact.len();
    while n >= 15 {
        if checks::iban_ok(&compact[..n]) {
            let mut seen = 0;
            let mut end = r.start;
            for (i, &b) in v.iter().enumerate() {
                if b != b' ' {
                    seen += 1;
                }
                if seen == n {
                    end = r.start + i + 1;
                    break;
                }
            }
            if next_is(hay, end, |b| b.is_ascii_alphanumeric()) {
                return None;
            }
            return Some(r.start..end);
        }
        n -= 1;
    }
    None
}

// Names are matched in their usual spellings (lower, Capitalized, UPPER, camelCase), not
// case-insensitively: the raw pass then starts from literals (fast), and the decoded walk uses
// the same alternatives, so it never finds what the raw pass could not.
macro_rules! secret_words {
    () => {
        r"passw(?:or)?d|Passw(?:or)?d|PASSW(?:OR)?D|passphrase|Passphrase|PASSPHRASE|pwd|Pwd|PWD|secret|Secret|SECRET|token|Token|TOKEN|api[_-]?key|api[_-]?Key|apiKey|ApiKey|API[_-]?KEY|apikey|APIKEY|access[_-]?key|accessKey|AccessKey|ACCESS[_-]?KEY|private[_-]?key|privateKey|PrivateKey|PRIVATE[_-]?KEY|auth[_-]?key|authKey|AuthKey|AUTH[_-]?KEY|credentials?|Credentials?|CREDENTIALS?"
    };
}

macro_rules! aws_secret_words {
    () => {
        r"aws_secret|AWS_SECRET|awsSecret|AwsSecret|secret_access_key|SECRET_ACCESS_KEY|secretAccessKey|SecretAccessKey"
    };
}

macro_rules! account_key_words {
    () => {
        r"AccountKey|accountKey|account_key|ACCOUNT_KEY|accountkey"
    };
}

macro_rules! db_schemes {
    () => {
        r"postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|oracle|clickhouse|cockroachdb|couchdb|neo4j(?:\+s)?"
    };
}

/// Every detector, in `thoth_policy::DLP_DETECTORS` order.
pub(super) const DEFS: [Def; 15] = [
    Def {
        id: "aws_access_key",
        prefilter: r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",
        pattern: r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        validate: v_plain,
    },
    Def {
        id: "aws_secret_key",
        prefilter: concat!("(?:", aws_secret_words!(), r")|(?:AKIA|ASIA)[A-Z0-9]{16}"),
        pattern: concat!(
            "(?:",
            aws_secret_words!(),
            r#")[A-Za-z0-9_.-]{0,20}["']?\s*(?::=|=>|:|=)\s*["']?([A-Za-z0-9/+]{40})|(?:AKIA|ASIA)[A-Z0-9]{16}(?:\\[nrt]|[\s"',;:|=()\[\]{}]){1,20}([A-Za-z0-9/+]{40})"#
        ),
        validate: v_aws_secret,
    },
    Def {
        id: "gcp_service_account",
        prefilter: r"service_account",
        pattern: r#"\\?"type\\?"\s*:\s*\\?"service_account\\?""#,
        validate: v_gcp,
    },
    Def {
        id: "azure_storage_key",
        prefilter: account_key_words!(),
        pattern: concat!(
            "(?:",
            account_key_words!(),
            r#")["']?\s*[:=]\s*["']?([A-Za-z0-9+/]{86}==)"#
        ),
        validate: v_azure,
    },
    Def {
        id: "github_token",
        prefilter: r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40}",
        pattern: r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,255})",
        validate: v_token,
    },
    Def {
        id: "gitlab_token",
        prefilter: r"gl(?:pat|dt|rt|ptt|oas|cbt|ft|soat)-[A-Za-z0-9_-]{20}",
        pattern: r"\bgl(?:pat|dt|rt|ptt|oas|cbt|ft|soat)-[A-Za-z0-9_-]{20,64}(?:\.[A-Za-z0-9_-]{1,64}){0,3}",
        validate: v_token,
    },
    Def {
        id: "slack_token",
        prefilter: r"xox[abposre]-|xapp-|hooks\.slack\.com",
        pattern: r"\bxox[abposre]-[0-9]{1,16}-[A-Za-z0-9-]{8,250}|\bxapp-[0-9]-[A-Za-z0-9-]{10,250}|https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/]{20,200}",
        validate: v_token,
    },
    Def {
        id: "stripe_key",
        prefilter: r"[rs]k_(?:live|test)_[A-Za-z0-9]{16}",
        pattern: r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{20,247}",
        validate: v_token,
    },
    Def {
        id: "private_key",
        prefilter: r"-----BEGIN[ A-Z0-9]{0,30}PRIVATE KEY",
        pattern: r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----",
        validate: v_private_key,
    },
    Def {
        id: "jwt",
        prefilter: r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.",
        pattern: r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{16,}",
        validate: v_jwt,
    },
    Def {
        id: "connection_string",
        prefilter: r"(?:postgres|mysql|mariadb|mongodb|redis|amqp|mssql|sqlserver|oracle|clickhouse|cockroachdb|couchdb|neo4j)[a-z+]{0,6}:\\?/\\?/",
        pattern: concat!(
            r"\b(?:",
            db_schemes!(),
            r#")://([A-Za-z0-9._~%!$&*+,;=-]{0,128}):([!-~&&[^@/"'\\]]{1,128})@[A-Za-z0-9.\[-]"#
        ),
        validate: v_connection,
    },
    Def {
        id: GENERIC,
        prefilter: concat!(
            "(?:",
            secret_words!(),
            r#")[A-Za-z0-9_.-]{0,30}(?:\\?["'])?\s*[:=]"#
        ),
        pattern: concat!(
            "(?:",
            secret_words!(),
            r#")[A-Za-z0-9_-]{0,30}["']?\s*(?::=|=>|:|=)\s*["'`]?([A-Za-z0-9+/=_~!@#$%^&*.?-]{12,256})"#
        ),
        validate: v_generic,
    },
    Def {
        id: "openai_key",
        prefilter: r"sk-(?:proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_-]{20}",
        pattern: r"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,300}|ant-(?:api|admin|sid)[0-9]{2}-[A-Za-z0-9_-]{40,300}|[A-Za-z0-9]{32,64})",
        validate: v_openai,
    },
    Def {
        id: "card_number",
        prefilter: r"[0-9](?:[ -]?[0-9]){12,18}",
        pattern: r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        validate: v_card,
    },
    Def {
        id: "iban",
        prefilter: r"[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}",
        pattern: r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?",
        validate: v_iban,
    },
];

/// The key regex of `generic_secret` for object members (`{"db_password": "…"}`): the whole
/// key must be a name that says it holds a secret.
pub(super) const GENERIC_KEY: &str = concat!(
    r"^[A-Za-z0-9_.-]{0,30}(?:",
    secret_words!(),
    r")[A-Za-z0-9_-]{0,30}$"
);

/// The key of an object member holding an AWS secret access key.
pub(super) const AWS_SECRET_KEY: &str = concat!(
    "^(?:",
    aws_secret_words!(),
    ")(?:_access_key|_ACCESS_KEY|AccessKey|_key|_KEY|Key)?$"
);
