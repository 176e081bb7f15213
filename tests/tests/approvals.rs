//! `step_up` reaches a human, with the real controller, agent, proxy, npm filesystem server and
//! the official Python MCP client (which, like Claude Desktop, declares no elicitation): a held
//! `write_file` goes through when an admin approves it with `thothctl approvals approve`, is
//! denied when they refuse, is denied at the timeout naming the approval id and then goes
//! through when retried once approved late (a different path does not), `--remember session`
//! covers the session and not the next one, and the SIEM and the audit log hold who decided.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thoth_e2e::fleet::{Agent, Controller, jsonl_sink};
use thoth_e2e::*;

/// The shipped example, with the hold shortened to `timeout` seconds and `approvers` set.
fn policy(dir: &Path, timeout: u64, approvers: &str) -> PathBuf {
    let text = std::fs::read_to_string(example_policy("read-write-files.yaml"))
        .unwrap()
        .replace(
            "approval_timeout_secs: 45",
            &format!("approval_timeout_secs: {timeout}"),
        )
        .replace(
            "approvers: [user, admin]",
            &format!("approvers: {approvers}"),
        );
    write_file(dir, "policy.yaml", &text)
}

struct Laptop {
    dir: tempfile::TempDir,
    controller: Controller,
    agent: Agent,
    work: PathBuf,
    siem: PathBuf,
}

impl Laptop {
    fn new(timeout: u64, approvers: &str) -> Laptop {
        let dir = tempfile::tempdir().unwrap();
        let (sink, siem) = jsonl_sink(dir.path());
        let controller = Controller::start(dir.path(), &sink);
        let agent = Agent::start(dir.path(), &controller);
        let v = controller.push(&policy(dir.path(), timeout, approvers));
        agent.wait_status("the policy", |s| Agent::version(s) == Some(v));
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Laptop {
            dir,
            controller,
            agent,
            work,
            siem,
        }
    }

    /// A Python MCP client session against the wrapped filesystem server, as a client would
    /// launch it, running `ops` on its own thread.
    fn session(&self, ops: Value) -> JoinHandle<ClientRun> {
        let mut args = self.agent.proxy_args();
        args.extend(["--server", "files", "--client", "claude-desktop"].map(String::from));
        let server = fs_server(&self.work);
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            mcp_client(ClientOpts::default(), ops, &args, &strs(&server))
        })
    }

    fn approvals(&self, all: bool) -> Vec<Value> {
        let mut args = vec!["approvals", "list", "--json"];
        if all {
            args.push("--all");
        }
        let (code, out, err) = self.controller.ctl(&args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap()
    }

    /// Waits for a pending request for `path`; returns its id.
    fn pending_for(&self, path: &Path) -> String {
        let want = path.display().to_string();
        let t0 = Instant::now();
        loop {
            if let Some(a) = self.approvals(false).into_iter().find(|a| {
                a["state"] == "pending" && a["content"].as_str().is_some_and(|c| c.contains(&want))
            }) {
                return a["approvalId"].as_str().unwrap().to_owned();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no pending approval for {want}: {:#?}",
                self.approvals(true)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn decide(&self, args: &[&str]) -> String {
        let (code, out, err) = self.controller.ctl(args);
        assert_eq!(code, 0, "thothctl {args:?}: {out}{err}");
        out
    }
}

fn write(path: &Path) -> Value {
    json!({"op": "call", "tool": "write_file", "args": {"path": path, "content": "x"}})
}

fn calls(run: &ClientRun) -> Vec<&Value> {
    run.out.iter().filter(|l| l["op"] == "call").collect()
}

#[test]
fn a_held_write_goes_through_when_an_admin_approves_and_not_when_they_deny() {
    let l = Laptop::new(45, "[user, admin]");
    // Approved: the held call is forwarded the moment the decision arrives.
    let a = l.work.join("a.txt");
    let s = l.session(json!([write(&a)]));
    let id = l.pending_for(&a);
    let t0 = Instant::now();
    let out = l.decide(&["approvals", "approve", &id, "--comment", "ok for the demo"]);
    assert!(out.contains(&id), "{out}");
    let run = s.join().unwrap();
    let c = calls(&run);
    assert_eq!(c[0]["isError"], false, "{run:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "x");
    // Denied: isError with the reason; no file.
    let b = l.work.join("b.txt");
    let s = l.session(json!([write(&b)]));
    let denied = l.pending_for(&b);
    l.decide(&["approvals", "deny", &denied, "--reason", "not on a Friday"]);
    let run = s.join().unwrap();
    let c = calls(&run);
    assert_eq!(c[0]["isError"], true, "{run:?}");
    assert!(
        c[0]["text"].as_str().unwrap().contains("not on a Friday"),
        "{run:?}"
    );
    assert!(!b.exists());
    // A decided request cannot be decided again.
    let (code, _, err) = l.controller.ctl(&["approvals", "approve", &denied]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused"), "{err}");
    // Evidence: both decisions in the SIEM with who decided, and in the audit log.
    wait_secs("the decisions in the SIEM", 30, || {
        let ev = read_jsonl(&l.siem);
        [&id, &denied].iter().all(|want| {
            ev.iter().any(|e| {
                e["eventType"] == "APPROVAL_DECIDED" && e["approvalId"].as_str() == Some(want)
            })
        })
    });
    let ev = read_jsonl(&l.siem);
    let decided = |want: &str| {
        ev.iter()
            .find(|e| e["eventType"] == "APPROVAL_DECIDED" && e["approvalId"] == want)
            .unwrap()
            .to_string()
    };
    let ok = decided(&id);
    assert!(ok.contains("admin") && ok.contains("approved"), "{ok}");
    let no = decided(&denied);
    assert!(
        no.contains("denied") && no.contains("not on a Friday"),
        "{no}"
    );
    assert!(
        ev.iter()
            .any(|e| e["eventType"] == "APPROVAL_REQUESTED" && e["approvalId"] == id.as_str()),
        "APPROVAL_REQUESTED missing"
    );
    // The call's own TOOL_CALL_POST names the approval.
    assert!(
        ev.iter().any(|e| e["eventType"] == "TOOL_CALL_POST"
            && e["toolName"] == "write_file"
            && e["approvalId"].is_string()),
        "TOOL_CALL_POST without approvalId"
    );
    let audit = l.decide(&["audit", "--json"]);
    assert!(audit.contains(&id) && audit.contains(&denied), "{audit}");
}

#[test]
fn no_answer_is_denied_naming_the_id_and_a_late_approval_lets_the_identical_retry_through() {
    let l = Laptop::new(4, "[admin]");
    let c = l.work.join("c.txt");
    let d = l.work.join("d.txt");
    let cue = l.dir.path().join("approved-late");
    // One session: the call times out; once the test approves it late, the identical call
    // goes through, and a different path is held again (and times out).
    let s = l.session(json!([
        write(&c),
        {"op": "wait_file", "path": cue, "timeout": 60},
        write(&c),
        write(&d),
    ]));
    let id = l.pending_for(&c);
    // The hold ends at the timeout (the request stays pending for a late decision): wait it out.
    std::thread::sleep(Duration::from_secs(6));
    l.decide(&["approvals", "approve", &id]);
    std::fs::write(&cue, "").unwrap();
    let run = s.join().unwrap();
    let c_calls = calls(&run);
    assert_eq!(c_calls.len(), 3, "{run:?}");
    let first = c_calls[0]["text"].as_str().unwrap();
    assert_eq!(c_calls[0]["isError"], true, "{run:?}");
    assert!(
        first.contains(&id),
        "the denial names the approval id: {first}"
    );
    assert!(first.contains("retried"), "{first}");
    assert_eq!(c_calls[1]["isError"], false, "the identical retry: {run:?}");
    assert_eq!(std::fs::read_to_string(&c).unwrap(), "x");
    assert_eq!(
        c_calls[2]["isError"], true,
        "another path is not covered: {run:?}"
    );
    assert!(!d.exists());
}

#[test]
fn remember_session_covers_the_session_and_not_the_next_one() {
    let l = Laptop::new(20, "[admin]");
    let e = l.work.join("e.txt");
    let cue = l.dir.path().join("again");
    let s = l.session(json!([
        write(&e),
        {"op": "wait_file", "path": cue, "timeout": 60},
        write(&e),
    ]));
    let id = l.pending_for(&e);
    l.decide(&["approvals", "approve", &id, "--remember", "session"]);
    std::fs::write(&cue, "").unwrap();
    let run = s.join().unwrap();
    let c = calls(&run);
    assert_eq!(c[0]["isError"], false, "{run:?}");
    assert_eq!(
        c[1]["isError"], false,
        "same session, no new request: {run:?}"
    );
    assert_eq!(
        l.approvals(true)
            .iter()
            .filter(|a| a["content"].as_str().is_some_and(|c| c.contains("e.txt")))
            .count(),
        1,
        "the second call asked nobody"
    );
    // A new session: asked again (and denied here).
    let s = l.session(json!([write(&e)]));
    let again = l.pending_for(&e);
    assert_ne!(again, id);
    l.decide(&["approvals", "deny", &again]);
    let run = s.join().unwrap();
    assert_eq!(calls(&run)[0]["isError"], true, "{run:?}");
}

/// A display for the test: Xvfb on a free display number, and a process of this user carrying
/// `DISPLAY` (what a desktop session looks like to the agent).
struct Desk {
    xvfb: std::process::Child,
    session: std::process::Child,
    display: String,
}

impl Drop for Desk {
    fn drop(&mut self) {
        let _ = self.session.kill();
        let _ = self.xvfb.kill();
        let _ = self.session.wait();
        let _ = self.xvfb.wait();
    }
}

impl Desk {
    fn start() -> Option<Desk> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let missing: Vec<&str> = ["/usr/bin/Xvfb", "/usr/bin/zenity", "/usr/bin/xdotool"]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            assert!(
                std::env::var_os("CI").is_none(),
                "missing {missing:?}: scripts/setup-peers installs them"
            );
            eprintln!("SKIPPED: missing {missing:?}");
            return None;
        }
        let mut xvfb = Command::new("/usr/bin/Xvfb")
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                "1024x768x24",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(xvfb.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let display = format!(":{}", line.trim());
        let session = Command::new("/bin/sleep")
            .arg("300")
            .env_clear()
            .env("DISPLAY", &display)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        Some(Desk {
            xvfb,
            session,
            display,
        })
    }

    fn xdotool(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("/usr/bin/xdotool")
            .args(args)
            .env_clear()
            .env("DISPLAY", &self.display)
            .output()
            .unwrap()
    }

    /// Waits for the approval dialog and answers Allow (Tab to it, then space).
    fn allow(&self) {
        let t0 = Instant::now();
        let w = loop {
            let o = self.xdotool(&[
                "search",
                "--onlyvisible",
                "--name",
                "^Thoth: approval needed$",
            ]);
            if let Some(w) = String::from_utf8_lossy(&o.stdout).split_whitespace().next() {
                break w.to_owned();
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no dialog appeared");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            self.xdotool(&["windowfocus", "--sync", &w])
                .status
                .success()
        );
        for k in ["Tab", "space"] {
            assert!(self.xdotool(&["key", k]).status.success());
        }
    }
}

#[test]
fn the_user_clicks_allow_in_a_real_dialog_and_the_write_goes_through() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: the agent shows dialogs as the caller; run as root to stage a session");
        return;
    }
    let Some(desk) = Desk::start() else {
        return;
    };
    let l = Laptop::new(30, "[user]");
    let f = l.work.join("f.txt");
    let s = l.session(json!([write(&f)]));
    desk.allow();
    let run = s.join().unwrap();
    assert_eq!(calls(&run)[0]["isError"], false, "{run:?}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "x");
    wait_secs("the user's decision in the SIEM", 30, || {
        read_jsonl(&l.siem).iter().any(|e| {
            e["eventType"] == "APPROVAL_DECIDED"
                && e["detail"]["channel"] == "user"
                && e["detail"]["decision"] == "approved"
        })
    });
    drop(desk);
    // No display any more: the user channel says so at once and the call is denied, saying
    // why (not held for nothing).
    let g = l.work.join("g.txt");
    let t0 = Instant::now();
    let run = l.session(json!([write(&g)])).join().unwrap();
    let c = calls(&run);
    assert_eq!(c[0]["isError"], true, "{run:?}");
    assert!(t0.elapsed() < Duration::from_secs(25), "{:?}", t0.elapsed());
    assert!(!g.exists());
}
