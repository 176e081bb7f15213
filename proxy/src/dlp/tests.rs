//! Scanner-level tests: the id list, `may_match`, escapes, locations, redaction, caps, allow
//! patterns. Token-shaped strings are built at run time (see `fake`).

use serde_json::{Value, json};
use thoth_policy::{DEFAULT_DLP_DETECTORS, DLP_DETECTORS, Dlp, DlpArguments, DlpResults, Pattern};

use super::{MAX_FINDINGS, Salt, Scanner};

/// `n` pseudo-random characters of `[A-Za-z0-9]` from `seed` (fixed, so tests repeat).
pub(super) fn fake(n: usize, seed: u64) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHA[(x % ALPHA.len() as u64) as usize] as char
        })
        .collect()
}

pub(super) fn scanner_with(detectors: &[&str], allow: &[&str]) -> Scanner {
    Scanner::new(&Dlp {
        arguments: DlpArguments::Warn,
        results: DlpResults::Redact,
        detectors: detectors.iter().map(|s| (*s).to_owned()).collect(),
        allow_patterns: allow.iter().map(|p| Pattern::new(p).unwrap()).collect(),
    })
}

pub(super) fn all() -> Scanner {
    scanner_with(&DLP_DETECTORS, &[])
}

pub(super) fn salt() -> Salt {
    Salt::from_bytes([7; 32])
}

pub(super) const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub(super) const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn github() -> String {
    format!("ghp_{}", fake(36, 1))
}

#[test]
fn detector_ids_are_the_policys() {
    assert_eq!(Scanner::all_detectors(), DLP_DETECTORS.to_vec());
    assert_eq!(all().detectors(), DLP_DETECTORS.to_vec());
    let defaults = scanner_with(&DEFAULT_DLP_DETECTORS, &[]);
    assert_eq!(defaults.detectors(), DEFAULT_DLP_DETECTORS.to_vec());
    assert!(scanner_with(&[], &[]).detectors().is_empty());
}

#[test]
fn scanner_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Scanner>();
}

#[test]
fn may_match_says_no_to_plain_text_and_yes_to_a_secret() {
    let s = all();
    let plain =
        json!({"content": [{"type": "text", "text": "hello world, nothing here ".repeat(50)}]});
    assert!(!s.may_match(plain.to_string().as_bytes()));
    let secret = json!({"content": [{"type": "text", "text": format!("key {AWS_ID} end")}]});
    assert!(s.may_match(secret.to_string().as_bytes()));
    // Only enabled detectors count.
    let only_jwt = scanner_with(&["jwt"], &[]);
    assert!(!only_jwt.may_match(secret.to_string().as_bytes()));
    // No detector: never.
    assert!(!scanner_with(&[], &[]).may_match(secret.to_string().as_bytes()));
}

#[test]
fn escaped_secrets_are_not_hidden_from_the_raw_pass() {
    let s = all();
    // `\u0041KIA…`: the raw text does not hold `AKIA`, the decoded string does.
    let raw = format!(r#"{{"text": "id \u0041{}"}}"#, &AWS_ID[1..]);
    assert!(s.may_match(raw.as_bytes()));
    let v: Value = serde_json::from_str(&raw).unwrap();
    let f = s.find(&v, "result", &salt());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].detector, "aws_access_key");
    // `\/` in a webhook URL.
    let hook = format!(
        r#"{{"text": "https:\/\/hooks.slack.com\/services\/T0000000\/B0000000\/{}"}}"#,
        fake(24, 3)
    );
    assert!(s.may_match(hook.as_bytes()));
    let v: Value = serde_json::from_str(&hook).unwrap();
    assert_eq!(s.find(&v, "result", &salt())[0].detector, "slack_token");
    // Go's HTML escapes and non-ASCII escapes alone do not force a scan.
    assert!(!s.may_match(br#"{"text": "a \u003cb\u003e \u0026 caf\u00e9 \u4e2d"}"#));
}

#[test]
fn locations_are_paths() {
    let s = all();
    let tok = github();
    let v = json!({
        "path": format!("x {tok}"),
        "files": [{}, {}, {"content": tok}],
        "a.b": tok,
        "content": [{"type": "text", "text": tok}],
    });
    let locs: Vec<String> = s
        .find(&v, "arguments", &salt())
        .into_iter()
        .map(|f| f.location)
        .collect();
    assert_eq!(
        locs,
        [
            "arguments.path",
            "arguments.files[2].content",
            r#"arguments["a.b"]"#,
            "arguments.content[0].text"
        ]
    );
}

#[test]
fn a_secret_in_a_key_is_redacted_in_the_location_and_the_value() {
    let s = all();
    let tok = github();
    let mut v = json!({ tok.clone(): 1, "other": 2 });
    let f = s.redact(&mut v, "result.structuredContent", &salt());
    assert_eq!(f.len(), 1);
    assert!(!f[0].location.contains(&tok), "{}", f[0].location);
    let text = v.to_string();
    assert!(!text.contains(&tok), "{text}");
    assert!(text.contains("[REDACTED:github_token]"));
    assert_eq!(v["other"], 2);
}

#[test]
fn digests_are_salted_and_never_the_text() {
    let s = all();
    let v = json!({"t": AWS_ID});
    let a = s.find(&v, "r", &salt());
    let b = s.find(&v, "r", &Salt::from_bytes([8; 32]));
    assert_eq!(a[0].digest.len(), 32);
    assert_ne!(a[0].digest, b[0].digest);
    assert_eq!(a[0].digest, salt().digest(AWS_ID));
    assert!(!format!("{a:?}").contains(AWS_ID));
}

#[test]
fn redact_rewrites_only_matches_and_keeps_valid_json() {
    let s = all();
    let text = format!("id={AWS_ID} aws_secret_access_key=\"{AWS_SECRET}\" ok ☃ \"quoted\"");
    let mut v = json!({"content": [{"type": "text", "text": text}, {"type": "text", "text": "untouched ☃"}],
        "structuredContent": {"key": AWS_ID, "n": 5}});
    let before_untouched = v["content"][1].clone();
    let f = s.redact(&mut v, "result", &salt());
    let detectors: Vec<&str> = f.iter().map(|f| f.detector).collect();
    assert_eq!(
        detectors,
        ["aws_access_key", "aws_secret_key", "aws_access_key"],
        "{f:?}"
    );
    assert_eq!(
        v["content"][0]["text"],
        "id=[REDACTED:aws_access_key] aws_secret_access_key=\"[REDACTED:aws_secret_key]\" ok ☃ \"quoted\""
    );
    assert_eq!(v["content"][1], before_untouched);
    assert_eq!(v["structuredContent"]["key"], "[REDACTED:aws_access_key]");
    let reparsed: Value = serde_json::from_str(&v.to_string()).unwrap();
    assert!(s.find(&reparsed, "result", &salt()).is_empty());
}

#[test]
fn overlapping_matches_are_merged() {
    let s = all();
    let key = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        fake(64, 9)
    );
    let doc = json!({"type": "service_account", "project_id": "p", "private_key": key}).to_string();
    let mut v = json!({ "text": format!("file: {doc} end") });
    let f = s.redact(&mut v, "result", &salt());
    let mut ids: Vec<&str> = f.iter().map(|f| f.detector).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["gcp_service_account", "private_key"]);
    let out = v["text"].as_str().unwrap();
    assert_eq!(out.matches("[REDACTED:").count(), 1, "{out}");
    assert!(out.starts_with("file: {") && out.ends_with(" end"));
    assert!(!out.contains("BEGIN"));
}

#[test]
fn findings_are_capped_but_every_match_is_redacted() {
    let s = all();
    let text: Vec<String> = (0..100).map(|_| AWS_ID.to_owned()).collect();
    let mut v = json!({"text": text.join(" ")});
    let f = s.redact(&mut v, "result", &salt());
    assert_eq!(f.len(), MAX_FINDINGS);
    assert!(!v.to_string().contains(AWS_ID));
    assert_eq!(
        v["text"]
            .as_str()
            .unwrap()
            .matches("[REDACTED:aws_access_key]")
            .count(),
        100
    );
}

#[test]
fn allow_patterns_drop_matches_they_fully_match() {
    let s = scanner_with(&DEFAULT_DLP_DETECTORS, &["AKIA[A-Z0-9]{9}EXAMPLE"]);
    let v = json!({"a": AWS_ID, "b": "AKIAI44QH8DHBEXAMPLE"});
    let f = s.find(&v, "r", &salt());
    assert!(f.is_empty(), "{f:?}");
    // A pattern matching only part of the text does not drop it.
    let s = scanner_with(&DEFAULT_DLP_DETECTORS, &["AKIA"]);
    assert_eq!(s.find(&json!({"a": AWS_ID}), "r", &salt()).len(), 1);
}

#[test]
fn disabled_detectors_find_nothing() {
    let s = scanner_with(&["jwt"], &[]);
    let v = json!({"a": AWS_ID, "b": github(), "password": "Xk9mP2vL7qR4wZ8t"});
    assert!(s.find(&v, "r", &salt()).is_empty());
    let mut w = v.clone();
    assert!(s.redact(&mut w, "r", &salt()).is_empty());
    assert_eq!(v, w);
}

#[test]
fn members_whose_key_names_a_secret() {
    let s = all();
    let mut v = json!({"db_password": "Xk9mP2vL7qR4wZ8t", "SecretAccessKey": AWS_SECRET,
        "nextPageToken": "CAESBggBEAEYAQ12345abc", "password": "changeme", "token": 42,
        "api_key": format!("sk-proj-{}", fake(48, 4))});
    let f = s.redact(&mut v, "arguments", &salt());
    let got: Vec<(&str, &str)> = f
        .iter()
        .map(|f| (f.detector, f.location.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("generic_secret", "arguments.db_password"),
            ("aws_secret_key", "arguments.SecretAccessKey"),
            ("openai_key", "arguments.api_key"),
        ]
    );
    assert_eq!(v["db_password"], "[REDACTED:generic_secret]");
    assert_eq!(v["nextPageToken"], "CAESBggBEAEYAQ12345abc");
    assert_eq!(v["password"], "changeme");
}

#[test]
fn service_account_objects() {
    let s = all();
    let key = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        fake(64, 5)
    );
    let mut v = json!({"structuredContent": {"type": "service_account", "private_key": key,
        "client_email": "a@b.iam.gserviceaccount.com"}});
    let f = s.redact(&mut v, "result", &salt());
    assert!(f.iter().any(|f| f.detector == "gcp_service_account"
        && f.location == "result.structuredContent.private_key"));
    assert_eq!(
        v["structuredContent"]["private_key"],
        "[REDACTED:gcp_service_account]"
    );
    // Once redacted, nothing is left to find (the value no longer holds a key).
    assert!(s.find(&v, "result", &salt()).is_empty());
    let only_gcp = scanner_with(&["gcp_service_account"], &[]);
    let v = json!({"type": "user", "private_key": key});
    assert!(only_gcp.find(&v, "r", &salt()).is_empty());
}

#[test]
fn deep_and_odd_values_do_not_panic() {
    let s = all();
    let mut v = json!("x");
    for _ in 0..400 {
        v = json!([v]);
    }
    assert!(s.find(&v, "r", &salt()).is_empty());
    let mut odd = json!({"": "", "\u{0}": [null, true, 1.5, {"é": "AKIA☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃"}]});
    assert!(s.redact(&mut odd, "", &salt()).is_empty());
    assert!(!s.may_match(&[0xff, 0xfe, b'\\', b'u']));
}

/// A small deterministic fuzz (the `dlp` cargo-fuzz target checks the same at scale): strings
/// glued from secrets, near misses and separators; the raw pass never misses what the walk
/// finds, and redaction leaves nothing to find.
#[test]
fn glued_pieces_keep_the_invariants() {
    let s = all();
    let gh = github();
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV";
    let pieces: Vec<String> = [
        AWS_ID,
        AWS_SECRET,
        &gh,
        jwt,
        "postgres://u:",
        "S3cretPw9x",
        "@db",
        "password=",
        "token: ",
        "\"api_key\": \"",
        "Xk9mP2vL7qR4wZ8t",
        "AKIA",
        "eyJ",
        "sk-",
        "-----BEGIN PRIVATE KEY-----\n",
        "4111 1111 1111 1111",
        "GB82 WEST 1234 5698 7654 32",
        " ",
        "\n",
        "\"",
        ":",
        "=",
        "@",
        "[",
        "]",
        "<",
        ">",
        "$",
        "{",
        "}",
        "\\",
        "é",
        "/",
        "-",
        "_",
        "\\u0041",
        "${X}",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let salt = salt();
    for _ in 0..std::env::var("DLP_GLUE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
    {
        let mut text = String::new();
        for _ in 0..1 + next(8) {
            let p = next(pieces.len() + 1);
            if p == pieces.len() {
                let (n, seed) = (1 + next(50), next(1 << 30) as u64);
                text.push_str(&fake(n, seed));
            } else {
                text.push_str(&pieces[p]);
            }
        }
        let mut v = json!({"content": [{"type": "text", "text": text}], "k": {text.clone(): text}});
        let found = s.find(&v, "result", &salt);
        assert!(
            found.is_empty() || s.may_match(v.to_string().as_bytes()),
            "{text:?}"
        );
        let redacted = s.redact(&mut v, "result", &salt);
        assert_eq!(redacted, found, "{text:?}");
        let again: Value = serde_json::from_str(&v.to_string()).unwrap();
        let left = s.find(&again, "result", &salt);
        assert!(left.is_empty(), "{text:?} -> {again} left {left:?}");
    }
}
