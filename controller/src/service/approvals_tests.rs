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
    // The pending caps, apart from the rate limits (tested below).
    ctl.approvals.set_submit_rates(100_000, 100_000);
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
        serde_json::from_slice(&body(NotifierKind::Slack, &rec, 0)).unwrap();
    let text = slack["text"].as_str().unwrap();
    assert!(text.contains("&lt;!channel&gt; bob"), "{text}");
    assert!(text.contains("thothctl approvals approve id-9"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&body(NotifierKind::Json, &rec, 0)).unwrap();
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

#[tokio::test]
async fn submits_are_rate_limited_per_agent_and_per_tenant_and_recover() {
    use std::time::{Duration, Instant};
    let (_dir, ctl) = controller();
    let svc = ApprovalService(&ctl);
    let a = agent("fast", "acme");
    // Submit then withdraw frees the pending slot, but not the rate.
    for i in 0..SUBMITS_PER_AGENT {
        let id = format!("r-{i}");
        svc.submit(&a, request(&id)).await.unwrap();
        svc.withdraw(&a, &id).await.unwrap();
    }
    let e = svc.submit(&a, request("r-over")).await.unwrap_err();
    assert!(
        matches!(&e, ServiceError::ResourceExhausted(m)
            if m.contains("agent fast") && m.contains("too fast") && m.contains("30 a minute")),
        "{e:?}"
    );
    assert!(
        svc.get(&caller("root", Role::Admin, None), "r-over")
            .await
            .is_err(),
        "a refused submit is not stored"
    );
    // Another agent of the tenant is not held back by this one.
    svc.submit(&agent("calm", "acme"), request("c-1"))
        .await
        .unwrap();
    // Two seconds later one more token (30 a minute); a minute later a full burst.
    let now = Instant::now();
    ctl.approvals
        .take_submit("fast", "acme", now + Duration::from_secs(2))
        .unwrap();
    assert!(
        ctl.approvals
            .take_submit("fast", "acme", now + Duration::from_secs(2))
            .is_err()
    );
    ctl.approvals
        .take_submit("fast", "acme", now + Duration::from_secs(62))
        .unwrap();
    svc.submit(&a, request("r-again")).await.unwrap();

    // The tenant's limit, across its agents (a lower one here, to stay quick).
    ctl.approvals.set_submit_rates(30, 45);
    for i in 0..45 {
        let ag = agent(&format!("t{}", i % 2), "busy");
        svc.submit(&ag, request(&format!("t-{i}"))).await.unwrap();
    }
    let e = svc
        .submit(&agent("t9", "busy"), request("t-over"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ServiceError::ResourceExhausted(m)
            if m.contains("tenant busy") && m.contains("45 a minute")),
        "{e:?}"
    );
    // Another tenant is not affected.
    svc.submit(&agent("t9", "quiet"), request("q-1"))
        .await
        .unwrap();
}

fn ended(id: &str, tenant: &str, state: &str, decided_ms: i64) -> ApprovalRecord {
    ApprovalRecord {
        approval_id: id.into(),
        tenant: tenant.into(),
        agent_id: "ag1".into(),
        server_name: "files".into(),
        tool_name: "write_file".into(),
        arguments_sha256: "a".repeat(64),
        remember: "once".into(),
        requested_ms: decided_ms - 1000,
        expires_ms: decided_ms + 600_000,
        state: state.into(),
        decided_ms,
        ..ApprovalRecord::default()
    }
}

#[tokio::test]
async fn the_sweep_deletes_ended_requests_past_the_retention_and_keeps_the_rest() {
    let (_dir, ctl) = controller();
    let svc = ApprovalService(&ctl);
    let day = 86_400_000;
    let now = now_ms();
    for (id, state, at) in [
        ("old-w", "withdrawn", now - 31 * day),
        ("old-a", "approved", now - 40 * day),
        ("old-e", "expired", now - 30 * day - 60_000),
        ("new-d", "denied", now - 29 * day),
        ("new-w", "withdrawn", now - 1000),
    ] {
        ctl.store
            .submit_approval(&ended(id, "acme", state, at), 1000, 1000)
            .unwrap();
    }
    svc.submit(&agent("ag1", "acme"), request("live"))
        .await
        .unwrap();
    let (_, deleted) = svc.sweep().await.unwrap();
    assert_eq!(deleted, 3);
    let root = caller("root", Role::Admin, None);
    let mut left: Vec<String> = svc
        .list(&root, "acme", true)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.approval_id)
        .collect();
    left.sort();
    assert_eq!(left, ["live", "new-d", "new-w"]);
    assert_eq!(svc.sweep().await.unwrap().1, 0);
}

#[test]
fn the_store_bounds_rows_per_tenant_oldest_ended_first_never_pending() {
    use crate::store::ApprovalStore;
    let store = SqliteStore::in_memory().unwrap();
    let now = now_ms();
    for i in 0..5 {
        store
            .submit_approval(
                &ended(&format!("e-{i}"), "acme", "denied", now - 10_000 + i),
                1000,
                1000,
            )
            .unwrap();
    }
    for i in 0..3 {
        let mut p = ended(&format!("p-{i}"), "acme", "pending", 0);
        p.requested_ms = now - 20_000;
        store.submit_approval(&p, 1000, 1000).unwrap();
    }
    store
        .submit_approval(
            &ended("other", "globex", "denied", now - 50_000),
            1000,
            1000,
        )
        .unwrap();
    // Nothing is past the retention; 8 rows in acme, bound 4: the 4 oldest ended go.
    assert_eq!(store.prune_approvals(now - 100_000, 4).unwrap(), 4);
    let mut left: Vec<String> = store
        .list_approvals(None, true, 100)
        .unwrap()
        .into_iter()
        .map(|r| r.approval_id)
        .collect();
    left.sort();
    assert_eq!(left, ["e-4", "other", "p-0", "p-1", "p-2"]);
    // Pending rows are kept even over the bound; the retention deletes every ended row before it.
    assert_eq!(store.prune_approvals(now, 2).unwrap(), 2);
    assert_eq!(store.list_approvals(None, true, 100).unwrap().len(), 3);
}

#[test]
fn notifications_collapse_per_agent_and_the_queue_stays_bounded() {
    use super::super::approval_notify::{NotifierKind, body};
    use crate::approval_hub::{NOTIFY_EVERY, NotifierQueue};
    use std::time::{Duration, Instant};
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let q = NotifierQueue::new(Vec::new(), tx);
    let t0 = Instant::now();
    let rec = |id: &str, agent: &str| ApprovalRecord {
        approval_id: id.into(),
        agent_id: agent.into(),
        tenant: "acme".into(),
        ..ApprovalRecord::default()
    };
    q.offer(&rec("a-0", "ag1"), t0);
    for i in 1..=5 {
        q.offer(&rec(&format!("a-{i}"), "ag1"), t0 + Duration::from_secs(i));
    }
    let first = rx.try_recv().unwrap();
    assert_eq!((first.rec.approval_id.as_str(), first.more), ("a-0", 0));
    assert!(rx.try_recv().is_err(), "the rest are held");
    q.flush(t0 + Duration::from_secs(9));
    assert!(rx.try_recv().is_err(), "still within the window");
    q.flush(t0 + NOTIFY_EVERY);
    let next = rx.try_recv().unwrap();
    assert_eq!((next.rec.approval_id.as_str(), next.more), ("a-1", 4));
    let text: serde_json::Value =
        serde_json::from_slice(&body(NotifierKind::Slack, &next.rec, next.more)).unwrap();
    assert!(
        text["text"].as_str().unwrap().contains("and 4 more"),
        "{text}"
    );
    // Another agent is not held back; the window restarts after the flush.
    q.offer(&rec("b-0", "ag2"), t0 + NOTIFY_EVERY);
    assert_eq!(rx.try_recv().unwrap().rec.approval_id, "b-0");
    q.offer(&rec("a-6", "ag1"), t0 + Duration::from_secs(12));
    assert!(rx.try_recv().is_err());
    // A request after the window goes at once, with the held one counted in.
    q.offer(&rec("a-7", "ag1"), t0 + Duration::from_secs(21));
    let n = rx.try_recv().unwrap();
    assert_eq!((n.rec.approval_id.as_str(), n.more), ("a-7", 1));
    // 1000 agents at once: the queue holds 4, the rest are dropped without waiting.
    for i in 0..1000 {
        q.offer(&rec(&format!("m-{i}"), &format!("m{i}")), t0);
    }
    let mut got = 0;
    while rx.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(got, 4);
}
