//! The controller's happy paths, in process on 127.0.0.1:0 with real certificates and clients:
//! enroll, subscribe, push → receive a bundle that verifies; restart; key rotation; re-signing.

mod common;

use std::time::{Duration, SystemTime};

use common::{POLICY_A, POLICY_B, TestController, next_update};
use thoth_proto::bundle::verify_bundle;
use thoth_proto::fleet as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_receives_each_push_signed_and_reports_it_applied() {
    let c = TestController::start().await;
    let agent = c.enroll("acme").await;
    assert_eq!(agent.tenant, "acme");
    assert!(agent.agent_id.starts_with("agt-"));
    let mut sync = c.sync(&agent.credentials).await;
    let mut stream = sync
        .subscribe(pb::SubscribeRequest {
            tenant: "acme".into(),
            applied_version: 0,
        })
        .await
        .unwrap()
        .into_inner();

    let pushed = c.push("acme", POLICY_A).await;
    assert_eq!(pushed.version, 1);
    let update = next_update(&mut stream, 5).await.unwrap();
    assert_eq!(update.version, 1);
    let verified =
        verify_bundle(&update.bundle, &c.root(), "acme", None, SystemTime::now()).unwrap();
    assert_eq!(verified.payload.version, 1);
    assert_eq!(verified.payload.policy, POLICY_A);

    // Another tenant's push does not reach this agent; the next push of its own does.
    c.push("other", POLICY_B).await;
    c.push("acme", POLICY_B).await;
    let update = next_update(&mut stream, 5).await.unwrap();
    let verified = verify_bundle(
        &update.bundle,
        &c.root(),
        "acme",
        Some(1),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        (verified.payload.version, verified.payload.tenant.as_str()),
        (2, "acme")
    );

    // The agent reports; the controller records applied version, last-seen and inventory.
    let ack = sync
        .report(pb::AgentReport {
            applied_version: 2,
            stale: false,
            last_error: String::new(),
            inventory: Some(pb::Inventory {
                hostname: "laptop-7".into(),
                os_name: "Debian".into(),
                os_version: "12".into(),
                arch: "x86_64".into(),
                cpus: 2,
                ..Default::default()
            }),
            agent_version: "0.1.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.latest_version, 2);
    let info = c
        .admin()
        .await
        .get_agent(pb::GetAgentRequest {
            agent_id: agent.agent_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.applied_version, 2);
    assert_eq!(info.hostname, "laptop-7");
    assert!(info.connected);
    assert!(info.last_seen_unix > 0);
    assert_eq!(info.inventory.unwrap().os_name, "Debian");
    let history = c.history("acme").await;
    assert_eq!(history[0].agents_applied, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_the_current_bundle_at_once_and_many_subscribers_get_a_push() {
    let c = TestController::start().await;
    c.push("acme", POLICY_A).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let agent = c.enroll("acme").await;
        let mut s = c.subscribe(&agent.credentials).await;
        assert_eq!(next_update(&mut s, 5).await.unwrap().version, 1);
        streams.push(s);
    }
    c.push("acme", POLICY_B).await;
    for s in &mut streams {
        assert_eq!(next_update(s, 5).await.unwrap().version, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_versions_survive_a_restart() {
    let mut c = TestController::start().await;
    let agent = c.enroll("acme").await;
    c.push("acme", POLICY_A).await;
    c.push("acme", POLICY_B).await;
    c.restart().await;

    let history = c.history("acme").await;
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    // The agent's certificate and enrollment are still good, and it gets the latest at once.
    let mut s = c.subscribe(&agent.credentials).await;
    let u = next_update(&mut s, 5).await.unwrap();
    let v = verify_bundle(&u.bundle, &c.root(), "acme", Some(2), SystemTime::now()).unwrap();
    assert_eq!(v.payload.policy, POLICY_B);
    assert_eq!(c.push("acme", POLICY_A).await.version, 3);
    assert_eq!(next_update(&mut s, 5).await.unwrap().version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_signing_key_rotation_agents_still_verify_through_the_root() {
    let c = TestController::start().await;
    c.push("acme", POLICY_A).await;
    let agent = c.enroll("acme").await;
    let mut s = c.subscribe(&agent.credentials).await;
    let first = next_update(&mut s, 5).await.unwrap();
    let old_key = verify_bundle(&first.bundle, &c.root(), "acme", None, SystemTime::now())
        .unwrap()
        .key_id;

    let rotated = c
        .admin()
        .await
        .rotate_signing_key(pb::RotateSigningKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.key_id, old_key);
    assert_eq!(rotated.resigned_tenants, vec!["acme".to_owned()]);

    // The re-signed bundle (same version) arrives and verifies with the same pinned root.
    let resigned = next_update(&mut s, 5).await.unwrap();
    let v = verify_bundle(
        &resigned.bundle,
        &c.root(),
        "acme",
        Some(1),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        (v.payload.version, v.key_id.as_str()),
        (1, rotated.key_id.as_str())
    );
    c.push("acme", POLICY_B).await;
    let v2 = next_update(&mut s, 5).await.unwrap();
    let v2 = verify_bundle(&v2.bundle, &c.root(), "acme", Some(1), SystemTime::now()).unwrap();
    assert_eq!(v2.key_id, rotated.key_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_re_signed_well_before_they_expire() {
    let c = TestController::start_with(|cfg| {
        cfg.bundle_validity = Duration::from_secs(20);
        cfg.resign_before = Duration::from_secs(18);
        cfg.resign_check_interval = Duration::from_millis(500);
    })
    .await;
    c.push("acme", POLICY_A).await;
    let agent = c.enroll("acme").await;
    let mut s = c.subscribe(&agent.credentials).await;
    let first = next_update(&mut s, 5).await.unwrap();
    let first = verify_bundle(&first.bundle, &c.root(), "acme", None, SystemTime::now()).unwrap();
    // Within a few seconds, the same version comes again with a later expiry.
    let mut later = None;
    for _ in 0..10 {
        let u = next_update(&mut s, 5).await.unwrap();
        let v = verify_bundle(&u.bundle, &c.root(), "acme", Some(1), SystemTime::now()).unwrap();
        if v.payload.expires_at > first.payload.expires_at {
            later = Some(v);
            break;
        }
    }
    let later = later.expect("a re-signed bundle with a later expiry");
    assert_eq!(later.payload.version, 1);
    assert_eq!(later.payload.policy, POLICY_A);
    // Re-signing never adds a version.
    assert_eq!(c.history("acme").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_re_issues_an_old_document_as_a_new_version_and_history_records_it() {
    let c = TestController::start().await;
    c.push("acme", POLICY_A).await;
    c.push("acme", POLICY_B).await;
    let v = c
        .admin()
        .await
        .rollback_policy(pb::RollbackPolicyRequest {
            tenant: "acme".into(),
            to_version: 1,
            comment: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v.version, v.rollback_of), (3, 1));
    let doc = c
        .admin()
        .await
        .get_policy(pb::GetPolicyRequest {
            tenant: "acme".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(doc.document, POLICY_A);
    let verified =
        verify_bundle(&doc.bundle, &c.root(), "acme", Some(2), SystemTime::now()).unwrap();
    assert_eq!(verified.payload.version, 3);
    let missing = c
        .admin()
        .await
        .rollback_policy(pb::RollbackPolicyRequest {
            tenant: "acme".into(),
            to_version: 9,
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(c.history("acme").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_over_mtls_issues_a_fresh_certificate_for_the_same_identity() {
    let c = TestController::start().await;
    let agent = c.enroll("acme").await;
    let ch = thoth_client::connect(&c.url, &agent.credentials, None)
        .await
        .unwrap();
    let (key_pem, csr) = thoth_client::new_key_and_csr().unwrap();
    let renewed = pb::enrollment_client::EnrollmentClient::new(ch)
        .renew(pb::RenewRequest { csr_der: csr })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.agent_id, agent.agent_id);
    let creds = thoth_client::Credentials {
        ca_pem: c.ca_pem(),
        cert_pem: Some(renewed.certificate_pem),
        key_pem: Some(key_pem),
    };
    let ack = c
        .sync(&creds)
        .await
        .report(pb::AgentReport::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.latest_version, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer() {
    let c = TestController::start().await;
    c.push("acme", POLICY_A).await;
    // grpc.health.v1 over the TLS port, without a client certificate.
    let creds = thoth_client::Credentials {
        ca_pem: c.ca_pem(),
        cert_pem: None,
        key_pem: None,
    };
    let ch = thoth_client::connect(&c.url, &creds, None).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "thoth.fleet.v1.AgentSync".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Prometheus text over HTTP.
    let addr = c.running().metrics_addr.unwrap();
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("thoth_policy_versions_total 1"), "{body}");
    assert!(
        body.contains("# TYPE thoth_agents_connected gauge"),
        "{body}"
    );
}
