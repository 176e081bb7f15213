use super::*;
use crate::event::{EventType, Identity};
use crate::verify::*;

fn event(agent: &str, n: u32) -> Event<'static> {
    // Tests only: an identity that lives as long as the events built on it.
    let id: &'static Identity = Box::leak(Box::new(Identity {
        tenant_id: "t".into(),
        agent_id: agent.into(),
        hostname: "h".into(),
        user: "u".into(),
    }));
    let mut e = Event::new(
        EventType::ToolCallPre,
        format!("id-{n}"),
        "2026-01-01T00:00:00Z".into(),
        id,
    );
    e.tool_name = Some(format!("tool {n} é").into());
    e
}

fn file(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

fn chain_of(n: u32) -> Vec<Vec<u8>> {
    let mut c = Chain::new();
    (0..n).map(|i| c.seal(&mut event("a", i))).collect()
}

#[test]
fn events_serialize_in_canonical_form() {
    let mut e = event("a", 1);
    e.session_id = Some("s".into());
    e.server_name = Some("srv".into());
    e.source_type = Some("agent_tool_call".into());
    e.request_id = Some("1".into());
    e.content = Some("{\"k\":\"v\"}".into());
    e.content_truncated = Some(true);
    e.content_sha256 = Some("00".into());
    e.session_tool_calls = Some(vec!["x".to_string()].into());
    e.decision = Some(crate::EventDecision {
        action: crate::Action::Allow,
        mode: Some(crate::Mode::Block),
        reason: Some("r".into()),
        rule: Some("servers[0]".into()),
    });
    e.policy_version = Some("1".into());
    e.latency_us = Some(5);
    e.is_error = Some(false);
    e.prev_hash = Some(GENESIS_HASH);
    e.hash = Some([0xab; 32]);
    e.proxy_event_id = Some("p".into());
    e.quota_owner = Some("o".into());
    e.client_name = Some("c".into());
    e.approval_id = Some("ap".into());
    e.clock_skew_secs = Some(-1);
    e.event_id_reused = Some(true);
    e.seq = Some(1);
    let direct = serde_json::to_vec(&e).unwrap();
    let canonical = to_canonical(&serde_json::to_value(&e).unwrap());
    assert_eq!(
        String::from_utf8(direct).unwrap(),
        String::from_utf8(canonical.clone()).unwrap()
    );
    // Inserting the hash into the bytes without it gives the same canonical line.
    let mut unhashed = e.clone();
    unhashed.hash = None;
    unhashed.content = Some(",\"hostname\":".into());
    let spliced = with_hash(serde_json::to_vec(&unhashed).unwrap(), &[0xab; 32]).unwrap();
    unhashed.hash = Some([0xab; 32]);
    assert_eq!(
        spliced,
        to_canonical(&serde_json::to_value(&unhashed).unwrap())
    );
    // With detail, sealing still yields canonical lines that verify.
    let mut c = Chain::new();
    let mut d = event("a", 2);
    d.detail = Some(serde_json::json!({"z": 1, "a": {"y": 2, "b": 3}}));
    let lines = vec![c.seal(&mut e.clone()), c.seal(&mut d)];
    assert_eq!(verify_lines(&file(&lines)[..]).unwrap().events, 2);
}

#[test]
fn a_sealed_chain_verifies() {
    let mut a = Chain::new();
    let mut b = Chain::new();
    let lines = vec![
        a.seal(&mut event("a", 1)),
        b.seal(&mut event("b", 1)),
        a.seal(&mut event("a", 2)),
    ];
    let r = verify_lines(&file(&lines)[..]).unwrap();
    assert_eq!(r.events, 3);
    assert_eq!(r.chains.get("a"), Some(&2));
    assert_eq!(r.chains.get("b"), Some(&1));
    assert_eq!(verify_lines(&b""[..]).unwrap().events, 0);
}

#[test]
fn a_detail_holding_a_hostname_key_does_not_take_the_hash() {
    // A proxy's `detail` is free-form; an object in it with a `hostname` key after another key
    // used to receive the spliced hash, leaving the line without a top-level `hash`.
    let mut c = Chain::new();
    let mut prev = GENESIS.to_string();
    for detail in [
        serde_json::json!({"a": 0, "hostname": "x"}),
        serde_json::json!({"z": [{"b": 1, "hostname": {"hostname": 2}}]}),
        serde_json::json!("plain"),
    ] {
        let mut e = event("a", 1);
        e.detail = Some(detail.clone());
        let line = c.seal(&mut e);
        let v: Value = serde_json::from_slice(&line).unwrap();
        let hash = v["hash"].as_str().expect("a top-level hash");
        assert_eq!(v["detail"], detail, "detail unchanged");
        let (_, linked) = check_link(&line, &prev).expect("the line links");
        assert_eq!(linked, hash);
        prev = linked;
    }
}

#[test]
fn every_single_byte_change_is_detected() {
    let data = file(&chain_of(3));
    for i in 0..data.len() {
        let mut bad = data.clone();
        bad[i] = if bad[i] == b'x' { b'y' } else { b'x' };
        assert!(
            verify_lines(&bad[..]).is_err(),
            "change at byte {i} went unnoticed"
        );
    }
}

#[test]
fn unsigned_restarted_and_alerted_chains_are_reported_not_called_ok() {
    // A standalone proxy's file: intact, but nothing signed (unkeyed by design).
    let data = file(&chain_of(3));
    let r = verify_lines(&data[..]).unwrap();
    assert_eq!(
        (r.verdict(), r.unsigned, r.heads),
        (Verdict::Unsigned, 3, 0)
    );
    assert!(r.describe("f")[0].starts_with("UNSIGNED"));
    assert_eq!(r.to_json()["ok"], false);
    // A chain that starts again at seq 1 (a lost spool), and a controller alert about it.
    let alert = br#"{"agentId":"a","detail":"restart","eventType":"CHAIN_ALERT","sourceType":"controller"}"#;
    let mut lines = chain_of(2);
    lines.push(alert.to_vec());
    lines.extend(chain_of(2));
    let r = verify_lines(&file(&lines)[..]).unwrap();
    assert_eq!(r.restarts, vec![("a".to_owned(), 4)]);
    assert_eq!(r.alerts, vec![(3, "restart".to_owned())]);
    assert_eq!((r.events, r.unsigned), (4, 4));
    // A head with no chain before it, or a malformed one, is a break.
    let head = br#"{"agentId":"a","detail":{"certificate":"","hash":"00","seq":1,"signature":""},"eventType":"CHAIN_HEAD","sourceType":"controller","tenantId":"t","timestamp":"2026-01-01T00:00:00Z"}"#;
    let e = verify_lines(&file(&[head.to_vec()])[..]).unwrap_err();
    assert!(e.reason.contains("signed events were removed"), "{e}");
    let mut lines = chain_of(1);
    lines.push(head.to_vec());
    let e = verify_lines(&file(&lines)[..]).unwrap_err();
    assert!(e.reason.contains("re-hashed"), "{e}");
}

/// A break does not end the verification: every break is listed, the chain that broke goes
/// on after it, and the other chains are verified as if nothing happened.
#[test]
fn every_break_is_reported_and_verification_goes_on_after_it() {
    let (mut a, mut b) = (Chain::new(), Chain::new());
    let mut lines = Vec::new();
    for i in 1..=6 {
        lines.push(a.seal(&mut event("a", i)));
        lines.push(b.seal(&mut event("b", i)));
    }
    // a's seq 2 (line 3) altered in place; a's seq 5 (line 9) removed: a's seq 6 is on line 10.
    lines[2] = String::from_utf8(lines[2].clone())
        .unwrap()
        .replace("tool 2", "tool 7")
        .into_bytes();
    lines.remove(8);
    let data = file(&lines);
    let r = verify_report(&data[..], None);
    let at: Vec<usize> = r.breaks.iter().map(|b| b.line).collect();
    assert_eq!(at, [3, 10], "{:#?}", r.breaks);
    assert!(r.breaks[0].reason.contains("altered"), "{:?}", r.breaks[0]);
    assert!(
        r.breaks[1].reason.contains("jumps from seq 4 to 6"),
        "{:?}",
        r.breaks[1]
    );
    assert_eq!(r.verdict(), Verdict::Broken);
    assert_eq!(r.to_json()["broken"], true);
    assert!(r.describe("f")[0].starts_with("BROKEN: 2 break(s)"));
    // Everything else verified: b whole, a around its breaks (seq 1, 3, 4, 6).
    assert_eq!(r.chains.get("b"), Some(&6));
    assert_eq!(r.chains.get("a"), Some(&6));
    assert_eq!(r.first.get("a"), Some(&6));
    assert_eq!(r.events, 6 + 4);
    // The strict form still fails, with the first break.
    assert_eq!(verify_lines(&data[..]).unwrap_err().line, 3);
    // A line too long is a break, skipped; the lines after it are read (seq 2 on line 3
    // links to seq 1).
    let mut long = b"{\"x\":\"".to_vec();
    long.resize(MAX_LINE_BYTES + 10, b'y');
    let mut lines = chain_of(2);
    lines.insert(1, long);
    let r = verify_report(&file(&lines)[..], None);
    assert_eq!(r.breaks.len(), 1, "{:#?}", r.breaks);
    assert_eq!(r.breaks[0].line, 2);
    assert!(r.breaks[0].reason.contains("longer than"));
    assert_eq!((r.events, r.chains.get("a")), (2, Some(&2)));
}

/// A controller "refused" alert about agent `agent`'s event `seq` whose hash is `hash`.
fn refusal(agent: &str, seq: u32, hash: &str) -> Vec<u8> {
    to_canonical(&serde_json::json!({
        "agentId": agent, "alert": "refused", "eventType": "CHAIN_ALERT",
        "eventHash": hash, "seq": seq, "sourceType": "controller",
        "detail": format!("event {seq} was refused"),
    }))
}

/// A controller record of an event it refused (over the size limit) names its seq and hash:
/// the hole is a break, explained, and the chain goes on after it. Consecutive refusals are
/// each a break of their own.
#[test]
fn a_refused_event_is_one_break_and_its_chain_goes_on() {
    let mut a = Chain::new();
    let mut lines: Vec<Vec<u8>> = (1..=2).map(|i| a.seal(&mut event("a", i))).collect();
    for i in 3..=5 {
        let mut e = event("a", i);
        a.seal(&mut e);
        lines.push(refusal("a", i, &hex::encode(e.hash.unwrap())));
    }
    lines.extend((6..=7).map(|i| a.seal(&mut event("a", i))));
    let r = verify_report(&file(&lines)[..], None);
    assert_eq!(r.breaks.len(), 3, "{:#?}", r.breaks);
    for (b, seq) in r.breaks.iter().zip(3..) {
        assert_eq!(b.line, seq);
        assert!(
            b.reason
                .contains(&format!("seq {seq} of agent \"a\" missing"))
                && b.reason.contains("refused"),
            "{b:?}"
        );
    }
    assert_eq!((r.events, r.first["a"], r.chains["a"]), (4, 6, 7));
    assert_eq!(r.alerts.len(), 3);
}

/// After a genuine refusal, an editor deletes the events that follow and puts forged
/// refusals (their claimed hashes) in their place: each forged refusal is a break more.
#[test]
fn forged_refusals_after_a_real_one_each_add_a_break() {
    let mut a = Chain::new();
    let mut lines: Vec<Vec<u8>> = (1..=2).map(|i| a.seal(&mut event("a", i))).collect();
    let mut hidden = Vec::new();
    for i in 3..=5 {
        let mut e = event("a", i);
        let line = a.seal(&mut e);
        hidden.push((line, hex::encode(e.hash.unwrap())));
    }
    let rest: Vec<Vec<u8>> = (6..=7).map(|i| a.seal(&mut event("a", i))).collect();
    // The genuine file: seq 3 refused, 4 and 5 stored.
    let mut genuine = lines.clone();
    genuine.push(refusal("a", 3, &hidden[0].1));
    genuine.extend(hidden[1..].iter().map(|(l, _)| l.clone()));
    genuine.extend(rest.clone());
    let before = verify_report(&file(&genuine)[..], None);
    assert_eq!(before.breaks.len(), 1, "{:#?}", before.breaks);
    // The edited file: 4 and 5 deleted, forged refusals in their place.
    lines.extend((3..=5).map(|i| refusal("a", i, &hidden[i as usize - 3].1)));
    lines.extend(rest);
    let after = verify_report(&file(&lines)[..], None);
    assert_eq!(after.breaks.len(), 3, "{:#?}", after.breaks);
    assert!(after.breaks[2].reason.contains("seq 5 of agent"));
}

/// In a store, a record is the controller's by where it came from: an agent's row that
/// looks like a controller "refused" alert about another agent's chain is verified as the
/// agent event it claims to be (and breaks), and the other agent's chain is untouched.
#[test]
fn a_stored_agent_row_never_passes_for_a_controller_record() {
    let mut victim = Chain::new();
    let lines: Vec<(Vec<u8>, String)> = (1..=5)
        .map(|i| {
            let mut e = event("victim", i);
            let l = victim.seal(&mut e);
            (l, hex::encode(e.hash.unwrap()))
        })
        .collect();
    let forged = refusal("victim", 3, &lines[2].1);
    let mut v = Verifier::new(None);
    for (i, (l, _)) in lines[..2].iter().enumerate() {
        v.push_stored(i + 1, l, false, "victim").unwrap();
    }
    // The hostile agent's row, stored as an agent's (seq > 0 in the store).
    assert!(v.push_stored(3, &forged, false, "victim").is_err());
    for (i, (l, _)) in lines[2..].iter().enumerate() {
        v.push_stored(i + 4, l, false, "victim").unwrap();
    }
    // A genuine controller row (stored by the controller itself) is still one.
    let alert = br#"{"agentId":"victim","detail":"note","eventType":"CHAIN_ALERT","sourceType":"controller"}"#;
    v.push_stored(9, alert, true, "victim").unwrap();
    let r = v.finish();
    assert_eq!(r.breaks.len(), 1, "{:#?}", r.breaks);
    assert_eq!(r.breaks[0].line, 3);
    assert!(!r.breaks[0].reason.contains("refused"), "{:?}", r.breaks[0]);
    assert_eq!((r.events, r.first["victim"], r.chains["victim"]), (5, 1, 5));
    assert_eq!(r.alerts, [(9, "note".to_owned())]);
    // The same rows read by content (a file) would blame the controller.
    let mut by_content = Verifier::new(None);
    let _ = by_content.push(1, &lines[0].0);
    let _ = by_content.push(2, &lines[1].0);
    assert!(by_content.push(3, &forged).is_err());
}

/// In a store, an agent's event is on the chain of the agent that uploaded it: a hostile
/// agent's well-formed event naming another agent (its seq, its prevHash) is a break of its
/// own, and the other agent's chain is verified whole.
#[test]
fn a_stored_event_naming_another_agent_touches_no_chain_of_it() {
    let mut victim = Chain::new();
    let lines: Vec<Vec<u8>> = (1..=4)
        .map(|i| victim.seal(&mut event("victim", i)))
        .collect();
    // What the hostile agent uploads: seq 3 of "victim", over victim's real seq 2.
    let mut fork = Chain::new();
    for i in 1..=2 {
        fork.seal(&mut event("victim", i));
    }
    let mut other = event("victim", 3);
    other.tool_name = Some("forged".into());
    let forged = fork.seal(&mut other);
    let mut v = Verifier::new(None);
    v.push_stored(1, &lines[0], false, "victim").unwrap();
    v.push_stored(2, &lines[1], false, "victim").unwrap();
    let e = v.push_stored(3, &forged, false, "evil").unwrap_err();
    assert!(e.reason.contains("stored as agent \"evil\""), "{e}");
    v.push_stored(4, &lines[2], false, "victim").unwrap();
    v.push_stored(5, &lines[3], false, "victim").unwrap();
    let r = v.finish();
    assert_eq!(r.breaks.len(), 1, "{:#?}", r.breaks);
    assert_eq!((r.events, r.first["victim"], r.chains["victim"]), (4, 1, 4));
}

#[test]
fn removed_and_reordered_lines_are_detected() {
    let lines = chain_of(3);
    let e = verify_lines(&file(&[lines[0].clone(), lines[2].clone()])[..]).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.reason.contains("jumps from seq 1 to 3"), "{e}");
    let e = verify_lines(&file(&[lines[1].clone()])[..]).unwrap_err();
    assert!(e.reason.contains("jumps from seq 0 to 2"), "{e}");
    let mut cut = file(&lines);
    cut.pop();
    assert!(
        verify_lines(&cut[..])
            .unwrap_err()
            .reason
            .contains("incomplete")
    );
}

/// The bytes on the wire and in SIEM files do not change with the types behind them (the chain
/// hashes depend on them): a proxy's sealed events, pinned.
#[test]
fn sealed_events_are_pinned_byte_for_byte() {
    let mut e = event("a", 1);
    e.session_id = Some("s".into());
    e.server_name = Some("srv".into());
    e.source_type = Some("agent_tool_call".into());
    e.request_id = Some("1".into());
    e.content = Some("{\"k\":\"v\\n\"}".into());
    e.content_truncated = Some(true);
    e.content_sha256 = Some("00".into());
    e.session_tool_calls = Some(vec!["x".to_string()].into());
    e.decision = Some(crate::EventDecision {
        action: crate::Action::WouldBlock,
        mode: Some(crate::Mode::StepUp),
        reason: Some("r".into()),
        rule: Some("servers[0]".into()),
    });
    e.policy_version = Some("1".into());
    e.latency_us = Some(5);
    e.is_error = Some(false);
    let mut c = Chain::new();
    let a = c.seal(&mut e);
    let mut d = event("a", 2);
    d.event_type = EventType::EventsDropped;
    d.detail = Some(serde_json::to_value(crate::Dropped::new(3, "full")).unwrap());
    let b = c.seal(&mut d);
    assert_eq!(
        String::from_utf8(a).unwrap(),
        r#"{"agentId":"a","content":"{\"k\":\"v\\n\"}","contentSha256":"00","contentTruncated":true,"decision":{"action":"would_block","mode":"step_up","reason":"r","rule":"servers[0]"},"eventId":"id-1","eventType":"TOOL_CALL_PRE","hash":"e5008ec60fa2fabadf6f645c426c6240236a049973591a409f0ad7d3b3043808","hostname":"h","isError":false,"latencyUs":5,"policyVersion":"1","prevHash":"0000000000000000000000000000000000000000000000000000000000000000","requestId":"1","seq":1,"serverName":"srv","sessionId":"s","sessionToolCalls":["x"],"sourceType":"agent_tool_call","tenantId":"t","timestamp":"2026-01-01T00:00:00Z","toolName":"tool 1 é","user":"u"}"#
    );
    assert_eq!(
        String::from_utf8(b).unwrap(),
        r#"{"agentId":"a","detail":{"dropped":3,"reason":"full"},"eventId":"id-2","eventType":"EVENTS_DROPPED","hash":"426d34ed272750ff4cab16854cd613c5ba16e5af2b07c6224fbcda3b51e9305a","hostname":"h","prevHash":"e5008ec60fa2fabadf6f645c426c6240236a049973591a409f0ad7d3b3043808","seq":2,"tenantId":"t","timestamp":"2026-01-01T00:00:00Z","toolName":"tool 2 é","user":"u"}"#
    );
}

/// The agent's records (its own, and a proxy's it admitted) as they were written when the agent
/// still edited JSON maps: parsed into the typed event and sealed, they come out the same bytes.
#[test]
fn agent_records_are_pinned_byte_for_byte() {
    let own = r#"{"agentId":"a","detail":"started v1","eventId":"e1","eventType":"AGENT_STARTED","hash":"5c8a0f284d2123c029a5beb11bb3e165fb87372d201f96ac5495a145d827a055","hostname":"h","prevHash":"0000000000000000000000000000000000000000000000000000000000000000","seq":1,"sourceType":"agent","tenantId":"t","timestamp":"2026-01-01T00:00:00Z"}"#;
    let admitted = r#"{"agentId":"a","clientName":"c","clockSkewSecs":-400,"content":"x","decision":{"action":"approved","mode":"block","reason":"r","rule":"q"},"eventId":"e2","eventIdReused":true,"eventType":"TOOL_CALL_POST","hash":"7d3401e92ff94e8fa0d1b154f2c910faa8cdd95c8baaa4d50dd4376cee163310","hostname":"h","isError":true,"latencyUs":9,"policyVersion":"1","prevHash":"5c8a0f284d2123c029a5beb11bb3e165fb87372d201f96ac5495a145d827a055","proxyEventId":"p1","quotaOwner":"o","requestId":"1","seq":2,"serverName":"srv","sessionId":"s","sessionToolCalls":[],"sourceType":"agent_tool_call","tenantId":"t","timestamp":"2026-01-01T00:00:00Z","toolName":"t","user":"u"}"#;
    let mut c = Chain::new();
    for line in [own, admitted] {
        let mut e: Event<'static> = serde_json::from_str(line).unwrap();
        e.seq = None;
        e.prev_hash = None;
        e.hash = None;
        assert_eq!(String::from_utf8(c.seal(&mut e)).unwrap(), line);
    }
    // An event off the chain (a proxy's to its agent) has no chain fields at all.
    let mut e: Event<'static> = serde_json::from_str(admitted).unwrap();
    (e.seq, e.prev_hash, e.hash) = (None, None, None);
    let text = serde_json::to_string(&e).unwrap();
    assert!(!text.contains("seq") && !text.contains("Hash") && !text.contains("\"hash\""));
}

/// Every event type the code raises or reads parses, and writes back the same name.
#[test]
fn every_event_type_parses() {
    for name in [
        "TOOL_CALL_PRE",
        "TOOL_CALL_POST",
        "APPROVAL_REQUESTED",
        "APPROVAL_DECIDED",
        "CONFIG_WRAPPED",
        "CONFIG_DRIFT",
        "CONFIG_INVALID",
        "POLICY_APPLIED",
        "POLICY_REJECTED",
        "POLICY_STALE",
        "AGENT_STARTED",
        "AGENT_ENROLLED",
        "EVENTS_DROPPED",
        "EVENTS_REFUSED",
        "EVENT_QUARANTINED",
        "SPOOL_CORRUPT",
        "PROXY_TAMPERED",
        "CHAIN_ALERT",
        "CHAIN_HEAD",
    ] {
        let t = EventType::parse(name).unwrap_or_else(|| panic!("{name} does not parse"));
        assert_eq!(t.as_str(), name);
        let json: EventType = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(json, t);
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{name}\""));
    }
    assert_eq!(EventType::parse("TEST"), None);
    // Every type the sources name in a string literal is one of them: the workspace is scanned
    // for `"SCREAMING_CASE"` literals next to an event word.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut missing = Vec::new();
    for dir in [
        "agent/src",
        "proxy/src",
        "controller/src",
        "endpoint/src",
        "hosts/src",
    ] {
        scan(&root.join(dir), &mut missing);
    }
    assert!(
        missing.is_empty(),
        "event types the code uses but EventType lacks: {missing:?}"
    );
}

fn scan(dir: &std::path::Path, missing: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            scan(&p, missing);
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for line in text.lines() {
            let lower = line.to_ascii_lowercase();
            if !(lower.contains("event") || lower.contains("raise") || lower.contains("note(")) {
                continue;
            }
            for (i, part) in line.split('"').enumerate() {
                let word = i % 2 == 1
                    && part.len() >= 5
                    && part.contains('_')
                    && part.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
                if word && EventType::parse(part).is_none() && !NOT_EVENT_TYPES.contains(&part) {
                    missing.push(format!("{}: {part}", p.display()));
                }
            }
        }
    }
}

/// Screaming-case strings near an event word that are not event types.
const NOT_EVENT_TYPES: [&str; 3] = ["BENCH_EVENTS", "THOTH_EVENTS", "CONFIG_"];
