//! The controller's edge against a network attacker without a certificate (issue 13, finding 9,
//! and its review): TLS connections that never send an HTTP/2 preface or a request cannot hold
//! the `max_connections` permits, nor can a connection that never makes an authorised request
//! (an endless request, a cheap request now and then, a revoked certificate) hold one past its
//! lifetime; one address cannot hold more than its share, and a refused client is told so rather
//! than told that its CA is wrong.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use thoth_client::{self as client, Credentials};
use tokio::io::AsyncReadExt;

/// Another loopback address than the clients' 127.0.0.1 (Linux routes all of 127/8 to lo).
const ATTACKER: &str = "127.0.0.2";

/// A TLS connection (no client certificate) from `from` that then sends nothing at all.
async fn idle_tls(
    c: &TestController,
    from: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(c.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(thoth_controller::server::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    let tcp = sock.connect(c.running().addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    Ok(tls)
}

/// Waits until the server closes `conn` (EOF or an error), or panics at the deadline.
async fn closed_by_server(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    within: Duration,
) {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Err(_) => panic!("the server kept an idle connection open for {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            // Session tickets or HTTP/2 settings: keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

fn admin_creds(c: &TestController) -> Credentials {
    Credentials::from_dir(&c.data().join("admin")).unwrap()
}

/// A health check with `creds` over a new connection.
async fn served(c: &TestController, creds: &Credentials) -> Result<(), String> {
    let ch = client::connect(&c.url, creds, Some(Duration::from_secs(5)))
        .await
        .map_err(|e| e.to_string())?;
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| s.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_without_a_request_are_closed_and_clients_are_served_again() {
    let c = TestController::start_with(|cfg| {
        cfg.max_connections = 4;
        cfg.idle_timeout = Duration::from_secs(1);
    })
    .await;
    // Every permit held by a TLS connection that never sends its HTTP/2 preface.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(idle_tls(&c, ATTACKER).await.expect("handshake"));
    }
    // The server closes each of them once idle.
    for conn in &mut idle {
        closed_by_server(conn, Duration::from_secs(10)).await;
    }
    // And a legitimate client is served.
    let creds = admin_creds(&c);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match served(&c, &creds).await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "never served: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_unauthenticated_connections() {
    let c = TestController::start_with(|cfg| {
        cfg.max_connections = 6;
        cfg.max_unauthenticated_per_address = 2;
        cfg.idle_timeout = Duration::from_secs(600);
    })
    .await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        match idle_tls(&c, ATTACKER).await {
            Ok(conn) => held.push(conn),
            Err(_) => refused += 1,
        }
    }
    assert_eq!((held.len(), refused), (2, 4));
    // Everyone else is served at once, without waiting for any timeout.
    served(&c, &admin_creds(&c)).await.unwrap();
    served(
        &c,
        &Credentials {
            ca_pem: c.ca_pem(),
            cert_pem: None,
            key_pem: None,
        },
    )
    .await
    .unwrap();
    let metrics = c.running().controller.metrics_text();
    assert!(
        metrics.contains("thoth_connections_refused_total 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refused_at_the_connection_limit_is_not_told_its_ca_is_wrong() {
    let c = TestController::start_with(|cfg| {
        cfg.max_connections = 1;
        cfg.idle_timeout = Duration::from_secs(600);
    })
    .await;
    let _held = idle_tls(&c, ATTACKER).await.expect("handshake");
    let err = served(&c, &admin_creds(&c)).await.unwrap_err();
    assert!(!err.contains("CA"), "{err}");
    assert!(err.contains("connection limits"), "{err}");
    // A wrong CA still is.
    let other = tempfile::tempdir().unwrap();
    thoth_controller::datadir::init(other.path(), None).unwrap();
    let wrong = Credentials {
        ca_pem: std::fs::read_to_string(other.path().join("ca.crt")).unwrap(),
        ..admin_creds(&c)
    };
    drop(_held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let err = served(&c, &wrong).await.unwrap_err();
        if err.contains("does not match the CA") {
            break;
        }
        // The held connection's permit may not be back yet.
        assert!(Instant::now() < deadline, "{err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_quiet_subscription_outlives_the_idle_timeout() {
    let c = TestController::start_with(|cfg| cfg.idle_timeout = Duration::from_secs(1)).await;
    assert_eq!(c.push("acme", POLICY_A).await.version, 1);
    let agent = c.enroll("acme").await;
    let mut sub = c.subscribe(&agent.credentials).await;
    assert_eq!(next_update(&mut sub, 5).await.unwrap().version, 1);
    // Wait out the idle timeout: an idle connection opened now is closed by then.
    let mut probe = idle_tls(&c, ATTACKER).await.unwrap();
    closed_by_server(&mut probe, Duration::from_secs(10)).await;
    // The agent's subscription, quiet all along, still delivers.
    assert_eq!(c.push("acme", POLICY_B).await.version, 2);
    assert_eq!(next_update(&mut sub, 5).await.unwrap().version, 2);
}

// --- Issue 13 review (H1): what a peer that is never authorised can hold -----------------------

/// A TLS connection from `from`, with `cert` (an agent's or admin's credentials) or none.
async fn tls_from(
    c: &TestController,
    from: &str,
    cert: Option<&Credentials>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(c.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(thoth_controller::server::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(creds) => {
            let chain = CertificateDer::pem_slice_iter(creds.cert_pem.as_ref().unwrap().as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(
                creds.key_pem.as_ref().unwrap().as_bytes(),
            )
            .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    let tcp = sock.connect(c.running().addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

const CHECK: &str = "/grpc.health.v1.Health/Check";

/// Speaks HTTP/2 on `conn`: the preface, then `first` requests, then one more health check every
/// `every` (if some), reading whatever the server sends; returns how long until the server
/// closed the connection, or panics at `within`.
async fn held_until_closed(
    mut conn: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    first: &[(&str, bool)],
    every: Option<Duration>,
    within: Duration,
) -> Duration {
    use tokio::io::AsyncWriteExt;
    let start = Instant::now();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[]));
    let mut stream = 1;
    for (path, body) in first {
        out.extend(grpc_request(stream, path, *body));
        stream += 2;
    }
    if conn.write_all(&out).await.is_err() {
        return start.elapsed();
    }
    let mut acked = false;
    let mut buf = [0u8; 4096];
    let mut next = every.map(|e| Instant::now() + e);
    loop {
        assert!(
            start.elapsed() < within,
            "the server kept a connection that was never authorised for {within:?}"
        );
        let wait = next
            .map(|n| n.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(200))
            .min(Duration::from_millis(200));
        match tokio::time::timeout(wait, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) if !acked => {
                acked = true;
                // The server's SETTINGS (its first frame): acknowledge them.
                if conn.write_all(&frame(4, 0x1, 0, &[])).await.is_err() {
                    return start.elapsed();
                }
            }
            Ok(Ok(_)) | Err(_) => {}
        }
        if let (Some(n), Some(e)) = (next, every)
            && Instant::now() >= n
        {
            if conn
                .write_all(&grpc_request(stream, CHECK, true))
                .await
                .is_err()
            {
                return start.elapsed();
            }
            stream += 2;
            next = Some(Instant::now() + e);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_ends_holds_a_connection_no_longer_than_the_unauthorised_lifetime() {
    let c = TestController::start_with(|cfg| {
        cfg.idle_timeout = Duration::from_secs(1);
        cfg.unauthorised_lifetime = Duration::from_secs(2);
    })
    .await;
    // HEADERS of an Enroll and never its DATA: the request is in progress forever.
    let conn = tls_from(&c, ATTACKER, None).await.unwrap();
    let held = held_until_closed(
        conn,
        &[("/thoth.fleet.v1.Enrollment/Enroll", false), (CHECK, false)],
        None,
        Duration::from_secs(15),
    )
    .await;
    assert!(held >= Duration::from_millis(1500), "closed after {held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cheap_health_check_every_few_seconds_holds_a_connection_no_longer_than_the_lifetime() {
    let c = TestController::start_with(|cfg| {
        cfg.idle_timeout = Duration::from_secs(1);
        cfg.unauthorised_lifetime = Duration::from_secs(3);
    })
    .await;
    let conn = tls_from(&c, ATTACKER, None).await.unwrap();
    let held = held_until_closed(
        conn,
        &[(CHECK, true)],
        Some(Duration::from_millis(300)),
        Duration::from_secs(15),
    )
    .await;
    assert!(held >= Duration::from_millis(2500), "closed after {held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_is_refused_to_a_client_without_a_certificate_and_check_still_served() {
    let c = TestController::start().await;
    let anon = Credentials {
        ca_pem: c.ca_pem(),
        cert_pem: None,
        key_pem: None,
    };
    let ch = client::connect(&c.url, &anon, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let e = health
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect_err("an endless stream for a client without a certificate");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
}

async fn revoked_agent(c: &TestController) -> Credentials {
    let agent = c.enroll("acme").await;
    c.admin()
        .await
        .revoke_agent(thoth_proto::fleet::RevokeAgentRequest {
            agent_id: agent.agent_id.clone(),
            reason: "stolen laptop".into(),
        })
        .await
        .unwrap();
    agent.credentials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_and_a_request_that_authorises_nothing_do_not_exempt_from_the_idle_timeout() {
    let c = TestController::start_with(|cfg| {
        cfg.idle_timeout = Duration::from_secs(1);
        cfg.unauthorised_lifetime = Duration::from_secs(600);
    })
    .await;
    let agent = c.enroll("acme").await;
    // Its certificate completes the handshake; one request that authorises nothing (a health
    // check), then silence: idle, so closed.
    let conn = tls_from(&c, ATTACKER, Some(&agent.credentials))
        .await
        .unwrap();
    held_until_closed(conn, &[(CHECK, true)], None, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_certificate_is_refused_at_the_handshake() {
    let c = TestController::start().await;
    let creds = revoked_agent(&c).await;
    let ch = client::connect(&c.url, &creds, Some(Duration::from_secs(5))).await;
    let err = match ch {
        Err(e) => e.to_string(),
        Ok(ch) => thoth_proto::fleet::agent_sync_client::AgentSyncClient::new(ch)
            .subscribe(thoth_proto::fleet::SubscribeRequest::default())
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string(),
    };
    assert!(
        !err.contains("was revoked at"),
        "the handshake, not the request layer, refuses it: {err}"
    );
    // Also after a restart (the deny list is loaded from the store).
    let mut c = c;
    c.restart().await;
    let ch = client::connect(&c.url, &creds, Some(Duration::from_secs(5))).await;
    if let Ok(ch) = ch {
        let e = thoth_proto::fleet::agent_sync_client::AgentSyncClient::new(ch)
            .subscribe(thoth_proto::fleet::SubscribeRequest::default())
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(!e.message().contains("was revoked at"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_with_a_certificate_count_against_their_address_until_authorised() {
    let c = TestController::start_with(|cfg| {
        cfg.max_unauthenticated_per_address = 2;
        cfg.idle_timeout = Duration::from_secs(600);
        cfg.unauthorised_lifetime = Duration::from_secs(600);
    })
    .await;
    // A certificate (an enrolled agent's) that makes no request.
    let creds = c.enroll("acme").await.credentials;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..5 {
        match tls_from(&c, ATTACKER, Some(&creds)).await {
            Ok(conn) => held.push(conn),
            Err(_) => refused += 1,
        }
    }
    assert_eq!((held.len(), refused), (2, 3));
    // Authorised connections stop counting: more agents behind one address (127.0.0.1 here)
    // than the cap keep their subscriptions.
    let agent = c.enroll("acme").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut subs = Vec::new();
    while subs.len() < 4 {
        match client::connect(&c.url, &agent.credentials, Some(Duration::from_secs(5))).await {
            Ok(ch) => {
                let mut sync = thoth_proto::fleet::agent_sync_client::AgentSyncClient::new(ch);
                subs.push(
                    sync.subscribe(thoth_proto::fleet::SubscribeRequest::default())
                        .await
                        .unwrap()
                        .into_inner(),
                );
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
