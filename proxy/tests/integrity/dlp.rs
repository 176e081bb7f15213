//! DLP on arguments and results: what the server and the client get, and what the events hold
//! (never the secret).

use serde_json::{Value, json};

use super::{Session, of_type, session, text};

/// A 40-character AWS secret access key shape (mixed case, digits, not hex), made up.
fn aws_secret() -> String {
    let s = "Zq8Xv2Lm4Np7Rs1Tv3Wy5Ka6Bc8De0Fg2Hi4Jk9P".to_owned();
    assert_eq!(s.len(), 40);
    s
}

/// A PEM private key block with a pseudo-random body, and the body's first line.
fn private_key() -> (String, String) {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut line = || -> String {
        (0..64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                B64[(x % 64) as usize] as char
            })
            .collect()
    };
    let first = line();
    let pem = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{first}\n{}\n{}\n-----END RSA PRIVATE KEY-----",
        line(),
        line()
    );
    (pem, first)
}

fn dlp_policy(arguments: &str, results: &str) -> String {
    format!(
        "servers:\n  - name: rec\n    enforcement: block\n    approved_scope: [\"*\"]\n    dlp:\n      arguments: {arguments}\n      \
         results: {results}\n"
    )
}

fn result_with(s: &Session, id: u64, body: &str) {
    s.server_says(json!({"jsonrpc": "2.0", "id": id,
        "result": {"content": [{"type": "text", "text": body}], "isError": false}}));
}

#[test]
fn a_secret_in_the_arguments_under_block_never_reaches_the_server() {
    let s = session(&dlp_policy("block", "warn"));
    let secret = aws_secret();
    let args = json!({"text": format!("aws_secret_access_key = {secret}")});
    assert_eq!(s.call(1, "echo", args), None, "forwarded to the server");
    let denial = text(&s.answer(1).unwrap());
    assert!(denial.contains("aws_secret_key"), "{denial}");
    assert!(denial.contains("arguments.text"), "{denial}");
    assert!(!denial.contains(&secret), "{denial}");
    // Without a secret, calls go through.
    assert!(s.call(2, "echo", json!({"text": "hello"})).is_some());
    let events = s.finish();
    let pre = of_type(&events, "TOOL_CALL_PRE");
    assert_eq!(pre[0]["decision"]["rule"], "dlp.arguments");
    assert_eq!(pre[0]["detail"]["dlp"][0]["detector"], "aws_secret_key");
    assert_eq!(pre[0]["detail"]["dlp"][0]["action"], "block");
    assert_eq!(pre[0]["detail"]["dlp"][0]["location"], "arguments.text");
    for e in &events {
        assert!(
            !e.to_string().contains(&secret),
            "an event holds the secret: {e}"
        );
    }
}

#[test]
fn a_secret_in_the_arguments_under_warn_is_forwarded_but_not_recorded() {
    let s = session(&dlp_policy("warn", "warn"));
    let secret = aws_secret();
    let args = json!({"text": format!("aws_secret_access_key = {secret}")});
    assert!(s.call(1, "echo", args).is_some());
    let events = s.finish();
    let pre = of_type(&events, "TOOL_CALL_PRE");
    assert_eq!(pre[0]["detail"]["dlp"][0]["action"], "warn");
    assert!(
        pre[0]["content"]
            .as_str()
            .unwrap()
            .contains("[REDACTED:aws_secret_key]")
    );
    for e in &events {
        assert!(
            !e.to_string().contains(&secret),
            "an event holds the secret: {e}"
        );
    }
}

#[test]
fn a_private_key_in_a_result_is_redacted_under_redact_and_withheld_under_block() {
    let (pem, body) = private_key();
    // Redact: the client gets valid JSON-RPC with the key replaced.
    let s = session(&dlp_policy("warn", "redact"));
    assert!(s.call(1, "get_key", json!({})).is_some());
    result_with(&s, 1, &format!("here it is:\n{pem}\n"));
    let got = s.answer(1).unwrap();
    assert_eq!(got["jsonrpc"], "2.0");
    let t = text(&got);
    assert!(t.contains("[REDACTED:private_key]"), "{t}");
    assert!(!t.contains(&body), "{t}");
    assert!(t.starts_with("here it is:"), "{t}");
    let events = s.finish();
    let post = of_type(&events, "TOOL_CALL_POST");
    assert_eq!(post[0]["detail"]["dlp"][0]["detector"], "private_key");
    assert_eq!(post[0]["detail"]["dlp"][0]["action"], "redact");
    assert_eq!(
        post[0]["detail"]["dlp"][0]["digest"]
            .as_str()
            .unwrap()
            .len(),
        32
    );
    for e in &events {
        assert!(
            !e.to_string().contains(&body),
            "an event holds the key: {e}"
        );
    }

    // Block: an isError result under the same id.
    let s = session(&dlp_policy("warn", "block"));
    assert!(s.call(7, "get_key", json!({})).is_some());
    result_with(&s, 7, &pem);
    let got = s.answer(7).unwrap();
    assert_eq!(got["result"]["isError"], true);
    let t = text(&got);
    assert!(t.contains("private_key") && !t.contains(&body), "{t}");
    let events = s.finish();
    let post = of_type(&events, "TOOL_CALL_POST");
    assert_eq!(post[0]["decision"]["rule"], "dlp.results");
    assert_eq!(post[0]["isError"], true);

    // An error response is scanned too.
    let s = session(&dlp_policy("warn", "redact"));
    assert!(s.call(3, "get_key", json!({})).is_some());
    s.server_says(json!({"jsonrpc": "2.0", "id": 3,
        "error": {"code": -32000, "message": format!("failed near {pem}")}}));
    let got = s.answer(3).unwrap();
    let msg = got["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("[REDACTED:private_key]") && !msg.contains(&body),
        "{msg}"
    );
    s.finish();
}

#[test]
fn allow_scans_nothing_and_results_without_secrets_pass_byte_for_byte() {
    let (pem, _) = private_key();
    let s = session(&dlp_policy("allow", "allow"));
    assert!(s.call(1, "get_key", json!({})).is_some());
    result_with(&s, 1, &pem);
    assert_eq!(text(&s.answer(1).unwrap()), pem);
    let events = s.finish();
    assert!(
        of_type(&events, "TOOL_CALL_POST")[0]
            .get("detail")
            .is_none()
    );
    let s = session(&dlp_policy("block", "block"));
    assert!(s.call(1, "echo", json!({"text": "hi"})).is_some());
    let line = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#;
    s.relay.from_server(line.as_bytes().to_vec());
    let raw = String::from_utf8(s.out.0.lock().unwrap().clone()).unwrap();
    assert!(raw.contains(line), "{raw}");
    let _: Value = serde_json::from_str(raw.lines().last().unwrap()).unwrap();
    s.finish();
}
