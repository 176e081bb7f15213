use super::*;

/// Issue 16: an approval's evidence reaches the event chain as APPROVAL_REQUESTED and
/// APPROVAL_DECIDED naming the approval, the caller's OS user (not the proxy's claim), the
/// server, tool, client, the deciding channel and approver, and the latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_evidence_is_on_the_chain_with_who_decided() {
    use crate::daemon::approval::{Caller, CancelToken, Prompt, UserAnswer, UserChannel};
    struct Yes;
    impl UserChannel for Yes {
        fn ask(&self, _: u32, _: &Prompt, _: std::time::Instant, _: CancelToken) -> UserAnswer {
            UserAnswer::Allowed { by: "alice".into() }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c: AgentConfig =
        toml::from_str(include_str!("../../thoth-agent.example.toml")).unwrap();
    c.state_dir = dir.path().join("state");
    c.socket_path = dir.path().join("agent.sock");
    let sh = Shared::new(c).unwrap();
    let (spool, _) = pipeline::start(&dir.path().join("spool"), 1 << 20, |t, d| {
        agent_event("t", Some("a"), t, d)
    })
    .unwrap();
    let _ = sh.spool.set(spool);
    sh.set_spool_identity("a");
    sh.approvals.set_user_channel(Arc::new(Yes));
    let req = thoth_proto::fleet::ApprovalRequest {
        user: "mallory".into(),
        session_id: "s1".into(),
        server_name: "fs".into(),
        tool_name: "write_file".into(),
        arguments_sha256: "ab".repeat(32),
        client_name: "claude-desktop".into(),
        approvers: vec!["user".into()],
        timeout_secs: 10,
        ..Default::default()
    };
    let caller = Caller {
        uid: 1000,
        name: "alice".into(),
    };
    let d = sh.approvals.request(caller, req).await;
    assert!(d.approved, "{d:?}");
    let mut events: Vec<Value> = Vec::new();
    for _ in 0..500 {
        let got = sh.spool.get().unwrap().read(0, 100, 1 << 20).await.unwrap();
        events = got
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .filter(|e: &Value| {
                e["eventType"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("APPROVAL_"))
            })
            .collect();
        if events.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(events.len(), 2, "{events:?}");
    let (asked, decided) = (&events[0], &events[1]);
    assert_eq!(asked["eventType"], "APPROVAL_REQUESTED");
    assert_eq!(decided["eventType"], "APPROVAL_DECIDED");
    for e in [asked, decided] {
        assert_eq!(e["approvalId"], d.approval_id.as_str(), "{e}");
        assert_eq!(e["user"], "alice");
        assert_eq!(e["serverName"], "fs");
        assert_eq!(e["toolName"], "write_file");
        assert_eq!(e["sessionId"], "s1");
        assert_eq!(e["clientName"], "claude-desktop");
    }
    assert_eq!(asked["detail"]["channels"], serde_json::json!(["user"]));
    assert_eq!(decided["detail"]["channel"], "user");
    assert_eq!(decided["detail"]["decidedBy"], "alice");
    assert_eq!(decided["detail"]["decision"], "approved");
    assert_eq!(decided["detail"]["remember"], "once");
    assert!(decided["detail"]["latencyMs"].is_u64());
}

/// Review (Low-Medium): a duration grant outlived a policy change. Applying a new bundle
/// drops every grant: the identical call asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_policy_drops_the_approval_grants() {
    use crate::daemon::approval::{Caller, CancelToken, Prompt, UserAnswer, UserChannel};
    use base64::Engine;
    use ed25519_dalek::SigningKey;
    struct Yes(std::sync::atomic::AtomicUsize);
    impl UserChannel for Yes {
        fn ask(&self, _: u32, _: &Prompt, _: std::time::Instant, _: CancelToken) -> UserAnswer {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            UserAnswer::Allowed { by: "alice".into() }
        }
    }
    let bundle = |version: u64| crate::daemon::test_bundle::signed_bundle(version, "servers: []\n");
    let dir = tempfile::tempdir().unwrap();
    let root = base64::engine::general_purpose::STANDARD
        .encode(SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes());
    let text = format!(
        "controller_url = \"https://127.0.0.1:9\"\ntenant = \"acme\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"{root}\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\n",
        "ab".repeat(32),
        dir.path().join("state").display(),
        dir.path().join("agent.sock").display()
    );
    let sh = Shared::new(toml::from_str(&text).unwrap()).unwrap();
    sh.state.create().unwrap();
    let user = Arc::new(Yes(0.into()));
    sh.approvals
        .set_user_channel(Arc::clone(&user) as Arc<dyn UserChannel>);
    sh.apply(&bundle(1));
    let req = thoth_proto::fleet::ApprovalRequest {
        session_id: "s1".into(),
        server_name: "fs".into(),
        tool_name: "write_file".into(),
        arguments_sha256: "ab".repeat(32),
        approvers: vec!["user".into()],
        remember: "15m".into(),
        timeout_secs: 10,
        ..Default::default()
    };
    let caller = || Caller {
        uid: 1000,
        name: "alice".into(),
    };
    assert!(sh.approvals.request(caller(), req.clone()).await.approved);
    let d = sh.approvals.request(caller(), req.clone()).await;
    assert_eq!(d.channel, "remembered", "{d:?}");
    sh.apply(&bundle(2));
    assert_eq!(sh.current.borrow().as_ref().map(|c| c.version), Some(2));
    let d = sh.approvals.request(caller(), req).await;
    assert_eq!(d.channel, "user", "asked again: {d:?}");
    assert_eq!(user.0.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Review M5: an event the agent raised itself carried a user's ~3.9 MB of wrapper
/// arguments (CONFIG_DRIFT "added --x AAAA…"); the controller refuses events over 1 MiB, so
/// it jammed the upload. Now every agent event's detail is bounded, with the whole's digest.
#[test]
fn agent_events_are_bounded_with_the_digest_of_the_whole() {
    use sha2::Digest as _;
    let huge = format!(
        "~/.config/Claude/x.json: added --x {}",
        "A".repeat(3_900_000)
    );
    let sha = hex::encode(sha2::Sha256::digest(huge.as_bytes()));
    let ev = agent_event(
        "t",
        Some("a"),
        EventType::ConfigDrift,
        Value::String(huge.clone()),
    );
    let text = serde_json::to_string(&ev).unwrap();
    assert!(
        text.len() < 80 << 10,
        "an agent event of {} bytes",
        text.len()
    );
    assert!(
        text.contains(&sha) && text.contains("added --x AAAA"),
        "{}",
        &text[..200]
    );
    // Many small parts are bounded too.
    let parts: Vec<String> = (0..100_000).map(|i| format!("--arg{i}")).collect();
    let ev = agent_event(
        "t",
        None,
        EventType::ConfigDrift,
        serde_json::json!({"added": parts}),
    );
    assert!(serde_json::to_string(&ev).unwrap().len() < 80 << 10);
    // A small detail is kept as it is.
    let ev = agent_event(
        "t",
        None,
        EventType::AgentStarted,
        serde_json::json!({"v": "1"}),
    );
    assert_eq!(ev.detail, Some(serde_json::json!({"v": "1"})));
}
