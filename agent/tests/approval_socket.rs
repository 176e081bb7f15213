//! `LocalAgent.RequestApproval` through the agent's real local socket, called the way the proxy
//! calls it (a tonic client on the Unix socket), with a fake user channel: the caller's user is
//! the socket's peer, never the request's; the user's answer releases the held call; a session
//! grant answers the identical call at once; a caller that goes away withdraws its request.

#![cfg(unix)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use thoth_agent::daemon::approval::{CancelToken, Prompt, UserAnswer, UserChannel};
use thoth_agent::daemon::{Shared, local};
use thoth_endpoint::config::AgentConfig;
use thoth_proto::fleet::{self as pb, local_agent_client::LocalAgentClient};

fn shared(dir: &Path) -> Arc<Shared> {
    shared_with_thoth(dir, &std::env::current_exe().unwrap())
}

fn shared_with_thoth(dir: &Path, thoth: &Path) -> Arc<Shared> {
    let key = base64::engine::general_purpose::STANDARD.encode(
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .to_bytes(),
    );
    // Only the installed thoth may ask for approval: here the callers are this test binary (in
    // process, or re-run as a child), so it stands as the installed thoth.
    let text = format!(
        "controller_url = \"https://127.0.0.1:9\"\ntenant = \"acme\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"{key}\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\nthoth_path = \"{}\"\n",
        "ab".repeat(32),
        dir.join("state").display(),
        dir.join("agent.sock").display(),
        thoth.display()
    );
    let config: AgentConfig = toml::from_str(&text).unwrap();
    Shared::new(config).unwrap()
}

/// A user who allows what they are asked after `delay`, unless told to wait for cancellation.
#[derive(Default)]
struct Clicker {
    asked: Mutex<Vec<(u32, Prompt)>>,
    cancelled: Mutex<Vec<String>>,
    never_answer: bool,
}

impl UserChannel for Clicker {
    fn ask(&self, uid: u32, req: &Prompt, deadline: Instant, cancel: CancelToken) -> UserAnswer {
        self.asked.lock().unwrap().push((uid, req.clone()));
        if !self.never_answer {
            std::thread::sleep(Duration::from_millis(100));
            return UserAnswer::Allowed {
                by: format!("uid-{uid}"),
            };
        }
        while Instant::now() < deadline {
            if cancel.wait_timeout(Duration::from_millis(10)) {
                self.cancelled.lock().unwrap().push(req.approval_id.clone());
                return UserAnswer::NoAnswer;
            }
        }
        UserAnswer::NoAnswer
    }
}

fn request(args: &str, remember: &str) -> pb::ApprovalRequest {
    use sha2::Digest as _;
    pb::ApprovalRequest {
        approval_id: "proxy-chosen".into(),
        user: "someone-else".into(),
        session_id: "sess-1".into(),
        server_name: "filesystem".into(),
        tool_name: "write_file".into(),
        content: args.into(),
        reason: "writes need approval".into(),
        timeout_secs: 20,
        arguments_sha256: hex::encode(sha2::Sha256::digest(args.as_bytes())),
        client_name: "claude-desktop".into(),
        approvers: vec!["user".into()],
        remember: remember.into(),
        ..pb::ApprovalRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_answer_releases_the_call_and_a_session_grant_answers_the_retry_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(dir.path());
    let clicker = Arc::new(Clicker::default());
    sh.approvals
        .set_user_channel(Arc::clone(&clicker) as Arc<dyn UserChannel>);
    let server = local::serve(Arc::clone(&sh)).await.unwrap();
    let ch = thoth_endpoint::tls::local_channel(&dir.path().join("agent.sock")).unwrap();
    let mut client = LocalAgentClient::new(ch);
    let me = rustix::process::geteuid().as_raw();

    let args = r#"{"content":"hi","path":"/tmp/a"}"#;
    let d = client
        .request_approval(request(args, "session"))
        .await
        .unwrap()
        .into_inner();
    assert!(d.approved && !d.timed_out, "{d:?}");
    assert_eq!(d.channel, "user");
    assert_eq!(d.decided_by, format!("uid-{me}"));
    assert_ne!(d.approval_id, "proxy-chosen");
    assert_eq!(
        uuid::Uuid::parse_str(&d.approval_id)
            .unwrap()
            .get_version_num(),
        7
    );
    {
        let asked = clicker.asked.lock().unwrap();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].0, me, "the dialog is for the socket's peer");
        assert_eq!(asked[0].1.approval_id, d.approval_id);
        assert_eq!(asked[0].1.server, "filesystem");
        assert_eq!(asked[0].1.client_name, "claude-desktop");
    }
    // The identical call in the same session: at once, no dialog.
    let t = Instant::now();
    let again = client
        .request_approval(request(args, "session"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.approved);
    assert_eq!(again.channel, "remembered");
    assert_eq!(again.approval_id, d.approval_id);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(clicker.asked.lock().unwrap().len(), 1);
    // Another path is another call: asked again.
    let other = client
        .request_approval(request(r#"{"content":"hi","path":"/etc/x"}"#, "session"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.approval_id, d.approval_id);
    assert_eq!(other.channel, "user");
    assert_eq!(clicker.asked.lock().unwrap().len(), 2);
    // The evidence is in the status' recent events, naming the caller's user.
    let status = sh.status();
    let notes: Vec<_> = status
        .recent_events
        .iter()
        .filter(|n| n.event_type.starts_with("APPROVAL_"))
        .map(|n| (n.event_type.clone(), n.detail.clone()))
        .collect();
    assert!(
        notes
            .iter()
            .any(|(t, d)| t == "APPROVAL_REQUESTED" && !d.contains("someone-else")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .filter(|(t, _)| t == "APPROVAL_DECIDED")
            .count()
            >= 3,
        "{notes:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_goes_away_withdraws_its_request_and_the_dialog_closes() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(dir.path());
    let clicker = Arc::new(Clicker {
        never_answer: true,
        ..Clicker::default()
    });
    sh.approvals
        .set_user_channel(Arc::clone(&clicker) as Arc<dyn UserChannel>);
    let server = local::serve(Arc::clone(&sh)).await.unwrap();
    let ch = thoth_endpoint::tls::local_channel(&dir.path().join("agent.sock")).unwrap();
    let mut client = LocalAgentClient::new(ch);
    let call = tokio::spawn(async move {
        client
            .request_approval(request(r#"{"path":"/tmp/b"}"#, "once"))
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while clicker.asked.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "never asked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sh.approvals.pending(), 1);
    // The proxy goes away: its call (and connection) dropped.
    call.abort();
    let _ = call.await;
    let id = clicker.asked.lock().unwrap()[0].1.approval_id.clone();
    while !clicker.cancelled.lock().unwrap().contains(&id) {
        assert!(Instant::now() < deadline, "the dialog stayed up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sh.approvals.pending(), 0);
    assert!(
        sh.status()
            .recent_events
            .iter()
            .any(|n| n.event_type == "APPROVAL_DECIDED" && n.detail.contains("withdrawn")),
        "{:?}",
        sh.status().recent_events
    );
    server.stop().await;
}

const NOBODY: u32 = 65534;
/// Set for the child run of [`child_asks_for_approval_as_told`]: the socket to call.
const CHILD_SOCKET: &str = "THOTH_TEST_APPROVAL_CHILD_SOCKET";

/// Not a test of its own: the client that [`another_users_identical_call_is_never_covered_by_a_grant`]
/// runs as `nobody` (this test binary again, with [`CHILD_SOCKET`] set). Prints
/// `channel|approved|decided_by`.
#[tokio::test]
async fn child_asks_for_approval_as_told() {
    let Ok(socket) = std::env::var(CHILD_SOCKET) else {
        return;
    };
    let ch = thoth_endpoint::tls::local_channel(Path::new(&socket)).unwrap();
    let mut req = request(r#"{"path":"/tmp/shared"}"#, "session");
    req.user = "root".into();
    let d = LocalAgentClient::new(ch)
        .request_approval(req)
        .await
        .unwrap()
        .into_inner();
    println!("DECISION {}|{}|{}", d.channel, d.approved, d.decided_by);
}

/// A session grant made for one OS user never lets another user's identical call (same session
/// id, server, tool and arguments, and claiming to be that user) through: the other user is
/// asked, as themselves. Needs root (to run the other caller as `nobody`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_identical_call_is_never_covered_by_a_grant() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: the other caller cannot run as another user here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let sh = shared(dir.path());
    let clicker = Arc::new(Clicker::default());
    sh.approvals
        .set_user_channel(Arc::clone(&clicker) as Arc<dyn UserChannel>);
    let server = local::serve(Arc::clone(&sh)).await.unwrap();
    let socket = dir.path().join("agent.sock");
    let mut client = LocalAgentClient::new(thoth_endpoint::tls::local_channel(&socket).unwrap());
    let d = client
        .request_approval(request(r#"{"path":"/tmp/shared"}"#, "session"))
        .await
        .unwrap()
        .into_inner();
    assert!(d.approved && d.channel == "user", "{d:?}");
    let again = client
        .request_approval(request(r#"{"path":"/tmp/shared"}"#, "session"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.channel, "remembered", "root's grant works for root");

    let exe = std::env::current_exe().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(exe)
            .args([
                "--exact",
                "child_asks_for_approval_as_told",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SOCKET, &socket)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("DECISION ").map(|(_, d)| d.trim()))
        .unwrap_or_else(|| {
            panic!(
                "the child said nothing: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(
        line,
        format!("user|true|uid-{NOBODY}"),
        "nobody's call was asked of nobody, not covered by root's grant"
    );
    let asked = clicker.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1].0, NOBODY);
    server.stop().await;
}

/// Only the installed thoth may put a request before a human: another program of the same user
/// (here this test binary, with another binary installed as thoth) is refused, and nobody is
/// asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_is_not_the_installed_thoth_cannot_ask_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("thoth");
    std::fs::copy("/bin/true", &other).unwrap();
    let sh = shared_with_thoth(dir.path(), &other);
    let clicker = Arc::new(Clicker::default());
    sh.approvals
        .set_user_channel(Arc::clone(&clicker) as Arc<dyn UserChannel>);
    let _server = local::serve(Arc::clone(&sh)).await.unwrap();
    let ch = thoth_endpoint::tls::local_channel(&dir.path().join("agent.sock")).unwrap();
    let mut client = LocalAgentClient::new(ch);
    let e = client
        .request_approval(request(r#"{"path":"/tmp/x"}"#, "once"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("installed thoth"), "{e:?}");
    assert!(
        clicker.asked.lock().unwrap().is_empty(),
        "a human was asked"
    );
}
