//! The local endpoint: gRPC over a Unix domain socket that the proxies of every desktop user
//! reach. Each caller's OS user comes from the socket's peer credentials.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use thoth_proto::fleet::{self as pb, local_agent_server};
use tonic::{Request, Response, Status};

use super::budget::{
    BudgetLayer, LocalConn, MAX_STREAMS_PER_CONNECTION, UNKNOWN_UID, WINDOW_BYTES,
};
pub use super::budget::{
    Limits, MAX_CONNECTIONS_PER_USER, MAX_INFLIGHT_BYTES_PER_USER, MAX_INFLIGHT_BYTES_TOTAL,
    MAX_MESSAGE_BYTES, Owners,
};
use super::shared::Shared;

/// Largest batch of events accepted per call.
const MAX_EVENTS_PER_CALL: usize = 1000;

/// The uid behind a local call (from the socket's peer credentials).
#[cfg(unix)]
fn caller_uid<T>(req: &Request<T>) -> Option<u32> {
    req.extensions()
        .get::<super::peer::ConnInfo>()
        .and_then(|i| i.uds.peer_cred)
        .map(|c| c.uid())
}

#[cfg(not(unix))]
fn caller_uid<T>(_req: &Request<T>) -> Option<u32> {
    None
}

/// The name of a caller's uid.
fn name_of(uid: Option<u32>) -> String {
    match uid {
        #[cfg(unix)]
        Some(uid) => user_name(uid).unwrap_or_else(|| format!("uid {uid}")),
        #[cfg(not(unix))]
        Some(uid) => format!("uid {uid}"),
        None => "unknown".into(),
    }
}

/// The OS user behind a local call.
fn caller<T>(req: &Request<T>) -> String {
    name_of(caller_uid(req))
}

/// Whether `uid` may see every user's status: root, and the agent's own user (who can read its
/// state directory anyway).
fn sees_all(uid: Option<u32>) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions.
        uid.is_some_and(|u| u == 0 || u == rustix::process::geteuid().as_raw())
    }
    #[cfg(not(unix))]
    {
        let _ = uid;
        true
    }
}

/// The login name of `uid` (a caller's: counted in tests).
#[cfg(unix)]
pub fn user_name(uid: u32) -> Option<String> {
    #[cfg(test)]
    tests::LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    login_name(uid)
}

#[cfg(unix)]
pub use super::sys::login_name;

/// The service, with the caps (whose [`Owners`] say whose spool quota a caller's events use).
struct LocalService(Arc<Shared>, Arc<Limits>);

impl LocalService {
    /// The caller's user name (looked up off the async workers: NSS blocks), noted for
    /// status, once the process behind the connection passed the peer check for `call`.
    async fn checked_caller<T>(
        &self,
        req: &Request<T>,
        uid: u32,
        server: &str,
        call: super::peer::Call,
    ) -> Result<String, Status> {
        let name = tokio::task::spawn_blocking(move || name_of(Some(uid)))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let server: String = server.chars().take(128).collect();
        self.0.saw_caller(&name, &server);
        let conn = req.extensions().get::<super::peer::ConnInfo>().cloned();
        let key = self.1.owners.key(uid);
        super::gate::gate(&self.0, conn.as_ref(), &name, key, call).await?;
        Ok(name)
    }
}

fn local_policy(sh: &Shared, cur: Option<&Arc<super::shared::Current>>) -> pb::LocalPolicy {
    let status = sh.status();
    pb::LocalPolicy {
        bundle: cur.map(|c| c.bytes.clone()).unwrap_or_default(),
        version: cur.map_or(0, |c| c.version),
        stale: cur.is_some_and(|c| c.stale),
        agent_id: status.agent_id.unwrap_or_default(),
        tenant: sh.config.tenant.clone(),
    }
}

type PolicyStream = Pin<Box<dyn Stream<Item = Result<pb::LocalPolicy, Status>> + Send>>;

/// How often the process behind an open `WatchPolicy` stream is checked again.
const WATCH_RECHECK: std::time::Duration = if cfg!(test) {
    std::time::Duration::from_millis(200)
} else {
    super::peer::RECHECK
};

/// An open `WatchPolicy` stream: the policy it follows, and whom to check again.
struct Watch {
    rx: tokio::sync::watch::Receiver<Option<Arc<super::shared::Current>>>,
    sh: Arc<Shared>,
    conn: Option<super::peer::ConnInfo>,
    user: String,
    owner: u32,
    first: bool,
}

#[tonic::async_trait]
impl local_agent_server::LocalAgent for LocalService {
    async fn get_policy(
        &self,
        req: Request<pb::LocalPolicyRequest>,
    ) -> Result<Response<pb::LocalPolicy>, Status> {
        let user = caller(&req);
        let owner = self.1.owners.key(caller_uid(&req).unwrap_or(UNKNOWN_UID));
        super::gate::gate(
            &self.0,
            req.extensions().get(),
            &user,
            owner,
            super::peer::Call::Policy,
        )
        .await?;
        let server = req
            .get_ref()
            .server_name
            .chars()
            .take(128)
            .collect::<String>();
        self.0.saw_caller(&user, &server);
        let cur = self.0.current.borrow().clone();
        Ok(Response::new(local_policy(&self.0, cur.as_ref())))
    }

    type WatchPolicyStream = PolicyStream;

    async fn watch_policy(
        &self,
        req: Request<pb::LocalPolicyRequest>,
    ) -> Result<Response<Self::WatchPolicyStream>, Status> {
        let user = caller(&req);
        let owner = self.1.owners.key(caller_uid(&req).unwrap_or(UNKNOWN_UID));
        super::gate::gate(
            &self.0,
            req.extensions().get(),
            &user,
            owner,
            super::peer::Call::Policy,
        )
        .await?;
        let server = req
            .get_ref()
            .server_name
            .chars()
            .take(128)
            .collect::<String>();
        self.0.saw_caller(&user, &server);
        // The process behind the stream is checked again every RECHECK while it is open; once
        // refused, the stream ends with the refusal (the proxy then asks again and is denied).
        let conn = req.extensions().get::<super::peer::ConnInfo>().cloned();
        let watch = Watch {
            rx: self.0.current.subscribe(),
            sh: Arc::clone(&self.0),
            conn,
            user,
            owner,
            first: true,
        };
        let stream = futures_util::stream::unfold(Some(watch), |w| async move {
            let mut w = w?;
            if !w.first {
                loop {
                    tokio::select! {
                        changed = w.rx.changed() => {
                            changed.ok()?;
                            break;
                        }
                        () = tokio::time::sleep(WATCH_RECHECK) => {
                            let gate = super::gate::gate(
                                &w.sh,
                                w.conn.as_ref(),
                                &w.user,
                                w.owner,
                                super::peer::Call::Policy,
                            );
                            if let Err(refused) = gate.await {
                                return Some((Err(refused), None));
                            }
                        }
                    }
                }
            }
            w.first = false;
            let cur = w.rx.borrow_and_update().clone();
            let item = local_policy(&w.sh, cur.as_ref());
            Some((Ok(item), Some(w)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn emit_events(
        &self,
        req: Request<pb::LocalEvents>,
    ) -> Result<Response<pb::LocalEventsAck>, Status> {
        let conn = req.extensions().get::<super::peer::ConnInfo>().cloned();
        let uid = caller_uid(&req);
        let user = name_of(uid);
        // Subordinate uids use their owner's spool quota; uids nobody owns share one.
        let owner = match uid.map(|u| (u, self.1.owners.key(u))) {
            Some((u, k)) if u == k => user.clone(),
            Some((_, UNKNOWN_UID)) | None => "uids without a login user".to_owned(),
            Some((_, k)) => name_of(Some(k)),
        };
        let events = req.into_inner().events;
        if events.len() > MAX_EVENTS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "{} events in one call, over the limit of {MAX_EVENTS_PER_CALL}",
                events.len()
            )));
        }
        self.0.saw_caller(&user, "");
        let key = self.1.owners.key(uid.unwrap_or(UNKNOWN_UID));
        super::gate::gate(
            &self.0,
            conn.as_ref(),
            &user,
            key,
            super::peer::Call::Events,
        )
        .await?;
        // Each event is checked on its own: a bad one is refused (counted, reported), the rest
        // are kept. A spool that cannot write answers at once, so the proxy keeps its events.
        let out = self
            .0
            .spool_events_as(events, &user, &owner)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::LocalEventsAck {
            accepted: out.accepted,
            dropped: out.dropped,
            refused: out.refused,
            refusal: out.reason,
        }))
    }

    async fn check_tools(
        &self,
        req: Request<pb::ToolListCheck>,
    ) -> Result<Response<pb::ToolListVerdict>, Status> {
        // Whose pins: the socket's peer, never the request. Only the installed, untampered
        // thoth may read or pin them (as for policy).
        let Some(uid) = caller_uid(&req) else {
            return Err(Status::permission_denied(
                "the caller's OS user is unknown: no tool pins for it",
            ));
        };
        super::pins::check::validate(req.get_ref())
            .map_err(|why| Status::invalid_argument(format!("invalid tool list: {why}")))?;
        let server = req.get_ref().server_name.clone();
        let name = self
            .checked_caller(&req, uid, &server, super::peer::Call::Policy)
            .await?;
        let sh = Arc::clone(&self.0);
        let list = req.into_inner();
        // The store's file IO: off the async workers.
        let verdict = tokio::task::spawn_blocking(move || {
            let (verdict, shadowed) = sh.pins.check(uid, &list);
            for f in &shadowed {
                super::pins::events::raise_shadowed(&sh, &name, f);
            }
            verdict
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(verdict))
    }

    async fn request_approval(
        &self,
        req: Request<pb::ApprovalRequest>,
    ) -> Result<Response<pb::ApprovalDecision>, Status> {
        // Who asks comes from the socket's peer credentials; the request's `user` and
        // `approval_id` are the agent's to set (the broker ignores the proxy's).
        let Some(uid) = caller_uid(&req) else {
            return Ok(Response::new(pb::ApprovalDecision {
                reason: "the caller's OS user is unknown: nobody can be asked to approve".into(),
                ..pb::ApprovalDecision::default()
            }));
        };
        // Only the installed, untampered thoth may put a request before a human (as for policy).
        let server = req.get_ref().server_name.clone();
        let name = self
            .checked_caller(&req, uid, &server, super::peer::Call::Approval)
            .await?;
        let caller = super::approval::Caller { uid, name };
        // Dropping this future (the proxy went away) withdraws the request (see the broker).
        let decision = self.0.approvals.request(caller, req.into_inner()).await;
        Ok(Response::new(decision))
    }

    async fn status(
        &self,
        req: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatus>, Status> {
        // Every user sees their own part only; root (and the agent's user) sees all.
        let uid = caller_uid(&req);
        let mut status = self.0.status();
        if !sees_all(uid) {
            // The user-name lookup (NSS) and the stat of each config file block: off the
            // async workers.
            status = tokio::task::spawn_blocking(move || {
                status.only_for(uid.unwrap_or(u32::MAX), &name_of(uid))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        }
        let mut json =
            serde_json::to_value(&status).map_err(|e| Status::internal(e.to_string()))?;
        // The caller's own pinned tools (counts only).
        if let (Some(uid), Some(obj)) = (uid, json.as_object_mut()) {
            let pins = Arc::clone(&self.0.pins);
            let (servers, tools, pending) = tokio::task::spawn_blocking(move || pins.counts(uid))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            obj.insert(
                "toolPins".into(),
                serde_json::json!({"servers": servers, "tools": tools, "pending": pending}),
            );
        }
        let json = json.to_string();
        Ok(Response::new(pb::LocalStatus { json }))
    }
}

/// The running local endpoint.
pub struct LocalServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    accept: tokio::task::JoinHandle<()>,
    path: std::path::PathBuf,
    /// Its per-user caps, as used now.
    pub limits: Arc<Limits>,
}

impl LocalServer {
    /// Stops serving and removes the socket.
    pub async fn stop(self) {
        self.accept.abort();
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Raises this process's soft file-descriptor limit to its hard limit (at most 65,536) and
/// returns the soft limit in force.
#[cfg(unix)]
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let rl = getrlimit(Resource::Nofile);
    let (Some(cur), max) = (rl.current, rl.maximum) else {
        return u64::MAX; // unlimited
    };
    let want = max.unwrap_or(u64::MAX).min(65_536);
    if cur < want
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: max,
            },
        )
        .is_ok()
    {
        return want;
    }
    cur
}

/// Accepts connections: each one takes a slot of its user's (peer uid) share; over the share
/// it is closed at once. Out of descriptors (EMFILE, ENFILE) or memory, it backs off instead of
/// spinning, and says so at most once a minute.
#[cfg(unix)]
async fn accept_loop(
    listener: tokio::net::UnixListener,
    limits: Arc<Limits>,
    tx: tokio::sync::mpsc::Sender<Result<LocalConn, std::io::Error>>,
) {
    let mut failures = 0u32;
    let mut last_warned: Option<std::time::Instant> = None;
    // The message (which may look up a user name: blocking) is built only when it is logged.
    let mut warn = |what: &dyn Fn() -> String| {
        if last_warned.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(60)) {
            tracing::warn!("{}", what());
            last_warned = Some(std::time::Instant::now());
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                failures = 0;
                s
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = std::time::Duration::from_millis(10u64 << failures.min(7));
                warn(&|| {
                    format!(
                        "local endpoint: accept failed ({e}); backing off {} ms",
                        wait.as_millis()
                    )
                });
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let uid = stream.peer_cred().ok().map_or(UNKNOWN_UID, |c| c.uid());
        let Some(slot) = limits.connect(uid) else {
            limits
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            warn(&|| {
                format!(
                    "local endpoint: {} already has {} connections open (or the agent has {}); refusing more",
                    name_of(Some(uid)),
                    limits.per_user_connections,
                    limits.total_connections
                )
            });
            drop(stream);
            continue;
        };
        if tx
            .send(Ok(LocalConn {
                inner: stream,
                _slot: slot,
            }))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Binds the socket (replacing a stale one) and serves.
#[cfg(unix)]
pub async fn serve(sh: Arc<Shared>) -> anyhow::Result<LocalServer> {
    let fds = raise_fd_limit();
    // Room for the agent's own files and its controller connection.
    let total = usize::try_from(fds.saturating_sub(128))
        .unwrap_or(usize::MAX)
        .clamp(16, 4096);
    let owners = tokio::task::spawn_blocking(Owners::load)
        .await
        .unwrap_or_default();
    let limits = Limits::with(
        MAX_CONNECTIONS_PER_USER.min(total / 4).max(4),
        total,
        MAX_INFLIGHT_BYTES_PER_USER,
        MAX_INFLIGHT_BYTES_TOTAL,
        owners,
    );
    serve_with(sh, limits).await
}

/// [`serve`] with given caps.
#[cfg(unix)]
pub async fn serve_with(sh: Arc<Shared>, limits: Arc<Limits>) -> anyhow::Result<LocalServer> {
    use anyhow::Context as _;
    let path = sh.config.socket_path.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        // Another agent answering there? Then do not steal its socket.
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            anyhow::bail!(
                "another agent is already serving {}; stop it first",
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove stale {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Every desktop user's proxy must reach it; the agent decides what each may do.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let accept = tokio::spawn(accept_loop(listener, Arc::clone(&limits), tx));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(32)
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .initial_stream_window_size(Some(WINDOW_BYTES))
        .initial_connection_window_size(Some(WINDOW_BYTES))
        .layer(BudgetLayer(Arc::clone(&limits)))
        .add_service(
            local_agent_server::LocalAgentServer::new(LocalService(
                Arc::clone(&sh),
                Arc::clone(&limits),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
        {
            tracing::error!("local endpoint failed: {e}");
        }
    });
    tracing::info!(socket = %path.display(), "serving proxies");
    Ok(LocalServer {
        stop,
        task,
        accept,
        path,
        limits,
    })
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
