//! Prometheus metrics (text exposition format 0.0.4), served with `/healthz` over HTTP/1.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What `/metrics` serves: the exposition text, rendered at each scrape. The controller gives
/// it (counters, gauges it owns, sink lag); this module knows nothing of the controller.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Counters the controller bumps.
#[derive(Default)]
pub struct Metrics {
    /// Enrollments that produced a certificate.
    pub enrollments: AtomicU64,
    /// Enrollments refused.
    pub enrollments_refused: AtomicU64,
    /// Certificates renewed.
    pub renewals: AtomicU64,
    /// Policy versions created (push and rollback).
    pub policy_versions: AtomicU64,
    /// Bundles re-signed before expiry.
    pub bundles_resigned: AtomicU64,
    /// Bundles sent on subscriptions.
    pub bundles_sent: AtomicU64,
    /// Agent reports received.
    pub reports: AtomicU64,
    /// Calls refused for identity or permission.
    pub auth_refused: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Subscriptions open now.
    pub subscriptions: AtomicU64,
    /// Events committed from agents.
    pub events_ingested: AtomicU64,
    /// Event batches committed.
    pub event_batches: AtomicU64,
    /// Chain gaps and breaks recorded.
    pub chain_alerts: AtomicU64,
}

fn counter(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

impl Metrics {
    /// Bumps a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, connected_agents: usize) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        counter(
            &mut out,
            "thoth_enrollments_total",
            "Agents enrolled.",
            "counter",
            g(&self.enrollments),
        );
        counter(
            &mut out,
            "thoth_enrollments_refused_total",
            "Enrollments refused (bad token, CSR or tenant).",
            "counter",
            g(&self.enrollments_refused),
        );
        counter(
            &mut out,
            "thoth_certificate_renewals_total",
            "Agent certificates renewed.",
            "counter",
            g(&self.renewals),
        );
        counter(
            &mut out,
            "thoth_policy_versions_total",
            "Policy versions created by push or rollback.",
            "counter",
            g(&self.policy_versions),
        );
        counter(
            &mut out,
            "thoth_bundles_resigned_total",
            "Bundles re-signed before expiry.",
            "counter",
            g(&self.bundles_resigned),
        );
        counter(
            &mut out,
            "thoth_bundles_sent_total",
            "Bundles sent to subscribed agents.",
            "counter",
            g(&self.bundles_sent),
        );
        counter(
            &mut out,
            "thoth_agent_reports_total",
            "Agent status reports received.",
            "counter",
            g(&self.reports),
        );
        counter(
            &mut out,
            "thoth_auth_refused_total",
            "Calls refused for missing identity or permission.",
            "counter",
            g(&self.auth_refused),
        );
        counter(
            &mut out,
            "thoth_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out.",
            "counter",
            g(&self.tls_failures),
        );
        counter(
            &mut out,
            "thoth_connections_total",
            "TCP connections accepted.",
            "counter",
            g(&self.connections),
        );
        counter(
            &mut out,
            "thoth_connections_refused_total",
            "Connections refused at the max_connections limit.",
            "counter",
            g(&self.connections_refused),
        );
        counter(
            &mut out,
            "thoth_subscriptions_open",
            "Policy subscriptions open now.",
            "gauge",
            g(&self.subscriptions),
        );
        counter(
            &mut out,
            "thoth_agents_connected",
            "Agents with a subscription open now.",
            "gauge",
            connected_agents as u64,
        );
        out
    }
}

async fn handle(
    render: Render,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (status, ctype, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", render()),
        ("GET", "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        ("GET", _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    Ok(resp)
}

/// Serves metrics on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, render: Render) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&render), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
