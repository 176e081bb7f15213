//! What each local user may hold on the agent's socket: connections and request bytes in flight,
//! per owning login user and in all (the caps in front of the local service).

// libc for getpwnam_r (the login user owning a subordinate uid): rustix has no passwd lookup.
#![allow(unsafe_code)]

use std::pin::Pin;
use std::sync::Arc;

use tonic::Status;

/// Largest message a proxy may send: an event batch, which the proxy caps at
/// `proxy::forward::BATCH_BYTES` (plus one event of at most 256 KiB); nothing else a proxy sends
/// comes near.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Connections one local user may hold open at once (each proxy holds one or two).
pub const MAX_CONNECTIONS_PER_USER: usize = 128;
/// Request bytes one local user may have in flight (received, not yet decoded) at once, over all
/// their connections: partial messages cannot grow the agent past this per user.
pub const MAX_INFLIGHT_BYTES_PER_USER: usize = 16 << 20;
/// Request bytes every local user together may have in flight: many users (or many uids) cannot
/// grow the agent past this either (parsed events take a few times their bytes, see
/// `pipeline::MAX_EVENT_VALUES`; the agent runs with MemoryMax=1G).
pub const MAX_INFLIGHT_BYTES_TOTAL: usize = 64 << 20;
/// Streams per connection, and the HTTP/2 windows (what one connection may buffer unread).
pub(super) const MAX_STREAMS_PER_CONNECTION: u32 = 16;
pub(super) const WINDOW_BYTES: u32 = 256 << 10;

/// Which budget a uid draws on: login users their own; a subordinate uid (rootless containers,
/// `/etc/subuid`) its owner's; any other uid above `UID_MAX` (`/etc/login.defs`) one shared
/// bucket, so a user cannot multiply their share by connecting under many uids.
#[derive(Debug, Clone)]
pub struct Owners {
    uid_max: u32,
    /// Subordinate ranges: (first uid, count, owner uid).
    ranges: Vec<(u32, u32, u32)>,
}

impl Default for Owners {
    fn default() -> Self {
        Owners {
            uid_max: 60_000,
            ranges: Vec::new(),
        }
    }
}

impl Owners {
    /// From the texts of `/etc/login.defs` and `/etc/subuid`; `resolve` gives a login name's uid.
    pub fn parse(login_defs: &str, subuid: &str, resolve: impl Fn(&str) -> Option<u32>) -> Owners {
        let uid_max = login_defs
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("UID_MAX")).then(|| w.next()?.parse::<u32>().ok())?
            })
            .next_back()
            .unwrap_or(60_000);
        let ranges = subuid
            .lines()
            .filter_map(|l| {
                let mut f = l.trim().splitn(3, ':');
                let (who, first, count) = (f.next()?, f.next()?, f.next()?);
                let owner = who.parse::<u32>().ok().or_else(|| resolve(who))?;
                Some((first.parse().ok()?, count.parse().ok()?, owner))
            })
            .collect();
        Owners { uid_max, ranges }
    }

    /// Reads `/etc/login.defs` and `/etc/subuid` (blocking: at start only).
    #[cfg(unix)]
    pub fn load() -> Owners {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Owners::parse(&read("/etc/login.defs"), &read("/etc/subuid"), user_uid)
    }

    /// The budget key of `uid`.
    pub fn key(&self, uid: u32) -> u32 {
        if uid <= self.uid_max {
            return uid;
        }
        self.ranges
            .iter()
            .find(|(first, count, _)| uid >= *first && uid - first < *count)
            .map_or(UNKNOWN_UID, |r| r.2)
    }
}

/// The uid of login name `name`.
#[cfg(unix)]
fn user_uid(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r writes into the buffers we own, sized as given.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (rc == 0 && !out.is_null()).then_some(pwd.pw_uid)
}

/// What each local user holds: connections and request bytes in flight, keyed by their owning
/// login user ([`Owners`]). A user can exhaust only their own share; the totals are capped too,
/// and their last quarter is kept for root and users holding little (its last eighth for root
/// alone), so neither many users nor many uids can lock root or a light user out.
#[derive(Debug)]
pub struct Limits {
    pub(super) per_user_connections: usize,
    pub(super) total_connections: usize,
    per_user_bytes: usize,
    total_bytes: usize,
    pub(super) owners: Owners,
    used: std::sync::Mutex<Usage>,
    pub(super) refused: std::sync::atomic::AtomicU64,
}

/// Connections and bytes in all, and per budget key.
#[derive(Debug, Default)]
struct Usage {
    connections: usize,
    bytes: usize,
    by: std::collections::HashMap<u32, (usize, usize)>,
}

/// The key of a caller whose uid could not be read, and of uids above `UID_MAX` that no
/// login user owns.
pub(super) const UNKNOWN_UID: u32 = u32::MAX;

/// Whether a holder of `held` (of `per_user`) may take from a total with `left` of `total` left
/// after taking: the last eighth is root's, the eighth before it also for a user holding less
/// than an eighth of their own cap.
fn may_take(key: u32, held: usize, per_user: usize, left: usize, total: usize) -> bool {
    key == 0 || left >= total / 4 || (left >= total / 8 && held < (per_user / 8).max(1))
}

impl Limits {
    /// Caps: connections per user and in all, bytes in flight per user (and
    /// [`MAX_INFLIGHT_BYTES_TOTAL`] in all); uids keyed by [`Owners::default`].
    pub fn new(
        per_user_connections: usize,
        total_connections: usize,
        per_user_bytes: usize,
    ) -> Arc<Limits> {
        Limits::with(
            per_user_connections,
            total_connections,
            per_user_bytes,
            MAX_INFLIGHT_BYTES_TOTAL,
            Owners::default(),
        )
    }

    /// Every cap given, and how uids map to budgets.
    pub fn with(
        per_user_connections: usize,
        total_connections: usize,
        per_user_bytes: usize,
        total_bytes: usize,
        owners: Owners,
    ) -> Arc<Limits> {
        Arc::new(Limits {
            per_user_connections,
            total_connections,
            per_user_bytes,
            total_bytes,
            owners,
            used: std::sync::Mutex::new(Usage::default()),
            refused: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn used(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection slot for `uid`, or `None` at its owner's cap, or at the total (its last
    /// quarter only for root and light users, see [`may_take`]).
    pub(super) fn connect(self: &Arc<Self>, uid: u32) -> Option<ConnSlot> {
        let key = self.owners.key(uid);
        let mut u = self.used();
        let held = u.by.get(&key).map_or(0, |e| e.0);
        if held >= self.per_user_connections {
            return None;
        }
        let free = self.total_connections.saturating_sub(u.connections);
        if free == 0
            || !may_take(
                key,
                held,
                self.per_user_connections,
                free - 1,
                self.total_connections,
            )
        {
            return None;
        }
        u.by.entry(key).or_default().0 += 1;
        u.connections += 1;
        Some(ConnSlot {
            limits: Arc::clone(self),
            uid: key,
        })
    }

    /// Takes `n` bytes of `uid`'s in-flight budget; false (nothing taken) when over it or over
    /// the total (its last quarter only for root and light users, see [`may_take`]).
    pub(super) fn take_bytes(&self, uid: u32, n: usize) -> bool {
        let key = self.owners.key(uid);
        let mut u = self.used();
        let held = u.by.get(&key).map_or(0, |e| e.1);
        if held + n > self.per_user_bytes {
            return false;
        }
        let free = self.total_bytes.saturating_sub(u.bytes);
        if n > free || !may_take(key, held, self.per_user_bytes, free - n, self.total_bytes) {
            return false;
        }
        u.by.entry(key).or_default().1 += n;
        u.bytes += n;
        true
    }

    pub(super) fn release_bytes(&self, uid: u32, n: usize) {
        let key = self.owners.key(uid);
        let mut u = self.used();
        let Some(e) = u.by.get_mut(&key) else {
            return;
        };
        let n = n.min(e.1);
        e.1 -= n;
        if *e == (0, 0) {
            u.by.remove(&key);
        }
        u.bytes = u.bytes.saturating_sub(n);
    }

    /// Connections refused at a cap so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One open connection of one user (its budget key); its slot is released when the connection
/// closes.
#[derive(Debug)]
pub(super) struct ConnSlot {
    limits: Arc<Limits>,
    uid: u32,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut u = self.limits.used();
        u.connections = u.connections.saturating_sub(1);
        if let Some(e) = u.by.get_mut(&self.uid) {
            e.0 = e.0.saturating_sub(1);
            if *e == (0, 0) {
                u.by.remove(&self.uid);
            }
        }
    }
}

/// An accepted local connection holding its user's slot.
#[cfg(unix)]
pub(super) struct LocalConn {
    pub(super) inner: tokio::net::UnixStream,
    pub(super) _slot: ConnSlot,
}

#[cfg(unix)]
impl tonic::transport::server::Connected for LocalConn {
    type ConnectInfo = super::peer::ConnInfo;

    /// The peer's credentials, and the process that connected (for the proxy check).
    fn connect_info(&self) -> Self::ConnectInfo {
        super::peer::ConnInfo::of(&self.inner)
    }
}

#[cfg(unix)]
impl tokio::io::AsyncRead for LocalConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(unix)]
impl tokio::io::AsyncWrite for LocalConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts each request's body bytes against its user's in-flight budget from the moment tonic
/// buffers them until the call is answered, and fails a request that would take the user over
/// it (partial messages, or messages waiting in handlers, hold no more).
#[derive(Clone)]
pub(super) struct BudgetLayer(pub(super) Arc<Limits>);

impl<S> tower::Layer<S> for BudgetLayer {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Budget<S> {
        Budget {
            inner,
            limits: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub(super) struct Budget<S> {
    inner: S,
    limits: Arc<Limits>,
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;

impl<S> tower::Service<HttpRequest> for Budget<S>
where
    S: tower::Service<HttpRequest>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let held = Arc::new(Held {
            limits: Arc::clone(&self.limits),
            uid: caller_uid_http(&req).unwrap_or(UNKNOWN_UID),
            bytes: std::sync::atomic::AtomicUsize::new(0),
        });
        let req = req.map(|body| {
            tonic::body::Body::new(CountedBody {
                inner: body,
                held: Arc::clone(&held),
            })
        });
        let fut = self.inner.call(req);
        // The bytes stay counted until the call is answered: a decoded message waiting in a
        // handler is as much in flight as one still arriving.
        Box::pin(async move {
            let out = fut.await;
            drop(held);
            out
        })
    }
}

/// The request bytes one call holds of its user's budget; given back when both the body and
/// the call are done.
struct Held {
    limits: Arc<Limits>,
    uid: u32,
    bytes: std::sync::atomic::AtomicUsize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.limits.release_bytes(self.uid, *self.bytes.get_mut());
    }
}

#[cfg(unix)]
fn caller_uid_http(req: &HttpRequest) -> Option<u32> {
    req.extensions()
        .get::<super::peer::ConnInfo>()
        .and_then(|i| i.uds.peer_cred)
        .map(|c| c.uid())
}

#[cfg(not(unix))]
fn caller_uid_http(_req: &HttpRequest) -> Option<u32> {
    None
}

struct CountedBody {
    inner: tonic::body::Body,
    held: Arc<Held>,
}

impl http_body::Body for CountedBody {
    type Data = prost::bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len();
            let h = &this.held;
            if !h.limits.take_bytes(h.uid, n) {
                return std::task::Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "this user already has {} MiB of requests in flight to the agent (or all users together have too much); try again when they finish",
                    h.limits.per_user_bytes >> 20
                )))));
            }
            h.bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
