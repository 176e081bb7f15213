//! Issue 17's "Done when", end to end with the real controller, agent, thothctl and proxy: a
//! Python SDK server changes `read_file`'s description between sessions to smuggle
//! instructions; under `on_tool_change: block` the next session does not see it and cannot call
//! it; `thothctl pins list --pending` shows it; once an admin accepts it (`thothctl pins
//! accept`) and the agent has the decision, it is listed and callable again, and its result
//! with an AWS secret key reaches the client redacted under `dlp.results: redact`. The
//! controller's events hold the change and the DLP hit (never the secret), and a second
//! server of the same client offering `read_file` raises `TOOL_NAME_SHADOWED`. A tool the server
//! adds in a later session is held back the same way until an admin accepts it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thoth_e2e::fleet::{Agent, Controller, jsonl_sink};
use thoth_e2e::integrity::*;
use thoth_e2e::*;
use thoth_proto::pins::{pin_id, server_key};

const CLIENT: &str = "claude-desktop";

struct Fleet {
    _dir: tempfile::TempDir,
    controller: Controller,
    agent: Agent,
    siem: PathBuf,
}

impl Fleet {
    fn new(policy: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let (sink, siem) = jsonl_sink(dir.path());
        let controller = Controller::start(dir.path(), &sink);
        let agent = Agent::start(dir.path(), &controller);
        let file = write_file(dir.path(), "policy.yaml", policy);
        let v = controller.push(&file);
        agent.wait_status("the policy", |s| Agent::version(s) == Some(v));
        Fleet {
            _dir: dir,
            controller,
            agent,
            siem,
        }
    }

    /// A session as the client launches it: `thoth run` pointed at the agent (no policy file).
    fn session(&self, server_name: &str, server: &[String], ops: Value) -> ClientRun {
        let mut args = self.agent.proxy_args();
        args.extend(["--server", server_name, "--client", CLIENT].map(String::from));
        mcp_client(ClientOpts::default(), ops, &strs(&args), &strs(server))
    }

    /// `thothctl pins list [extra…] --json`: the rows.
    fn pins(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["--json", "pins", "list"];
        args.extend_from_slice(extra);
        json_rows(&self.controller.ctl_ok(&args))
    }

    /// Waits until a row of `pins list extra…` satisfies `cond`; returns it.
    fn wait_pin(&self, what: &str, extra: &[&str], cond: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            if let Some(p) = self.pins(extra).into_iter().find(|p| cond(p)) {
                return p;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}: {:#?}\nagent log:\n{}",
                self.pins(&[]),
                std::fs::read_to_string(&self.agent.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `thothctl --json events query ARGS…`, once the result satisfies `cond` (uploads take a
    /// heartbeat or two).
    fn wait_query(&self, args: &[&str], cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut full = vec!["--json", "events", "query"];
        full.extend_from_slice(args);
        let t0 = Instant::now();
        loop {
            let rows = json_rows(&self.controller.ctl_ok(&full));
            if cond(&rows) {
                return rows;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "timed out waiting for `thothctl events query {args:?}`: {rows:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// thothctl's JSON output: one array (lists), or one object per line (event queries).
fn json_rows(out: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(out.trim()) {
        Ok(Value::Array(a)) => a,
        _ => out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect(),
    }
}

fn read(path: &str) -> Value {
    json!({"op": "call", "tool": "read_file", "args": {"path": path}})
}

/// The pin id a denial text tells the admin to accept.
fn accept_id(text: &str) -> Option<String> {
    let rest = &text[text.find("thothctl pins accept ")? + "thothctl pins accept ".len()..];
    let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    (!id.is_empty()).then_some(id)
}

fn assert_redacted(call: &Value) {
    assert_eq!(call["isError"], false, "{call}");
    let text = call["text"].as_str().unwrap_or_default();
    assert!(text.contains("[REDACTED:aws_secret_key]"), "{text}");
    assert!(
        !text.contains(AWS_SECRET_KEY) && !text.contains(AWS_ACCESS_KEY),
        "{text}"
    );
}

#[test]
fn a_rug_pulled_tool_is_held_back_until_an_admin_accepts_it_and_its_secrets_arrive_redacted() {
    let fleet = Fleet::new(&policy_yaml(
        "  on_tool_change: block\n  dlp:\n    results: redact\n",
        "",
    ));
    let f = Files::new();
    let server = f.server(&["--secrets"]);
    let benign = digest_of(&direct_tools(&server), "read_file");
    let key = server_key(CLIENT, SERVER, &server);

    // Session 1: the server's first list is pinned by first use; the call works, redacted.
    let run = fleet.session(
        SERVER,
        &server,
        json!([{"op": "list_tools"}, read("/home/ann/.aws/credentials")]),
    );
    assert!(run.tools().contains(&"read_file".into()), "{run:?}");
    assert_redacted(run.calls()[0]);
    let first = fleet.wait_pin("read_file pinned by first use", &[], |p| {
        p["tool"] == "read_file" && p["digest"] == benign.digest.as_str()
    });
    assert_eq!(first["state"], "pinned", "{first}");
    assert_eq!(first["serverKey"], key.as_str(), "{first}");

    // The server rug-pulls read_file; session 2 (a new process) does not get it.
    f.rugpull();
    let rug = digest_of(&direct_tools(&server), "read_file");
    let run = fleet.session(
        SERVER,
        &server,
        json!([{"op": "list_tools"}, read("/etc/hosts")]),
    );
    assert!(
        !run.tools().contains(&"read_file".into()),
        "held back: {run:?}"
    );
    let denied = run.calls()[0];
    assert_eq!(denied["isError"], true, "{run:?}");
    let text = denied["text"].as_str().unwrap_or_default();
    let id = pin_id(&key, "read_file", &rug.digest);
    assert_eq!(accept_id(text).as_deref(), Some(id.as_str()), "{text}");
    assert_eq!(
        f.server_calls_of("read_file").len(),
        1,
        "the held-back tool was called"
    );

    // The admin sees it waiting, and what changed.
    let pending = fleet.wait_pin("the pending change", &["--pending"], |p| {
        p["tool"] == "read_file" && p["digest"] == rug.digest.as_str()
    });
    assert_eq!(pending["id"], id.as_str(), "{pending}");
    assert_eq!(pending["state"], "pending", "{pending}");
    assert_eq!(pending["pinnedDigest"], benign.digest.as_str(), "{pending}");
    assert_eq!(pending["client"], CLIENT, "{pending}");
    assert_eq!(pending["serverName"], SERVER, "{pending}");
    assert_eq!(pending["changes"], json!(["description"]), "{pending}");
    let table = fleet.controller.ctl_ok(&["pins", "list", "--pending"]);
    assert!(
        table.contains(&id) && table.contains("read_file"),
        "{table}"
    );

    // Accepted: the decision reaches the agent, and a new session gets the tool back.
    let out =
        fleet
            .controller
            .ctl_ok(&["pins", "accept", &id, "--reason", "reviewed the new text"]);
    assert!(out.contains(&id), "{out}");
    let accepted = fleet.wait_pin("the accepted definition", &[], |p| {
        p["id"] == id.as_str() && p["state"] == "accepted"
    });
    assert_eq!(accepted["decision"]["accepted"], true, "{accepted}");
    assert_eq!(
        accepted["decision"]["reason"], "reviewed the new text",
        "{accepted}"
    );
    assert!(
        fleet
            .pins(&["--pending"])
            .iter()
            .all(|p| p["id"] != id.as_str()),
        "still pending after the accept"
    );
    let t0 = Instant::now();
    loop {
        let run = fleet.session(SERVER, &server, json!([{"op": "list_tools"}]));
        if run.tools().contains(&"read_file".into()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the agent never applied the decision: {run:?}\nagent log:\n{}",
            std::fs::read_to_string(&fleet.agent.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let run = fleet.session(
        SERVER,
        &server,
        json!([{"op": "list_tools"}, read("/home/ann/.aws/credentials")]),
    );
    let l = lists(&run);
    let desc = l[0]["descriptions"]["read_file"]
        .as_str()
        .unwrap_or_default();
    assert!(desc.contains(SMUGGLED), "the accepted definition: {desc}");
    assert_redacted(run.calls()[0]);
    assert_eq!(f.server_calls_of("read_file").len(), 2);

    // The controller's events: the change, the DLP hit; the secret nowhere.
    // The smuggled instruction is also flagged as such (on_suspicious_tool: warn, the default).
    let changed = fleet.wait_query(&["--integrity"], |rows| {
        ["TOOL_DEFINITION_CHANGED", "TOOL_DEFINITION_SUSPICIOUS"]
            .iter()
            .all(|t| {
                rows.iter()
                    .any(|e| e["eventType"] == *t && e["toolName"] == "read_file")
            })
    });
    let sus = changed
        .iter()
        .find(|e| e["eventType"] == "TOOL_DEFINITION_SUSPICIOUS")
        .unwrap();
    assert_eq!(sus["detail"]["digest"], rug.digest.as_str(), "{sus}");
    assert!(
        sus["detail"]["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["kind"] == "hidden_instruction_tag")),
        "{sus}"
    );
    let e = changed
        .iter()
        .find(|e| e["eventType"] == "TOOL_DEFINITION_CHANGED")
        .unwrap();
    assert_eq!(e["detail"]["oldDigest"], benign.digest.as_str(), "{e}");
    assert_eq!(e["detail"]["newDigest"], rug.digest.as_str(), "{e}");
    assert_eq!(e["detail"]["changes"], json!(["description"]), "{e}");
    assert_eq!(e["decision"]["action"], "deny", "{e}");
    assert_eq!(e["clientName"], CLIENT, "{e}");
    let by_type = fleet.wait_query(&["--type", "TOOL_DEFINITION_CHANGED"], |rows| {
        !rows.is_empty()
    });
    assert!(
        by_type
            .iter()
            .all(|e| e["eventType"] == "TOOL_DEFINITION_CHANGED"),
        "{by_type:#?}"
    );
    let hits = fleet.wait_query(&["--dlp"], |rows| {
        rows.iter()
            .filter(|e| e["eventType"] == "TOOL_CALL_POST" && e["toolName"] == "read_file")
            .count()
            >= 2
    });
    assert!(
        hits.iter().all(|e| e["detail"]["dlp"].is_array()),
        "--dlp returns only events with findings: {hits:#?}"
    );
    let by_detector = fleet.wait_query(&["--detector", "aws_secret_key"], |rows| !rows.is_empty());
    assert!(
        by_detector.iter().all(|e| {
            dlp_findings(e)
                .iter()
                .any(|h| h["detector"] == "aws_secret_key" && h["action"] == "redact")
        }),
        "{by_detector:#?}"
    );
    let everything = fleet
        .controller
        .ctl_ok(&["--json", "events", "query", "--limit", "10000"]);
    let siem = std::fs::read_to_string(&fleet.siem).unwrap_or_default();
    for (what, text) in [("the controller's store", &everything), ("the SIEM", &siem)] {
        assert!(
            !text.contains(AWS_SECRET_KEY),
            "{what} holds the secret key"
        );
        assert!(!text.contains(AWS_ACCESS_KEY), "{what} holds the key id");
    }
}

#[test]
fn a_second_server_of_the_same_client_offering_read_file_is_reported_as_shadowing() {
    let fleet = Fleet::new(&policy_yaml("", ""));
    let a = Files::new();
    let b = Files::new();
    let first = a.server(&[]);
    let second = b.server(&["--name", "mirror", "--shadow", "list_dir"]);
    let mirror = format!("{SERVER}-mirror");
    let run = fleet.session(SERVER, &first, json!([{"op": "list_tools"}]));
    assert!(run.tools().contains(&"read_file".into()), "{run:?}");
    let run = fleet.session(&mirror, &second, json!([{"op": "list_tools"}]));
    assert!(run.tools().contains(&"read_file".into()), "{run:?}");
    let rows = fleet.wait_query(&["--type", "TOOL_NAME_SHADOWED"], |rows| {
        rows.iter().any(|e| e["toolName"] == "read_file")
    });
    let e = rows.iter().find(|e| e["toolName"] == "read_file").unwrap();
    assert_eq!(e["serverName"], mirror.as_str(), "{e}");
    assert_eq!(e["clientName"], CLIENT, "{e}");
    assert_eq!(e["detail"]["tool"], "read_file", "{e}");
    assert_eq!(e["detail"]["client"], CLIENT, "{e}");
    let servers: Vec<&str> = e["detail"]["servers"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        servers.contains(&SERVER) && servers.contains(&mirror.as_str()),
        "{e}"
    );
    // Only the shared names: list_dir (mirror's own) and nothing else of one server alone.
    assert!(
        rows.iter().all(|e| e["toolName"] != "list_dir"),
        "{rows:#?}"
    );
    // Once per (user, client, tool, server pair): a second look raises nothing new.
    let before = rows.iter().filter(|e| e["toolName"] == "read_file").count();
    fleet.session(&mirror, &second, json!([{"op": "list_tools"}]));
    fleet.session(SERVER, &first, json!([{"op": "list_tools"}]));
    // Wait until the agent has uploaded everything those sessions produced, then count again.
    fleet.agent.wait_status("the spool drained", |st| {
        st["events"]["acked"] == st["events"]["seq"]
    });
    let rows = fleet.wait_query(&["--type", "TOOL_NAME_SHADOWED"], |_| true);
    assert_eq!(
        rows.iter().filter(|e| e["toolName"] == "read_file").count(),
        before,
        "{rows:#?}"
    );
}

#[test]
fn under_step_up_an_admin_approval_of_a_changed_tool_accepts_it_for_that_user() {
    let fleet = Fleet::new(&policy_yaml(
        "  on_tool_change: step_up\n  approvers: [admin]\n  approval_timeout_secs: 30\n",
        "",
    ));
    let f = Files::new();
    let server = f.server(&[]);
    let run = fleet.session(SERVER, &server, json!([{"op": "list_tools"}, read("/a")]));
    assert_eq!(run.calls()[0]["isError"], false, "{run:?}");
    f.rugpull();
    // Session 2: the changed tool stays visible, and its call is held for an approval.
    let (args, srv) = (fleet.agent.proxy_args(), server.clone());
    let held = std::thread::spawn(move || {
        let mut args = args;
        args.extend(["--server", SERVER, "--client", CLIENT].map(String::from));
        mcp_client(
            ClientOpts::default(),
            json!([{"op": "list_tools"}, read("/b")]),
            &strs(&args),
            &strs(&srv),
        )
    });
    let approvals = |all: bool| {
        let mut a = vec!["--json", "approvals", "list"];
        if all {
            a.push("--all");
        }
        json_rows(&fleet.controller.ctl_ok(&a))
    };
    let t0 = Instant::now();
    let id = loop {
        if let Some(a) = approvals(false)
            .into_iter()
            .find(|a| a["toolName"] == "read_file" && a["state"] == "pending")
        {
            break a["approvalId"].as_str().unwrap().to_owned();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no approval request for the changed read_file: {:#?}",
            approvals(true)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        f.server_calls_of("read_file").len(),
        1,
        "not sent before the approval"
    );
    fleet.controller.ctl_ok(&[
        "approvals",
        "approve",
        &id,
        "--comment",
        "new text reviewed",
    ]);
    let run = held.join().unwrap();
    assert!(run.tools().contains(&"read_file".into()), "{run:?}");
    assert_eq!(run.calls()[0]["isError"], false, "{run:?}");
    assert_eq!(f.server_calls_of("read_file").len(), 2);
    // Session 3: the approval accepted this definition for the user: no new request.
    let run = fleet.session(SERVER, &server, json!([read("/c")]));
    assert_eq!(run.calls()[0]["isError"], false, "{run:?}");
    assert_eq!(
        approvals(true)
            .iter()
            .filter(|a| a["toolName"] == "read_file")
            .count(),
        1,
        "asked again after the approval"
    );
}

#[test]
fn a_tool_the_server_adds_later_is_held_back_until_an_admin_accepts_it() {
    let fleet = Fleet::new(&policy_yaml("  on_tool_change: block\n", ""));
    let f = Files::new();
    let server = f.server(&["--extra-tool", "export_all"]);
    let key = server_key(CLIENT, SERVER, &server);
    let export = json!({"op": "call", "tool": "export_all", "args": {}});

    // Session 1: the server's first list (no export_all) is pinned by first use.
    let run = fleet.session(SERVER, &server, json!([{"op": "list_tools"}]));
    assert!(run.tools().contains(&"read_file".into()), "{run:?}");
    assert!(!run.tools().contains(&"export_all".into()), "{run:?}");
    fleet.wait_pin("read_file pinned by first use", &[], |p| {
        p["tool"] == "read_file" && p["state"] == "pinned"
    });

    // The server adds export_all; session 2 does not get it, and its call is denied.
    std::fs::write(&f.state, "extra").unwrap();
    let added = digest_of(&direct_tools(&server), "export_all");
    let run = fleet.session(SERVER, &server, json!([{"op": "list_tools"}, export]));
    assert!(run.tools().contains(&"read_file".into()), "{run:?}");
    assert!(
        !run.tools().contains(&"export_all".into()),
        "held back: {run:?}"
    );
    assert_eq!(run.calls()[0]["isError"], true, "{run:?}");
    assert!(
        f.server_calls_of("export_all").is_empty(),
        "the added tool was called"
    );
    let id = pin_id(&key, "export_all", &added.digest);
    let text = run.calls()[0]["text"].as_str().unwrap_or_default();
    assert_eq!(accept_id(text).as_deref(), Some(id.as_str()), "{text}");

    // The admin sees it waiting: one row, nothing it replaces, changes "added".
    let pending = fleet.wait_pin("the added tool", &["--pending"], |p| {
        p["tool"] == "export_all"
    });
    assert_eq!(pending["id"], id.as_str(), "{pending}");
    assert_eq!(pending["state"], "pending", "{pending}");
    assert_eq!(pending["digest"], added.digest.as_str(), "{pending}");
    assert_eq!(pending["changes"], json!(["added"]), "{pending}");
    assert!(pending["pinnedDigest"].is_null(), "{pending}");
    assert_eq!(
        fleet
            .pins(&[])
            .iter()
            .filter(|p| p["tool"] == "export_all")
            .count(),
        1
    );
    let table = fleet.controller.ctl_ok(&["pins", "list", "--pending"]);
    assert!(
        table.contains(&id) && table.contains("export_all") && table.contains("added"),
        "{table}"
    );

    // Accepted: a new session lists it and may call it.
    fleet
        .controller
        .ctl_ok(&["pins", "accept", &id, "--reason", "reviewed"]);
    let t0 = Instant::now();
    loop {
        let run = fleet.session(SERVER, &server, json!([{"op": "list_tools"}]));
        if run.tools().contains(&"export_all".into()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the agent never applied the decision: {run:?}\nagent log:\n{}",
            std::fs::read_to_string(&fleet.agent.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let export = json!({"op": "call", "tool": "export_all", "args": {}});
    let run = fleet.session(SERVER, &server, json!([{"op": "list_tools"}, export]));
    assert_eq!(run.calls()[0]["isError"], false, "{run:?}");
    assert_eq!(f.server_calls_of("export_all").len(), 1);
    // The agents now report it pinned by the admin: the one row is accepted.
    fleet.wait_pin("the accepted added tool", &[], |p| {
        p["id"] == id.as_str() && p["state"] == "accepted"
    });
}
