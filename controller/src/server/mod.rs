//! Serving: TLS 1.3 (rustls, aws-lc-rs) with optional client certificates verified against our
//! CA, the gRPC services, health, metrics, and the maintenance job.

mod accept;
mod activity;
mod limits;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use thoth_proto::fleet::admin_server::AdminServer;
use thoth_proto::fleet::agent_sync_server::AgentSyncServer;
use thoth_proto::fleet::enrollment_server::EnrollmentServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::controller::Controller;
use crate::grpc::{AdminService, EnrollmentService, SyncService};
use crate::metrics;
use accept::{ConnState, Registry, accept_loop};
use activity::ActivityLayer;
use limits::lock;

pub use accept::{Conn, ConnAuth};
pub use tls::{provider, tls_config};

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
    let tls = tls_config(
        controller.ca.cert_pem(),
        &chain,
        server_key_pem,
        Arc::clone(&controller.admins),
    )?;
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
            let ctl = Arc::clone(&controller);
            let render: metrics::Render = Arc::new(move || ctl.metrics_text());
            tasks.push(tokio::spawn(metrics::serve(l, render)));
            Some(a)
        }
        None => None,
    };
    let (tx, rx) = mpsc::channel(1024);
    let registry = Registry::default();
    tasks.push(tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        controller.config.handshake_timeout,
        Arc::clone(&controller),
        Arc::clone(&registry),
        tx,
    )));
    // A revocation (agent or admin) closes the connections its certificate holds open.
    let (ctl, open) = (Arc::clone(&controller), Arc::clone(&registry));
    tasks.push(tokio::spawn(async move {
        let mut revocations = ctl.hub.revocations();
        while revocations.changed().await.is_ok() {
            let states: Vec<Arc<ConnState>> = lock(&open).values().cloned().collect();
            for s in states {
                s.recheck();
            }
        }
    }));
    let ctl = Arc::clone(&controller);
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(ctl.config.resign_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            ctl.maintenance().await;
        }
    }));

    // Approvals: expired requests swept every 15 s (reads expire them too), and ended ones past
    // `approval_retention` (or a tenant's row bound) deleted; notifiers. The
    // sweep's task is aborted at shutdown: its guard then ends the admin watch streams.
    let ctl = Arc::clone(&controller);
    tasks.push(tokio::spawn(async move {
        struct CloseOnDrop(Arc<Controller>);
        impl Drop for CloseOnDrop {
            fn drop(&mut self) {
                self.0.approvals.close();
            }
        }
        let _close = CloseOnDrop(Arc::clone(&ctl));
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = crate::service::approvals::ApprovalService(&ctl)
                .sweep()
                .await
            {
                tracing::warn!("approval expiry sweep failed: {e}");
            }
        }
    }));
    tasks.extend(
        crate::service::approval_notify::start(
            &controller.approvals,
            &controller.config.approval_notifiers,
        )
        .map_err(anyhow::Error::msg)?,
    );
    tasks.extend(crate::sinks::start_all(
        Arc::new(crate::sinks::StoreSource(Arc::clone(&controller.store))),
        &controller.config.sinks,
        &controller.events_tick,
        &controller.sink_lag,
    ));
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
        .layer(ActivityLayer(registry))
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
                crate::grpc::UploadService(Arc::clone(&controller)),
            )
            .max_decoding_message_size(64 << 20),
        )
        .add_service(
            thoth_proto::fleet::approvals_server::ApprovalsServer::new(
                crate::grpc::ApprovalsService(Arc::clone(&controller)),
            )
            .max_decoding_message_size(max),
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
