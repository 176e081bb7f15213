//! Tool pins over the wire (issue 17): a real controller, an agent reporting its pinned tool
//! definitions in its heartbeat, admins listing and deciding them with their certificates, the
//! decision pushed on the agent's open Subscribe stream and re-sent on a stream opened later,
//! refusals for another tenant, a viewer and a hostile report.

mod common;

use common::{TestController, next_update};
use thoth_controller::pki::Role;
use thoth_proto::fleet as pb;

fn digest(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn pin(user: &str, tool: &str, d: char) -> pb::ToolPinReport {
    pb::ToolPinReport {
        user: user.into(),
        client: "claude-desktop".into(),
        server_name: "files".into(),
        server_key: digest('5'),
        command: "npx -y files /tmp".into(),
        tool: tool.into(),
        digest: digest(d),
        state: "pinned".into(),
        source: "first_use".into(),
        first_seen_unix_ms: 1_700_000_000_000,
        ..Default::default()
    }
}

fn report(pins: Vec<pb::ToolPinReport>) -> pb::AgentReport {
    pb::AgentReport {
        applied_version: 0,
        inventory: Some(pb::Inventory {
            hostname: "test-host".into(),
            tool_pins: pins,
            ..Default::default()
        }),
        agent_version: "0.1.0".into(),
        ..Default::default()
    }
}

/// The next pin decision on a stream (bundles and approvals skipped).
async fn next_pin(stream: &mut tonic::Streaming<pb::PolicyUpdate>) -> pb::PinDecision {
    loop {
        let u = next_update(stream, 10).await.unwrap();
        if let Some(p) = u.pin {
            assert!(u.bundle.is_empty());
            return p;
        }
    }
}

#[tokio::test]
async fn pins_are_listed_decided_and_pushed_to_the_tenants_agents() {
    let c = TestController::start().await;
    c.push("acme", "servers: []\n").await;
    let agent = c.enroll("acme").await;
    let mut open = c.subscribe(&agent.credentials).await;
    let mut sync = c.sync(&agent.credentials).await;
    let changed = pb::ToolPinReport {
        state: "changed".into(),
        pending_digest: digest('c'),
        changes: vec!["description".into()],
        changed_unix_ms: 1_700_000_100_000,
        ..pin("alice", "write_file", 'b')
    };
    sync.report(report(vec![pin("alice", "read_file", 'a'), changed]))
        .await
        .unwrap();

    // A hostile report is refused whole, and what was stored stays.
    let mut evil = pin("alice", "read_file", 'a');
    evil.state = "trust-me".into();
    let e = sync.report(report(vec![evil])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let mut evil = pin("alice", "read_file", 'a');
    evil.tool = "read\u{1b}]0;pwned\u{7}".into();
    let e = sync.report(report(vec![evil])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // A viewer of the tenant lists them: the change waiting for a decision first.
    let viewer = c.admin_creds("vic", Role::Viewer, Some("acme"));
    let list = c
        .admin_as(&viewer)
        .await
        .list_pins(pb::ListPinsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pins;
    assert_eq!(list.len(), 3, "{list:#?}");
    let p = &list[0];
    assert_eq!(p.state, "pending");
    assert_eq!(
        (p.tool.as_str(), p.digest.clone()),
        ("write_file", digest('c'))
    );
    assert_eq!(p.pinned_digest, digest('b'));
    assert_eq!(p.changes, vec!["description".to_owned()]);
    assert_eq!((p.agents, p.users), (1, 1));
    assert_eq!(p.client, "claude-desktop");
    assert_eq!(
        p.id,
        thoth_proto::pins::pin_id(&digest('5'), "write_file", &digest('c'))
    );
    assert!(p.last_seen_unix_ms > 0);
    assert!(list[1..].iter().all(|p| p.state == "pinned"));
    let pending = c
        .admin_as(&viewer)
        .await
        .list_pins(pb::ListPinsRequest {
            pending_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pins;
    assert_eq!(pending.len(), 1);
    let id = pending[0].id.clone();

    // The viewer cannot decide; another tenant's admin neither sees nor decides it.
    let decide = |id: &str, accept: bool| pb::DecidePinRequest {
        tenant: String::new(),
        id: id.into(),
        accept,
        reason: "reviewed the new description".into(),
    };
    let e = c
        .admin_as(&viewer)
        .await
        .decide_pin(decide(&id, true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let olga = c.admin_creds("olga", Role::Admin, Some("other"));
    let e = c
        .admin_as(&olga)
        .await
        .decide_pin(decide(&id, true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("thothctl pins list"), "{e:?}");
    let e = c
        .admin_as(&olga)
        .await
        .list_pins(pb::ListPinsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = c
        .admin()
        .await
        .decide_pin(decide("12345", true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // An operator accepts it by prefix: recorded, and pushed on the open stream.
    let ann = c.admin_creds("ann", Role::Operator, Some("acme"));
    let info = c
        .admin_as(&ann)
        .await
        .decide_pin(decide(&id[..6], true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.id.as_str(), info.state.as_str()),
        (id.as_str(), "accepted")
    );
    let d = info.decision.unwrap();
    assert_eq!(d.decided_by, "ann");
    let got = next_pin(&mut open).await;
    assert_eq!(got.server_key, digest('5'));
    assert_eq!(got.tool, "write_file");
    assert_eq!(got.digest, digest('c'));
    assert!(got.accepted);
    assert_eq!(got.decided_by, "ann");
    assert_eq!(got.reason, "reviewed the new description");

    // Rejecting it afterwards replaces the decision: pushed too.
    c.admin_as(&ann)
        .await
        .decide_pin(decide(&id, false))
        .await
        .unwrap();
    let got = next_pin(&mut open).await;
    assert!(!got.accepted);

    // A stream opened later receives the recorded decision (once: the replaced one is gone).
    let mut later = c.subscribe(&agent.credentials).await;
    let got = next_pin(&mut later).await;
    assert_eq!((got.digest.clone(), got.accepted), (digest('c'), false));
    // The agent's inventory shows its pins.
    let info = c
        .admin()
        .await
        .get_agent(pb::GetAgentRequest {
            agent_id: agent.agent_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let pins = info.inventory.unwrap().tool_pins;
    assert_eq!(pins.len(), 2);
    assert!(
        pins.iter()
            .any(|p| p.state == "changed" && p.pending_digest == digest('c'))
    );

    // The event filters reach the service: a bad detector is refused, good ones answer.
    let mut admin = c.admin().await;
    let e = admin
        .query_events(pb::EventQuery {
            tenant: "acme".into(),
            dlp_detector: "x' OR 1=1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let none = admin
        .query_events(pb::EventQuery {
            tenant: "acme".into(),
            event_types: vec!["TOOL_DEFINITION_CHANGED".into()],
            dlp_only: true,
            dlp_detector: "aws_secret_key".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.events.is_empty());

    // The audit log holds the decisions and the viewer's refusal.
    let audit = c
        .admin()
        .await
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let decided = audit
        .iter()
        .filter(|e| e.action == "pins.decide" && e.outcome == "ok")
        .count();
    assert_eq!(decided, 2);
    assert!(audit.iter().any(|e| e.action == "pins.decide"
        && e.actor == "vic"
        && e.outcome.starts_with("refused")));
}

/// `thothctl` (crate thothctl), built next to `thoth-controller`.
fn thothctl_bin() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_BIN_EXE_thoth-controller"))
        .with_file_name(format!("thothctl{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// The real `thothctl ARGS` as the init-made admin: (exit code, stdout, stderr).
async fn thothctl(c: &TestController, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(thothctl_bin());
    cmd.arg("--credentials")
        .arg(c.data().join("admin"))
        .args(["--controller", &c.url, "--tenant", "acme"])
        .args(args)
        .env_remove("THOTHCTL_CREDENTIALS")
        .env_remove("THOTH_CONTROLLER")
        .env_remove("THOTH_TENANT");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn thothctl_pins_lists_accepts_and_says_what_is_wrong() {
    let c = TestController::start().await;
    let agent = c.enroll("acme").await;
    let changed = pb::ToolPinReport {
        state: "changed".into(),
        pending_digest: digest('c'),
        changes: vec!["schema".into()],
        ..pin("alice", "write_file", 'b')
    };
    let mut r = report(vec![changed]);
    r.inventory.as_mut().unwrap().mcp_servers = vec![pb::McpServer {
        user: "alice".into(),
        client: "claude-desktop".into(),
        file: "/home/alice/.config/Claude/claude_desktop_config.json".into(),
        name: "files".into(),
        transport: "stdio".into(),
        target: "npx -y files /tmp".into(),
        governed: true,
        enabled: true,
        ..Default::default()
    }];
    c.sync(&agent.credentials).await.report(r).await.unwrap();
    let id = thoth_proto::pins::pin_id(&digest('5'), "write_file", &digest('c'));

    let (code, out, err) = thothctl(&c, &["pins", "list", "--pending"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for col in [
        "ID", "STATE", "CLIENT", "SERVER", "TOOL", "CHANGES", "AGENTS", "USERS", "DIGEST",
    ] {
        assert!(lines[0].contains(col), "{col}: {out}");
    }
    assert!(lines[1].starts_with(&id), "{out}");
    assert!(
        lines[1].contains("pending") && lines[1].contains("schema"),
        "{out}"
    );
    assert!(lines[1].contains(&digest('c')[..12]), "{out}");

    let (code, out, err) = thothctl(&c, &["pins", "accept", &id[..8], "--reason", "ok"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("{id} accepted: write_file of files")),
        "{out}"
    );
    let (code, out, _) = thothctl(&c, &["pins", "list", "--pending"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("no tool definition waits"), "{out}");
    let (code, out, _) = thothctl(&c, &["--json", "pins", "list"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let accepted = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .unwrap();
    assert_eq!(accepted["state"], "accepted");
    assert_eq!(accepted["decision"]["reason"], "ok");

    // The inventory shows the server's tools with their state.
    let (code, out, err) = thothctl(&c, &["inventory", "--tools"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let tools = out
        .split("Tools (")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(tools.starts_with("2 definitions, 0 pending"), "{out}");
    assert!(
        tools
            .lines()
            .any(|l| l.contains("write_file") && l.contains("accepted") && l.contains(&id)),
        "{out}"
    );

    // Unknown, malformed: said plainly, with their exit status.
    let (code, _, err) = thothctl(&c, &["pins", "reject", "abcdef"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("thothctl pins list"), "{err}");
    let (code, _, err) = thothctl(&c, &["pins", "reject", "xyz"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a pin id"), "{err}");
}
