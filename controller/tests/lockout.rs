//! The controller's edge against a network attacker without a certificate (issue 13, finding 9):
//! TLS connections that never send an HTTP/2 preface or a request cannot hold the
//! `max_connections` permits, one address cannot hold more than its share, and a refused client
//! is told so rather than told that its CA is wrong.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use thoth_controller::client::{self, Credentials};
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
    let ch = client::connect(&c.url, creds, Some(Duration::from_secs(5))).await?;
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
