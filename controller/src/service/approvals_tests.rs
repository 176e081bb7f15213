//! The approval queue driven directly (no gRPC): submit, list, decide, expire, withdraw, limits,
//! tenant isolation, roles, audit, and the wake-up of the agent's stream.

use std::sync::Arc;

use super::*;
use crate::pki::Role;
use crate::store::sqlite::SqliteStore;

fn controller() -> (tempfile::TempDir, Arc<Controller>) {
    let dir = tempfile::tempdir().unwrap();
    crate::datadir::init(dir.path(), None).unwrap();
    let data = crate::DataDir::load(dir.path()).unwrap();
    let ctl = Controller::new(data, Arc::new(SqliteStore::in_memory().unwrap())).unwrap();
    (dir, ctl)
}

fn caller(name: &str, role: Role, scope: Option<&str>) -> Caller {
    Caller {
        name: name.into(),
        role,
        scope: scope.map(TenantId::trusted),
        fingerprint: format!("sha256:{name}"),
    }
}

fn agent(id: &str, tenant: &str) -> AgentRecord {
    AgentRecord {
        agent_id: id.into(),
        tenant: tenant.into(),
        hostname: format!("{id}.example"),
        ..AgentRecord::default()
    }
}

fn request(id: &str) -> NewApproval {
    NewApproval {
        approval_id: id.into(),
        session_id: "s1".into(),
        server_name: "files".into(),
        tool_name: "write_file".into(),
        content: "{\n \"path\": \"/etc/x\"\n}".into(),
        reason: "step_up".into(),
        user: "alice".into(),
        timeout_secs: 45,
        arguments_sha256: "a".repeat(64),
        client_name: "claude-desktop".into(),
        approvers: vec!["user".into(), "admin".into()],
        remember: "once".into(),
        expires_unix_ms: 0,
    }
}

#[tokio::test]
async fn submit_list_decide_and_the_agent_is_woken_and_the_decision_audited() {
    let (_dir, ctl) = controller();
    let svc = ApprovalService(&ctl);
    let a = agent("ag1", "acme");
    let mut wake = ctl.approvals.agent("ag1");
    let rec = svc.submit(&a, request("id-1")).await.unwrap();
    assert_eq!(rec.state, "pending");
    assert_eq!(rec.hostname, "ag1.example");
    assert!(rec.expires_ms >= rec.requested_ms + 600_000);
    // Idempotent by id for the same agent; another agent cannot take it.
    let again = svc.submit(&a, request("id-1")).await.unwrap();
    assert_eq!(again.approval_id, "id-1");
    let e = svc
        .submit(&agent("ag2", "acme"), request("id-1"))
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::AlreadyExists(_)), "{e:?}");

    let approver = caller("ann", Role::Approver, Some("acme"));
    let list = svc.list(&approver, "", false).await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(svc.agent_decisions("ag1").await.unwrap().is_empty());

    let done = svc
        .decide(&approver, "id-1", true, "15m", "ok for today")
        .await
        .unwrap();
    assert_eq!(done.state, "approved");
    assert_eq!(done.decided_by, "ann");
    assert_eq!(done.decision_remember, "15m");
    assert!(wake.has_changed().unwrap(), "the agent's stream is woken");
    let _ = wake.borrow_and_update();
    let pushed = svc.agent_decisions("ag1").await.unwrap();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].approval_id, "id-1");

    // A second decision is refused, clearly.
    let e = svc
        .decide(&approver, "id-1", false, "", "")
        .await
        .unwrap_err();
    match e {
        ServiceError::FailedPrecondition(m) => {
            assert!(m.contains("already approved by ann"), "{m}")
        }
        e => panic!("{e:?}"),
    }
    assert!(svc.list(&approver, "", false).await.unwrap().is_empty());
    assert_eq!(svc.list(&approver, "", true).await.unwrap().len(), 1);

    let audit = ctl.store.list_audit(None, 0, 100).unwrap();
    let d: Vec<_> = audit
        .iter()
        .filter(|r| r.action == "approval.decide" && r.outcome == "ok")
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].actor, "ann");
    assert_eq!(d[0].tenant, "acme");
    assert!(
        d[0].detail.contains("\"approvalId\":\"id-1\""),
        "{}",
        d[0].detail
    );
    assert!(d[0].detail.contains("\"approved\":true"));
}

#[tokio::test]
async fn tenants_are_isolated_and_viewers_refused() {
    let (_dir, ctl) = controller();
    let svc = ApprovalService(&ctl);
    svc.submit(&agent("ag1", "acme"), request("acme-1"))
        .await
        .unwrap();
    let other = caller("olga", Role::Admin, Some("other"));
    // Another tenant's id: not found, never "forbidden".
    for e in [
        svc.get(&other, "acme-1").await.unwrap_err(),
        svc.decide(&other, "acme-1", true, "", "")
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e, ServiceError::NotFound("no approval acme-1".into()));
    }
    assert!(svc.list(&other, "", true).await.unwrap().is_empty());
    let e = svc.list(&other, "acme", false).await.unwrap_err();
    assert!(matches!(e, ServiceError::PermissionDenied(_)), "{e:?}");
    let viewer = caller("vic", Role::Viewer, Some("acme"));
    for e in [
        svc.list(&viewer, "", false).await.unwrap_err(),
        svc.get(&viewer, "acme-1").await.unwrap_err(),
        svc.decide(&viewer, "acme-1", true, "", "")
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(&e, ServiceError::PermissionDenied(m) if m.contains("approver or higher")),
            "{e:?}"
        );
    }
    let refused = ctl
        .store
        .list_audit(None, 0, 100)
        .unwrap()
        .into_iter()
        .filter(|r| r.actor == "vic" && r.outcome.starts_with("refused"))
        .count();
    assert_eq!(refused, 3);
    // Still pending; an unscoped admin sees it in any tenant.
    let root = caller("root", Role::Admin, None);
    assert_eq!(svc.get(&root, "acme-1").await.unwrap().state, "pending");
    assert_eq!(svc.list(&root, "", false).await.unwrap().len(), 1);
}

#[tokio::test]
async fn expiry_withdrawal_and_user_only_requests_are_refused_to_admins() {
    let (_dir, ctl) = controller();
    let svc = ApprovalService(&ctl);
    let a = agent("ag1", "acme");
    let admin = caller("root", Role::Admin, None);
    svc.submit(&a, request("w-1")).await.unwrap();
    // Withdraw is the agent's own: another agent's withdraw does nothing.
    svc.withdraw(&agent("ag2", "acme"), "w-1").await.unwrap();
    assert_eq!(svc.get(&admin, "w-1").await.unwrap().state, "pending");
    svc.withdraw(&a, "w-1").await.unwrap();
    let e = svc.decide(&admin, "w-1", true, "", "").await.unwrap_err();
    assert!(
        matches!(&e, ServiceError::FailedPrecondition(m) if m.contains("withdrawn")),
        "{e:?}"
    );

    // Expired: by the store's clock, moved back.
    svc.submit(&a, request("e-1")).await.unwrap();
    let n = ctl.store.expire_approvals(now_ms() + 11 * 60_000).unwrap();
    assert_eq!(n, 1);
    let e = svc.decide(&admin, "e-1", true, "", "").await.unwrap_err();
    assert!(
        matches!(&e, ServiceError::FailedPrecondition(m) if m.contains("expired")),
        "{e:?}"
    );

    let mut user_only = request("u-1");
    user_only.approvers = vec!["user".into()];
    svc.submit(&a, user_only).await.unwrap();
    let e = svc.decide(&admin, "u-1", true, "", "").await.unwrap_err();
    assert!(matches!(e, ServiceError::FailedPrecondition(_)), "{e:?}");
}

#[tokio::test]
async fn hostile_and_oversized_requests_are_refused() {
    let (_dir, ctl) = controller();
    let svc = ApprovalService(&ctl);
    let a = agent("ag1", "acme");
    type Spoil = Box<dyn Fn(&mut NewApproval)>;
    let cases: Vec<(&str, Spoil)> = vec![
        ("id", Box::new(|r| r.approval_id = "x/../y".into())),
        ("long id", Box::new(|r| r.approval_id = "a".repeat(65))),
        ("server", Box::new(|r| r.server_name = "s".repeat(257))),
        ("tool ctl", Box::new(|r| r.tool_name = "rm\u{1b}[2J".into())),
        ("tool bidi", Box::new(|r| r.tool_name = "a\u{202E}b".into())),
        ("content", Box::new(|r| r.content = "x".repeat(4097))),
        ("content ctl", Box::new(|r| r.content = "a\rb".into())),
        ("reason", Box::new(|r| r.reason = "x".repeat(1025))),
        ("user", Box::new(|r| r.user = "u\n".into())),
        ("sha", Box::new(|r| r.arguments_sha256 = "A".repeat(64))),
        ("approvers", Box::new(|r| r.approvers = vec!["root".into()])),
        ("remember", Box::new(|r| r.remember = "25h".into())),
        ("remember junk", Box::new(|r| r.remember = "-5m".into())),
        ("past", Box::new(|r| r.expires_unix_ms = 1)),
        (
            "far",
            Box::new(|r| r.expires_unix_ms = now_ms() + 25 * 3_600_000),
        ),
        ("no tool", Box::new(|r| r.tool_name.clear())),
    ];
    for (name, f) in cases {
        let mut r = request("ok-1");
        f(&mut r);
        let e = svc.submit(&a, r).await.unwrap_err();
        assert!(
            matches!(e, ServiceError::InvalidArgument(_)),
            "{name}: {e:?}"
        );
    }
    assert!(ctl.store.list_approvals(None, true, 10).unwrap().is_empty());
    // The decision's own bounds.
    svc.submit(&a, request("ok-1")).await.unwrap();
    let admin = caller("root", Role::Admin, None);
    for (remember, comment) in [
        ("48h", ""),
        ("forever", ""),
        ("", "\u{7}"),
        ("", &*"c".repeat(1025)),
    ] {
        let e = svc
            .decide(&admin, "ok-1", true, remember, comment)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ServiceError::InvalidArgument(_)),
            "{remember} {e:?}"
        );
    }
    assert_eq!(parse_remember("2h").unwrap(), "2h");
    assert_eq!(parse_remember("120m").unwrap(), "2h");
    // What an agent may send, as humantime writes a duration: stored in the wire form.
    let mut r = request("hm-1");
    r.remember = "1h 30m".into();
    assert_eq!(svc.submit(&a, r).await.unwrap().remember, "90m");
    assert_eq!(parse_remember("session").unwrap(), "session");
    assert!(parse_remember("0s").is_err());
}

#[tokio::test]
async fn pending_limits_per_agent_and_tenant() {
    let (_dir, ctl) = controller();
    let svc = ApprovalService(&ctl);
    let a = agent("ag1", "acme");
    for i in 0..MAX_PENDING_PER_AGENT {
        svc.submit(&a, request(&format!("p-{i}"))).await.unwrap();
    }
    let e = svc.submit(&a, request("p-over")).await.unwrap_err();
    assert!(matches!(e, ServiceError::ResourceExhausted(_)), "{e:?}");
    // Another agent is not held back by the first one's limit.
    svc.submit(&agent("ag2", "acme"), request("q-0"))
        .await
        .unwrap();
    // The tenant's limit: fill it directly through the store, then one more is refused.
    let mut n = 1 + MAX_PENDING_PER_AGENT;
    let mut k = 0;
    while n < MAX_PENDING_PER_TENANT {
        let ag = agent(&format!("bulk{k}"), "acme");
        for i in 0..MAX_PENDING_PER_AGENT.min(MAX_PENDING_PER_TENANT - n) {
            svc.submit(&ag, request(&format!("b-{k}-{i}")))
                .await
                .unwrap();
            n += 1;
        }
        k += 1;
    }
    let e = svc
        .submit(&agent("late", "acme"), request("late-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ServiceError::ResourceExhausted(m) if m.contains("tenant acme")),
        "{e:?}"
    );
    // Another tenant is not affected.
    svc.submit(&agent("late", "other"), request("late-2"))
        .await
        .unwrap();
    // Listing is bounded.
    let root = caller("root", Role::Admin, None);
    assert_eq!(
        svc.list(&root, "acme", false).await.unwrap().len(),
        MAX_LIST as usize
    );
}

#[tokio::test]
async fn watches_follow_the_tenant_and_are_bounded_per_admin() {
    let (_dir, ctl) = controller();
    let svc = ApprovalService(&ctl);
    svc.submit(&agent("ag1", "acme"), request("before"))
        .await
        .unwrap();
    let ann = caller("ann", Role::Approver, Some("acme"));
    let mut w = svc.watch(&ann, "").await.unwrap();
    assert_eq!(w.next().await.unwrap().approval_id, "before");
    svc.submit(&agent("ag9", "other"), request("elsewhere"))
        .await
        .unwrap();
    svc.submit(&agent("ag1", "acme"), request("after"))
        .await
        .unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next.approval_id, "after",
        "the other tenant's request is not shown"
    );
    let mut more = Vec::new();
    for _ in 1..MAX_WATCHES_PER_ADMIN {
        more.push(svc.watch(&ann, "").await.unwrap());
    }
    let Err(e) = svc.watch(&ann, "").await else {
        panic!("a fifth watch was opened");
    };
    assert!(matches!(e, ServiceError::ResourceExhausted(_)), "{e:?}");
    drop(more);
    let mut last = svc.watch(&ann, "").await.unwrap();
    assert_eq!(last.next().await.unwrap().approval_id, "before");
    // The server stopping ends every watch (its client reconnects to the next server).
    ctl.approvals.close();
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), last.next()).await;
    assert!(end.unwrap().is_none());
    assert!(w.next().await.is_none());
}

#[test]
fn notifier_bodies_escape_markup_and_carry_the_command() {
    use super::super::approval_notify::{NotifierKind, body, signature};
    let rec = ApprovalRecord {
        approval_id: "id-9".into(),
        tenant: "acme".into(),
        user: "<!channel> bob".into(),
        tool_name: "write".into(),
        ..ApprovalRecord::default()
    };
    let slack: serde_json::Value =
        serde_json::from_slice(&body(NotifierKind::Slack, &rec)).unwrap();
    let text = slack["text"].as_str().unwrap();
    assert!(text.contains("&lt;!channel&gt; bob"), "{text}");
    assert!(text.contains("thothctl approvals approve id-9"), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&body(NotifierKind::Json, &rec)).unwrap();
    assert_eq!(json["request"]["approvalId"], "id-9");
    assert_eq!(
        signature("Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn notifier_settings_are_checked_by_name() {
    use crate::config::ControllerConfig;
    let ok: ControllerConfig = toml::from_str(
        "[[approval_notifiers]]\nkind = \"json\"\nurl = \"http://127.0.0.1:1/x\"\ntenants = [\"acme\"]\n",
    )
    .unwrap();
    assert_eq!(ok.approval_notifiers.len(), 1);
    ok.check().unwrap();
    let err = toml::from_str::<ControllerConfig>(
        "[[approval_notifiers]]\nkind = \"json\"\nurl = \"http://x/\"\nsecret = \"inline\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("secret"), "{err}");
    let err = toml::from_str::<ControllerConfig>(
        "[[approval_notifiers]]\nkind = \"teams\"\nurl = \"http://x/\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("teams"), "{err}");
    let bad: ControllerConfig =
        toml::from_str("[[approval_notifiers]]\nkind = \"slack\"\nurl = \"file:///etc/passwd\"\n")
            .unwrap();
    assert!(bad.check().is_err());
}
