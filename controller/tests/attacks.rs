//! Bad input and attacks: each gets a clear gRPC status and changes nothing; tampered bundles are
//! refused by the one verifier.

mod common;

use std::time::{Duration, SystemTime};

use common::{POLICY_A, POLICY_B, TestController, next_update};
use thoth_client::{self as client, Credentials};
use thoth_controller::pki::{Ca, Identity, Role};
use thoth_proto::bundle::{BundleError, SignedBundle, verify_bundle};
use thoth_proto::fleet::{
    self as pb, admin_client::AdminClient, agent_sync_client::AgentSyncClient,
    enrollment_client::EnrollmentClient,
};
use tonic::Code;

fn no_cert(c: &TestController) -> Credentials {
    Credentials {
        ca_pem: c.ca_pem(),
        cert_pem: None,
        key_pem: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_client_certificate_are_unauthenticated() {
    let c = TestController::start().await;
    let ch = client::connect(&c.url, &no_cert(&c), None).await.unwrap();
    let err = AgentSyncClient::new(ch.clone())
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("client certificate"), "{err:?}");
    let err = AdminClient::new(ch.clone())
        .push_policy(pb::PushPolicyRequest {
            document: POLICY_A.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = EnrollmentClient::new(ch)
        .renew(pb::RenewRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(c.history("default").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let c = TestController::start().await;
    let other = Ca::generate("impostor", SystemTime::now(), Duration::from_secs(86_400)).unwrap();
    for identity in [
        Identity::Admin {
            name: "admin".into(),
            role: Role::Admin,
            tenant: None,
        },
        Identity::Agent {
            tenant: "acme".into(),
            agent_id: "agt-forged".into(),
        },
    ] {
        let forged = other
            .issue_client(&identity, SystemTime::now(), Duration::from_secs(3600))
            .unwrap();
        let creds = Credentials {
            ca_pem: c.ca_pem(),
            cert_pem: Some(forged.cert_pem),
            key_pem: Some(forged.key_pem),
        };
        // TLS 1.3 may report the refusal at connect or at the first call: either way it fails.
        let refused = match client::connect(&c.url, &creds, Some(Duration::from_secs(10))).await {
            Err(_) => true,
            Ok(ch) => AdminClient::new(ch)
                .push_policy(pb::PushPolicyRequest {
                    document: POLICY_A.into(),
                    ..Default::default()
                })
                .await
                .is_err(),
        };
        assert!(refused, "a forged certificate got through");
    }
    assert!(c.history("default").await.is_empty());
    assert!(c.history("acme").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_refused_on_its_next_call_and_its_subscription_closes() {
    let c = TestController::start().await;
    c.push("acme", POLICY_A).await;
    let agent = c.enroll("acme").await;
    let mut sync = c.sync(&agent.credentials).await;
    let mut stream = sync
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    next_update(&mut stream, 5).await.unwrap();
    let info = c
        .admin()
        .await
        .revoke_agent(pb::RevokeAgentRequest {
            agent_id: agent.agent_id.clone(),
            reason: "laptop lost".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(info.revoked);
    let closed = next_update(&mut stream, 5).await.unwrap_err();
    assert_eq!(closed.code(), Code::PermissionDenied, "{closed:?}");
    let err = sync.report(pb::AgentReport::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("revoked"), "{err:?}");
    let err = sync
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Nor can it renew its way back: its certificate is refused at the handshake now (the
    // deny list), so a new connection serves it nothing.
    if let Ok(ch) = client::connect(&c.url, &agent.credentials, None).await {
        let (_, csr) = thoth_client::new_key_and_csr().unwrap();
        let err = EnrollmentClient::new(ch)
            .renew(pb::RenewRequest { csr_der: csr })
            .await
            .unwrap_err();
        assert_ne!(err.code(), Code::Ok, "{err:?}");
    }
    // The revocation is in the audit log.
    let audit = c
        .admin()
        .await
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.action == "agent.revoke" && e.detail.contains("laptop lost"))
    );
}

async fn enroll_with(
    c: &TestController,
    token: &str,
    tenant: &str,
) -> Result<client::Enrolled, tonic::Status> {
    client::enroll(&c.url, &c.ca_pem(), token, tenant, "h").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_spend_nothing() {
    let c = TestController::start().await;
    let mut admin = c.admin().await;

    // Unknown.
    let err = enroll_with(&c, "tok-0000.nonsense", "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("not recognised"), "{err:?}");

    // A one-time token works once; the reuse is refused.
    let once = c.token("acme", 1).await;
    enroll_with(&c, &once, "acme").await.unwrap();
    let err = enroll_with(&c, &once, "acme").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("used up"), "{err:?}");

    // A multi-use token is exhausted after its count.
    let twice = c.token("acme", 2).await;
    enroll_with(&c, &twice, "").await.unwrap();
    enroll_with(&c, &twice, "").await.unwrap();
    assert!(enroll_with(&c, &twice, "").await.is_err());

    // Expired.
    let short = admin
        .create_token(pb::CreateTokenRequest {
            tenant: "acme".into(),
            ttl_secs: 1,
            max_uses: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = enroll_with(&c, &short.token, "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{err:?}");

    // Revoked.
    let revoked = admin
        .create_token(pb::CreateTokenRequest {
            tenant: "acme".into(),
            max_uses: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .revoke_token(pb::RevokeTokenRequest {
            id: revoked.info.as_ref().unwrap().id.clone(),
        })
        .await
        .unwrap();
    let err = enroll_with(&c, &revoked.token, "").await.unwrap_err();
    assert!(err.message().contains("revoked"), "{err:?}");

    // A token of tenant acme used by an agent installed for tenant beta.
    let multi = c.token("acme", 5).await;
    let err = enroll_with(&c, &multi, "beta").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A CSR that does not verify: refused, and the token keeps its use.
    let ch = client::connect(&c.url, &no_cert(&c), None).await.unwrap();
    let (_, mut csr) = thoth_client::new_key_and_csr().unwrap();
    let n = csr.len();
    csr[n - 5] ^= 0x40;
    let err = EnrollmentClient::new(ch.clone())
        .enroll(pb::EnrollRequest {
            token: multi.clone(),
            csr_der: csr,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Oversized fields are refused before any work.
    let err = EnrollmentClient::new(ch)
        .enroll(pb::EnrollRequest {
            token: "x".repeat(10_000),
            csr_der: vec![0; 10],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let tokens = admin
        .list_tokens(pb::ListTokensRequest {
            tenant: "acme".into(),
            include_inactive: true,
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let multi_info = tokens.iter().find(|t| multi.starts_with(&t.id)).unwrap();
    assert_eq!(
        multi_info.uses, 0,
        "refused enrollments must not spend uses"
    );
    // Only the 3 successful enrollments made agents.
    let agents = admin
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_ask_for_another_tenants_policy_nor_act_as_an_admin() {
    let c = TestController::start().await;
    c.push("alpha", POLICY_A).await;
    c.push("beta", POLICY_B).await;
    let agent = c.enroll("alpha").await;
    let mut sync = c.sync(&agent.credentials).await;
    let err = sync
        .subscribe(pb::SubscribeRequest {
            tenant: "beta".into(),
            applied_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Its own tenant's subscription carries alpha's bundle, never beta's.
    let mut s = sync
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let u = next_update(&mut s, 5).await.unwrap();
    verify_bundle(&u.bundle, &c.root(), "alpha", None, SystemTime::now()).unwrap();
    // Agent certificates cannot call the admin service.
    let ch = client::connect(&c.url, &agent.credentials, None)
        .await
        .unwrap();
    let err = AdminClient::new(ch)
        .push_policy(pb::PushPolicyRequest {
            tenant: "alpha".into(),
            document: POLICY_B.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // And admin certificates cannot subscribe as an agent.
    let admin_creds = Credentials::from_dir(&c.data().join("admin")).unwrap();
    let err = c
        .sync(&admin_creds)
        .await
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(c.history("alpha").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_act_only_within_their_role_and_tenant_and_refusals_are_audited() {
    let c = TestController::start().await;
    c.push("alpha", POLICY_A).await;

    let alpha_op = c.admin_creds("alice", Role::Operator, Some("alpha"));
    let mut alice = c.admin_as(&alpha_op).await;
    // Within her tenant: fine (and the tenant defaults to hers).
    let v = alice
        .push_policy(pb::PushPolicyRequest {
            document: POLICY_B.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v.tenant.as_str(), v.version), ("alpha", 2));
    // Another tenant: refused.
    let err = alice
        .push_policy(pb::PushPolicyRequest {
            tenant: "beta".into(),
            document: POLICY_A.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("alpha"), "{err:?}");
    let err = alice
        .list_agents(pb::ListAgentsRequest {
            tenant: "beta".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Operators cannot read the audit log or rotate keys.
    assert_eq!(
        alice
            .list_audit(pb::ListAuditRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    let viewer = c.admin_creds("victor", Role::Viewer, None);
    let mut victor = c.admin_as(&viewer).await;
    let err = victor
        .push_policy(pb::PushPolicyRequest {
            tenant: "alpha".into(),
            document: POLICY_A.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("viewer"), "{err:?}");
    for err in [
        victor
            .create_token(pb::CreateTokenRequest {
                tenant: "alpha".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        victor
            .rollback_policy(pb::RollbackPolicyRequest {
                tenant: "alpha".into(),
                to_version: 1,
                comment: String::new(),
            })
            .await
            .unwrap_err(),
        victor
            .rotate_signing_key(pb::RotateSigningKeyRequest {})
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    // Viewers read.
    let h = victor
        .policy_history(pb::PolicyHistoryRequest {
            tenant: "alpha".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.versions.len(), 2);

    // Nothing changed: alpha has the 2 versions, beta none.
    assert_eq!(c.history("alpha").await.len(), 2);
    assert!(c.history("beta").await.is_empty());
    // Each refusal is in the audit log with who and what.
    let audit = c
        .admin()
        .await
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let refused: Vec<_> = audit
        .iter()
        .filter(|e| e.outcome.starts_with("refused"))
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert!(refused.contains(&("alice", "policy.push")), "{refused:?}");
    assert!(refused.contains(&("victor", "policy.push")), "{refused:?}");
    assert!(refused.contains(&("victor", "token.create")), "{refused:?}");
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "alice" && e.action == "policy.push" && e.outcome == "ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_oversized_policies_are_refused_and_change_nothing() {
    let c = TestController::start().await;
    c.push("acme", POLICY_A).await;
    let mut admin = c.admin().await;
    let err = admin
        .push_policy(pb::PushPolicyRequest {
            tenant: "acme".into(),
            document: "servers:\n  - name: files\n    enforcement: sometimes\n".into(),
            source: "bad.yaml".into(),
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("bad.yaml:3"), "{err:?}");
    // Over the request limit (5 MiB by default): refused by the transport.
    let err = admin
        .push_policy(pb::PushPolicyRequest {
            tenant: "acme".into(),
            document: format!("# {}\nservers: []\n", "x".repeat(6 << 20)),
            source: "big.yaml".into(),
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    // Under the transport limit but over the policy limit (4 MiB): refused by validation.
    let err = admin
        .push_policy(pb::PushPolicyRequest {
            tenant: "acme".into(),
            document: format!("# {}\nservers: []\n", "x".repeat((4 << 20) + 10)),
            source: "big.yaml".into(),
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Bad tenant names are refused.
    let err = admin
        .push_policy(pb::PushPolicyRequest {
            tenant: "../etc".into(),
            document: POLICY_A.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(c.history("acme").await.len(), 1);
    // The controller still serves.
    assert_eq!(c.push("acme", POLICY_B).await.version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_foreign_old_misaddressed_or_expired_bundles_are_rejected_by_the_verifier() {
    let c = TestController::start().await;
    c.push("acme", POLICY_A).await;
    let doc = c
        .admin()
        .await
        .get_policy(pb::GetPolicyRequest {
            tenant: "acme".into(),
            version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let good = doc.bundle.to_vec();
    let root = c.root();
    let now = SystemTime::now();
    verify_bundle(&good, &root, "acme", None, now).unwrap();

    // A flipped byte anywhere in the signed payload.
    let env: SignedBundle = serde_json::from_slice(&good).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload = b64.decode(&env.payload.bytes).unwrap();
    let at = payload.len() / 2;
    payload[at] ^= 0x01;
    let mut flipped = env.clone();
    flipped.payload.bytes = b64.encode(&payload);
    let err = verify_bundle(
        &serde_json::to_vec(&flipped).unwrap(),
        &root,
        "acme",
        None,
        now,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::BadSignature { .. } | BundleError::Malformed(_)
        ),
        "{err:?}"
    );
    // A flipped byte in the envelope's bytes themselves.
    let mut raw = good.clone();
    let i = raw.iter().position(|&b| b == b'"').unwrap() + 3;
    raw[i] ^= 0x20;
    assert!(verify_bundle(&raw, &root, "acme", None, now).is_err());

    // Signed under another controller's root.
    let other = TestController::start().await;
    let err = verify_bundle(&good, &other.root(), "acme", None, now).unwrap_err();
    assert!(matches!(err, BundleError::UnknownKey { .. }), "{err:?}");
    // The signature removed.
    let mut unsigned = env.clone();
    unsigned.payload.signature = String::new();
    let err = verify_bundle(
        &serde_json::to_vec(&unsigned).unwrap(),
        &root,
        "acme",
        None,
        now,
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::MissingSignature(_)), "{err:?}");
    // Older than what is applied.
    let err = verify_bundle(&good, &root, "acme", Some(2), now).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Rollback {
                version: 1,
                applied: 2
            }
        ),
        "{err:?}"
    );
    // For another tenant.
    let err = verify_bundle(&good, &root, "beta", None, now).unwrap_err();
    assert!(matches!(err, BundleError::WrongTenant { .. }), "{err:?}");
    // Past its expiry (7 days by default).
    let err = verify_bundle(
        &good,
        &root,
        "acme",
        None,
        now + Duration::from_secs(8 * 86_400),
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::Expired { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_on_the_port_do_not_disturb_the_controller() {
    let c = TestController::start().await;
    let addr = c.running().addr;
    // Garbage instead of a ClientHello, a half-open connection, and a plaintext HTTP/2 preface.
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut a = std::net::TcpStream::connect(addr).unwrap();
        let _ = a.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3]);
        let _idle = std::net::TcpStream::connect(addr).unwrap();
        let mut p = std::net::TcpStream::connect(addr).unwrap();
        let _ = p.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    })
    .await
    .unwrap();
    assert_eq!(c.push("acme", POLICY_A).await.version, 1);
    let agent = c.enroll("acme").await;
    let mut s = c.subscribe(&agent.credentials).await;
    assert_eq!(next_update(&mut s, 5).await.unwrap().version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_tls_1_3_only() {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let c = TestController::start().await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(c.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let connect = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
        let config =
            rustls::ClientConfig::builder_with_provider(thoth_controller::server::provider())
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let addr = c.running().addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .map(|s| s.get_ref().1.protocol_version())
        }
    };
    static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    let err = connect(&TLS12).await;
    assert!(err.is_err(), "a TLS 1.2 handshake succeeded");
    let ok = connect(&TLS13).await.unwrap();
    assert_eq!(ok, Some(rustls::ProtocolVersion::TLSv1_3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_counted_and_the_rest_keep_working() {
    let c = TestController::start_with(|cfg| cfg.max_connections = 3).await;
    let creds = no_cert(&c);
    let mut held = Vec::new();
    for _ in 0..3 {
        let ch = client::connect(&c.url, &creds, None).await.unwrap();
        // Make sure each is established (a call goes through).
        let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
        h.check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
        held.push(ch);
    }
    let fourth = client::connect(&c.url, &creds, Some(Duration::from_secs(5))).await;
    let refused = match fourth {
        Err(_) => true,
        Ok(ch) => tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a connection over the limit was served");
    let metrics = c.running().controller.metrics_text();
    assert!(
        !metrics.contains("thoth_connections_refused_total 0"),
        "{metrics}"
    );
    // The held connections still work.
    let mut h = tonic_health::pb::health_client::HealthClient::new(held[0].clone());
    h.check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // Closing one frees a slot.
    held.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ch = client::connect(&c.url, &creds, None).await.unwrap();
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
}
