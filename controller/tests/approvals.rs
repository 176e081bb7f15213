//! The approval queue over the wire (issue 16): a real controller, an agent calling
//! Approvals.Submit with its certificate, admins deciding with theirs, the decision pushed on
//! the agent's Subscribe stream (and re-sent to a stream opened later), refusals for another
//! tenant and for a viewer, and a notifier webhook received by a local HTTP listener with a
//! valid HMAC.

mod common;

use std::time::Duration;

use common::{TestController, next_update};
use thoth_client as client;
use thoth_controller::pki::Role;
use thoth_proto::fleet::{self as pb, approvals_client::ApprovalsClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn request(id: &str) -> pb::ApprovalRequest {
    pb::ApprovalRequest {
        approval_id: id.into(),
        session_id: "sess-1".into(),
        server_name: "files".into(),
        tool_name: "write_file".into(),
        content: "{\"path\":\"/etc/hosts\"}".into(),
        reason: "step_up: writes".into(),
        user: "alice".into(),
        timeout_secs: 45,
        arguments_sha256: "0".repeat(64),
        client_name: "claude-desktop".into(),
        approvers: vec!["user".into(), "admin".into()],
        remember: "once".into(),
        // What a hostile agent might claim: ignored, the certificate and registry say.
        hostname: "spoofed".into(),
        agent_id: "someone-else".into(),
        ..Default::default()
    }
}

async fn approvals(
    c: &TestController,
    agent: &thoth_client::Credentials,
) -> ApprovalsClient<tonic::transport::Channel> {
    ApprovalsClient::new(client::connect(&c.url, agent, None).await.unwrap())
}

#[tokio::test]
async fn a_decision_reaches_the_agent_stream_and_other_tenants_and_viewers_are_refused() {
    let c = TestController::start().await;
    let agent = c.enroll("acme").await;
    let mut stream = c.subscribe(&agent.credentials).await;
    let mut ap = approvals(&c, &agent.credentials).await;
    let id = "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b";
    let sent = ap.submit(request(id)).await.unwrap().into_inner();
    assert_eq!(sent.approval_id, id);

    // The admin sees it with the agent's real identity.
    let mut admin = c.admin().await;
    let list = admin
        .list_approvals(pb::ListApprovalsRequest {
            tenant: "acme".into(),
            all: false,
        })
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert_eq!(list.len(), 1);
    let r = list[0].request.as_ref().unwrap();
    assert_eq!(r.agent_id, agent.agent_id);
    assert_eq!(r.hostname, "test-host");
    assert_eq!(list[0].state, "pending");

    // Another tenant's approver: not found; a viewer of this tenant: refused.
    let other = c.admin_creds("olga", Role::Approver, Some("other"));
    let e = c
        .admin_as(&other)
        .await
        .decide_approval(pb::DecideApprovalRequest {
            approval_id: id.into(),
            approve: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let viewer = c.admin_creds("vic", Role::Viewer, Some("acme"));
    let e = c
        .admin_as(&viewer)
        .await
        .decide_approval(pb::DecideApprovalRequest {
            approval_id: id.into(),
            approve: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // An agent certificate cannot decide; an admin certificate cannot submit.
    let e = c
        .admin_as(&agent.credentials)
        .await
        .list_approvals(pb::ListApprovalsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let admin_creds = thoth_client::Credentials::from_dir(&c.data().join("admin")).unwrap();
    let e = approvals(&c, &admin_creds)
        .await
        .submit(request("0193a2b4-0000-7000-8000-000000000001"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // A scoped approver decides; the agent's stream receives it.
    let ann = c.admin_creds("ann", Role::Approver, Some("acme"));
    let info = c
        .admin_as(&ann)
        .await
        .decide_approval(pb::DecideApprovalRequest {
            approval_id: id.into(),
            approve: true,
            remember: "session".into(),
            comment: "fine".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.state, "approved");
    let decision = loop {
        let u = next_update(&mut stream, 10).await.unwrap();
        if let Some(d) = u.approval {
            assert!(u.bundle.is_empty());
            break d;
        }
    };
    assert_eq!(decision.approval_id, id);
    assert!(decision.approved);
    assert_eq!(decision.decided_by, "ann");
    assert_eq!(decision.channel, "admin");
    assert_eq!(decision.remember, "session");

    // Deciding again: a clear refusal.
    let e = admin
        .decide_approval(pb::DecideApprovalRequest {
            approval_id: id.into(),
            approve: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("already approved by ann"), "{e:?}");

    // An agent that subscribes later still gets it (until the request expires).
    drop(stream);
    let mut again = c.subscribe(&agent.credentials).await;
    let d = loop {
        if let Some(d) = next_update(&mut again, 10).await.unwrap().approval {
            break d;
        }
    };
    assert_eq!(d.approval_id, id);

    // The decision is in the audit log under the approver's name.
    let audit = admin
        .list_audit(pb::ListAuditRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        audit
            .iter()
            .any(|a| a.action == "approval.decide" && a.actor == "ann" && a.outcome == "ok"),
        "{audit:?}"
    );

    // Withdraw: the agent's own pending request only.
    let id2 = "0193a2b4-5c6d-7e8f-9a0b-000000000002";
    ap.submit(request(id2)).await.unwrap();
    let other_agent = c.enroll("acme").await;
    approvals(&c, &other_agent.credentials)
        .await
        .withdraw(pb::ApprovalWithdraw {
            approval_id: id2.into(),
        })
        .await
        .unwrap();
    let state = |a: pb::ApprovalInfo| a.state;
    let get = |admin: &mut thoth_proto::fleet::admin_client::AdminClient<_>| {
        let mut admin = admin.clone();
        async move {
            admin
                .get_approval(pb::GetApprovalRequest {
                    approval_id: id2.into(),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(state(get(&mut admin).await), "pending");
    ap.withdraw(pb::ApprovalWithdraw {
        approval_id: id2.into(),
    })
    .await
    .unwrap();
    assert_eq!(state(get(&mut admin).await), "withdrawn");
}

/// One HTTP request read from `sock`: (headers lower-cased, body); answers 200.
async fn read_request(sock: &mut tokio::net::TcpStream) -> (Vec<(String, String)>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the headers ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    (headers, buf[head_end..head_end + len].to_vec())
}

const HMAC_VAR: &str = "THOTH_TEST_APPROVAL_HMAC";

/// The notifier reads its secret from the environment: this test runs itself again as a child
/// process with the variable set (no process-wide `set_var` in a threaded test binary).
#[test]
fn a_new_request_is_posted_to_the_notifier_with_a_valid_hmac() {
    if std::env::var_os(HMAC_VAR).is_some() {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(notifier_posts_signed());
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_new_request_is_posted_to_the_notifier_with_a_valid_hmac",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HMAC_VAR, "s3cret")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the child ran no test: {text}");
}

async fn notifier_posts_signed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let c = TestController::start_with(|cfg| {
        cfg.approval_notifiers = toml::from_str::<thoth_controller::config::ControllerConfig>(
            &format!(
                "[[approval_notifiers]]\nkind = \"slack\"\nurl = \"{url}\"\nsecret_env = \"{HMAC_VAR}\"\ntenants = [\"acme\"]\n"
            ),
        )
        .unwrap()
        .approval_notifiers;
    })
    .await;
    // Another tenant's request is not posted (filtered); this tenant's is.
    let elsewhere = c.enroll("other").await;
    approvals(&c, &elsewhere.credentials)
        .await
        .submit(request("0193a2b4-0000-7000-8000-0000000000aa"))
        .await
        .unwrap();
    let agent = c.enroll("acme").await;
    let id = "0193a2b4-0000-7000-8000-0000000000bb";
    approvals(&c, &agent.credentials)
        .await
        .submit(request(id))
        .await
        .unwrap();
    let (mut sock, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("no notification within 10 s")
        .unwrap();
    let (headers, body) = read_request(&mut sock).await;
    let sig = headers
        .iter()
        .find(|(k, _)| k == "x-thoth-signature")
        .map(|(_, v)| v.clone())
        .expect("a signature header");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"s3cret");
    let want = format!("sha256={}", hex::encode(aws_lc_rs::hmac::sign(&key, &body)));
    assert_eq!(sig, want);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(text.contains(id), "{text}");
    assert!(text.contains("test-host"), "{text}");
    assert!(text.contains("write_file"), "{text}");
    assert!(text.contains("thothctl approvals approve"), "{text}");
    assert!(
        !text.contains("0000000000aa"),
        "the other tenant's request was posted: {text}"
    );
}
