//! The accept loop (handshake timeout, connection limits, per-address and per-certificate
//! caps) and each connection's state: authorised or not, idle and lifetime rules, revocation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::limits::{
    AddrSlot, IdentitySlot, MAX_PER_IDENTITY, PerAddress, PerIdentity, address_key, lock,
};
use crate::controller::Controller;
use crate::metrics::Metrics;

/// What the server knows of one open connection: whether it has made an authorised request, how many are in progress, when the last one
/// ended, and when it must close unless authorised by then.
#[derive(Debug)]
pub(super) struct ConnState {
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
    pub(super) fn exempt(&self) -> bool {
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
    pub(super) fn recheck(&self) {
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
pub struct ConnAuth(pub(super) Arc<ConnState>);

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

/// Open connections by peer address (unique among live connections), so that requests can
/// mark theirs active.
pub(super) type Registry = Arc<Mutex<HashMap<SocketAddr, Arc<ConnState>>>>;

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
pub(super) struct Active(Arc<ConnState>);

impl Active {
    pub(super) fn new(state: Arc<ConnState>) -> Active {
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

fn refused(ctl: &Controller, warned: &mut bool, what: std::fmt::Arguments<'_>) {
    Metrics::inc(&ctl.metrics.connections_refused);
    if !*warned {
        tracing::warn!("{what}");
        *warned = true;
    }
}

pub(super) async fn accept_loop(
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
