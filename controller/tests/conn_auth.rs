//! When a controller connection counts as authorised (issue 13, second review, L1): from memory
//! when an agent's or admin's request starts (a verified certificate the deny list does not
//! refuse), so that a slow store cannot cut a legitimate first request at the unauthorised
//! lifetime; and no longer once its certificate is revoked: a revoked agent's or admin's open
//! connections are closed at once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use thoth_client::{self as client, Credentials};
use thoth_controller::pki::Role;
use thoth_proto::fleet as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the controller with `creds`' client certificate.
async fn tls_with(c: &TestController, creds: &Credentials) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(c.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let chain = CertificateDer::pem_slice_iter(creds.cert_pem.as_ref().unwrap().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(
        creds.key_pem.as_ref().unwrap().as_bytes(),
    )
    .unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(thoth_controller::server::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(c.running().addr)
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

const REPORT: &str = "/thoth.fleet.v1.AgentSync/Report";

/// The HTTP/2 preface and one complete gRPC call (an empty message) to `path` on stream 1.
fn preface_and_call(path: &str) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(call(1, path));
    out
}

/// One complete gRPC call (an empty message) to `path` on `stream`.
fn call(stream: u32, path: &str) -> Vec<u8> {
    grpc_request(stream, path, true)
}

/// Makes one call to `path` on a raw connection and reads until its answer ends (a HEADERS
/// frame ending stream 1: the trailers), acknowledging the server's SETTINGS.
async fn call_and_wait_answer(conn: &mut Tls, path: &str) {
    conn.write_all(&preface_and_call(path)).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, conn.read(&mut chunk))
            .await
            .expect("no answer to the call")
            .unwrap();
        assert!(n > 0, "the server closed the connection before answering");
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            buf.drain(..9 + len);
            if kind == 4 && flags & 0x1 == 0 {
                conn.write_all(&frame(4, 0x1, 0, &[])).await.unwrap();
            }
            if kind == 1 && stream == 1 && flags & 0x1 != 0 {
                return;
            }
        }
    }
}

/// Waits until the server closes `conn`, or panics at `within`.
async fn closed_by_server(conn: &mut Tls, within: Duration) {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Err(_) => panic!("the server kept the revoked certificate's connection for {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// Only a revocation may close the connections of these tests.
fn long_limits(cfg: &mut thoth_controller::config::ControllerConfig) {
    cfg.idle_timeout = Duration::from_secs(600);
    cfg.unauthorised_lifetime = Duration::from_secs(600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agents_open_authorised_connection_is_closed() {
    let c = TestController::start_with(long_limits).await;
    let agent = c.enroll("acme").await;
    let mut conn = tls_with(&c, &agent.credentials).await;
    // An authorised request (Report reads the agent from the store, and finds it enrolled).
    call_and_wait_answer(&mut conn, REPORT).await;
    c.admin()
        .await
        .revoke_agent(pb::RevokeAgentRequest {
            agent_id: agent.agent_id.clone(),
            reason: "stolen laptop".into(),
        })
        .await
        .unwrap();
    closed_by_server(&mut conn, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_admins_open_authorised_connection_is_closed() {
    let c = TestController::start_with(long_limits).await;
    let eve = c.admin_creds("eve", Role::Admin, None);
    let mut conn = tls_with(&c, &eve).await;
    call_and_wait_answer(&mut conn, "/thoth.fleet.v1.Admin/WhoAmI").await;
    c.admin()
        .await
        .revoke_admin(pb::RevokeAdminRequest {
            id_or_name: "eve".into(),
            reason: "left".into(),
        })
        .await
        .unwrap();
    closed_by_server(&mut conn, Duration::from_secs(5)).await;
}

/// The store is busy (a long transaction holds it) when an agent makes its first request on a
/// new connection: the request waits for the store past the unauthorised lifetime, and is not
/// cut, because the connection was authorised from memory when the request started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_first_request_is_not_cut_by_a_slow_store() {
    let lifetime = Duration::from_secs(1);
    let c = TestController::start_with(|cfg| {
        cfg.idle_timeout = Duration::from_millis(500);
        cfg.unauthorised_lifetime = lifetime;
    })
    .await;
    let agent = c.enroll("acme").await;
    let store = Arc::clone(&c.running().controller.store);
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (holding, started) = tokio::sync::oneshot::channel::<()>();
    let hold = tokio::task::spawn_blocking(move || {
        let mut holding = Some(holding);
        store
            .commit_checked(
                &thoth_controller::store::TenantId::trusted("acme"),
                &thoth_controller::store::AgentId::trusted("busy"),
                &[],
                &mut |_| {
                    if let Some(h) = holding.take() {
                        let _ = h.send(());
                    }
                    let _ = held.recv();
                    (Vec::new(), None)
                },
            )
            .unwrap();
    });
    started.await.unwrap();
    let ch = client::connect(&c.url, &agent.credentials, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let report = tokio::spawn(async move {
        pb::agent_sync_client::AgentSyncClient::new(ch)
            .report(pb::AgentReport::default())
            .await
    });
    // The store stays busy for three lifetimes (the load), then is released.
    let busy_until = Instant::now() + 3 * lifetime;
    while Instant::now() < busy_until && !report.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    release.send(()).unwrap();
    hold.await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), report)
        .await
        .expect("no answer once the store was released")
        .unwrap();
    answer.expect("the first request was cut while it waited for the store");
}

/// A certificate our CA signed for an agent the store does not know: memory lets its request
/// start authorised, the store refuses it, and from then on its connection is under the idle
/// and lifetime rules again: requests made now and then do not keep it open past its lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_store_refuses_is_not_authorised_again_by_its_next_requests() {
    let c = TestController::start_with(|cfg| {
        cfg.idle_timeout = Duration::from_secs(1);
        cfg.unauthorised_lifetime = Duration::from_secs(2);
    })
    .await;
    let out = c.data().join("cred-ghost");
    let data = thoth_controller::DataDir::load(c.data()).unwrap();
    thoth_controller::datadir::write_admin_credential(
        &out,
        &data.ca,
        &thoth_controller::pki::Identity::Agent {
            tenant: "acme".into(),
            agent_id: "agt-ghost".into(),
        },
        std::time::SystemTime::now(),
    )
    .unwrap();
    let ghost = Credentials::from_dir(&out).unwrap();
    let mut conn = tls_with(&c, &ghost).await;
    let start = Instant::now();
    // A Report (refused: not enrolled), then another every 300 ms on the same connection,
    // until the server closes it at its lifetime.
    call_and_wait_answer(&mut conn, REPORT).await;
    let mut stream = 3u32;
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "a refused certificate's connection outlived its lifetime"
        );
        match tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) | Err(_) => {}
        }
        if conn.write_all(&call(stream, REPORT)).await.is_err() {
            break;
        }
        stream += 2;
    }
}
