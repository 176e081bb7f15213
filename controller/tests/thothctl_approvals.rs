//! The real `thothctl approvals` against a real controller (issue 16): an agent certificate
//! submits requests over mTLS, thothctl lists, shows, approves, denies and watches them, the
//! decisions reach the agent's Subscribe stream, and refusals (already decided, expired,
//! withdrawn, another tenant, the viewer role) are said plainly with their exit status.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use common::{TestController, next_update};
use thoth_controller::pki::Role;
use thoth_proto::fleet::{self as pb, approvals_client::ApprovalsClient};

/// `thothctl` (crate thothctl), built next to `thoth-controller`.
fn thothctl_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_thoth-controller"))
        .with_file_name(format!("thothctl{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

fn thothctl_cmd(url: &str, creds: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(thothctl_bin());
    cmd.arg("--credentials")
        .arg(creds)
        .args(["--controller", url])
        .args(args)
        .env_remove("THOTHCTL_CREDENTIALS")
        .env_remove("THOTH_CONTROLLER")
        .env_remove("THOTH_TENANT");
    cmd
}

/// The real `thothctl ARGS` with the credential in `creds`: (exit code, stdout, stderr).
async fn thothctl_as(c: &TestController, creds: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = thothctl_cmd(&c.url, creds, args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// As the init-made admin (role admin, all tenants).
async fn thothctl(c: &TestController, args: &[&str]) -> (i32, String, String) {
    thothctl_as(c, &c.data().join("admin"), args).await
}

async fn thothctl_ok(c: &TestController, args: &[&str]) -> String {
    let (code, out, err) = thothctl(c, args).await;
    assert_eq!(code, 0, "thothctl {args:?}: {out}{err}");
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn id(n: u32) -> String {
    format!("0193a2b4-5c6d-7e8f-9a0b-{n:012x}")
}

fn request(n: u32, tool: &str, content: &str, expires_in_ms: i64) -> pb::ApprovalRequest {
    let now = now_ms();
    pb::ApprovalRequest {
        approval_id: id(n),
        session_id: "sess-1".into(),
        server_name: "files".into(),
        tool_name: tool.into(),
        content: content.into(),
        reason: "step_up: writes need a human".into(),
        user: "alice".into(),
        timeout_secs: 45,
        arguments_sha256: format!("{:064x}", n),
        client_name: "claude-desktop".into(),
        approvers: vec!["user".into(), "admin".into()],
        remember: "once".into(),
        expires_unix_ms: now + expires_in_ms,
        requested_unix_ms: now,
        ..Default::default()
    }
}

/// The next decision pushed on an agent's Subscribe stream (bundles skipped).
async fn next_decision(stream: &mut tonic::Streaming<pb::PolicyUpdate>) -> pb::ApprovalDecision {
    loop {
        if let Some(d) = next_update(stream, 20).await.unwrap().approval {
            return d;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thothctl_lists_shows_approves_and_denies_what_an_agent_submitted() {
    let c = TestController::start().await;
    let agent = c.enroll("acme").await;
    let mut stream = c.subscribe(&agent.credentials).await;
    let ch = thoth_client::connect(&c.url, &agent.credentials, None)
        .await
        .unwrap();
    let mut approvals = ApprovalsClient::new(ch);
    // A preview with line breaks and a tab (the controller keeps them in content): escaped on
    // the terminal, whole in JSON.
    let content = "{\"path\": \"/home/alice/projects/app/notes.md\",\n\t\"content\": \"hello\"}";
    let submit = |r: pb::ApprovalRequest| {
        let mut a = approvals.clone();
        async move { a.submit(r).await.map(tonic::Response::into_inner) }
    };
    submit(request(1, "write_file", content, 600_000))
        .await
        .unwrap();
    submit(request(2, "move_file", "{\"source\": \"/a\"}", 600_000))
        .await
        .unwrap();

    // list: both pending, every column.
    let out = thothctl_ok(&c, &["approvals", "list"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("ID "), "{out}");
    for (n, tool) in [(1, "write_file"), (2, "move_file")] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(&id(n)))
            .unwrap_or_else(|| panic!("no row for {}: {out}", id(n)));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cells[..6],
            [
                id(n).as_str(),
                agent.agent_id.as_str(),
                "test-host",
                "alice",
                "files",
                tool
            ],
            "{row}"
        );
        assert!(row.ends_with("pending"), "{row}");
        assert!(row.contains("in 10m"), "{row}");
    }
    assert!(!out.contains('\t'), "{out:?}");

    // list --json: the request as the agent sent it.
    let j: serde_json::Value =
        serde_json::from_str(&thothctl_ok(&c, &["--json", "approvals", "list"]).await).unwrap();
    let first = j
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["approvalId"] == id(1).as_str())
        .expect("request 1 in the JSON list");
    assert_eq!(first["content"], content);
    assert_eq!(first["agentId"], agent.agent_id.as_str());
    assert_eq!(first["hostname"], "test-host");
    assert_eq!(first["state"], "pending");
    assert_eq!(first["decision"], serde_json::Value::Null);

    // show: the whole preview (pretty, escaped) and how to decide.
    let out = thothctl_ok(&c, &["approvals", "show", &id(1)]).await;
    for want in [
        format!("approval     {}", id(1)),
        "state        pending".into(),
        format!("agent        {} on test-host", agent.agent_id),
        "tool         write_file".into(),
        "why          step_up: writes need a human".into(),
        "    \"path\": \"/home/alice/projects/app/notes.md\",".into(),
        format!("decide:      thothctl approvals approve {}", id(1)),
    ] {
        assert!(out.contains(&want), "missing {want:?} in\n{out}");
    }

    // approve --remember session: recorded, and pushed to the agent.
    let out = thothctl_ok(
        &c,
        &[
            "approvals",
            "approve",
            &id(1),
            "--remember",
            "120m",
            "--comment",
            "OPS-42",
        ],
    )
    .await;
    assert!(
        out.starts_with(&format!(
            "approved {}: files/write_file for alice on test-host\n  covers every identical call of alice for 2h",
            id(1)
        )),
        "{out}"
    );
    let d = next_decision(&mut stream).await;
    assert_eq!(d.approval_id, id(1));
    assert!(d.approved);
    assert_eq!(d.remember, "2h");
    assert_eq!(d.reason, "OPS-42");
    assert!(!d.decided_by.is_empty());

    // Approving (or denying) it again is refused, naming who decided.
    let id1 = id(1);
    for verb in ["approve", "deny"] {
        let (code, out, err) = thothctl(&c, &["approvals", verb, &id1]).await;
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("refused: approval"), "{err}");
        assert!(err.contains("already approved by"), "{err}");
        assert!(err.contains("hint: thothctl approvals show"), "{err}");
    }

    // deny --reason.
    let out = thothctl_ok(
        &c,
        &["approvals", "deny", &id(2), "--reason", "no moves today"],
    )
    .await;
    assert_eq!(
        out.trim_end(),
        format!(
            "denied {}: files/move_file for alice on test-host: \"no moves today\"",
            id(2)
        )
    );
    let d = next_decision(&mut stream).await;
    assert_eq!(
        (d.approval_id.as_str(), d.approved),
        (id(2).as_str(), false)
    );
    assert_eq!(d.reason, "no moves today");

    // Nothing pending; --all shows both, decided.
    let out = thothctl_ok(&c, &["approvals", "list"]).await;
    assert!(out.starts_with("no pending approval requests"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&thothctl_ok(&c, &["--json", "approvals", "list", "--all"]).await)
            .unwrap();
    let states: Vec<(&str, &str)> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["approvalId"].as_str().unwrap(),
                a["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(states.contains(&(id(1).as_str(), "approved")), "{states:?}");
    assert!(states.contains(&(id(2).as_str(), "denied")), "{states:?}");
    let out = thothctl_ok(&c, &["approvals", "show", &id(1)]).await;
    assert!(
        out.contains("decision     approved by ") && out.contains(", remember 2h: \"OPS-42\""),
        "{out}"
    );
    assert!(!out.contains("decide:"), "{out}");

    // The decisions are in the audit log.
    let audit = thothctl_ok(&c, &["--json", "audit"]).await;
    assert_eq!(audit.matches("approval.decide").count(), 2, "{audit}");

    // An expired request, a withdrawn one, an unknown id, a malformed id, a bad --remember.
    submit(request(3, "write_file", "{}", 1500)).await.unwrap();
    submit(request(4, "write_file", "{}", 600_000))
        .await
        .unwrap();
    approvals
        .withdraw(pb::ApprovalWithdraw { approval_id: id(4) })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (code, _, err) = thothctl(&c, &["approvals", "approve", &id(3)]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refused: approval") && err.contains("expired"),
        "{err}"
    );
    let (code, _, err) = thothctl(&c, &["approvals", "approve", &id(4)]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("withdrawn"), "{err}");
    let (code, _, err) = thothctl(&c, &["approvals", "show", &id(99)]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("no approval {}: unknown", id(99))),
        "{err}"
    );
    let (code, _, err) = thothctl(&c, &["approvals", "approve", "../../etc"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not an approval id"), "{err}");
    let (code, _, err) = thothctl(&c, &["approvals", "approve", &id(1), "--remember", "2d"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--remember"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tenants_and_viewers_are_refused_plainly() {
    let c = TestController::start().await;
    let agent = c.enroll("acme").await;
    let ch = thoth_client::connect(&c.url, &agent.credentials, None)
        .await
        .unwrap();
    ApprovalsClient::new(ch)
        .submit(request(7, "write_file", "{}", 600_000))
        .await
        .unwrap();
    let dir = |name: &str| c.data().join(format!("cred-{name}"));

    // An approver of another tenant: the request does not exist for them.
    c.admin_creds("zed", Role::Approver, Some("other"));
    let (code, out, err) = thothctl_as(&c, &dir("zed"), &["approvals", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(&id(7)), "{out}");
    for args in [
        ["approvals", "show", &id(7)],
        ["approvals", "approve", &id(7)],
    ] {
        let (code, _, err) = thothctl_as(&c, &dir("zed"), &args).await;
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("no approval {}", id(7))), "{err}");
    }

    // A viewer of the right tenant: refused, told which role it needs.
    c.admin_creds("vic", Role::Viewer, Some("acme"));
    let id7 = id(7);
    for args in [
        &["approvals", "list"][..],
        &["approvals", "approve", &id7][..],
        // A refused watch ends at once (it reconnects only when the controller goes away).
        &["approvals", "watch"][..],
    ] {
        let (code, _, err) = thothctl_as(&c, &dir("vic"), args).await;
        assert_eq!(code, 4, "{err}");
        assert!(err.contains("permission denied"), "{err}");
        assert!(err.contains("role approver"), "{err}");
    }

    // An approver of the right tenant decides.
    c.admin_creds("amy", Role::Approver, Some("acme"));
    let (code, out, err) = thothctl_as(&c, &dir("amy"), &["approvals", "approve", &id(7)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("approved {}", id(7))), "{out}");
    let j: serde_json::Value = serde_json::from_str(
        &thothctl_as(&c, &dir("amy"), &["--json", "approvals", "show", &id(7)])
            .await
            .1,
    )
    .unwrap();
    assert_eq!(j["decision"]["decidedBy"], "amy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_line_per_request_and_decision() {
    let c = TestController::start().await;
    let agent = c.enroll("acme").await;
    let ch = thoth_client::connect(&c.url, &agent.credentials, None)
        .await
        .unwrap();
    let mut approvals = ApprovalsClient::new(ch);
    approvals
        .submit(request(1, "write_file", "{\"path\": \"/tmp/a\"}", 600_000))
        .await
        .unwrap();

    let spawn = |json: bool| {
        let mut args = vec!["approvals", "watch"];
        if json {
            args.insert(0, "--json");
        }
        let mut child = thothctl_cmd(&c.url, &c.data().join("admin"), &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    };
    let next = |rx: &mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a watch line within 20 s")
    };
    let (mut text, text_rx) = spawn(false);
    let (mut json, json_rx) = spawn(true);

    // What is pending when the watch starts, then what happens.
    let l = next(&text_rx);
    assert!(
        l.contains(&format!(
            "  requested  {} files/write_file for alice on test-host",
            id(1)
        )),
        "{l}"
    );
    assert!(
        l.contains("{\"path\":\"/tmp/a\"}") && l.contains("expires in 10m"),
        "{l}"
    );
    let j: serde_json::Value = serde_json::from_str(&next(&json_rx)).unwrap();
    assert_eq!(
        (j["approvalId"].as_str(), j["state"].as_str()),
        (Some(id(1).as_str()), Some("pending"))
    );

    approvals
        .submit(request(2, "edit_file", "{}", 600_000))
        .await
        .unwrap();
    let l = next(&text_rx);
    assert!(
        l.contains(&format!("  requested  {} files/edit_file", id(2))),
        "{l}"
    );
    let j: serde_json::Value = serde_json::from_str(&next(&json_rx)).unwrap();
    assert_eq!(j["approvalId"], id(2).as_str());

    thothctl_ok(&c, &["approvals", "deny", &id(2), "--reason", "no"]).await;
    let l = next(&text_rx);
    assert!(
        l.contains(&format!("  denied     {} files/edit_file", id(2))),
        "{l}"
    );
    assert!(l.ends_with("(admin): \"no\""), "{l}");
    let j: serde_json::Value = serde_json::from_str(&next(&json_rx)).unwrap();
    assert_eq!(j["state"], "denied");
    assert_eq!(j["decision"]["reason"], "no");

    for child in [&mut text, &mut json] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// A child process killed when dropped (a failing test leaves none behind).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real `thoth-controller serve` on `addr`, serving the data directory `data`.
fn serve(data: &Path, addr: &str) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_thoth-controller"))
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--listen", addr, "--metrics-listen", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no controller on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Killed(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnects_when_the_controller_process_comes_back() {
    // Set up (enrollment) in-process, then serve the same data directory from the real binary
    // on a fixed address, so that it can be killed and started again there.
    let mut c = TestController::start().await;
    let agent = c.enroll("acme").await;
    c.running.take().unwrap().shutdown().await;
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let url = format!("https://{addr}");
    let controller = serve(c.data(), &addr);
    let submit = |r: pb::ApprovalRequest| {
        let (url, creds) = (url.clone(), agent.credentials.clone());
        async move {
            let ch = thoth_client::connect(&url, &creds, None).await.unwrap();
            ApprovalsClient::new(ch).submit(r).await.unwrap();
        }
    };
    submit(request(1, "write_file", "{}", 600_000)).await;
    let mut child = Killed(
        thothctl_cmd(&url, &c.data().join("admin"), &["approvals", "watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        Box::new(child.0.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.0.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let wait_for = |want: &str| {
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.contains(want) => return l,
                Ok(l) => seen.push(l),
                Err(_) => panic!("no line with {want:?} within 30 s; saw {seen:#?}"),
            }
        }
    };
    wait_for(&format!("requested  {}", id(1)));

    // The controller dies: the watch says so and keeps trying; started again on the same
    // address, the watch follows it again.
    drop(controller);
    let l = wait_for("reconnecting in");
    assert!(l.starts_with("thothctl: "), "{l}");
    let _controller = serve(c.data(), &addr);
    wait_for("watching again");
    submit(request(2, "edit_file", "{}", 600_000)).await;
    wait_for(&format!("requested  {} files/edit_file", id(2)));
}
