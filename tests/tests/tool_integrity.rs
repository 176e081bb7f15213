//! Tool integrity through the real binary (issue 17), standalone: the official Python MCP
//! client, `thoth run --policy FILE --events FILE`, and a Python SDK server that changes
//! `read_file`'s description mid-session (`notifications/tools/list_changed`), carries a
//! poisoned tool, and returns secrets. Each policy setting is checked by what the client sees
//! (hidden tool, denied call, redacted text, `isError`), what the server received, and the
//! events (never holding a secret).

use serde_json::{Value, json};
use thoth_e2e::integrity::*;
use thoth_e2e::*;
use thoth_proto::pins::{Change, changes, pin_id, server_key};

fn read(path: &str) -> Value {
    json!({"op": "call", "tool": "read_file", "args": {"path": path}})
}

fn op(tool: &str) -> Value {
    json!({"op": "call", "tool": tool, "args": {}})
}

fn echo(text: &str) -> Value {
    json!({"op": "call", "tool": "echo", "args": {"text": text}})
}

/// Runs the Python client through a standalone proxy with `policy` on the server `flags`.
fn session(f: &Files, policy: &std::path::Path, flags: &[&str], ops: Value) -> ClientRun {
    mcp_client(
        ClientOpts::default(),
        ops,
        &strs(&f.proxy_args(policy)),
        &strs(&f.server(flags)),
    )
}

/// One session: list, read, `poke` (the server rug-pulls `read_file` and sends list_changed),
/// list again, read again.
fn rugpull_mid_session(f: &Files, policy: &std::path::Path) -> ClientRun {
    session(
        f,
        policy,
        &[],
        json!([
            {"op": "list_tools"},
            read("/tmp/before"),
            op("poke"),
            {"op": "list_tools"},
            read("/tmp/after"),
        ]),
    )
}

#[test]
fn the_test_server_rug_pulls_read_file_mid_session_and_says_so() {
    // The server itself, without the proxy: what the tests below rely on.
    let f = Files::new();
    let server = f.server(&[]);
    let before = direct_tools(&server);
    assert!(
        !before.iter().any(|t| t.to_string().contains(SMUGGLED)),
        "{before:?}"
    );
    let ro = before.iter().find(|t| t["name"] == "read_file").unwrap();
    assert_eq!(ro["annotations"]["readOnlyHint"], true, "{ro}");
    let mut cmd = std::process::Command::new(&server[0]);
    cmd.args(&server[1..]);
    let mut p = Proxy::spawn(cmd);
    p.handshake(false);
    p.send(&call(1, "poke", json!({})));
    let (r, seen) = p.recv_response(json!(1));
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert!(
        seen.iter()
            .any(|m| m["method"] == "notifications/tools/list_changed"),
        "no list_changed before the poke's answer: {seen:?}"
    );
    p.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    let (r, _) = p.recv_response(json!(2));
    let after = r["result"]["tools"].as_array().unwrap().clone();
    let (old, new) = (
        digest_of(&before, "read_file"),
        digest_of(&after, "read_file"),
    );
    assert_eq!(changes(&old, &new), [Change::Description]);
    // poke wrote the variant file: the next process starts rug-pulled.
    assert_eq!(digest_of(&direct_tools(&server), "read_file"), new);
}

#[test]
fn on_tool_change_block_hides_a_tool_changed_mid_session_and_denies_it_naming_the_pin() {
    let f = Files::new();
    let policy = f.policy("  on_tool_change: block\n", "");
    let server = f.server(&[]);
    let old = digest_of(&direct_tools(&server), "read_file");
    let run = rugpull_mid_session(&f, &policy);
    let new = digest_of(&direct_tools(&server), "read_file");
    assert_ne!(old.digest, new.digest);

    let l = lists(&run);
    assert!(names(l[0]).contains(&"read_file".into()), "{run:?}");
    let after = names(l[1]);
    assert!(
        !after.contains(&"read_file".into()),
        "still listed: {run:?}"
    );
    assert!(
        after.contains(&"echo".into()),
        "only the changed tool goes: {run:?}"
    );
    let c = run.calls();
    assert_eq!(c[0]["isError"], false, "{run:?}");
    assert_eq!(c[1]["isError"], false, "poke: {run:?}");
    assert_eq!(c[2]["isError"], true, "the changed read_file ran: {run:?}");
    let text = c[2]["text"].as_str().unwrap_or_default();
    let key = server_key("claude-desktop", SERVER, &server);
    let id = pin_id(&key, "read_file", &new.digest);
    assert!(text.contains("thothctl pins accept"), "{text}");
    assert!(text.contains(&id), "the denial names pin {id}: {text}");
    assert!(
        !text.contains(SMUGGLED),
        "the new description is not echoed: {text}"
    );
    // The server saw only the call made before the change.
    let got = f.server_calls_of("read_file");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["arguments"]["path"], "/tmp/before");

    let ev = wait_events(&f.events, "TOOL_DEFINITION_CHANGED", |ev| {
        !of_type(ev, "TOOL_DEFINITION_CHANGED").is_empty()
    });
    let changed = of_type(&ev, "TOOL_DEFINITION_CHANGED");
    assert_eq!(
        changed.len(),
        1,
        "once per session per tool and digest: {changed:#?}"
    );
    let e = changed[0];
    assert_eq!(e["toolName"], "read_file", "{e}");
    assert_eq!(e["serverName"], SERVER, "{e}");
    assert!(e["sessionId"].is_string(), "{e}");
    assert_eq!(e["detail"]["changes"], json!(["description"]), "{e}");
    assert_eq!(e["detail"]["oldDigest"], old.digest.as_str(), "{e}");
    assert_eq!(e["detail"]["newDigest"], new.digest.as_str(), "{e}");
    assert_eq!(e["detail"]["serverKey"], key.as_str(), "{e}");
    assert_eq!(e["detail"]["onToolChange"], "block", "{e}");
    assert_eq!(e["decision"]["action"], "deny", "{e}");
    assert_eq!(e["decision"]["rule"], "on_tool_change", "{e}");
    // The denied call's own event says which rule stopped it.
    let ev = wait_events(&f.events, "the denied call's events", |ev| {
        of_type(ev, "TOOL_CALL_PRE")
            .iter()
            .filter(|e| e["toolName"] == "read_file")
            .count()
            == 2
    });
    let pre: Vec<&Value> = of_type(&ev, "TOOL_CALL_PRE")
        .into_iter()
        .filter(|e| e["toolName"] == "read_file")
        .collect();
    assert_eq!(pre[1]["decision"]["action"], "deny", "{}", pre[1]);
    assert_eq!(pre[1]["decision"]["rule"], "on_tool_change", "{}", pre[1]);
    let (code, out, err) = thoth_cmd(&["events", "verify", f.events.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn list_changed_is_forwarded_and_the_proxy_re_checks_the_list_on_its_own() {
    // Raw JSON-RPC through `thoth run`: the client never lists again after the change, yet the
    // proxy's own tools/list catches it, and that answer is not sent to the client.
    let f = Files::new();
    let policy = f.policy("  on_tool_change: block\n", "");
    let mut p = Proxy::start(&strs(&f.proxy_args(&policy)), &strs(&f.server(&[])));
    p.handshake(false);
    p.send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    let (r, mut seen) = p.recv_response(json!(1));
    assert!(r.to_string().contains("\"read_file\""), "{r}");
    p.send(&call(2, "poke", json!({})));
    let (r, before) = p.recv_response(json!(2));
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert!(
        before
            .iter()
            .any(|m| m["method"] == "notifications/tools/list_changed"),
        "list_changed not forwarded: {before:?}"
    );
    seen.extend(before);
    wait_events(&f.events, "the re-check's TOOL_DEFINITION_CHANGED", |ev| {
        of_type(ev, "TOOL_DEFINITION_CHANGED")
            .iter()
            .any(|e| e["toolName"] == "read_file")
    });
    p.send(&call(3, "read_file", json!({"path": "/x"})));
    let (r, before) = p.recv_response(json!(3));
    assert_eq!(r["result"]["isError"], true, "{r}");
    seen.extend(before);
    assert!(
        seen.iter().all(|m| m.get("id").is_none()),
        "the client got a response it did not ask for: {seen:?}"
    );
    assert!(f.server_calls_of("read_file").is_empty());
}

#[test]
fn on_tool_change_warn_keeps_the_changed_tool_usable_and_raises_the_event() {
    let f = Files::new();
    let policy = f.policy("  on_tool_change: warn\n", "");
    let old = digest_of(&direct_tools(&f.server(&[])), "read_file");
    let run = rugpull_mid_session(&f, &policy);
    let l = lists(&run);
    assert!(names(l[1]).contains(&"read_file".into()), "{run:?}");
    let desc = l[1]["descriptions"]["read_file"]
        .as_str()
        .unwrap_or_default();
    assert!(
        desc.contains(SMUGGLED),
        "warn shows the new definition: {desc}"
    );
    let c = run.calls();
    assert_eq!(c[2]["isError"], false, "{run:?}");
    assert_eq!(f.server_calls_of("read_file").len(), 2);
    let ev = wait_events(&f.events, "TOOL_DEFINITION_CHANGED", |ev| {
        !of_type(ev, "TOOL_DEFINITION_CHANGED").is_empty()
    });
    let e = of_type(&ev, "TOOL_DEFINITION_CHANGED")[0];
    assert_eq!(e["toolName"], "read_file", "{e}");
    assert_eq!(e["decision"]["action"], "warn", "{e}");
    assert_eq!(e["detail"]["changes"], json!(["description"]), "{e}");
    assert_eq!(e["detail"]["oldDigest"], old.digest.as_str(), "{e}");
    assert!(is_hex(&e["detail"]["newDigest"], 64), "{e}");
    assert_ne!(e["detail"]["newDigest"], e["detail"]["oldDigest"], "{e}");
}

#[test]
fn a_policy_pin_holds_back_a_definition_that_differs_from_it_from_the_first_list() {
    let f = Files::new();
    let server = f.server(&[]);
    let benign = digest_of(&direct_tools(&server), "read_file");
    let policy = f.policy(
        "  on_tool_change: block\n",
        &format!("    pins:\n      read_file: \"sha256:{}\"\n", benign.digest),
    );
    // The pinned definition: listed and callable, no change event.
    let run = session(
        &f,
        &policy,
        &[],
        json!([{"op": "list_tools"}, read("/tmp/a")]),
    );
    assert!(run.tools().contains(&"read_file".into()), "{run:?}");
    assert_eq!(run.calls()[0]["isError"], false, "{run:?}");
    // A new process with another description: held back at once (no session pinned it).
    f.rugpull();
    let run = session(
        &f,
        &policy,
        &[],
        json!([{"op": "list_tools"}, read("/tmp/b")]),
    );
    assert!(!run.tools().contains(&"read_file".into()), "{run:?}");
    assert_eq!(run.calls()[0]["isError"], true, "{run:?}");
    assert_eq!(f.server_calls_of("read_file").len(), 1);
    let ev = wait_events(&f.events, "TOOL_DEFINITION_CHANGED", |ev| {
        !of_type(ev, "TOOL_DEFINITION_CHANGED").is_empty()
    });
    let changed = of_type(&ev, "TOOL_DEFINITION_CHANGED");
    assert_eq!(changed.len(), 1, "{changed:#?}");
    let e = changed[0];
    assert_eq!(e["detail"]["oldDigest"], benign.digest.as_str(), "{e}");
    assert_eq!(e["detail"]["pinSource"], "policy", "{e}");
    let new = digest_of(&direct_tools(&server), "read_file");
    assert_eq!(e["detail"]["newDigest"], new.digest.as_str(), "{e}");
    // A policy pin is a whole-definition digest: what changed cannot be told part by part.
    assert!(e["detail"]["changes"].is_array(), "{e}");
}

#[test]
fn annotations_count_only_for_a_pinned_definition() {
    // `destructive: deny`: delete_file (destructiveHint) is denied only while its pinned,
    // accepted definition says so; unpinned, its claim changes nothing.
    let f = Files::new();
    let server = f.server(&[]);
    let del = digest_of(&direct_tools(&server), "delete_file");
    let rules = "    annotations:\n      destructive: deny\n";
    let unpinned = f.policy("", rules);
    let run = session(
        &f,
        &unpinned,
        &[],
        json!([{"op": "list_tools"}, op("delete_file")]),
    );
    assert_eq!(
        run.calls()[0]["isError"],
        false,
        "unpinned claims change nothing: {run:?}"
    );
    let pinned = f.policy(
        "",
        &format!("{rules}    pins:\n      delete_file: \"{}\"\n", del.digest),
    );
    let run = session(
        &f,
        &pinned,
        &[],
        json!([{"op": "list_tools"}, op("delete_file")]),
    );
    let c = run.calls();
    assert_eq!(c[0]["isError"], true, "{run:?}");
    assert_eq!(
        c[0]["meta"]["thoth/decision"]["rule"], "servers[0].annotations.destructive",
        "{run:?}"
    );
    assert_eq!(f.server_calls_of("delete_file").len(), 1);
}

#[test]
fn on_suspicious_tool_block_hides_and_denies_a_poisoned_tool_and_warn_flags_it() {
    let f = Files::new();
    let server = f.server(&["--poisoned"]);
    let poisoned = digest_of(&direct_tools(&server), "fetch_weather");
    let policy = f.policy("  on_suspicious_tool: block\n", "");
    let ops = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "fetch_weather", "args": {"city": "Paris"}},
        read("/tmp/a"),
    ]);
    let run = session(&f, &policy, &["--poisoned"], ops.clone());
    let tools = run.tools();
    assert!(!tools.contains(&"fetch_weather".into()), "{run:?}");
    assert!(tools.contains(&"read_file".into()), "{run:?}");
    let c = run.calls();
    assert_eq!(c[0]["isError"], true, "{run:?}");
    assert_eq!(c[1]["isError"], false, "benign tools work: {run:?}");
    assert!(f.server_calls_of("fetch_weather").is_empty());
    let ev = wait_events(&f.events, "TOOL_DEFINITION_SUSPICIOUS", |ev| {
        !of_type(ev, "TOOL_DEFINITION_SUSPICIOUS").is_empty()
    });
    let sus = of_type(&ev, "TOOL_DEFINITION_SUSPICIOUS");
    assert!(
        sus.iter().all(|e| e["toolName"] == "fetch_weather"),
        "only the poisoned tool is flagged: {sus:#?}"
    );
    let e = sus[0];
    assert_eq!(e["decision"]["action"], "deny", "{e}");
    assert_eq!(e["decision"]["rule"], "on_suspicious_tool", "{e}");
    assert_eq!(e["detail"]["digest"], poisoned.digest.as_str(), "{e}");
    assert_eq!(e["detail"]["onSuspiciousTool"], "block", "{e}");
    let reasons = e["detail"]["reasons"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!reasons.is_empty(), "{e}");
    for r in &reasons {
        assert!(r["kind"].as_str().is_some_and(|k| !k.is_empty()), "{r}");
        assert!(r["excerpt"].is_string(), "{r}");
    }
    let pre = of_type(&ev, "TOOL_CALL_PRE");
    let d = pre
        .iter()
        .find(|e| e["toolName"] == "fetch_weather")
        .expect("the denied call's TOOL_CALL_PRE");
    assert_eq!(d["decision"]["rule"], "on_suspicious_tool", "{d}");
    // warn (the default): listed, callable, flagged.
    let g = Files::new();
    let policy = g.policy("", "");
    let run = session(&g, &policy, &["--poisoned"], ops);
    assert!(run.tools().contains(&"fetch_weather".into()), "{run:?}");
    assert_eq!(run.calls()[0]["isError"], false, "{run:?}");
    let ev = wait_events(&g.events, "TOOL_DEFINITION_SUSPICIOUS", |ev| {
        !of_type(ev, "TOOL_DEFINITION_SUSPICIOUS").is_empty()
    });
    let e = of_type(&ev, "TOOL_DEFINITION_SUSPICIOUS")[0];
    assert_eq!(e["decision"]["action"], "warn", "{e}");
}

/// The PEM body lines the server returned from `get_key` (each long and random).
fn pem_lines(f: &Files) -> Vec<String> {
    let key = f.server_calls_of("get_key");
    let text = key[0]["text"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains("PRIVATE KEY"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[test]
fn dlp_results_redact_rewrites_only_the_secrets_and_no_event_holds_them() {
    let f = Files::new();
    let policy = f.policy("  dlp:\n    results: redact\n", "");
    let run = session(
        &f,
        &policy,
        &["--secrets"],
        json!([read("/home/ann/.aws/credentials"), op("get_key")]),
    );
    // The server did return them.
    let sent = f.server_calls_of("read_file")[0]["text"].to_string();
    assert!(
        sent.contains(AWS_SECRET_KEY) && sent.contains(AWS_ACCESS_KEY),
        "{sent}"
    );
    let body = pem_lines(&f);
    assert!(!body.is_empty());
    let c = run.calls();
    assert_eq!(c[0]["isError"], false, "{run:?}");
    let text = c[0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("[REDACTED:aws_secret_key]"), "{text}");
    assert!(text.contains("[REDACTED:aws_access_key]"), "{text}");
    assert!(
        text.contains("aws_access_key_id = "),
        "only the matched text is rewritten: {text}"
    );
    assert!(
        !text.contains(AWS_SECRET_KEY) && !text.contains(AWS_ACCESS_KEY),
        "{text}"
    );
    let key = c[1]["text"].as_str().unwrap_or_default();
    assert_eq!(c[1]["isError"], false, "{run:?}");
    assert!(key.contains("[REDACTED:private_key]"), "{key}");
    assert!(body.iter().all(|l| !key.contains(l.as_str())), "{key}");
    // Events: the findings, never the secrets (anywhere in the file).
    let ev = wait_events(&f.events, "both calls' events", |ev| {
        of_type(ev, "TOOL_CALL_POST").len() >= 2
    });
    let all = f.events_text();
    assert!(
        !all.contains(AWS_SECRET_KEY),
        "the events file holds the secret key"
    );
    assert!(
        !all.contains(AWS_ACCESS_KEY),
        "the events file holds the key id"
    );
    assert!(
        body.iter().all(|l| !all.contains(l.as_str())),
        "the events file holds the private key"
    );
    let post = of_type(&ev, "TOOL_CALL_POST");
    let read_post = post.iter().find(|e| e["toolName"] == "read_file").unwrap();
    let found = dlp_findings(read_post);
    for det in ["aws_secret_key", "aws_access_key"] {
        let hit = found
            .iter()
            .find(|h| h["detector"] == det)
            .unwrap_or_else(|| panic!("no {det} finding: {read_post}"));
        assert_eq!(hit["action"], "redact", "{hit}");
        assert!(is_hex(&hit["digest"], 32), "{hit}");
        assert!(
            hit["location"]
                .as_str()
                .is_some_and(|l| l.starts_with("result")),
            "{hit}"
        );
    }
    let key_post = post.iter().find(|e| e["toolName"] == "get_key").unwrap();
    assert!(
        dlp_findings(key_post)
            .iter()
            .any(|h| h["detector"] == "private_key"),
        "{key_post}"
    );
    let content = read_post["content"].as_str().unwrap_or_default();
    assert!(content.contains("[REDACTED:"), "{content}");
}

#[test]
fn dlp_results_block_replaces_the_result_with_an_error_saying_why() {
    let f = Files::new();
    let policy = f.policy("  dlp:\n    results: block\n", "");
    let run = session(
        &f,
        &policy,
        &["--secrets"],
        json!([read("/x"), echo("hello")]),
    );
    let c = run.calls();
    assert_eq!(c[0]["isError"], true, "{run:?}");
    let text = c[0]["text"].as_str().unwrap_or_default();
    assert!(!text.is_empty());
    assert!(
        !text.contains(AWS_SECRET_KEY) && !text.contains(AWS_ACCESS_KEY),
        "{text}"
    );
    assert!(
        text.contains("aws_secret_key") || text.to_lowercase().contains("secret"),
        "says why: {text}"
    );
    assert_eq!(c[1]["isError"], false, "clean results pass: {run:?}");
    assert_eq!(c[1]["text"], "hello");
    wait_events(&f.events, "the POST events", |ev| {
        of_type(ev, "TOOL_CALL_POST").len() >= 2
    });
    let all = f.events_text();
    assert!(
        !all.contains(AWS_SECRET_KEY),
        "the events file holds the secret"
    );
    assert!(
        all.contains("dlp.results"),
        "no event names rule dlp.results"
    );
}

#[test]
fn dlp_arguments_block_denies_a_call_carrying_a_token_before_the_server_sees_it() {
    let f = Files::new();
    let policy = f.policy("  dlp:\n    arguments: block\n", "");
    let token = github_token();
    let run = session(
        &f,
        &policy,
        &[],
        json!([
            echo(&format!("deploy with {token} please")),
            echo("nothing secret")
        ]),
    );
    let c = run.calls();
    assert_eq!(c[0]["isError"], true, "{run:?}");
    let text = c[0]["text"].as_str().unwrap_or_default();
    assert!(!text.contains(&token), "{text}");
    assert!(text.contains("github_token"), "names the detector: {text}");
    assert_eq!(c[1]["isError"], false, "{run:?}");
    let got = f.server_calls_of("echo");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["arguments"]["text"], "nothing secret");
    let ev = wait_events(&f.events, "the PRE events", |ev| {
        of_type(ev, "TOOL_CALL_PRE").len() >= 2
    });
    assert!(
        !f.events_text().contains(&token),
        "the events file holds the token"
    );
    let pre = of_type(&ev, "TOOL_CALL_PRE")[0];
    assert_eq!(pre["decision"]["action"], "deny", "{pre}");
    assert_eq!(pre["decision"]["rule"], "dlp.arguments", "{pre}");
    let hit = &dlp_findings(pre)[..];
    assert!(
        hit.iter().any(|h| h["detector"] == "github_token"
            && h["location"].as_str().is_some_and(|l| l.contains("text"))
            && is_hex(&h["digest"], 32)),
        "{pre}"
    );
}

#[test]
fn dlp_warn_lets_the_call_through_and_records_the_finding_without_the_secret() {
    let f = Files::new();
    let policy = f.policy("  dlp:\n    arguments: warn\n    results: warn\n", "");
    let token = github_token();
    let run = session(&f, &policy, &[], json!([echo(&token)]));
    let c = run.calls();
    assert_eq!(c[0]["isError"], false, "{run:?}");
    assert_eq!(c[0]["text"], token.as_str(), "warn changes nothing");
    assert_eq!(
        f.server_calls_of("echo")[0]["arguments"]["text"],
        token.as_str()
    );
    let ev = wait_events(&f.events, "the call's events", |ev| {
        !of_type(ev, "TOOL_CALL_POST").is_empty()
    });
    assert!(
        !f.events_text().contains(&token),
        "the events file holds the token"
    );
    let pre = dlp_findings(of_type(&ev, "TOOL_CALL_PRE")[0]);
    let post = dlp_findings(of_type(&ev, "TOOL_CALL_POST")[0]);
    let find = |hits: &[Value]| {
        hits.iter()
            .find(|h| h["detector"] == "github_token")
            .cloned()
            .unwrap_or_else(|| panic!("no github_token finding in {hits:?}"))
    };
    let (a, r) = (find(&pre), find(&post));
    for h in [&a, &r] {
        assert_eq!(h["action"], "warn", "{h}");
        assert!(is_hex(&h["digest"], 32), "{h}");
        assert!(h["location"].is_string(), "{h}");
    }
    assert!(a["location"].as_str().unwrap().contains("text"), "{a}");
    assert!(r["location"].as_str().unwrap().starts_with("result"), "{r}");
    assert_eq!(
        a["digest"], r["digest"],
        "one salt per session: the same secret, the same digest"
    );
}
