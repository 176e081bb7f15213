//! Serving: TLS 1.3 (rustls, aws-lc-rs) with optional client certificates verified against our
//! CA, the gRPC services, health, metrics, and the maintenance job.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    admins: Arc<crate::admins::AdminGate>,
) -> anyhow::Result<rustls::ServerConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("CA certificate")?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .context("client verifier")?;
    let verifier = Arc::new(GatedVerifier {
        inner: verifier,
        admins,
    });
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

/// The CA's verifier, then the admin deny list: a revoked admin credential fails the handshake.
#[derive(Debug)]
struct GatedVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    admins: Arc<crate::admins::AdminGate>,
}

impl rustls::server::danger::ClientCertVerifier for GatedVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Some(why) = self.admins.refusal_for_der(end_entity) {
            tracing::warn!("TLS handshake refused: {why}");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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

/// What the server knows of one open connection: whether it has made an authorised request, how many are in progress, when the last one
/// ended, and when it must close unless authorised by then.
#[derive(Debug)]
struct ConnState {
    authorised: AtomicBool,
    /// Its verified client certificate's identity and fingerprint (None: no certificate).
    peer: Option<(crate::pki::Identity, String)>,
    /// The deny list (revoked agents, revoked admin credentials), in memory.
    gate: Arc<crate::admins::AdminGate>,
    /// Authorised once, and its certificate revoked since: it closes soon (see [`REVOKED_LINGER`]).
    revoked: AtomicBool,
    /// When it was found revoked.
    revoked_at: Mutex<Option<Instant>>,
    /// The store refused its caller after memory let it through: never authorised again.
    withdrawn: AtomicBool,
    /// Wakes the connection's reads when it is revoked, so that it closes even when quiet.
    waker: futures_util::task::AtomicWaker,
    in_flight: AtomicUsize,
    last_active: Mutex<Instant>,
    /// Accept time + `unauthorised_lifetime`.
    deadline: Instant,
    /// Its address's slot, held until it is authorised (or closes).
    addr_slot: Mutex<Option<AddrSlot>>,
}

impl ConnState {
    /// Idle rules and the lifetime no longer apply: a client that has made an authorised request
    /// (agents keep their subscription, admins their session) is bounded by keepalive instead.
    /// A certificate alone is not enough: a revoked agent's still completes the handshake.
    fn exempt(&self) -> bool {
        self.authorised.load(Ordering::Acquire) && !self.revoked.load(Ordering::Acquire)
    }

    /// Its certificate, as far as memory knows (no store read): verified, and neither a revoked
    /// agent's nor an admin credential the deny list refuses.
    fn allowed(&self) -> bool {
        self.peer
            .as_ref()
            .is_some_and(|(id, fp)| self.gate.refusal_for(id, fp).is_none())
    }

    /// After a revocation: an authorised connection whose certificate is now refused is marked
    /// revoked and woken, and closes at once (its permit and certificate slot freed).
    fn recheck(&self) {
        if self.authorised.load(Ordering::Acquire)
            && !self.revoked.load(Ordering::Acquire)
            && !self.allowed()
        {
            *lock(&self.revoked_at) = Some(Instant::now());
            self.revoked.store(true, Ordering::Release);
            self.waker.wake();
        }
    }
}

/// A revoked certificate's connection closes once no request has been in progress on it for
/// this long (its streams end with a "revoked" status first, and that status is sent)...
const REVOKED_LINGER: Duration = Duration::from_millis(500);
/// ... and in any case this long after the revocation, whatever is in progress.
const REVOKED_GRACE: Duration = Duration::from_secs(10);

/// A handle on a request's connection, in its extensions: the services call
/// [`ConnAuth::authorise`] once the caller is authorised.
#[derive(Debug, Clone)]
pub struct ConnAuth(Arc<ConnState>);

impl ConnAuth {
    /// The connection made an authorised request: exempt from the idle timeout and the
    /// unauthorised lifetime, and no longer counted against its address.
    pub fn authorise(&self) {
        if self.0.withdrawn.load(Ordering::Acquire) || !self.0.allowed() {
            return;
        }
        if !self.0.authorised.swap(true, Ordering::AcqRel) {
            lock(&self.0.addr_slot).take();
        }
    }

    /// The store refused the caller after all (an agent not enrolled here, or revoked): the
    /// connection is under the idle and lifetime rules again, for good (its later requests do
    /// not authorise it from memory again).
    pub fn withdraw(&self) {
        self.0.withdrawn.store(true, Ordering::Release);
        self.0.authorised.store(false, Ordering::Release);
    }
}

impl crate::grpc::ConnAuthorisation for ConnAuth {
    fn authorise(&self) {
        ConnAuth::authorise(self);
    }
    fn withdraw(&self) {
        ConnAuth::withdraw(self);
    }
}

/// Whether a request on `path` is one that authorises its connection when its certificate is
/// allowed (an agent's or admin's call; not health checks, nor enrollment, which anyone may
/// make).
fn authorising(path: &str) -> bool {
    path.starts_with("/thoth.fleet.v1.") && path != "/thoth.fleet.v1.Enrollment/Enroll"
}

/// Open connections by peer address (unique among live connections), so that requests can
/// mark theirs active.
type Registry = Arc<Mutex<HashMap<SocketAddr, Arc<ConnState>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connections not yet authorised (handshaking, without a client certificate, or with one that
/// has made no authorised request) per address; IPv6 addresses by /64 (one host gets a whole
/// /64), IPv4-mapped IPv6 as IPv4.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// Most connections one client certificate (by fingerprint) may hold at once, authorised or
/// not: a stolen certificate cannot take every `max_connections` permit.
const MAX_PER_IDENTITY: usize = 256;

/// Open connections per client certificate.
#[derive(Debug, Default)]
struct PerIdentity(Mutex<HashMap<String, usize>>);

/// One connection of one certificate; released on drop.
#[derive(Debug)]
struct IdentitySlot {
    counts: Arc<PerIdentity>,
    id: String,
}

impl PerIdentity {
    fn take(self: &Arc<Self>, id: String, max: usize) -> Option<IdentitySlot> {
        let mut m = lock(&self.0);
        let n = m.entry(id.clone()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IdentitySlot {
            counts: Arc::clone(self),
            id,
        })
    }
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        let mut m = lock(&self.counts.0);
        if let Some(n) = m.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.id);
            }
        }
    }
}

/// The key an address is counted under.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// One connection of one address not authorised yet; released on drop (or once authorised).
#[derive(Debug)]
struct AddrSlot {
    counts: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddrSlot> {
        let ip = address_key(ip);
        let mut m = lock(&self.0);
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddrSlot {
            counts: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        let mut m = lock(&self.counts.0);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A TLS connection that holds one of the `max_connections` permits until it closes (and, until
/// authorised, one of its address's slots). Unless exempt (see [`ConnState::exempt`]), it is
/// closed once no request has been in progress for `idle` — a connection that never sends its
/// HTTP/2 preface or a request holds its permit no longer than that — and in any case at its
/// deadline (`unauthorised_lifetime` after accept), whatever is in progress: an endless
/// request, or one cheap request every `idle`, holds nothing longer than that either.
pub struct Conn {
    inner: TlsStream<TcpStream>,
    state: Arc<ConnState>,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// [`Conn::poll_idle`] has seen it revoked (and moved its timer to the short rules).
    revoked_seen: bool,
    registry: Registry,
    peer: SocketAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _identity_slot: Option<IdentitySlot>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut r = lock(&self.registry);
        if r.get(&self.peer)
            .is_some_and(|s| Arc::ptr_eq(s, &self.state))
        {
            r.remove(&self.peer);
        }
    }
}

impl Conn {
    /// `Ready(())` once the connection has been idle too long.
    fn poll_idle(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::future::Future as _;
        let (mut idle, mut deadline) = (self.idle, self.state.deadline);
        if self.state.authorised.load(Ordering::Acquire) {
            self.state.waker.register(cx.waker());
            if !self.state.revoked.load(Ordering::Acquire) {
                return std::task::Poll::Pending;
            }
            // Revoked since it was authorised: the idle and lifetime rules again, short ones.
            let at = lock(&self.state.revoked_at).unwrap_or_else(Instant::now);
            (idle, deadline) = (REVOKED_LINGER, at + REVOKED_GRACE);
            if !self.revoked_seen {
                // The timer still runs on the long rules (or is long spent): check now.
                self.revoked_seen = true;
                self.timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(Instant::now()));
            }
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return std::task::Poll::Ready(());
            }
            let next = if self.state.in_flight.load(Ordering::Acquire) > 0 {
                Instant::now() + idle
            } else {
                let last = *lock(&self.state.last_active);
                if last.elapsed() >= idle {
                    return std::task::Poll::Ready(());
                }
                last + idle
            };
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(next.min(deadline)));
        }
        std::task::Poll::Pending
    }
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
        if self.poll_idle(cx).is_ready() {
            tracing::debug!(peer = %self.peer, "closing a connection idle or not authorised in time");
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "idle, or not authorised in time",
            )));
        }
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

/// Marks a connection active from the start of a request until its response body ends.
#[derive(Debug)]
struct Active(Arc<ConnState>);

impl Active {
    fn new(state: Arc<ConnState>) -> Active {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        Active(state)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        *lock(&self.0.last_active) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The layer that tells each connection's [`ConnState`] about its requests.
#[derive(Clone)]
struct ActivityLayer(Registry);

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = Activity<S>;

    fn layer(&self, inner: S) -> Activity<S> {
        Activity {
            inner,
            registry: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
struct Activity<S> {
    inner: S,
    registry: Registry,
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;

/// The streaming health method.
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S> tower::Service<HttpRequest> for Activity<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let state = req
            .extensions()
            .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
            .and_then(|i| i.get_ref().remote_addr())
            .and_then(|peer| lock(&self.registry).get(&peer).cloned());
        // An endless health stream is for authorised clients: anyone else gets Check only.
        if req.uri().path() == HEALTH_WATCH && !state.as_ref().is_some_and(|s| s.exempt()) {
            let resp = tonic::Status::permission_denied(
                "Health/Watch needs an authorised client certificate; use Health/Check",
            )
            .into_http();
            return Box::pin(async move { Ok(resp) });
        }
        if let Some(s) = &state {
            let auth = ConnAuth(Arc::clone(s));
            // Authorised from memory when the request starts (a verified certificate the deny
            // list does not refuse), not after the store read the service does next: a slow
            // store cannot make a legitimate first request outlive the unauthorised lifetime.
            if authorising(req.uri().path()) {
                auth.authorise();
            }
            req.extensions_mut()
                .insert(crate::grpc::Conn(Arc::new(auth)));
        }
        let active = state.map(Active::new);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(match active {
                // Streaming responses count as in progress until their body ends.
                Some(active) => resp.map(|body| {
                    tonic::body::Body::new(ActiveBody {
                        inner: body,
                        _active: active,
                    })
                }),
                None => resp,
            })
        })
    }
}

struct ActiveBody {
    inner: tonic::body::Body,
    _active: Active,
}

impl hyper::body::Body for ActiveBody {
    type Data = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn refused(ctl: &Controller, warned: &mut bool, what: std::fmt::Arguments<'_>) {
    Metrics::inc(&ctl.metrics.connections_refused);
    if !*warned {
        tracing::warn!("{what}");
        *warned = true;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    ctl: Arc<Controller>,
    registry: Registry,
    tx: mpsc::Sender<Result<Conn, std::io::Error>>,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(ctl.config.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let per_identity = Arc::new(PerIdentity::default());
    let max_per_address = ctl.config.max_unauthenticated_per_address;
    let idle = ctl.config.idle_timeout;
    let lifetime = ctl.config.unauthorised_lifetime;
    let mut warned = false;
    let mut warned_address = false;
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
        let accepted = Instant::now();
        // One address cannot take every slot with connections that never authenticate.
        let Some(addr_slot) = per_address.take(peer.ip(), max_per_address) else {
            refused(
                &ctl,
                &mut warned_address,
                format_args!(
                    "{} holds {max_per_address} connections not authorised yet: refusing more from it (max_unauthenticated_per_address)",
                    address_key(peer.ip())
                ),
            );
            drop(tcp);
            continue;
        };
        warned_address = false;
        // Bounded (invariant 6): over the limit, a connection is closed at once, and counted.
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            refused(
                &ctl,
                &mut warned,
                format_args!(
                    "connection limit reached: refusing new connections (max_connections = {})",
                    ctl.config.max_connections
                ),
            );
            drop(tcp);
            continue;
        };
        warned = false;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let ctl = Arc::clone(&ctl);
        let registry = Arc::clone(&registry);
        let per_identity = Arc::clone(&per_identity);
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let leaf = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| {
                            (
                                crate::pki::fingerprint(c),
                                crate::pki::Identity::from_cert_der(c),
                            )
                        });
                    let peer_id = leaf
                        .as_ref()
                        .and_then(|(fp, id)| id.as_ref().ok().map(|id| (id.clone(), fp.clone())));
                    let identity_slot = match leaf.map(|(fp, _)| fp) {
                        Some(fp) => match per_identity.take(fp.clone(), MAX_PER_IDENTITY) {
                            Some(slot) => Some(slot),
                            None => {
                                Metrics::inc(&ctl.metrics.connections_refused);
                                tracing::debug!(%peer, "certificate {fp} holds {MAX_PER_IDENTITY} connections: refusing more");
                                return;
                            }
                        },
                        None => None,
                    };
                    let state = Arc::new(ConnState {
                        authorised: AtomicBool::new(false),
                        peer: peer_id,
                        gate: Arc::clone(&ctl.admins),
                        revoked: AtomicBool::new(false),
                        revoked_at: Mutex::new(None),
                        withdrawn: AtomicBool::new(false),
                        waker: futures_util::task::AtomicWaker::new(),
                        in_flight: AtomicUsize::new(0),
                        last_active: Mutex::new(Instant::now()),
                        deadline: accepted + lifetime,
                        // Counted against its address until authorised: a certificate our CA
                        // signed (a revoked agent's too) is not enough.
                        addr_slot: Mutex::new(Some(addr_slot)),
                    });
                    lock(&registry).insert(peer, Arc::clone(&state));
                    let conn = Conn {
                        inner: tls,
                        state,
                        idle,
                        timer: Box::pin(tokio::time::sleep(idle)),
                        revoked_seen: false,
                        registry,
                        peer,
                        _permit: permit,
                        _identity_slot: identity_slot,
                    };
                    let _ = tx.send(Ok(conn)).await;
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

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
