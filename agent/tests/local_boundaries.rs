//! The agent's local boundaries against other local users (issue 13, findings 5 and 10): every
//! user sees only their own status, and no user can exhaust the local endpoint for the others
//! (connections, or partial large messages).
//!
//! The cross-user parts run a real `thoth-agent status` as `nobody` (uid 65534): they need root,
//! as the test suite runs; as another user they check only what that user can.

#![cfg(unix)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use thoth_agent::daemon::{Shared, local};
use thoth_endpoint::{config::AgentConfig, status::ConfigStatus};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// An agent's shared state over `dir` (no controller: only the local endpoint is served).
fn shared(dir: &Path) -> Arc<Shared> {
    let key = base64::engine::general_purpose::STANDARD.encode(
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .to_bytes(),
    );
    let text = format!(
        "controller_url = \"https://127.0.0.1:9\"\ntenant = \"acme\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"{key}\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\n",
        "ab".repeat(32),
        dir.join("state").display(),
        dir.join("agent.sock").display()
    );
    let config: AgentConfig = toml::from_str(&text).unwrap();
    Shared::new(config).unwrap()
}

/// A temp dir that `nobody` can traverse (to reach the socket in it).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `thoth-agent status --json` against `socket`, as `uid` (root: as we are). `Err` carries what
/// it printed when it did not answer with a status.
fn status_as(uid: Option<u32>, socket: &Path) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thoth-agent"));
    cmd.args(["status", "--json", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .env("THOTH_LOG", "warn");
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run thoth-agent status: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    if v.get("running") == Some(&serde_json::Value::Bool(false)) {
        return Err(format!("no status: {v}"));
    }
    Ok(v)
}

fn callers(v: &serde_json::Value) -> Vec<String> {
    v["callers"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn config_paths(v: &serde_json::Value) -> Vec<String> {
    v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_only_their_own_callers_and_configs_in_the_status() {
    let dir = open_tempdir();
    let sh = shared(dir.path());
    let server = local::serve(Arc::clone(&sh)).await.unwrap();
    let socket = dir.path().join("agent.sock");

    // Two users' configs: root's, and nobody's (owned by them, as in their home).
    let mine = dir.path().join("nobody-claude.json");
    let theirs = dir.path().join("root-claude.json");
    std::fs::write(&mine, "{}").unwrap();
    std::fs::write(&theirs, "{}").unwrap();
    if is_root() {
        std::os::unix::fs::chown(&mine, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let config = |p: &PathBuf| ConfigStatus {
        path: p.display().to_string(),
        state: "governed".into(),
        ..ConfigStatus::default()
    };
    sh.update_status(|s| {
        s.configs = vec![config(&mine), config(&theirs)];
        s.note(
            "CONFIG_DRIFT",
            format!("{}: added --policy; re-wrapped", theirs.display()),
        );
        s.note(
            "CONFIG_DRIFT",
            format!("{}: added env LD_PRELOAD; re-wrapped", mine.display()),
        );
        s.note("POLICY_APPLIED", "policy version 3 applied");
    });
    sh.saw_caller("root", "secret-finance-server");
    sh.saw_caller("nobody", "notes");

    // Root sees everything.
    let all = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || status_as(None, &socket)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(callers(&all), ["nobody", "root"]);
    assert_eq!(config_paths(&all).len(), 2);

    if !is_root() {
        eprintln!("not root: the cross-user part needs to act as another uid");
        server.stop().await;
        return;
    }
    // nobody sees their own caller entry, config and drift, and nothing of root's.
    let own = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || status_as(Some(NOBODY), &socket)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(callers(&own), ["nobody"], "{own:#}");
    assert_eq!(config_paths(&own), [mine.display().to_string()], "{own:#}");
    let text = own.to_string();
    assert!(!text.contains("secret-finance-server"), "{own:#}");
    assert!(!text.contains(&theirs.display().to_string()), "{own:#}");
    let notes: Vec<&str> = own["recentEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(notes, ["CONFIG_DRIFT", "POLICY_APPLIED"], "{own:#}");
    server.stop().await;
}

fn set_soft_fd_limit(n: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let max = getrlimit(Resource::Nofile).maximum;
    let current = Some(max.map_or(n, |m| n.min(m)));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current,
            maximum: max,
        },
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_from_one_user_do_not_stop_another_users_status() {
    // The default limit of a process started without LimitNOFILE; the flood is about that size.
    set_soft_fd_limit(1024);
    let dir = open_tempdir();
    let sh = shared(dir.path());
    let server = local::serve(Arc::clone(&sh)).await.unwrap();
    let socket = dir.path().join("agent.sock");

    // One user (us) opens a thousand idle connections and keeps them.
    let mut flood = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = tokio::net::UnixStream::connect(&socket).await {
            flood.push(s);
        }
    }

    // Another user's status is answered while the flood is held.
    let other = if is_root() { Some(NOBODY) } else { None };
    let got = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || status_as(other, &socket)
    })
    .await
    .unwrap();
    assert!(
        got.is_ok(),
        "status with {} connections held by one user: {got:?}",
        flood.len()
    );

    // The agent kept only that user's share open and closed the rest at once.
    let over = (flood.len() as u64).saturating_sub(local::MAX_CONNECTIONS_PER_USER as u64);
    assert!(over > 0, "only {} connections opened", flood.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.limits.refused() < over {
        assert!(
            Instant::now() < deadline,
            "the agent refused {} of the {over} connections over the per-user cap",
            server.limits.refused(),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(flood);
    server.stop().await;
}

/// Resident memory of this process.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * rustix::param::page_size() as u64
}

/// A request body that sends a gRPC message header announcing `announced` bytes, then
/// `payload`, then never ends.
struct Partial {
    frames: std::collections::VecDeque<prost::bytes::Bytes>,
}

impl http_body::Body for Partial {
    type Data = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.frames.pop_front() {
            Some(b) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            // Stalls forever: the message is never completed.
            None => std::task::Poll::Pending,
        }
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_large_messages_do_not_grow_the_agent_past_a_bound() {
    use tower::Service as _;
    let dir = open_tempdir();
    let sh = shared(dir.path());
    let server = local::serve(Arc::clone(&sh)).await.unwrap();
    let socket = dir.path().join("agent.sock");

    // 60 EmitEvents calls, each announcing a message just under the agent's limit and sending
    // 3 MB of it (180 MB in all), over 4 connections; none ever completes.
    const CALLS: usize = 60;
    const SENT: usize = 3_000_000;
    let announced = (local::MAX_MESSAGE_BYTES - 64) as u32;
    let payload = prost::bytes::Bytes::from(vec![b'x'; SENT]);
    let before = rss_bytes();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut calls = Vec::new();
    let channels: Vec<_> = (0..4)
        .map(|_| thoth_endpoint::tls::local_channel(&socket).unwrap())
        .collect();
    for i in 0..CALLS {
        let mut ch = channels[i % channels.len()].clone();
        let mut header = vec![0u8];
        header.extend_from_slice(&announced.to_be_bytes());
        let body = Partial {
            frames: [prost::bytes::Bytes::from(header), payload.clone()].into(),
        };
        let req = tonic::codegen::http::Request::builder()
            .method("POST")
            .uri("http://thoth-agent.local/thoth.fleet.v1.LocalAgent/EmitEvents")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::new(body))
            .unwrap();
        let tx = tx.clone();
        calls.push(tokio::spawn(async move {
            std::future::poll_fn(|cx| ch.poll_ready(cx)).await.unwrap();
            if let Ok(resp) = ch.call(req).await {
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap_or("").to_owned());
                let _ = tx.send(code);
            }
        }));
    }
    drop(tx);

    // The calls past the user's in-flight budget are refused as they arrive; the agent holds
    // at most that budget (plus the HTTP/2 windows) of the partial messages.
    let bound = 64u64 << 20;
    let budget_calls = local::MAX_INFLIGHT_BYTES_PER_USER.div_ceil(SENT);
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused < CALLS - budget_calls {
        let grown = rss_bytes().saturating_sub(before);
        assert!(
            grown < bound,
            "the agent grew by {} MiB holding partial messages ({refused} refused so far)",
            grown >> 20
        );
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(Duration::from_millis(200)), rx.recv()).await {
            Ok(Some(code)) => {
                assert_eq!(code.as_deref(), Some("8"), "RESOURCE_EXHAUSTED expected");
                refused += 1;
            }
            Ok(None) => break,
            Err(_) => assert!(
                Instant::now() < deadline,
                "only {refused} of the {CALLS} partial calls were refused"
            ),
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < bound, "grew by {} MiB", grown >> 20);

    // The same user is served again once those calls are gone (their budget is given back).
    for c in &calls {
        c.abort();
    }
    drop(channels);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = thoth_proto::fleet::local_agent_client::LocalAgentClient::new(
            thoth_endpoint::tls::local_channel(&socket).unwrap(),
        );
        match c
            .emit_events(thoth_proto::fleet::LocalEvents {
                events: vec![vec![b' '; 200 << 10]; 10],
            })
            .await
        {
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "the budget was never given back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => break,
        }
    }
    server.stop().await;
}
