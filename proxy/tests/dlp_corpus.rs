//! The DLP corpora: ordinary text that must yield no finding with the default detectors (the
//! false-positive rate is printed and must be 0), and secrets of every detector, in several
//! forms, that must all be found and redacted.
//!
//! `cargo test -p thoth-proxy --test dlp_corpus -- --nocapture` shows the figures.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};
use thoth_policy::{DEFAULT_DLP_DETECTORS, DLP_DETECTORS, Dlp, DlpArguments, DlpResults};
use thoth_proxy::dlp::{Salt, Scanner};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/dlp")
}

fn scanner(detectors: &[&str]) -> Scanner {
    Scanner::new(&Dlp {
        arguments: DlpArguments::Warn,
        results: DlpResults::Redact,
        detectors: detectors.iter().map(|s| (*s).to_owned()).collect(),
        allow_patterns: Vec::new(),
    })
}

/// Fixed-seed pseudo-random bytes (xorshift64).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn rand_alnum(n: usize, seed: u64) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    bytes(n, seed)
        .into_iter()
        .map(|b| ALPHA[b as usize % ALPHA.len()] as char)
        .collect()
}

#[derive(Default)]
struct Tally {
    strings: usize,
    prefilter_yes: usize,
    hits: Vec<String>,
}

impl Tally {
    /// Scans `text` as a tool result's text content, the way the relay does: the raw pass on
    /// the JSON text, then the decoded walk when it says yes.
    fn text(&mut self, s: &Scanner, name: &str, text: &str) {
        let v = json!({"content": [{"type": "text", "text": text}], "isError": false});
        self.value(s, name, &v);
    }

    fn value(&mut self, s: &Scanner, name: &str, v: &Value) {
        self.strings += 1;
        if !s.may_match(v.to_string().as_bytes()) {
            return;
        }
        self.prefilter_yes += 1;
        let salt = Salt::random();
        for f in s.find(v, "result", &salt) {
            let excerpt: String = text_at(v).chars().take(100).collect();
            self.hits.push(format!(
                "{name}: {} at {} in {excerpt:?}",
                f.detector, f.location
            ));
        }
    }
}

fn text_at(v: &Value) -> String {
    v.pointer("/content/0/text")
        .and_then(Value::as_str)
        .map_or_else(|| v.to_string(), str::to_owned)
}

#[test]
fn false_positive_corpus_yields_nothing() {
    let s = scanner(&DEFAULT_DLP_DETECTORS);
    let mut t = Tally::default();
    let dir = corpus().join("fp");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut text_files = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let raw = std::fs::read(path).unwrap();
        let Ok(text) = String::from_utf8(raw.clone()) else {
            // Binary (the PNG): scanned as base64, the way an image result carries it.
            let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
            t.value(
                &s,
                &name,
                &json!({"content": [{"type": "image", "data": b64, "mimeType": "image/png"}]}),
            );
            t.text(&s, &name, &format!("data:image/png;base64,{b64}"));
            continue;
        };
        text_files += 1;
        t.text(&s, &name, &text);
        for (i, line) in text.lines().enumerate() {
            t.text(&s, &format!("{name}:{}", i + 1), line);
        }
        if name.ends_with(".json") {
            let v: Value = serde_json::from_str(&text).unwrap();
            t.value(&s, &name, &json!({"structuredContent": v}));
        }
    }
    assert!(text_files >= 10, "the corpus is missing files");
    // Base64 of random bytes (what images and compressed payloads look like), whole and
    // wrapped at 76 columns; a JPEG header in front for good measure.
    for seed in 1..=8u64 {
        let mut data = bytes(4096, seed);
        if seed % 2 == 0 {
            data[..4].copy_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
        }
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let b64 = engine.encode(&data);
            t.value(
                &s,
                "random-base64",
                &json!({"content": [{"type": "image", "data": b64, "mimeType": "image/jpeg"}]}),
            );
            let wrapped: Vec<&str> = b64
                .as_bytes()
                .chunks(76)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            t.text(&s, "random-base64-wrapped", &wrapped.join("\n"));
        }
        // Hex dumps and random identifiers.
        t.text(&s, "random-hex", &hex_of(&bytes(512, seed + 100)));
        t.text(
            &s,
            "random-id",
            &format!(
                "id: {} ref={}",
                rand_alnum(32, seed),
                rand_alnum(40, seed + 7)
            ),
        );
    }
    let rate = t.hits.len() as f64 / t.strings as f64;
    println!(
        "DLP false positives: {} hits / {} strings scanned = {:.4} (prefilter said yes to {})",
        t.hits.len(),
        t.strings,
        rate,
        t.prefilter_yes
    );
    assert!(t.hits.is_empty(), "false positives:\n{}", t.hits.join("\n"));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Expands `{rand:N}` and `\n` (newline) / `\\` (backslash) of a corpus line.
fn expand(template: &str, seed: u64) -> String {
    let mut out = String::new();
    let mut rest = template;
    let mut n = 0;
    while let Some(at) = rest.find("{rand:") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').unwrap() + at;
        let len: usize = rest[at + 6..end].parse().unwrap();
        n += 1;
        out.push_str(&rand_alnum(len, seed * 31 + n));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    let mut unescaped = String::new();
    let mut chars = out.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                unescaped.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                unescaped.push('\\');
                chars.next();
            }
            _ => unescaped.push(c),
        }
    }
    unescaped
}

#[test]
fn true_positive_corpus_is_all_found() {
    let s = scanner(&DLP_DETECTORS);
    let list = std::fs::read_to_string(corpus().join("tp/secrets.tsv")).unwrap();
    let mut missed = Vec::new();
    let mut per_detector = std::collections::BTreeMap::<&str, usize>::new();
    let mut total = 0;
    for (i, line) in list.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (id, template) = line.split_once('\t').expect("detector<TAB>text");
        let text = expand(template, i as u64 + 1);
        total += 1;
        *per_detector
            .entry(DLP_DETECTORS.iter().find(|d| **d == id).expect(id))
            .or_default() += 1;
        // As a result's text and as an argument value.
        for (root, mut v) in [
            (
                "result",
                json!({"content": [{"type": "text", "text": text}]}),
            ),
            ("arguments", json!({"input": text})),
        ] {
            let salt = Salt::random();
            let raw = v.to_string();
            let found = s.may_match(raw.as_bytes())
                && s.find(&v, root, &salt).iter().any(|f| f.detector == id);
            if !found {
                missed.push(format!(
                    "line {}: {id} not found in {root}: {text:?}",
                    i + 1
                ));
                continue;
            }
            let findings = s.redact(&mut v, root, &salt);
            assert!(findings.iter().any(|f| f.detector == id));
            let out = v.to_string();
            assert!(out.contains(&format!("[REDACTED:{id}]")), "{out}");
            let again: Value = serde_json::from_str(&out).unwrap();
            let left = s.find(&again, root, &salt);
            assert!(
                left.is_empty(),
                "line {}: left after redaction: {left:?} in {out}",
                i + 1
            );
        }
    }
    println!(
        "DLP true positives: {} of {} scans found ({total} lines, each as a result and as an argument)",
        2 * total - missed.len(),
        2 * total
    );
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
    for id in DLP_DETECTORS {
        assert!(
            per_detector.get(id).copied().unwrap_or(0) >= 2,
            "{id}: fewer than 2 forms in the corpus"
        );
    }
}
