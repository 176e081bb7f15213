//! Tool integrity in the policy: the new fields parse (and refuse what they should, saying
//! why), the accessors merge entry over defaults, and trusted annotations change decisions only
//! when the definition was accepted (`ToolCall::hints` is `Some`).

mod common;

use std::time::Instant;

use common::parse;
use serde_json::{Value, json};
use thoth_policy::{
    Action, Decision, DestructiveUse, DlpArguments, DlpResults, Format, Mode, OnSuspiciousTool,
    OnToolChange, Policy, ReadOnlyUse, SessionState, ToolCall, TrustedHints, evaluate,
};

const D1: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const D2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn refused(yaml: &str) -> String {
    match thoth_policy::parse_policy(yaml, "test.yaml", Format::Yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

const READ_ONLY: TrustedHints = TrustedHints {
    read_only: true,
    destructive: false,
};
const DESTRUCTIVE: TrustedHints = TrustedHints {
    read_only: false,
    destructive: true,
};

/// Decides one call to server "fs" with the given trusted hints, on a fresh session.
fn decide(p: &Policy, tool: &str, args: Value, hints: Option<TrustedHints>) -> Decision {
    let server = p.resolve("fs", &[]);
    evaluate(
        p,
        &server,
        &SessionState::new(),
        &ToolCall {
            tool,
            arguments: (&args).into(),
            hints,
        },
        Instant::now(),
    )
}

fn annotated(mode: &str, annotations: &str) -> Policy {
    parse(&format!(
        "servers:\n  - name: fs\n    enforcement: {mode}\n    \
         approved_scope: [\"read_*\", \"write_*\", \"delete_*\"]\n    \
         deny: [\"delete_all\"]\n    step_up: [\"admin_*\"]\n    \
         constraints:\n      - {{tool: \"*\", arg: path, path_glob: [\"/data/**\"], allow_missing: true}}\n    \
         annotations: {annotations}\n"
    ))
}

// ---- evaluator: destructive ----

#[test]
fn destructive_step_up_asks_even_inside_the_approved_scope() {
    let p = annotated("block", "{destructive: step_up}");
    let d = decide(&p, "write_file", json!({}), Some(DESTRUCTIVE));
    assert_eq!(d.action, Action::StepUp);
    assert_eq!(d.rule, "servers[0].annotations.destructive");
    assert!(
        d.reason.contains("\"write_file\"") && d.reason.contains("destructive by its accepted"),
        "{}",
        d.reason
    );
    assert!(!d.out_of_scope);
    // The same tool, not destructive or untrusted: the approved scope decides.
    for hints in [None, Some(READ_ONLY)] {
        let d = decide(&p, "write_file", json!({}), hints);
        assert_eq!(
            (d.action, d.rule.as_str()),
            (Action::Allow, "servers[0].approved_scope[1]")
        );
    }
}

#[test]
fn destructive_deny_denies_and_the_deny_list_still_wins() {
    let p = annotated("block", "{destructive: deny}");
    let d = decide(&p, "write_file", json!({}), Some(DESTRUCTIVE));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Deny, "servers[0].annotations.destructive")
    );
    assert!(
        d.reason.contains("denies destructive tools"),
        "{}",
        d.reason
    );
    let d = decide(&p, "delete_all", json!({}), Some(DESTRUCTIVE));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Deny, "servers[0].deny[0]")
    );
    // A step-up tool that is destructive: deny is stronger than the step-up list.
    let d = decide(&p, "admin_reset", json!({}), Some(DESTRUCTIVE));
    assert_eq!(d.rule, "servers[0].annotations.destructive");
    assert_eq!(d.action, Action::Deny);
}

#[test]
fn destructive_keeps_a_stronger_verdict_and_the_out_of_scope_mark() {
    let p = annotated("block", "{destructive: step_up}");
    // Out of scope in block mode: already denied; the scope's rule stays.
    let d = decide(&p, "format_disk", json!({}), Some(DESTRUCTIVE));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Deny, "servers[0].approved_scope")
    );
    // Progressive: the first out-of-scope call would only warn; destructive raises it to
    // step_up and it still counts as out of scope.
    let p = annotated("progressive", "{destructive: step_up}");
    let d = decide(&p, "format_disk", json!({}), Some(DESTRUCTIVE));
    assert_eq!(
        (d.action, d.rule.as_str(), d.out_of_scope),
        (Action::StepUp, "servers[0].annotations.destructive", true)
    );
    let d = decide(&p, "format_disk", json!({}), None);
    assert_eq!(d.action, Action::Warn);
}

#[test]
fn destructive_in_observe_mode_would_block() {
    let p = annotated("observe", "{destructive: deny}");
    let d = decide(&p, "write_file", json!({}), Some(DESTRUCTIVE));
    assert_eq!(
        (d.action, d.mode, d.rule.as_str()),
        (
            Action::WouldBlock,
            Mode::Observe,
            "servers[0].annotations.destructive"
        )
    );
    assert_eq!(
        decide(&p, "write_file", json!({}), None).action,
        Action::Allow
    );
}

#[test]
fn a_sequence_deny_beats_destructive_step_up() {
    let p = parse(
        "servers:\n  - name: fs\n    approved_scope: [\"*\"]\n    \
         sequences: [{after: read_secret, then: send, action: deny}]\n    \
         annotations: {destructive: step_up}\n",
    );
    let server = p.resolve("fs", &[]);
    let mut state = SessionState::new();
    let now = Instant::now();
    let args = json!({});
    let call = |tool| ToolCall {
        tool,
        arguments: (&args).into(),
        hints: Some(DESTRUCTIVE),
    };
    let first = evaluate(&p, &server, &state, &call("read_secret"), now);
    assert_eq!(first.action, Action::StepUp);
    state.record("read_secret", &first, true, now);
    let d = evaluate(&p, &server, &state, &call("send"), now);
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Deny, "servers[0].sequences[0]")
    );
}

#[test]
fn destructive_ignore_and_no_annotations_change_nothing() {
    for a in ["{destructive: ignore}", "{read_only: ignore}", "{}"] {
        let p = annotated("block", a);
        let d = decide(&p, "write_file", json!({}), Some(DESTRUCTIVE));
        assert_eq!(
            (d.action, d.rule.as_str()),
            (Action::Allow, "servers[0].approved_scope[1]"),
            "{a}"
        );
    }
    let p = parse("servers:\n  - name: fs\n    approved_scope: [\"*\"]\n");
    assert_eq!(
        decide(&p, "rm", json!({}), Some(DESTRUCTIVE)).action,
        Action::Allow
    );
}

// ---- evaluator: read-only ----

#[test]
fn read_only_approve_treats_accepted_read_only_tools_as_approved() {
    let p = annotated("block", "{read_only: approve}");
    let d = decide(&p, "list_tables", json!({}), Some(READ_ONLY));
    assert_eq!(
        (d.action, d.rule.as_str(), d.out_of_scope),
        (Action::Allow, "servers[0].annotations.read_only", false)
    );
    assert!(d.reason.contains("read-only"), "{}", d.reason);
    // In the approved scope already: the scope's own rule is the one named.
    let d = decide(&p, "read_file", json!({}), Some(READ_ONLY));
    assert_eq!(d.rule, "servers[0].approved_scope[0]");
}

#[test]
fn a_tool_claiming_read_only_without_trusted_hints_is_not_approved() {
    let p = annotated("block", "{read_only: approve}");
    // The definition says readOnlyHint: true, but it is not pinned and accepted: no hints.
    let claimed = json!({"readOnlyHint": true});
    assert!(TrustedHints::from_annotations(Some(&claimed)).read_only);
    let d = decide(&p, "list_tables", json!({}), None);
    assert_eq!(
        (d.action, d.rule.as_str(), d.out_of_scope),
        (Action::Deny, "servers[0].approved_scope", true)
    );
    // Accepted but not read-only: not approved either.
    let d = decide(&p, "list_tables", json!({}), Some(DESTRUCTIVE));
    assert_eq!(d.action, Action::Deny);
    let not_either = TrustedHints {
        read_only: false,
        destructive: false,
    };
    assert_eq!(
        decide(&p, "list_tables", json!({}), Some(not_either)).action,
        Action::Deny
    );
}

#[test]
fn deny_list_beats_read_only_approve() {
    let p = parse(
        "servers:\n  - name: fs\n    approved_scope: []\n    deny: [\"dump_*\"]\n    \
         annotations: {read_only: approve}\n",
    );
    let d = decide(&p, "dump_users", json!({}), Some(READ_ONLY));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::Deny, "servers[0].deny[0]")
    );
}

#[test]
fn read_only_approve_still_checks_constraints_and_the_step_up_list() {
    let p = annotated("block", "{read_only: approve}");
    let d = decide(&p, "stat", json!({"path": "/etc/shadow"}), Some(READ_ONLY));
    assert_eq!(
        (d.action, d.rule.as_str(), d.out_of_scope),
        (Action::Deny, "servers[0].constraints[0]", true)
    );
    let d = decide(&p, "stat", json!({"path": "/data/a"}), Some(READ_ONLY));
    assert_eq!(d.action, Action::Allow);
    let d = decide(&p, "admin_view", json!({}), Some(READ_ONLY));
    assert_eq!(
        (d.action, d.rule.as_str()),
        (Action::StepUp, "servers[0].step_up[0]")
    );
}

#[test]
fn read_only_ignore_approves_nothing() {
    let p = annotated("block", "{read_only: ignore, destructive: step_up}");
    assert_eq!(
        decide(&p, "list_tables", json!({}), Some(READ_ONLY)).action,
        Action::Deny
    );
}

#[test]
fn hints_follow_the_mcp_definitions() {
    let cases = [
        (None, false, true),
        (Some(json!({})), false, true),
        (Some(json!({"readOnlyHint": true})), true, false),
        (
            Some(json!({"readOnlyHint": true, "destructiveHint": true})),
            true,
            false,
        ),
        (Some(json!({"readOnlyHint": false})), false, true),
        (Some(json!({"destructiveHint": false})), false, false),
        (Some(json!({"readOnlyHint": "true"})), false, true),
        (Some(json!({"destructiveHint": "false"})), false, true),
        (Some(json!("not an object")), false, true),
    ];
    for (a, read_only, destructive) in cases {
        let h = TrustedHints::from_annotations(a.as_ref());
        assert_eq!(
            (h.read_only, h.destructive),
            (read_only, destructive),
            "{a:?}"
        );
    }
}

// ---- parsing ----

const FULL: &str = r#"
defaults:
  on_tool_change: step_up
  on_suspicious_tool: block
  dlp:
    arguments: block
    results: redact
    detectors: [aws_access_key, card_number]
    allow_patterns: ["AKIAIOSFODNN7EXAMPLE"]
servers:
  - name: fs
    approved_scope: ["*"]
    on_tool_change: block
    on_suspicious_tool: allow
    dlp:
      results: block
    pins:
      read_file: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
      write_file: fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210
    annotations:
      read_only: approve
      destructive: deny
  - name: db
    approved_scope: ["*"]
    dlp:
      arguments: allow
      detectors: [jwt]
  - name: plain
    approved_scope: ["*"]
"#;

#[test]
fn every_field_parses_and_the_entry_wins_over_defaults() {
    let p = parse(FULL);
    let fs = p.resolve("fs", &[]);
    let i = p.integrity(&fs);
    assert_eq!(i.on_tool_change, OnToolChange::Block);
    assert_eq!(i.on_suspicious_tool, OnSuspiciousTool::Allow);
    assert_eq!(i.annotations.read_only, ReadOnlyUse::Approve);
    assert_eq!(i.annotations.destructive, DestructiveUse::Deny);
    let pins = i.pins.expect("pins");
    assert_eq!(pins.len(), 2);
    assert_eq!(
        pins["read_file"].as_str(),
        D1,
        "the sha256: prefix is dropped"
    );
    assert_eq!(pins["write_file"].as_str(), D2);

    // An entry that sets nothing: the defaults'.
    for server in [p.resolve("plain", &[]), p.resolve("unknown", &[])] {
        let i = p.integrity(&server);
        assert_eq!(i.on_tool_change, OnToolChange::StepUp);
        assert_eq!(i.on_suspicious_tool, OnSuspiciousTool::Block);
        assert!(i.pins.is_none());
        assert_eq!(i.annotations, Default::default());
    }
    // Nothing anywhere: the built-in defaults.
    let bare = parse("servers: []\n");
    let i = bare.integrity(&bare.resolve("x", &[]));
    assert_eq!(
        (i.on_tool_change, i.on_suspicious_tool),
        (OnToolChange::Warn, OnSuspiciousTool::Warn)
    );
}

#[test]
fn dlp_merges_field_by_field() {
    let p = parse(FULL);
    let fs = p.dlp(&p.resolve("fs", &[]));
    assert_eq!(fs.arguments, DlpArguments::Block, "from defaults");
    assert_eq!(fs.results, DlpResults::Block, "the entry's");
    assert_eq!(fs.detectors, ["aws_access_key", "card_number"]);
    assert_eq!(fs.allow_patterns.len(), 1);
    assert!(fs.allow_patterns[0].is_match("AKIAIOSFODNN7EXAMPLE"));

    let db = p.dlp(&p.resolve("db", &[]));
    assert_eq!(db.arguments, DlpArguments::Allow);
    assert_eq!(db.results, DlpResults::Redact);
    assert_eq!(db.detectors, ["jwt"]);
    assert_eq!(db.allow_patterns.len(), 1);

    let bare = parse("servers: []\n");
    let d = bare.dlp(&bare.resolve("x", &[]));
    assert_eq!(
        (d.arguments, d.results),
        (DlpArguments::Warn, DlpResults::Warn)
    );
    assert_eq!(d.detectors, thoth_policy::DEFAULT_DLP_DETECTORS);
    assert!(
        !d.detectors
            .iter()
            .any(|x| x == "card_number" || x == "iban")
    );
    assert!(d.allow_patterns.is_empty());
}

#[test]
fn every_value_of_each_setting_parses() {
    for v in ["allow", "warn", "block", "step_up"] {
        parse(&format!("defaults: {{on_tool_change: {v}}}\n"));
        parse(&format!("servers: [{{name: a, on_tool_change: {v}}}]\n"));
    }
    for v in ["allow", "warn", "block"] {
        parse(&format!(
            "defaults: {{on_suspicious_tool: {v}, dlp: {{arguments: {v}}}}}\n"
        ));
    }
    for v in ["allow", "warn", "redact", "block"] {
        parse(&format!("servers: [{{name: a, dlp: {{results: {v}}}}}]\n"));
    }
    for id in thoth_policy::DLP_DETECTORS {
        parse(&format!("defaults: {{dlp: {{detectors: [{id}]}}}}\n"));
    }
}

#[test]
fn unknown_values_and_fields_are_refused_with_a_clear_message() {
    let cases: [(&str, &[&str]); 12] = [
        (
            "defaults: {on_tool_change: quarantine}\n",
            &["on_tool_change", "quarantine", "step_up"],
        ),
        (
            "servers: [{name: a, on_tool_change: Block}]\n",
            &["on_tool_change", "Block"],
        ),
        (
            "defaults: {on_suspicious_tool: step_up}\n",
            &["on_suspicious_tool", "step_up"],
        ),
        (
            "defaults: {dlp: {arguments: redact}}\n",
            &["dlp.arguments", "redact"],
        ),
        (
            "defaults: {dlp: {detectors: [aws_key]}}\n",
            &["unknown DLP detector \"aws_key\"", "aws_access_key"],
        ),
        (
            "servers: [{name: a, dlp: {detectors: [jwt, ssn]}}]\n",
            &["servers[0].dlp.detectors", "\"ssn\""],
        ),
        (
            "defaults: {dlp: {result: block}}\n",
            &["unknown field `result`", "results"],
        ),
        (
            "defaults: {dlp: {allow_patterns: [\"(\"]}}\n",
            &["dlp.allow_patterns"],
        ),
        (
            "servers: [{name: a, pins: {read_file: \"sha1:abc\"}}]\n",
            &["servers[0].pins", "not a tool digest", "sha256:"],
        ),
        (
            "servers: [{name: a, annotations: {read_only: trust}}]\n",
            &["annotations.read_only", "trust"],
        ),
        (
            "servers: [{name: a, annotations: {destructive: ask}}]\n",
            &["annotations.destructive", "ask", "step_up"],
        ),
        (
            "servers: [{name: a, annotations: {open_world: deny}}]\n",
            &["unknown field `open_world`"],
        ),
    ];
    for (yaml, wanted) in cases {
        let e = refused(yaml);
        for w in wanted {
            assert!(e.contains(w), "{yaml}: {e:?} lacks {w:?}");
        }
    }
    // Pins and annotations are per server only.
    assert!(
        refused(&format!("defaults: {{pins: {{a: {D1}}}}}\n")).contains("unknown field `pins`")
    );
    assert!(refused("defaults: {annotations: {read_only: approve}}\n").contains("annotations"));
}

#[test]
fn pin_digests_are_checked() {
    let upper = D1.to_ascii_uppercase();
    let short = &D1[..63];
    let long = format!("{D1}0");
    let bad = [
        upper.as_str(),
        short,
        long.as_str(),
        "sha256:",
        "sha512:0123",
        "",
    ];
    for digest in bad {
        let e = refused(&format!(
            "servers: [{{name: a, pins: {{t: \"{digest}\"}}}}]\n"
        ));
        assert!(e.contains("not a tool digest"), "{digest}: {e}");
    }
    let p = parse(&format!(
        "servers: [{{name: a, pins: {{t: \"sha256:{D1}\", u: \"{D1}\"}}}}]\n"
    ));
    let pins = p.integrity(&p.resolve("a", &[])).pins.unwrap();
    assert_eq!(pins["t"], pins["u"]);
}

fn pins_yaml(n: usize, name: impl Fn(usize) -> String) -> String {
    let mut y = String::from("servers:\n  - name: a\n    pins:\n");
    for i in 0..n {
        y.push_str(&format!("      \"{}\": {D1}\n", name(i)));
    }
    y
}

#[test]
fn pins_are_bounded_in_count_and_name_length() {
    assert_eq!(thoth_policy::MAX_PINS, 1000);
    let p = parse(&pins_yaml(1000, |i| format!("tool_{i}")));
    assert_eq!(p.integrity(&p.resolve("a", &[])).pins.unwrap().len(), 1000);
    let e = refused(&pins_yaml(1001, |i| format!("tool_{i}")));
    assert!(e.contains("at most 1000 pins"), "{e}");
    assert!(e.contains("servers[0].pins"), "{e}");

    assert_eq!(thoth_policy::MAX_PIN_TOOL_NAME, 256);
    parse(&pins_yaml(1, |_| "x".repeat(256)));
    let e = refused(&pins_yaml(1, |_| "x".repeat(257)));
    assert!(e.contains("1 to 256 bytes") && e.contains("257"), "{e}");
    assert!(e.len() < 400, "the name is not echoed whole: {e}");
    let e = refused(&pins_yaml(1, |_| String::new()));
    assert!(e.contains("1 to 256 bytes"), "{e}");
}

#[test]
fn a_server_entry_with_the_new_fields_survives_a_round_trip() {
    let p = parse(FULL);
    let json = serde_json::to_value(&p.servers[0]).unwrap();
    assert_eq!(json["pins"]["read_file"], D1);
    assert_eq!(json["annotations"]["destructive"], "deny");
    let back: thoth_policy::ServerRule = serde_json::from_value(json).unwrap();
    assert_eq!(back.pins, p.servers[0].pins);
    assert_eq!(back.annotations, p.servers[0].annotations);
    assert_eq!(back.on_tool_change, Some(OnToolChange::Block));
    assert_eq!(
        back.dlp.as_ref().and_then(|d| d.results),
        Some(DlpResults::Block)
    );
}
