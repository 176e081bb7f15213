//! Arguments and results come from the model and from a possibly malicious MCP server: the DLP
//! scanner must not panic on any bytes, its raw pass must agree with its decoded walk, and a
//! redacted value must stay valid JSON with nothing left to find.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use thoth_policy::{DLP_DETECTORS, Dlp, DlpArguments, DlpResults};
use thoth_proxy::dlp::{Salt, Scanner};

fn scanner() -> &'static Scanner {
    static S: OnceLock<Scanner> = OnceLock::new();
    S.get_or_init(|| {
        Scanner::new(&Dlp {
            arguments: DlpArguments::Block,
            results: DlpResults::Redact,
            detectors: DLP_DETECTORS.map(str::to_owned).to_vec(),
            allow_patterns: Vec::new(),
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let s = scanner();
    let salt = Salt::from_bytes([1; 32]);
    let may = s.may_match(data);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let found = s.find(&value, "result", &salt);
    // The raw pass may say yes for nothing, never no for something.
    assert!(may || found.is_empty(), "may_match missed {found:?}");
    let mut redacted = value.clone();
    let findings = s.redact(&mut redacted, "result", &salt);
    assert_eq!(findings, found);
    let text = serde_json::to_string(&redacted).unwrap();
    let again: serde_json::Value = serde_json::from_str(&text).unwrap();
    let left = s.find(&again, "result", &salt);
    assert!(left.is_empty(), "left after redaction: {left:?}");
    if found.is_empty() {
        assert_eq!(redacted, value);
    }
});
