//! The local endpoint: gRPC over a Unix domain socket that the proxies of every desktop user
//! reach. Each caller's OS user comes from the socket's peer credentials.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use thoth_proto::fleet::{self as pb, local_agent_server};
use tonic::{Request, Response, Status};

use super::Shared;

/// Largest batch of events accepted per call.
const MAX_EVENTS_PER_CALL: usize = 1000;

/// The OS user behind a local call.
#[cfg(unix)]
fn caller<T>(req: &Request<T>) -> String {
    let uid = req
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .map(|c| c.uid());
    match uid {
        Some(uid) => user_name(uid).unwrap_or_else(|| format!("uid {uid}")),
        None => "unknown".into(),
    }
}

#[cfg(not(unix))]
fn caller<T>(_req: &Request<T>) -> String {
    "unknown".into()
}

/// The login name of `uid`.
#[cfg(unix)]
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into the buffers we own, sized as given.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

struct LocalService(Arc<Shared>);

fn local_policy(sh: &Shared, cur: Option<&Arc<super::Current>>) -> pb::LocalPolicy {
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

#[tonic::async_trait]
impl local_agent_server::LocalAgent for LocalService {
    async fn get_policy(
        &self,
        req: Request<pb::LocalPolicyRequest>,
    ) -> Result<Response<pb::LocalPolicy>, Status> {
        let user = caller(&req);
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
        let server = req
            .get_ref()
            .server_name
            .chars()
            .take(128)
            .collect::<String>();
        self.0.saw_caller(&user, &server);
        let rx = self.0.current.subscribe();
        let sh = Arc::clone(&self.0);
        let stream =
            futures_util::stream::unfold((rx, sh, true), |(mut rx, sh, first)| async move {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let cur = rx.borrow_and_update().clone();
                let item = local_policy(&sh, cur.as_ref());
                Some((Ok(item), (rx, sh, false)))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn emit_events(
        &self,
        req: Request<pb::LocalEvents>,
    ) -> Result<Response<pb::LocalEventsAck>, Status> {
        let user = caller(&req);
        let events = req.into_inner().events;
        if events.len() > MAX_EVENTS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "{} events in one call, over the limit of {MAX_EVENTS_PER_CALL}",
                events.len()
            )));
        }
        self.0.saw_caller(&user, "");
        // Each event is checked on its own: a bad one is refused (counted, reported), the rest
        // are kept. A spool that cannot write answers at once, so the proxy keeps its events.
        let out = self
            .0
            .spool_events(events, &user)
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(pb::LocalEventsAck {
            accepted: out.accepted,
            dropped: out.dropped,
            refused: out.refused,
            refusal: out.reason,
        }))
    }

    async fn request_approval(
        &self,
        req: Request<pb::ApprovalRequest>,
    ) -> Result<Response<pb::ApprovalDecision>, Status> {
        let id = req.get_ref().approval_id.chars().take(128).collect();
        Ok(Response::new(pb::ApprovalDecision {
            approval_id: id,
            approved: false,
            decided_by: String::new(),
            reason: "no approver is available: approval through the controller is not set up on this fleet yet".into(),
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatus>, Status> {
        let json =
            serde_json::to_string(&self.0.status()).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::LocalStatus { json }))
    }
}

/// The running local endpoint.
pub struct LocalServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    path: std::path::PathBuf,
}

impl LocalServer {
    /// Stops serving and removes the socket.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket (replacing a stale one) and serves.
#[cfg(unix)]
pub async fn serve(sh: Arc<Shared>) -> anyhow::Result<LocalServer> {
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
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(32)
        .add_service(
            local_agent_server::LocalAgentServer::new(LocalService(Arc::clone(&sh)))
                .max_decoding_message_size(16 << 20),
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
    Ok(LocalServer { stop, task, path })
}

/// Asks a running agent for its status (blocking; for CLIs). `Err` says why it is unreachable.
#[cfg(unix)]
pub fn fetch_status(socket: &std::path::Path) -> Result<super::status::Status, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        if !socket.exists() {
            return Err(format!("no agent socket at {}", socket.display()));
        }
        let ch = super::tls::local_channel(socket)?;
        let mut client = thoth_proto::fleet::local_agent_client::LocalAgentClient::new(ch);
        let resp = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.status(pb::LocalStatusRequest {}),
        )
        .await
        .map_err(|_| {
            format!(
                "the agent at {} did not answer within 5 s",
                socket.display()
            )
        })?
        .map_err(|s| {
            format!(
                "the agent at {} did not answer: {}",
                socket.display(),
                s.message()
            )
        })?;
        serde_json::from_str(&resp.into_inner().json).map_err(|e| format!("unreadable status: {e}"))
    })
}
