//! A `step_up` call from a client that cannot show approval prompts is held while the agent
//! finds a human (`LocalAgent.RequestApproval`). Real processes: the `thoth` binary as the
//! proxy, `cat` as the MCP server (a forwarded call comes back as its own echo), and a fake
//! agent in the test (a tonic `LocalAgent` on a temp Unix socket serving a signed policy and
//! answering approval requests as each test scripts it).

#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use thoth_endpoint::state::{StateDir, Trust};
use thoth_proto::bundle::{BundlePayload, certify, sign_bundle};
use thoth_proto::fleet as pb;
use tonic::{Request, Response, Status};

mod common;

/// A step_up server whose calls outside `alpha` need an admin's approval, held 2 s, remembered
/// 15 minutes.
const POLICY: &str = "servers:\n  - name: s\n    enforcement: step_up\n    approved_scope: [alpha]\n    approval_timeout_secs: 2\n    approvers: [admin]\n    approval_remember: 15m\n";

fn root_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn trust() -> Trust {
    Trust {
        tenant: "acme".into(),
        root_public_key: base64::engine::general_purpose::STANDARD
            .encode(root_key().verifying_key().to_bytes()),
    }
}

fn bundle() -> Vec<u8> {
    let key = SigningKey::from_bytes(&[8; 32]);
    let now = SystemTime::now();
    let cert = certify(
        &root_key(),
        "k",
        &key.verifying_key(),
        now - Duration::from_secs(60),
        Duration::from_secs(86_400),
    );
    let p = BundlePayload {
        tenant: "acme".into(),
        version: 1,
        issued_at: humantime::format_rfc3339_seconds(now).to_string(),
        expires_at: humantime::format_rfc3339_seconds(now + Duration::from_secs(3600)).to_string(),
        policy: POLICY.into(),
    };
    serde_json::to_vec(&sign_bundle(&p, &key, &cert)).unwrap()
}

/// How the fake agent answers `RequestApproval`.
#[derive(Clone, Copy)]
enum Script {
    /// Approves after this long.
    Approve(Duration),
    /// Denies after this long (as the admin "carol", reason "not on prod").
    Deny(Duration),
    /// Answers `timed_out` at the request's own deadline.
    TimeOut,
    /// Never answers (until the RPC is dropped).
    Hang,
}

#[derive(Default)]
struct Seen {
    requests: Vec<pb::ApprovalRequest>,
    events: Vec<Value>,
}

struct FakeAgent {
    bundle: Vec<u8>,
    script: Script,
    seen: Arc<Mutex<Seen>>,
    cancelled: Arc<AtomicBool>,
}

/// Sets the flag when dropped before it was disarmed: tonic drops a handler whose RPC the
/// client cancelled.
struct DropFlag(Arc<AtomicBool>, bool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

const AGENT_ID: &str = "0190b7c2-7d1e-7a00-8000-00000000beef";

#[tonic::async_trait]
impl pb::local_agent_server::LocalAgent for FakeAgent {
    async fn get_policy(
        &self,
        _: Request<pb::LocalPolicyRequest>,
    ) -> Result<Response<pb::LocalPolicy>, Status> {
        Ok(Response::new(pb::LocalPolicy {
            bundle: self.bundle.clone().into(),
            version: 1,
            ..Default::default()
        }))
    }

    type WatchPolicyStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::LocalPolicy, Status>>;

    async fn watch_policy(
        &self,
        _: Request<pb::LocalPolicyRequest>,
    ) -> Result<Response<Self::WatchPolicyStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn emit_events(
        &self,
        req: Request<pb::LocalEvents>,
    ) -> Result<Response<pb::LocalEventsAck>, Status> {
        let events = req.into_inner().events;
        let n = events.len() as u32;
        let mut seen = self.seen.lock().unwrap();
        for e in events {
            seen.events.push(serde_json::from_slice(&e).unwrap());
        }
        Ok(Response::new(pb::LocalEventsAck {
            accepted: n,
            ..Default::default()
        }))
    }

    async fn check_tools(
        &self,
        _req: Request<pb::ToolListCheck>,
    ) -> Result<Response<pb::ToolListVerdict>, Status> {
        Err(Status::unimplemented("this fake agent keeps no pins"))
    }

    async fn request_approval(
        &self,
        req: Request<pb::ApprovalRequest>,
    ) -> Result<Response<pb::ApprovalDecision>, Status> {
        let req = req.into_inner();
        let timeout = Duration::from_secs(u64::from(req.timeout_secs));
        self.seen.lock().unwrap().requests.push(req);
        let mut flag = DropFlag(self.cancelled.clone(), false);
        let mut d = pb::ApprovalDecision {
            approval_id: AGENT_ID.into(),
            ..Default::default()
        };
        match self.script {
            Script::Approve(after) => {
                tokio::time::sleep(after).await;
                d.approved = true;
                d.decided_by = "alice".into();
                d.channel = "user".into();
                d.remember = "once".into();
            }
            Script::Deny(after) => {
                tokio::time::sleep(after).await;
                d.decided_by = "carol".into();
                d.channel = "admin".into();
                d.reason = "not on prod\u{202e}".into();
            }
            Script::TimeOut => {
                tokio::time::sleep(timeout).await;
                d.timed_out = true;
            }
            Script::Hang => std::future::pending::<()>().await,
        }
        flag.1 = true;
        Ok(Response::new(d))
    }

    async fn status(
        &self,
        _: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatus>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// A fake agent serving on `<dir>/agent.sock`, with trust in `<dir>/state`.
struct Agent {
    _rt: tokio::runtime::Runtime,
    seen: Arc<Mutex<Seen>>,
    cancelled: Arc<AtomicBool>,
}

fn agent(dir: &Path, script: Script) -> Agent {
    let state = StateDir::new(dir.join("state"));
    state.create().unwrap();
    state.write_trust(&trust()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let cancelled = Arc::new(AtomicBool::new(false));
    let svc = FakeAgent {
        bundle: bundle(),
        script,
        seen: seen.clone(),
        cancelled: cancelled.clone(),
    };
    let socket = dir.join("agent.sock");
    let listener = rt
        .block_on(async { tokio::net::UnixListener::bind(&socket) })
        .unwrap();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(pb::local_agent_server::LocalAgentServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    Agent {
        _rt: rt,
        seen,
        cancelled,
    }
}

/// `thoth run --server s` with the agent in `dir`, `cat` as the server.
struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
}

fn proxy(dir: &Path) -> Proxy {
    let mut cmd = Command::new(common::thoth());
    for (k, _) in std::env::vars() {
        if k.starts_with("THOTH_") || k == "LD_PRELOAD" || k.starts_with("DYLD_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .arg("run")
        .args(["--server", "s"])
        .arg("--agent-socket")
        .arg(dir.join("agent.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--", "cat"])
        .current_dir(dir)
        .env("HOME", dir)
        .env("XDG_STATE_HOME", dir.join("xdg"))
        .env("THOTH_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut p = Proxy {
        stdin: child.stdin.take(),
        child,
        lines: rx,
    };
    // No elicitation declared: only the agent can find a human.
    p.send(
        &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test-client", "version": "1"}}}),
    );
    p
}

const ARGS: &str = r#"{"path":"/tmp/x","b":[1,{"z":1,"a":2}]}"#;

fn call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "write_file", "arguments": serde_json::from_str::<Value>(ARGS).unwrap()}})
}

impl Proxy {
    fn send(&mut self, v: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    }

    /// The first line back for request `id` (a result, or `cat`'s echo of the request).
    fn answer(&self, id: u64, within: Duration) -> Option<(Value, Duration)> {
        let start = Instant::now();
        let end = start + within;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            let v = self.lines.recv_timeout(left).ok()?;
            if v["id"] == json!(id) {
                return Some((v, start.elapsed()));
            }
        }
    }

    /// Closes the client's side and waits for the proxy to exit.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "thoth run did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The echo of the call by `cat`: it reached the server.
fn reached_server(answer: &Value) -> bool {
    answer["method"] == "tools/call"
}

fn tool_events(seen: &Seen, kind: &str) -> Vec<Value> {
    seen.events
        .iter()
        .filter(|e| e["eventType"] == kind)
        .cloned()
        .collect()
}

#[test]
fn an_approval_by_the_agent_releases_the_held_call_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), Script::Approve(Duration::from_millis(700)));
    let mut p = proxy(dir.path());
    p.send(&call(1));
    let (answer, took) = p.answer(1, Duration::from_secs(10)).expect("an answer");
    assert!(reached_server(&answer), "{answer}");
    assert!(
        took >= Duration::from_millis(600),
        "held until approved: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "released at once: {took:?}");
    p.finish();

    let seen = agent.seen.lock().unwrap();
    let r = &seen.requests[0];
    assert_eq!(r.server_name, "s");
    assert_eq!(r.tool_name, "write_file");
    assert_eq!(r.timeout_secs, 2);
    assert_eq!(r.client_name, "test-client");
    assert!(!r.session_id.is_empty());
    assert_eq!(r.approvers, ["admin"]);
    assert_eq!(r.remember, "15m");
    assert!(r.content.contains("/tmp/x"), "{}", r.content);
    assert!(r.reason.contains("write_file") || !r.reason.is_empty());
    // SHA-256 of the canonical arguments: keys sorted at every depth, compact.
    use sha2::Digest;
    let canonical = r#"{"b":[1,{"a":2,"z":1}],"path":"/tmp/x"}"#;
    assert_eq!(
        r.arguments_sha256,
        hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
    );
    // The held call's PRE carries the proxy's approval id, its POST the agent's.
    let pre = tool_events(&seen, "TOOL_CALL_PRE");
    let post = tool_events(&seen, "TOOL_CALL_POST");
    assert!(pre[0]["approvalId"].as_str().is_some(), "{}", pre[0]);
    assert_eq!(post[0]["approvalId"], AGENT_ID, "{}", post[0]);
    let decided = tool_events(&seen, "APPROVAL_DECIDED");
    assert_eq!(decided[0]["detail"]["agentApprovalId"], AGENT_ID);
    assert_eq!(decided[0]["detail"]["decidedBy"], "alice");
    assert_eq!(decided[0]["detail"]["outcome"], "approved");
}

#[test]
fn a_denial_by_the_agent_says_who_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), Script::Deny(Duration::from_millis(300)));
    let mut p = proxy(dir.path());
    p.send(&call(1));
    let (answer, _) = p.answer(1, Duration::from_secs(10)).expect("an answer");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let t = text(&answer);
    assert!(t.contains("the administrator carol denied it"), "{t}");
    assert!(t.contains("not on prod"), "{t}");
    assert!(
        !t.contains('\u{202e}'),
        "bidi characters are not shown: {t}"
    );
    assert!(t.contains(AGENT_ID), "{t}");
    p.finish();
    let seen = agent.seen.lock().unwrap();
    assert_eq!(
        tool_events(&seen, "TOOL_CALL_POST")[0]["approvalId"],
        AGENT_ID
    );
}

#[test]
fn no_answer_denies_naming_the_approval_that_stays_pending() {
    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(dir.path(), Script::TimeOut);
    let mut p = proxy(dir.path());
    p.send(&call(1));
    let (answer, took) = p.answer(1, Duration::from_secs(15)).expect("an answer");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let t = text(&answer);
    assert!(
        t.contains(&format!(
            "Approval was requested (id {AGENT_ID}); if it is approved, the same call will go \
             through when retried."
        )),
        "{t}"
    );
    assert!(
        took >= Duration::from_millis(1900),
        "held to the deadline: {took:?}"
    );
    p.finish();
}

#[test]
fn a_client_cancellation_drops_the_agents_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), Script::Hang);
    let mut p = proxy(dir.path());
    p.send(&call(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.seen.lock().unwrap().requests.is_empty() {
        assert!(Instant::now() < deadline, "the agent was never asked");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!agent.cancelled.load(Ordering::SeqCst));
    p.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 1, "reason": "user stopped"}}),
    );
    // At once, not when the RPC's own deadline (2 s + the backstop's grace) ends it.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while !agent.cancelled.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the agent never saw the RPC cancelled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing reached the server, and the id is free again.
    p.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}));
    let (pong, _) = p
        .answer(2, Duration::from_secs(5))
        .expect("the echo of ping");
    assert_eq!(pong["method"], "ping");
    assert!(
        p.lines.try_recv().is_err(),
        "the cancelled call was answered or forwarded"
    );
    p.finish();
}

#[test]
fn a_proxy_that_exits_drops_the_agents_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), Script::Hang);
    let mut p = proxy(dir.path());
    p.send(&call(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.seen.lock().unwrap().requests.is_empty() {
        assert!(Instant::now() < deadline, "the agent was never asked");
        std::thread::sleep(Duration::from_millis(20));
    }
    p.finish();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.cancelled.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the agent never saw the RPC end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_unreachable_agent_denies_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), Script::Hang);
    let mut p = proxy(dir.path());
    // The policy came from the agent (the proxy answers nothing before it has one); then the
    // agent goes away.
    p.answer(0, Duration::from_secs(10))
        .expect("the echo of initialize");
    drop(agent);
    std::fs::remove_file(dir.path().join("agent.sock")).ok();
    p.send(&call(1));
    let (answer, _) = p.answer(1, Duration::from_secs(10)).expect("an answer");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let t = text(&answer);
    assert!(t.contains("the Thoth agent could not ask anyone"), "{t}");
    p.finish();
}

#[test]
fn without_an_agent_a_policy_file_run_still_denies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let (socket, state) = (dir.path().join("none.sock"), dir.path().join("none"));
    let args = [
        std::ffi::OsStr::new("--policy"),
        policy.as_os_str(),
        std::ffi::OsStr::new("--agent-socket"),
        socket.as_os_str(),
        std::ffi::OsStr::new("--state-dir"),
        state.as_os_str(),
    ];
    let start = Instant::now();
    let (answer, _) = common::one_call(dir.path(), &args, &[]);
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let t = text(&answer);
    assert!(t.contains("no approver was reachable"), "{t}");
    assert!(start.elapsed() < Duration::from_secs(10));
}
