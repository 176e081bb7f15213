//! Serving: TLS 1.3 (rustls, aws-lc-rs) with optional client certificates verified against our
//! CA, the gRPC services, health, metrics, and the maintenance job.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use thoth_proto::fleet::admin_server::AdminServer;
use thoth_proto::fleet::agent_sync_server::AgentSyncServer;
use thoth_proto::fleet::enrollment_server::EnrollmentServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::controller::Controller;
use crate::grpc::{AdminService, EnrollmentService, SyncService};
use crate::metrics::{self, Metrics};

/// The one crypto provider (aws-lc-rs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server's TLS configuration: TLS 1.3 only, h2, client certificates optional at the TLS
/// layer (Enroll has none) and required by every other service.
pub fn tls_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("CA certificate")?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .context("client verifier")?;
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("server key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("server certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A running controller.
pub struct Running {
    /// The gRPC address it listens on.
    pub addr: SocketAddr,
    /// The metrics address, when on.
    pub metrics_addr: Option<SocketAddr>,
    /// Its state.
    pub controller: Arc<Controller>,
    stop: Option<oneshot::Sender<()>>,
    serve: JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, closes connections, and waits for the server to end.
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Subscriptions are endless streams: give graceful shutdown a moment, then cut.
        if tokio::time::timeout(Duration::from_secs(2), &mut self.serve)
            .await
            .is_err()
        {
            self.serve.abort();
        }
    }

    /// Waits until the server ends (it only ends on error or shutdown).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.serve).await??;
        Ok(())
    }
}

/// A TLS connection that holds one of the `max_connections` permits until it closes.
pub struct Conn {
    inner: TlsStream<TcpStream>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = <TlsStream<TcpStream> as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    ctl: Arc<Controller>,
    tx: mpsc::Sender<Result<Conn, std::io::Error>>,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(ctl.config.max_connections));
    let mut warned = false;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        Metrics::inc(&ctl.metrics.connections);
        // Bounded (invariant 6): over the limit, a connection is closed at once, and counted.
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            Metrics::inc(&ctl.metrics.connections_refused);
            if !warned {
                tracing::warn!(
                    max = ctl.config.max_connections,
                    "connection limit reached: refusing new connections (max_connections)"
                );
                warned = true;
            }
            drop(tcp);
            continue;
        };
        warned = false;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let ctl = Arc::clone(&ctl);
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx
                        .send(Ok(Conn {
                            inner: tls,
                            _permit: permit,
                        }))
                        .await;
                }
                Ok(Err(e)) => {
                    Metrics::inc(&ctl.metrics.tls_failures);
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                }
                Err(_) => {
                    Metrics::inc(&ctl.metrics.tls_failures);
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// Binds and serves. `listen` and `metrics` override the config (tests pass port 0).
pub async fn start(
    controller: Arc<Controller>,
    server_cert_pem: &str,
    server_key_pem: &str,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<Running> {
    // The chain carries the CA too, so that agents can pin it by fingerprint.
    let chain = format!("{server_cert_pem}\n{}", controller.ca.cert_pem());
    let tls = tls_config(controller.ca.cert_pem(), &chain, server_key_pem)?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut tasks = Vec::new();
    let metrics_addr = match metrics_listen {
        Some(m) => {
            let l = metrics::bind(m)
                .await
                .with_context(|| format!("cannot listen for metrics on {m}"))?;
            let a = l.local_addr()?;
            tasks.push(tokio::spawn(metrics::serve(l, Arc::clone(&controller))));
            Some(a)
        }
        None => None,
    };
    let (tx, rx) = mpsc::channel(1024);
    tasks.push(tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        controller.config.handshake_timeout,
        Arc::clone(&controller),
        tx,
    )));
    let ctl = Arc::clone(&controller);
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(ctl.config.resign_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            ctl.maintenance().await;
        }
    }));

    tasks.extend(crate::sinks::start_all(&controller));
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<EnrollmentServer<EnrollmentService>>()
        .await;
    health.set_serving::<AgentSyncServer<SyncService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;
    let max = controller.config.max_request_bytes;
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(64))
        .add_service(health_service)
        .add_service(
            EnrollmentServer::new(EnrollmentService(Arc::clone(&controller)))
                .max_decoding_message_size(max),
        )
        .add_service(
            AgentSyncServer::new(SyncService(Arc::clone(&controller)))
                .max_decoding_message_size(max),
        )
        .add_service(
            thoth_proto::fleet::event_upload_server::EventUploadServer::new(
                crate::ingest::UploadService(Arc::clone(&controller)),
            )
            .max_decoding_message_size(64 << 20),
        )
        .add_service(
            AdminServer::new(AdminService(Arc::clone(&controller)))
                .max_decoding_message_size(max)
                .max_encoding_message_size(64 << 20),
        );
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
    let serve = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    tracing::info!(%addr, "controller listening (gRPC, TLS 1.3)");
    Ok(Running {
        addr,
        metrics_addr,
        controller,
        stop: Some(stop),
        serve,
        tasks,
    })
}

/// Opens the data directory's store and serves it (what `thoth-controller serve` does).
pub async fn start_data_dir(
    data: crate::DataDir,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<Running> {
    let path = data.db_path();
    let store = tokio::task::spawn_blocking(move || crate::store::sqlite::SqliteStore::open(&path))
        .await??;
    let (cert, key) = (data.server_cert_pem.clone(), data.server_key_pem.clone());
    let controller = Controller::new(data, Arc::new(store))?;
    start(controller, &cert, &key, listen, metrics_listen).await
}
