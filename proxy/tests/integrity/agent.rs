//! With an agent: the agent's `CheckTools` verdict decides (state, pin source, first report),
//! and an agent that cannot answer leaves the session's own book in charge.

#![cfg(unix)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use thoth_proto::fleet as pb;
use thoth_proto::pins::{server_key, tool_digest};
use tonic::{Request, Response, Status};

use super::{ARGV, echo, of_type, policy, read_file, session};

#[derive(Clone)]
struct FakeAgent {
    /// Answer for read_file: (state, first_report); `None`: CheckTools is unimplemented.
    verdict: Option<(&'static str, bool)>,
    seen: Arc<Mutex<Vec<pb::ToolListCheck>>>,
    /// Approval requests; each one is approved at once.
    approvals: Arc<Mutex<Vec<pb::ApprovalRequest>>>,
}

#[tonic::async_trait]
impl pb::local_agent_server::LocalAgent for FakeAgent {
    async fn get_policy(
        &self,
        _: Request<pb::LocalPolicyRequest>,
    ) -> Result<Response<pb::LocalPolicy>, Status> {
        Err(Status::unimplemented("not in this test"))
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
        _: Request<pb::LocalEvents>,
    ) -> Result<Response<pb::LocalEventsAck>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn check_tools(
        &self,
        req: Request<pb::ToolListCheck>,
    ) -> Result<Response<pb::ToolListVerdict>, Status> {
        let req = req.into_inner();
        self.seen.lock().unwrap().push(req.clone());
        let Some((state, first_report)) = self.verdict else {
            return Err(Status::unimplemented("no pins here"));
        };
        let tools = req
            .tools
            .iter()
            .map(|t| {
                let mine = t.name == "read_file";
                pb::ToolVerdict {
                    name: t.name.clone(),
                    state: if mine { state } else { "same" }.into(),
                    pinned_digest: if mine {
                        "ab".repeat(32)
                    } else {
                        t.digest.clone()
                    },
                    pin_source: "admin".into(),
                    accepted: !mine,
                    changes: if mine { vec!["schema".into()] } else { vec![] },
                    first_report: mine && first_report,
                }
            })
            .collect();
        Ok(Response::new(pb::ToolListVerdict {
            server_key: "k".into(),
            tools,
            removed: vec![],
        }))
    }

    async fn request_approval(
        &self,
        req: Request<pb::ApprovalRequest>,
    ) -> Result<Response<pb::ApprovalDecision>, Status> {
        self.approvals.lock().unwrap().push(req.into_inner());
        Ok(Response::new(pb::ApprovalDecision {
            approval_id: "0190b7c2-7d1e-7a00-8000-00000000beef".into(),
            approved: true,
            decided_by: "alice".into(),
            channel: "user".into(),
            remember: "once".into(),
            ..Default::default()
        }))
    }

    async fn status(
        &self,
        _: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatus>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// Serves `agent` on a socket in `dir`; the runtime must outlive the test's calls.
fn serve(dir: &std::path::Path, agent: FakeAgent) -> (tokio::runtime::Runtime, std::path::PathBuf) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let socket = dir.join("agent.sock");
    let listener = rt
        .block_on(async { tokio::net::UnixListener::bind(&socket) })
        .unwrap();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(pb::local_agent_server::LocalAgentServer::new(agent))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    (rt, socket)
}

type Seen<T> = Arc<Mutex<Vec<T>>>;

fn with_agent(
    verdict: Option<(&'static str, bool)>,
    on_change: &str,
) -> (
    super::Session,
    tokio::runtime::Runtime,
    Seen<pb::ToolListCheck>,
) {
    let (s, rt, seen, _) = with_agent_approving(verdict, &policy(on_change));
    (s, rt, seen)
}

fn with_agent_approving(
    verdict: Option<(&'static str, bool)>,
    policy: &str,
) -> (
    super::Session,
    tokio::runtime::Runtime,
    Seen<pb::ToolListCheck>,
    Seen<pb::ApprovalRequest>,
) {
    let s = session(policy);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let approvals = Arc::new(Mutex::new(Vec::new()));
    let (rt, socket) = serve(
        s._dir.path(),
        FakeAgent {
            verdict,
            seen: seen.clone(),
            approvals: approvals.clone(),
        },
    );
    // The session's own writer (set first) stays: released calls are captured there.
    s.relay.use_agent(socket, Box::new(|_: &[u8]| {}));
    (s, rt, seen, approvals)
}

#[test]
fn under_step_up_the_approval_names_the_definition_and_accepts_it_for_the_session() {
    let (s, _rt, _, approvals) = with_agent_approving(Some(("changed", true)), &policy("step_up"));
    let tool = read_file("Read a file.");
    assert_eq!(s.list(1, std::slice::from_ref(&tool)), ["read_file"]);
    // Held for a human (the agent approves at once): released to the server.
    assert_eq!(s.call(2, "read_file", json!({"path": "/tmp/a"})), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.server.lines().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the approved call was never released"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(s.server.lines()[0]["params"]["name"], "read_file");
    let asked = approvals.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    let pin = asked[0]
        .pin
        .clone()
        .expect("the approval names the definition");
    assert_eq!(pin.tool, "read_file");
    assert_eq!(pin.digest, tool_digest(&tool).unwrap().digest);
    assert_eq!(
        pin.server_key,
        server_key("", "rec", &ARGV.map(String::from))
    );
    // Accepted for this session: the next call goes straight through.
    assert!(s.call(3, "read_file", json!({"path": "/tmp/b"})).is_some());
    assert_eq!(approvals.lock().unwrap().len(), 1);
    let events = s.finish();
    let pre = of_type(&events, "TOOL_CALL_PRE");
    assert_eq!(pre[0]["decision"]["rule"], "on_tool_change");
    assert_eq!(pre[0]["decision"]["action"], "step_up");
}

#[test]
fn the_agents_changed_verdict_hides_the_tool_and_raises_the_event_on_first_report() {
    let (s, _rt, seen) = with_agent(Some(("changed", true)), "block");
    // The session's first list: the agent, not first use, says read_file changed.
    assert_eq!(s.list(1, &[read_file("Read a file."), echo()]), ["echo"]);
    assert_eq!(s.call(2, "read_file", json!({"path": "/tmp/a"})), None);
    assert!(s.call(3, "echo", json!({})).is_some());
    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].server_name, "rec");
    assert_eq!(asked[0].command, ARGV.map(String::from));
    assert!(asked[0].complete);
    assert_eq!(asked[0].tools.len(), 2);
    let events = s.finish();
    let ch = of_type(&events, "TOOL_DEFINITION_CHANGED");
    assert_eq!(ch.len(), 1, "{ch:?}");
    assert_eq!(ch[0]["detail"]["pinSource"], "admin");
    assert_eq!(ch[0]["detail"]["oldDigest"], "ab".repeat(32));
    assert_eq!(ch[0]["detail"]["changes"], json!(["schema"]));
}

#[test]
fn without_first_report_the_agent_verdict_still_applies_but_raises_nothing() {
    let (s, _rt, _) = with_agent(Some(("changed", false)), "block");
    assert_eq!(s.list(1, &[read_file("Read a file."), echo()]), ["echo"]);
    let events = s.finish();
    assert!(of_type(&events, "TOOL_DEFINITION_CHANGED").is_empty());
}

#[test]
fn a_rejected_definition_is_hidden_whatever_on_tool_change_says() {
    let (s, _rt, _) = with_agent(Some(("rejected", true)), "allow");
    assert_eq!(s.list(1, &[read_file("Read a file."), echo()]), ["echo"]);
    assert_eq!(s.call(2, "read_file", json!({"path": "/tmp/a"})), None);
    let events = s.finish();
    let pre = of_type(&events, "TOOL_CALL_PRE");
    assert_eq!(pre[0]["decision"]["rule"], "pins.rejected");
}

#[test]
fn an_agent_that_cannot_check_leaves_the_session_book_in_charge() {
    let (s, _rt, seen) = with_agent(None, "block");
    assert_eq!(
        s.list(1, &[read_file("Read a file."), echo()]),
        ["read_file", "echo"]
    );
    assert_eq!(s.list(2, &[read_file("Read all files."), echo()]), ["echo"]);
    assert_eq!(seen.lock().unwrap().len(), 2);
    let events = s.finish();
    assert_eq!(of_type(&events, "TOOL_DEFINITION_CHANGED").len(), 1);
}

#[test]
fn the_agent_is_never_shown_a_secret_in_the_arguments_it_is_asked_about() {
    let policy = "servers:\n  - name: rec\n    enforcement: step_up\n    approved_scope: [echo]\n    \
                  dlp:\n      arguments: warn\n";
    let (s, _rt, _, approvals) = with_agent_approving(Some(("same", false)), policy);
    let secret = "Zq8Xv2Lm4Np7Rs1Tv3Wy5Ka6Bc8De0Fg2Hi4Jk9P";
    let args = json!({"path": "/tmp/a", "note": format!("aws_secret_access_key = {secret}")});
    assert_eq!(s.call(1, "write_file", args), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.server.lines().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the approved call was never released"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The call itself goes out as the client wrote it (warn), the approver saw no secret.
    assert!(s.server.lines()[0].to_string().contains(secret));
    let asked = approvals.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(!asked[0].content.contains(secret), "{}", asked[0].content);
    assert!(asked[0].content.contains("/tmp/a"), "{}", asked[0].content);
    assert_eq!(asked[0].pin, None);
    s.finish();
}
