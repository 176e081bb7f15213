use thoth_proto::fleet as pb;

use super::*;

const NOW: i64 = 1_800_000_000_000;
const ID: &str = "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b";

/// Everything a hostile laptop could put in a field to reshape a terminal or hide text.
const HOSTILE: &[&str] = &[
    "\u{1b}[2J\u{1b}]0;pwned\u{7}",
    "\u{9b}31m",
    "\u{7f}",
    "\r\n",
    "\u{202e}gpj.exe",
    "\u{2066}",
    "\u{200b}",
    "\u{2028}",
    "\u{feff}",
    "\u{e0041}",
    "\u{0}",
];

fn risky(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || invisible(c)
}

#[track_caller]
fn assert_clean(text: &str) {
    if let Some(c) = text.chars().find(|&c| c != '\n' && risky(c)) {
        panic!("raw {:?} reaches the terminal in {text:?}", c);
    }
}

fn info(state: &str, content: &str) -> pb::ApprovalInfo {
    pb::ApprovalInfo {
        request: Some(pb::ApprovalRequest {
            approval_id: ID.into(),
            session_id: "sess-1".into(),
            server_name: "files".into(),
            tool_name: "write_file".into(),
            content: content.into(),
            reason: "step_up: write_file is outside the approved scope".into(),
            user: "alice".into(),
            timeout_secs: 45,
            arguments_sha256: "ab".repeat(32),
            client_name: "claude-desktop".into(),
            approvers: vec!["user".into(), "admin".into()],
            remember: "once".into(),
            expires_unix_ms: NOW + 9 * 60_000,
            hostname: "laptop-1".into(),
            agent_id: "agt-7f3a".into(),
            requested_unix_ms: NOW - 60_000,
            pin: None,
        }),
        state: state.into(),
        decision: None,
        decided_unix_ms: 0,
    }
}

fn decided(approved: bool, by: &str, remember: &str, reason: &str) -> pb::ApprovalInfo {
    let mut i = info(
        if approved { "approved" } else { "denied" },
        r#"{"path":"/tmp/x"}"#,
    );
    i.decision = Some(pb::ApprovalDecision {
        approval_id: ID.into(),
        approved,
        decided_by: by.into(),
        reason: reason.into(),
        channel: "admin".into(),
        remember: remember.into(),
        timed_out: false,
    });
    i.decided_unix_ms = NOW - 1000;
    i
}

/// The same request with `bad` in every string a laptop sets.
fn hostile(bad: &str) -> pb::ApprovalInfo {
    let mut i = info(
        "pending",
        &format!(r#"{{"path":"/tmp/{bad}","note":"{bad}"}}"#),
    );
    let r = i.request.as_mut().unwrap();
    for f in [
        &mut r.session_id,
        &mut r.server_name,
        &mut r.tool_name,
        &mut r.reason,
        &mut r.user,
        &mut r.client_name,
        &mut r.hostname,
        &mut r.agent_id,
        &mut r.remember,
    ] {
        f.push_str(bad);
    }
    r.approvers.push(bad.into());
    i.state.push_str(bad);
    i
}

#[test]
fn the_list_has_every_column_and_cuts_the_argument_preview() {
    let long = format!(r#"{{"path":"/home/alice/src/app/{}"}}"#, "x".repeat(200));
    let lines = list_lines(&[info("pending", &long)], NOW);
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "ID",
            "AGENT",
            "HOST",
            "USER",
            "SERVER",
            "TOOL",
            "ARGUMENTS",
            "REQUESTED",
            "EXPIRES",
            "STATE"
        ]
    );
    let row = &lines[1];
    // The id whole (it is what approve takes), then the request, then the times and the state.
    assert_eq!(
        row.split_whitespace().take(6).collect::<Vec<_>>(),
        [ID, "agt-7f3a", "laptop-1", "alice", "files", "write_file"],
        "{row}"
    );
    assert!(row.contains(r#"{"path":"/home/alice/src/app/xxx"#), "{row}");
    assert!(row.ends_with("…  1m ago     in 9m    pending"), "{row}");
    let preview = row
        .split("  ")
        .find(|c| c.starts_with('{'))
        .expect("a preview cell");
    assert_eq!(preview.chars().count(), PREVIEW_CHARS, "{preview}");
}

#[test]
fn a_pretty_printed_preview_is_shown_on_one_line_in_its_own_order() {
    let lines = list_lines(
        &[info("pending", "{\n  \"z\": 1,\n  \"a\": [true, null]\n}")],
        NOW,
    );
    assert!(
        lines[1].contains(r#"{"z":1,"a":[true,null]}"#),
        "{}",
        lines[1]
    );
    // Not JSON (a cut preview): shown as it came, its newline escaped.
    let lines = list_lines(&[info("pending", "{\"path\": \"/tmp/a\nb")], NOW);
    assert!(
        lines[1].contains(r#"{"path": "/tmp/a\u{a}b"#),
        "{}",
        lines[1]
    );
}

#[test]
fn empty_fields_show_as_dashes_and_nothing_panics_on_an_empty_info() {
    let lines = list_lines(&[pb::ApprovalInfo::default()], NOW);
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["-"; 10],
        "{}",
        lines[1]
    );
    let shown = show_lines(&pb::ApprovalInfo::default(), NOW).join("\n");
    assert!(
        shown.contains("arguments (redacted preview):\n  (none)"),
        "{shown}"
    );
    assert!(!shown.contains("decide:"), "{shown}");
    assert_eq!(
        watch_line(&pb::ApprovalInfo::default(), NOW),
        "-  -          - -/- for - on -"
    );
    assert!(decided_lines(&pb::ApprovalInfo::default())[0].contains("is -"));
}

#[test]
fn no_hostile_string_reaches_the_terminal_raw() {
    for bad in HOSTILE {
        let i = hostile(bad);
        for text in [
            list_lines(std::slice::from_ref(&i), NOW).join("\n"),
            show_lines(&i, NOW).join("\n"),
            watch_line(&i, NOW),
            decided_lines(&i).join("\n"),
        ] {
            assert_clean(&text);
            // Escaped, not dropped: what was sent can still be read.
            assert!(text.contains("\\u{"), "{bad:?}: {text}");
        }
        for pretty in [true, false] {
            let text = json_text(&info_json(&i), pretty);
            assert_clean(&text);
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, info_json(&i), "{bad:?}: {text}");
        }
        // As a pending request whose content is not JSON.
        let mut raw = hostile(bad);
        raw.request.as_mut().unwrap().content = format!("not json {bad}");
        assert_clean(&show_lines(&raw, NOW).join("\n"));
        assert_clean(&list_lines(&[raw.clone()], NOW).join("\n"));
        assert_clean(&watch_line(&raw, NOW));
        // As the decision's fields.
        let mut d = decided(true, &format!("bob{bad}"), &format!("15m{bad}"), bad);
        d.decision.as_mut().unwrap().channel.push_str(bad);
        assert_clean(&show_lines(&d, NOW).join("\n"));
        assert_clean(&watch_line(&d, NOW));
        assert_clean(&decided_lines(&d).join("\n"));
        // In the controller's error message, and in a typed id.
        for code in [
            tonic::Code::NotFound,
            tonic::Code::FailedPrecondition,
            tonic::Code::PermissionDenied,
            tonic::Code::InvalidArgument,
            tonic::Code::Internal,
        ] {
            let f = refusal(tonic::Status::new(code, format!("x{bad}")), Some(bad));
            assert_clean(&f.message);
        }
        let id = format!("{ID}{bad}");
        assert_clean(&check_id(&id).expect_err("refused").message);
    }
}

#[test]
fn a_line_separator_cannot_forge_a_second_row() {
    let i = hostile("\u{2028}0193ffff-0000-7000-8000-000000000000  agt-x  evil");
    let lines = list_lines(&[i], NOW);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains("\\u{2028}"), "{}", lines[1]);
}

#[test]
fn json_text_parses_back_to_the_same_value() {
    let mut every = String::new();
    for c in (0u32..0x3000)
        .chain(0xe000..0x1_0000)
        .chain(0xe0000..0xe0080)
    {
        if let Some(c) = char::from_u32(c) {
            every.push(c);
        }
    }
    let v = serde_json::json!({"s": every, "nested": [{"k\u{202e}": "\u{1b}[31m\u{9b}\u{e0041}"}]});
    for pretty in [true, false] {
        let text = json_text(&v, pretty);
        assert_clean(&text);
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
    // A plain document is printed exactly as serde_json prints it.
    let plain = serde_json::json!({"a": [1, "b"], "c": {"d": null}});
    assert_eq!(
        json_text(&plain, true),
        serde_json::to_string_pretty(&plain).unwrap()
    );
    // Above U+FFFF: a surrogate pair.
    assert_eq!(
        json_text(&serde_json::json!("\u{e0041}"), false),
        r#""\udb40\udc41""#
    );
}

#[test]
fn show_prints_the_whole_request_and_how_to_decide() {
    let args = format!(
        r#"{{"path":"/home/alice/notes.txt","content":"{}"}}"#,
        "y".repeat(300)
    );
    let text = show_lines(&info("pending", &args), NOW).join("\n");
    for want in [
        format!("approval     {ID}"),
        "state        pending".into(),
        "agent        agt-7f3a on laptop-1".into(),
        "user         alice".into(),
        "client       claude-desktop".into(),
        "session      sess-1".into(),
        "server       files".into(),
        "tool         write_file".into(),
        "why          step_up: write_file is outside the approved scope".into(),
        "approvers    user, admin".into(),
        "remember     once (asked by the policy)".into(),
        format!("args sha256  {}", "ab".repeat(32)),
        "requested    2027-01-15T07:59:00Z (1m ago)".into(),
        "held         45s by the proxy".into(),
        "expires      2027-01-15T08:09:00Z (in 9m)".into(),
        "arguments (redacted preview):\n  {\n    \"path\": \"/home/alice/notes.txt\",".into(),
        format!("    \"content\": \"{}\"\n  }}", "y".repeat(300)),
        format!(
            "decide:      thothctl approvals approve {ID} [--remember once|session|15m] [--comment C]"
        ),
        format!("             thothctl approvals deny {ID} [--reason R]"),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("decision"), "{text}");
}

#[test]
fn show_gives_the_decision_and_no_decide_hint_once_decided() {
    let text = show_lines(&decided(true, "bob", "session", "ticket OPS-42"), NOW).join("\n");
    assert!(
        text.contains(
            "decision     approved by bob (admin), remember session: \"ticket OPS-42\"\n\
             decided      2027-01-15T07:59:59Z (1s ago)"
        ),
        "{text}"
    );
    assert!(!text.contains("decide:"), "{text}");
    let mut late = info("expired", "{}");
    late.decision = Some(pb::ApprovalDecision {
        timed_out: true,
        reason: "nobody answered".into(),
        ..Default::default()
    });
    let text = show_lines(&late, NOW).join("\n");
    assert!(
        text.contains("decision     no answer in time: \"nobody answered\""),
        "{text}"
    );
}

#[test]
fn a_huge_preview_is_cut_in_show() {
    let i = info("pending", &"z".repeat(SHOW_CHARS * 2));
    let text = show_lines(&i, NOW).join("\n");
    assert!(text.contains("… (cut)"), "cut marker");
    assert!(text.chars().count() < SHOW_CHARS + 2000);
}

#[test]
fn watch_says_what_happened_on_one_line() {
    let line = watch_line(&info("pending", r#"{"path":"/tmp/x"}"#), NOW);
    assert_eq!(
        line,
        format!(
            "2027-01-15T07:59:00Z  requested  {ID} files/write_file for alice on laptop-1  \
             {{\"path\":\"/tmp/x\"}}  expires in 9m"
        )
    );
    let line = watch_line(&decided(false, "bob", "", "not on prod"), NOW);
    assert_eq!(
        line,
        format!(
            "2027-01-15T07:59:59Z  denied     {ID} files/write_file for alice on laptop-1  \
             denied by bob (admin): \"not on prod\""
        )
    );
    for l in [
        watch_line(&hostile("\n"), NOW),
        watch_line(&decided(true, "a\nb", "x\ny", "c\r\nd"), NOW),
    ] {
        assert!(!l.contains('\n') && !l.contains('\r'), "{l}");
    }
}

#[test]
fn approve_and_deny_say_what_the_decision_covers() {
    let l = decided_lines(&decided(true, "bob", "session", "")).join("\n");
    assert!(
        l.starts_with(&format!(
            "approved {ID}: files/write_file for alice on laptop-1\n  covers every identical call in that MCP session"
        )),
        "{l}"
    );
    let l = decided_lines(&decided(true, "bob", "15m", "")).join("\n");
    assert!(
        l.contains("covers every identical call of alice for 15m"),
        "{l}"
    );
    let l = decided_lines(&decided(true, "bob", "once", "")).join("\n");
    assert!(l.contains("covers this identical call once"), "{l}");
    let l = decided_lines(&decided(false, "bob", "", "writes to /etc: never")).join("\n");
    assert_eq!(
        l,
        format!("denied {ID}: files/write_file for alice on laptop-1: \"writes to /etc: never\"")
    );
    let l = decided_lines(&info("expired", "{}")).join("\n");
    assert_eq!(
        l,
        format!("{ID} is expired: files/write_file for alice on laptop-1")
    );
}

#[test]
fn json_has_every_field_in_camel_case() {
    let j = info_json(&decided(true, "bob", "2h", "ok"));
    assert_eq!(
        j,
        serde_json::json!({
            "approvalId": ID, "state": "approved", "agentId": "agt-7f3a", "hostname": "laptop-1",
            "user": "alice", "clientName": "claude-desktop", "sessionId": "sess-1",
            "serverName": "files", "toolName": "write_file", "content": "{\"path\":\"/tmp/x\"}",
            "argumentsSha256": "ab".repeat(32),
            "reason": "step_up: write_file is outside the approved scope",
            "approvers": ["user", "admin"], "remember": "once", "timeoutSecs": 45,
            "requestedAt": "2027-01-15T07:59:00.000Z", "expiresAt": "2027-01-15T08:09:00.000Z",
            "decision": {"approved": true, "decidedBy": "bob", "reason": "ok",
                "channel": "admin", "remember": "2h", "timedOut": false},
            "decidedAt": "2027-01-15T07:59:59.000Z",
        })
    );
    let j = info_json(&pb::ApprovalInfo::default());
    assert_eq!(j["decision"], serde_json::Value::Null);
    assert_eq!(j["requestedAt"], serde_json::Value::Null);
}

#[test]
fn remember_is_checked_and_sent_in_its_wire_form() {
    assert_eq!(remember_arg("once").unwrap(), "once");
    assert_eq!(remember_arg("session").unwrap(), "session");
    assert_eq!(remember_arg("120m").unwrap(), "2h");
    assert_eq!(remember_arg("90s").unwrap(), "90s");
    for bad in [
        "", "25h", "0s", "1d", "forever", "15 m", "Session", "1h30m", "-1m",
    ] {
        let e = remember_arg(bad).unwrap_err();
        assert!(e.contains("--remember"), "{bad:?}: {e}");
        assert!(!e.contains("approval_remember"), "{e}");
    }
    assert_clean(&remember_arg("\u{1b}[2J\u{202e}").unwrap_err());
}

#[test]
fn ids_and_notes_are_checked_before_asking() {
    assert!(check_id(ID).is_ok());
    assert!(check_id(&"a".repeat(64)).is_ok());
    for bad in [
        "",
        " ",
        "a b",
        &"a".repeat(65),
        "é",
        "\u{1b}",
        "a/b",
        "a_b",
        "x;rm",
    ] {
        let f = check_id(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(f.code, 2);
        assert!(f.message.contains("not an approval id"), "{}", f.message);
        assert!(f.message.chars().count() < 200);
    }
    assert!(check_note("--comment", &"c".repeat(MAX_NOTE_BYTES)).is_ok());
    let f = check_note("--comment", &"c".repeat(MAX_NOTE_BYTES + 1))
        .err()
        .unwrap();
    assert_eq!(f.code, 2);
    assert!(f.message.contains("1025 bytes"), "{}", f.message);
}

#[test]
fn refusals_are_said_plainly_with_their_exit_status() {
    use tonic::{Code, Status};
    let f = refusal(
        Status::failed_precondition("approval … expired at 08:10"),
        Some(ID),
    );
    assert_eq!(f.code, 1);
    assert!(
        f.message.starts_with("refused: approval … expired"),
        "{}",
        f.message
    );
    assert!(f.message.contains(&format!("thothctl approvals show {ID}")));
    let f = refusal(Status::not_found("no such approval"), Some(ID));
    assert_eq!(f.code, 1);
    assert!(
        f.message
            .starts_with(&format!("no approval {ID}: unknown, or of a tenant"))
    );
    let f = refusal(Status::permission_denied("role viewer may not"), None);
    assert_eq!(f.code, 4);
    assert!(f.message.contains("role viewer may not"), "{}", f.message);
    assert!(f.message.contains("role approver"), "{}", f.message);
    let f = refusal(Status::unimplemented(""), None);
    assert_eq!(f.code, 1);
    assert!(
        f.message.contains("upgrade thoth-controller"),
        "{}",
        f.message
    );
    let f = refusal(
        Status::resource_exhausted("amy has 4 approval watches open already"),
        None,
    );
    assert_eq!(
        (f.code, f.message.as_str()),
        (1, "refused: amy has 4 approval watches open already")
    );
    assert_eq!(refusal(Status::invalid_argument("bad"), None).code, 5);
    assert_eq!(refusal(Status::unavailable("down"), None).code, 3);
    assert_eq!(
        refusal(Status::new(Code::Unauthenticated, "who"), None).code,
        4
    );
}

#[test]
fn times_are_relative_to_now() {
    assert_eq!(rel(NOW - 90_000, NOW), "2m ago");
    assert_eq!(rel(NOW + 600_000, NOW), "in 10m");
    assert_eq!(rel(NOW, NOW), "0s ago");
    assert_eq!(rel(0, NOW), "-");
    assert_eq!(rel(-5, NOW), "-");
    assert_eq!(
        rel(i64::MAX, NOW),
        format!(
            "in {}",
            short(Duration::from_millis((i64::MAX - NOW) as u64))
        )
    );
    assert_eq!(stamp(0, NOW), "-");
    // Past what RFC 3339 writes: no panic, shown as unset.
    assert_eq!(stamp(i64::MAX, NOW), "-");
    assert_eq!(iso_ms(i64::MAX), serde_json::Value::Null);
    let mut far = info("pending", "{}");
    far.request.as_mut().unwrap().requested_unix_ms = i64::MAX;
    far.request.as_mut().unwrap().expires_unix_ms = i64::MAX;
    assert!(watch_line(&far, NOW).starts_with("-  requested"));
    show_lines(&far, NOW);
    info_json(&far);
    assert_eq!(iso_ms(-1), serde_json::Value::Null);
}
