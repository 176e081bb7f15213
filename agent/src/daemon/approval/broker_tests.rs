//! The broker's state machine with fake channels: first answer wins, coalescing, the per-user
//! limit, grants (once, session, duration), late approvals, withdrawal, and what a proxy may not
//! set.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A user channel the test answers: `ask` blocks until an answer is scripted for its approval
/// id, the deadline, or cancellation. Records every prompt, the cancellations and how many
/// dialogs were up at once.
#[derive(Default)]
struct FakeUser {
    answers: Mutex<HashMap<String, UserAnswer>>,
    asked: Mutex<Vec<(u32, Prompt)>>,
    cancelled: Mutex<Vec<String>>,
    up: AtomicUsize,
    most_up: AtomicUsize,
    unavailable: Option<String>,
}

impl FakeUser {
    fn answer(&self, id: &str, a: UserAnswer) {
        lock(&self.answers).insert(id.to_owned(), a);
    }
    fn asked(&self) -> Vec<(u32, Prompt)> {
        lock(&self.asked).clone()
    }
}

impl UserChannel for FakeUser {
    fn ask(
        &self,
        uid: u32,
        req: &Prompt,
        deadline: std::time::Instant,
        cancel: CancelToken,
    ) -> UserAnswer {
        if let Some(why) = &self.unavailable {
            return UserAnswer::Unavailable(why.clone());
        }
        lock(&self.asked).push((uid, req.clone()));
        let n = self.up.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_up.fetch_max(n, Ordering::SeqCst);
        let out = loop {
            if let Some(a) = lock(&self.answers).remove(&req.approval_id) {
                break a;
            }
            if cancel.wait_timeout(Duration::from_millis(5)) {
                lock(&self.cancelled).push(req.approval_id.clone());
                break UserAnswer::NoAnswer;
            }
            if std::time::Instant::now() >= deadline {
                break UserAnswer::NoAnswer;
            }
        };
        self.up.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

/// The controller's queue, faked: records submissions and withdrawals.
#[derive(Default)]
struct FakeAdmin {
    submitted: Mutex<Vec<pb::ApprovalRequest>>,
    withdrawn: Mutex<Vec<String>>,
    refuse: Option<String>,
}

impl AdminChannel for Arc<FakeAdmin> {
    fn submit(&self, req: pb::ApprovalRequest) -> BoxFuture<'static, Result<(), String>> {
        let me = Arc::clone(self);
        Box::pin(async move {
            if let Some(why) = &me.refuse {
                return Err(why.clone());
            }
            lock(&me.submitted).push(req);
            Ok(())
        })
    }
    fn withdraw(&self, id: String) -> BoxFuture<'static, ()> {
        let me = Arc::clone(self);
        Box::pin(async move { lock(&me.withdrawn).push(id) })
    }
}

#[derive(Default)]
struct Recorded(Mutex<Vec<(EventType, Value)>>);

impl Evidence for Arc<Recorded> {
    fn record(&self, t: EventType, _: &pb::ApprovalRequest, detail: Value) {
        lock(&self.0).push((t, detail));
    }
}

impl Recorded {
    fn decisions(&self) -> Vec<String> {
        lock(&self.0)
            .iter()
            .filter(|(t, _)| *t == EventType::ApprovalDecided)
            .map(|(_, d)| d["decision"].as_str().unwrap().to_owned())
            .collect()
    }
}

struct Rig {
    broker: Arc<Broker>,
    user: Arc<FakeUser>,
    admin: Arc<FakeAdmin>,
    evidence: Arc<Recorded>,
}

fn rig_with(user: FakeUser, admin: FakeAdmin) -> Rig {
    let (user, admin, evidence) = (
        Arc::new(user),
        Arc::new(admin),
        Arc::new(Recorded::default()),
    );
    let broker = Broker::new(
        Arc::new(Arc::clone(&admin)),
        Arc::new(Arc::clone(&evidence)),
    );
    broker.set_user_channel(Arc::clone(&user) as Arc<dyn UserChannel>);
    Rig {
        broker,
        user,
        admin,
        evidence,
    }
}

fn rig() -> Rig {
    rig_with(FakeUser::default(), FakeAdmin::default())
}

fn alice() -> Caller {
    Caller {
        uid: 1000,
        name: "alice".into(),
    }
}

fn bob() -> Caller {
    Caller {
        uid: 1001,
        name: "bob".into(),
    }
}

fn sha(n: u8) -> String {
    hex::encode([n; 32])
}

fn req(approvers: &[&str], session: &str, args: u8, timeout: u32) -> pb::ApprovalRequest {
    pb::ApprovalRequest {
        session_id: session.into(),
        server_name: "fs".into(),
        tool_name: "write_file".into(),
        content: r#"{"path":"/tmp/x","content":"hi"}"#.into(),
        reason: "writes need a human".into(),
        timeout_secs: timeout,
        arguments_sha256: sha(args),
        client_name: "claude-desktop".into(),
        approvers: approvers.iter().map(|s| (*s).to_owned()).collect(),
        remember: "once".into(),
        ..pb::ApprovalRequest::default()
    }
}

/// Waits (a bounded number of turns) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never: {what}");
}

fn spawn_request(
    b: &Arc<Broker>,
    c: Caller,
    r: pb::ApprovalRequest,
) -> tokio::task::JoinHandle<pb::ApprovalDecision> {
    let b = Arc::clone(b);
    tokio::spawn(async move { b.request(c, r).await })
}

fn admin_says(b: &Arc<Broker>, id: &str, approved: bool, remember: &str) {
    b.admin_decision(pb::ApprovalDecision {
        approval_id: id.into(),
        approved,
        decided_by: "sec-oncall".into(),
        reason: "ok".into(),
        channel: "admin".into(),
        remember: remember.into(),
        timed_out: false,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_answers_first_the_admin_entry_is_withdrawn_and_a_late_admin_answer_is_ignored() {
    let r = rig();
    let call = spawn_request(&r.broker, alice(), req(&["user", "admin"], "s1", 1, 30));
    until("the dialog is up and the queue has it", || {
        !r.user.asked().is_empty() && !lock(&r.admin.submitted).is_empty()
    })
    .await;
    let id = r.user.asked()[0].1.approval_id.clone();
    assert_eq!(lock(&r.admin.submitted)[0].approval_id, id);
    r.user
        .answer(&id, UserAnswer::Allowed { by: "alice".into() });
    let d = call.await.unwrap();
    assert!(d.approved && !d.timed_out, "{d:?}");
    assert_eq!(
        (
            d.channel.as_str(),
            d.decided_by.as_str(),
            d.approval_id.as_str()
        ),
        ("user", "alice", id.as_str())
    );
    until("the queue entry is withdrawn", || {
        lock(&r.admin.withdrawn).contains(&id)
    })
    .await;
    // The admin's answer after the user's changes nothing.
    admin_says(&r.broker, &id, false, "");
    assert_eq!(r.evidence.decisions(), vec!["approved"]);
    assert_eq!(r.broker.pending(), 0);
    let requested: Vec<_> = lock(&r.evidence.0)
        .iter()
        .filter(|(t, _)| *t == EventType::ApprovalRequested)
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0]["channels"], json!(["user", "admin"]));
    assert_eq!(requested[0]["user"], "alice");
    assert_eq!(requested[0]["argumentsSha256"], sha(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_answers_first_the_dialog_closes_and_a_denial_leaves_no_grant() {
    let r = rig();
    let call = spawn_request(&r.broker, alice(), req(&["user", "admin"], "s1", 1, 30));
    until("the dialog is up", || !r.user.asked().is_empty()).await;
    let id = r.user.asked()[0].1.approval_id.clone();
    admin_says(&r.broker, &id, false, "");
    let d = call.await.unwrap();
    assert!(!d.approved && !d.timed_out);
    assert_eq!(d.channel, "admin");
    assert!(d.reason.contains("sec-oncall"), "{}", d.reason);
    until("the dialog is closed", || {
        lock(&r.user.cancelled).contains(&id)
    })
    .await;
    assert!(lock(&r.admin.withdrawn).is_empty(), "the admin decided");
    // A denial is no grant: the identical call asks again.
    let again = spawn_request(&r.broker, alice(), req(&["admin"], "s1", 1, 30));
    until("asked again", || lock(&r.admin.submitted).len() == 2).await;
    assert_eq!(r.broker.pending(), 1);
    again.abort();
}

/// Holds `n` identical calls (alice, session s1, remember `remember`) on one pending request.
async fn hold_identical(
    r: &Rig,
    n: usize,
    remember: &str,
) -> Vec<tokio::task::JoinHandle<pb::ApprovalDecision>> {
    let mut q = req(&["admin"], "s1", 1, 30);
    q.remember = remember.into();
    let calls: Vec<_> = (0..n)
        .map(|_| spawn_request(&r.broker, alice(), q.clone()))
        .collect();
    until("queued", || !lock(&r.admin.submitted).is_empty()).await;
    until("all held", || {
        lock(&r.broker.state)
            .pending
            .values()
            .map(|p| p.waiters)
            .sum::<usize>()
            == n
    })
    .await;
    calls
}

/// A `session` (or duration) approval releases every coalesced identical call.
#[tokio::test(start_paused = true)]
async fn identical_pending_calls_coalesce_and_a_session_approval_releases_all() {
    let r = rig();
    let calls = hold_identical(&r, 5, "session").await;
    assert_eq!(r.broker.pending(), 1);
    assert_eq!(lock(&r.admin.submitted).len(), 1, "one queue entry");
    // Another session's identical call is another request.
    let other = spawn_request(&r.broker, alice(), req(&["admin"], "s2", 1, 30));
    until("queued", || lock(&r.admin.submitted).len() == 2).await;
    let id = lock(&r.admin.submitted)[0].approval_id.clone();
    admin_says(&r.broker, &id, true, "");
    for c in calls {
        let d = c.await.unwrap();
        assert!(d.approved, "{d:?}");
        assert_eq!(d.approval_id, id);
    }
    assert_eq!(r.broker.pending(), 1);
    other.abort();
}

/// Review (Medium): one `once` approval let every coalesced identical call run. Now exactly one
/// held call goes on; the others are denied saying why, and the evidence says so.
#[tokio::test(start_paused = true)]
async fn a_once_approval_releases_only_one_of_the_coalesced_identical_calls() {
    let r = rig();
    let calls = hold_identical(&r, 5, "once").await;
    let id = lock(&r.admin.submitted)[0].approval_id.clone();
    admin_says(&r.broker, &id, true, "");
    let mut went = 0;
    for c in calls {
        let d = c.await.unwrap();
        assert_eq!(d.approval_id, id);
        if d.approved {
            went += 1;
        } else {
            assert!(!d.timed_out, "{d:?}");
            assert_eq!(d.reason, ONCE_USED);
        }
    }
    assert_eq!(went, 1, "one approval, one use");
    let ev = lock(&r.evidence.0).clone();
    let decided: Vec<&Value> = ev
        .iter()
        .filter(|(t, _)| *t == EventType::ApprovalDecided)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(decided[0]["decision"], "approved");
    assert_eq!(decided[0]["heldCalls"], 5);
    assert!(decided[0]["releases"].as_str().unwrap().contains("one"));
    let denied: Vec<_> = decided
        .iter()
        .filter(|d| d["reason"] == ONCE_USED)
        .collect();
    assert_eq!(denied.len(), 4, "{decided:?}");
    // Nothing is left over: the identical call asks again.
    let d = r.broker.request(alice(), req(&["admin"], "s1", 1, 1)).await;
    assert!(d.timed_out, "{d:?}");
}

/// Review (Low-Medium): a grant outlived a policy change. Grants are dropped when a new policy
/// is applied (`Shared::apply` calls this); the identical call asks again.
#[tokio::test(start_paused = true)]
async fn cleared_grants_make_the_identical_call_ask_again() {
    let r = rig();
    let mut q = req(&["admin"], "s1", 1, 30);
    q.remember = "15m".into();
    let call = spawn_request(&r.broker, alice(), q.clone());
    until("queued", || !lock(&r.admin.submitted).is_empty()).await;
    let id = lock(&r.admin.submitted)[0].approval_id.clone();
    admin_says(&r.broker, &id, true, "");
    assert!(call.await.unwrap().approved);
    let d = r.broker.request(alice(), q.clone()).await;
    assert_eq!(d.channel, "remembered");
    assert_eq!(r.broker.clear_grants(), 1);
    let mut q1 = q;
    q1.timeout_secs = 1;
    let d = r.broker.request(alice(), q1).await;
    assert!(d.timed_out && !d.approved, "asked again: {d:?}");
}

#[tokio::test(start_paused = true)]
async fn a_user_has_at_most_sixteen_pending_requests_and_another_user_is_not_affected() {
    let r = rig();
    let held: Vec<_> = (0..16)
        .map(|i| spawn_request(&r.broker, alice(), req(&["admin"], "s", i, 600)))
        .collect();
    until("16 pending", || r.broker.pending() == 16).await;
    let d = r
        .broker
        .request(alice(), req(&["admin"], "s", 200, 600))
        .await;
    assert!(!d.approved && !d.timed_out);
    assert!(
        d.reason.contains("too many pending approvals"),
        "{}",
        d.reason
    );
    // Coalescing with a pending one is not a new request.
    let dup = spawn_request(&r.broker, alice(), req(&["admin"], "s", 3, 600));
    let bobs = spawn_request(&r.broker, bob(), req(&["admin"], "s", 200, 600));
    until("bob's queued", || r.broker.pending() == 17).await;
    for h in held {
        h.abort();
    }
    dup.abort();
    bobs.abort();
}

#[tokio::test(start_paused = true)]
async fn no_answer_by_the_deadline_then_a_late_approval_lets_the_identical_retry_through_once() {
    let r = rig();
    let d = r.broker.request(alice(), req(&["admin"], "s1", 1, 2)).await;
    assert!(d.timed_out && !d.approved, "{d:?}");
    assert!(
        d.reason.contains(&d.approval_id) && d.reason.contains("retried"),
        "{}",
        d.reason
    );
    let id = d.approval_id.clone();
    assert_eq!(r.broker.pending(), 1, "kept for a late answer");
    assert!(lock(&r.admin.withdrawn).is_empty());
    tokio::time::advance(Duration::from_secs(120)).await;
    admin_says(&r.broker, &id, true, "once");
    assert_eq!(r.broker.pending(), 0);
    // Another user's identical call, and another argument, are not covered.
    let bobs = spawn_request(&r.broker, bob(), req(&["admin"], "s1", 1, 600));
    let other = spawn_request(&r.broker, alice(), req(&["admin"], "s1", 2, 600));
    until("both asked", || r.broker.pending() == 2).await;
    // The identical retry goes through, at once, naming the approval.
    let d = r.broker.request(alice(), req(&["admin"], "s1", 1, 2)).await;
    assert!(d.approved, "{d:?}");
    assert_eq!(
        (d.channel.as_str(), d.approval_id.as_str()),
        ("remembered", id.as_str())
    );
    assert_eq!(d.decided_by, "sec-oncall");
    // Once: the next one asks again.
    let d = r.broker.request(alice(), req(&["admin"], "s1", 1, 2)).await;
    assert!(d.timed_out && d.approval_id != id, "{d:?}");
    bobs.abort();
    other.abort();
    let decisions = r.evidence.decisions();
    assert!(
        decisions.starts_with(&["timed_out".into(), "approved".into()]),
        "{decisions:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_approval_while_held_is_used_by_the_held_call_and_once_leaves_no_grant() {
    let r = rig();
    let call = spawn_request(&r.broker, alice(), req(&["admin"], "s1", 1, 30));
    until("queued", || !lock(&r.admin.submitted).is_empty()).await;
    let id = lock(&r.admin.submitted)[0].approval_id.clone();
    admin_says(&r.broker, &id, true, "");
    assert!(call.await.unwrap().approved);
    let d = r.broker.request(alice(), req(&["admin"], "s1", 1, 1)).await;
    assert!(d.timed_out, "the once approval was used: {d:?}");
}

#[tokio::test(start_paused = true)]
async fn session_grants_cover_their_session_and_an_admin_duration_spans_sessions_capped() {
    let r = rig();
    let mut r1 = req(&["admin"], "s1", 1, 30);
    r1.remember = "session".into();
    let call = spawn_request(&r.broker, alice(), r1.clone());
    until("queued", || !lock(&r.admin.submitted).is_empty()).await;
    let id = lock(&r.admin.submitted)[0].approval_id.clone();
    // An admin's remember over 24 h is not honoured: the request's (session) stays.
    admin_says(&r.broker, &id, true, "48h");
    let d = call.await.unwrap();
    assert_eq!((d.approved, d.remember.as_str()), (true, "session"));
    for _ in 0..3 {
        let d = r.broker.request(alice(), r1.clone()).await;
        assert_eq!((d.approved, d.channel.as_str()), (true, "remembered"));
    }
    let mut r2 = r1.clone();
    r2.session_id = "s2".into();
    let d = r.broker.request(alice(), r2.clone()).await;
    assert!(d.timed_out, "another session: {d:?}");
    let id2 = d.approval_id;
    // The admin widens it to 15 minutes: any session of alice, not bob.
    admin_says(&r.broker, &id2, true, "15m");
    let mut r3 = r1.clone();
    r3.session_id = "s3".into();
    let d = r.broker.request(alice(), r3.clone()).await;
    assert_eq!((d.approved, d.remember.as_str()), (true, "15m"));
    let d = r.broker.request(bob(), r3.clone()).await;
    assert!(d.timed_out);
    tokio::time::advance(Duration::from_secs(15 * 60)).await;
    let d = r.broker.request(alice(), r3).await;
    assert!(!d.approved, "expired: {d:?}");
}

#[tokio::test(start_paused = true)]
async fn a_proxy_that_goes_away_withdraws_its_request_and_leaves_no_grant() {
    let r = rig();
    let call = spawn_request(&r.broker, alice(), req(&["admin"], "s1", 1, 30));
    until("queued", || !lock(&r.admin.submitted).is_empty()).await;
    until("submitted", || {
        lock(&r.broker.state)
            .pending
            .values()
            .any(|p| p.admin_submitted)
    })
    .await;
    let id = lock(&r.admin.submitted)[0].approval_id.clone();
    call.abort();
    let _ = call.await;
    until("withdrawn", || lock(&r.admin.withdrawn).contains(&id)).await;
    assert_eq!(r.broker.pending(), 0);
    assert_eq!(r.evidence.decisions(), vec!["withdrawn"]);
    // An approval arriving after the withdrawal is no grant.
    admin_says(&r.broker, &id, true, "session");
    let d = r.broker.request(alice(), req(&["admin"], "s1", 1, 1)).await;
    assert!(d.timed_out, "{d:?}");
}

#[tokio::test(start_paused = true)]
async fn a_request_kept_past_its_deadline_expires_and_then_a_late_answer_is_ignored() {
    let r = rig();
    let d = r.broker.request(alice(), req(&["admin"], "s1", 1, 1)).await;
    assert!(d.timed_out);
    let sub = lock(&r.admin.submitted)[0].clone();
    assert!(sub.expires_unix_ms - sub.requested_unix_ms >= 600_000);
    tokio::time::sleep(MIN_PENDING).await;
    until("expired", || r.broker.pending() == 0).await;
    admin_says(&r.broker, &d.approval_id, true, "session");
    let d = r.broker.request(alice(), req(&["admin"], "s1", 1, 1)).await;
    assert!(d.timed_out);
    assert!(r.evidence.decisions().contains(&"expired".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn what_a_proxy_sets_for_user_and_approval_id_is_ignored_and_fields_are_cut_and_cleaned() {
    let r = rig();
    let mut q = req(&["admin", "superuser"], "s1", 1, 1);
    q.user = "root".into();
    q.approval_id = "chosen-by-the-proxy".into();
    q.hostname = "forged".into();
    q.server_name = format!("fs\u{202e}txt.exe\u{1b}[31m{}", "x".repeat(1000));
    q.content = format!("line1\nline2\u{7}{}", "y".repeat(10_000));
    q.reason = "r".repeat(5000);
    q.remember = "forever".into();
    let d = r.broker.request(alice(), q).await;
    assert_ne!(d.approval_id, "chosen-by-the-proxy");
    let id = uuid::Uuid::parse_str(&d.approval_id).unwrap();
    assert_eq!(id.get_version_num(), 7);
    let sub = lock(&r.admin.submitted)[0].clone();
    assert_eq!(sub.user, "alice");
    assert_eq!(sub.hostname, "");
    assert_eq!(sub.approvers, vec!["admin"]);
    assert_eq!(sub.remember, "once", "an invalid remember is once");
    assert!(sub.server_name.len() <= MAX_NAME && sub.server_name.ends_with('…'));
    assert!(!sub.server_name.contains('\u{202e}') && !sub.server_name.contains('\u{1b}'));
    assert!(sub.content.len() <= MAX_CONTENT && sub.content.starts_with("line1\nline2\u{FFFD}"));
    assert!(sub.reason.len() <= MAX_REASON);
    // A malformed digest is refused outright.
    let mut q = req(&["admin"], "s1", 1, 1);
    q.arguments_sha256 = "not-a-digest".into();
    let d = r.broker.request(alice(), q).await;
    assert!(
        !d.approved && d.reason.contains("arguments_sha256"),
        "{d:?}"
    );
    assert_eq!(lock(&r.admin.submitted).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_channel_denies_at_once_saying_why() {
    let r = rig_with(
        FakeUser {
            unavailable: Some("no graphical session".into()),
            ..FakeUser::default()
        },
        FakeAdmin {
            refuse: Some("not connected".into()),
            ..FakeAdmin::default()
        },
    );
    let t = std::time::Instant::now();
    let d = r
        .broker
        .request(alice(), req(&["user", "admin"], "s1", 1, 30))
        .await;
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!d.approved && !d.timed_out);
    assert!(
        d.reason.contains("no graphical session") && d.reason.contains("not connected"),
        "{}",
        d.reason
    );
    assert_eq!(r.broker.pending(), 0);
    assert_eq!(r.evidence.decisions(), vec!["unreachable"]);
    // Only the user may approve, and cannot: denied too, the admin never asked.
    let d = r.broker.request(alice(), req(&["user"], "s1", 2, 30)).await;
    assert!(d.reason.contains("no graphical session"), "{}", d.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dialog_at_a_time_per_user_and_each_user_sees_only_their_own() {
    let r = rig();
    let a1 = spawn_request(&r.broker, alice(), req(&["user"], "s1", 1, 30));
    let a2 = spawn_request(&r.broker, alice(), req(&["user"], "s1", 2, 30));
    let b1 = spawn_request(&r.broker, bob(), req(&["user"], "s1", 1, 30));
    until("two dialogs (alice's first, bob's)", || {
        r.user.asked().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.user.asked().len(), 2, "alice's second waits its turn");
    let asked = r.user.asked();
    let uids: Vec<u32> = asked.iter().map(|(u, _)| *u).collect();
    assert!(uids.contains(&1000) && uids.contains(&1001), "{uids:?}");
    let first = asked.iter().find(|(u, _)| *u == 1000).unwrap().1.clone();
    r.user.answer(
        &first.approval_id,
        UserAnswer::Denied { by: "alice".into() },
    );
    until("alice's second dialog", || r.user.asked().len() == 3).await;
    let second = r.user.asked()[2].clone();
    assert_eq!(second.0, 1000);
    assert_ne!(second.1.approval_id, first.approval_id);
    assert_eq!(r.user.most_up.load(Ordering::SeqCst), 2, "one per user");
    r.user.answer(
        &second.1.approval_id,
        UserAnswer::Allowed { by: "alice".into() },
    );
    let bobs = asked.iter().find(|(u, _)| *u == 1001).unwrap().1.clone();
    r.user
        .answer(&bobs.approval_id, UserAnswer::Allowed { by: "bob".into() });
    let (d1, d2, d3) = (a1.await.unwrap(), a2.await.unwrap(), b1.await.unwrap());
    // Alice's two requests were asked in either order: one denied, then the other allowed.
    assert!(
        d1.approved != d2.approved && d3.approved,
        "{d1:?} {d2:?} {d3:?}"
    );
    let (denied, allowed) = if d1.approved { (d2, d1) } else { (d1, d2) };
    assert_eq!(denied.approval_id, first.approval_id);
    assert_eq!(allowed.approval_id, second.1.approval_id);
    assert_eq!(denied.decided_by, "alice");
    assert_eq!(allowed.decided_by, "alice");
    assert_eq!(d3.decided_by, "bob");
}

#[tokio::test(start_paused = true)]
async fn all_users_together_have_a_bounded_number_of_pending_requests() {
    let r = rig();
    let users = MAX_PENDING_TOTAL / MAX_PENDING_PER_USER;
    let mut held = Vec::new();
    for u in 0..users {
        let c = Caller {
            uid: 5000 + u as u32,
            name: format!("u{u}"),
        };
        for i in 0..MAX_PENDING_PER_USER {
            held.push(spawn_request(
                &r.broker,
                c.clone(),
                req(&["admin"], "s", i as u8, 600),
            ));
        }
    }
    until("all pending", || r.broker.pending() == MAX_PENDING_TOTAL).await;
    let d = r.broker.request(bob(), req(&["admin"], "s", 1, 600)).await;
    assert!(
        !d.approved && d.reason.contains("too many pending approvals"),
        "{d:?}"
    );
    for h in held {
        h.abort();
    }
    until("all withdrawn", || r.broker.pending() == 0).await;
}
