//! Behavioral events end to end: proxy → agent (chain, durable spool) → controller (verify,
//! de-duplicate, commit, acknowledge) → SIEM sinks, with real crashes and outages.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thoth_e2e::fleet::{Agent, Controller, emit_events, jsonl_sink};
use thoth_e2e::*;

/// A real rsyslogd on a free loopback port, writing APP|MSGID|SD|MSG lines to a file.
fn start_rsyslog(dir: &Path) -> (std::process::Child, u16, std::path::PathBuf) {
    let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("rsyslogd is missing: scripts/setup-peers installs it (apt-get install rsyslog)");
    let out = dir.join("rsyslog.out");
    let port = thoth_e2e::fleet::free_port();
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{d}\")\nmodule(load=\"imtcp\")\ntemplate(name=\"t\" type=\"string\" string=\"%APP-NAME%|%MSGID%|%STRUCTURED-DATA%|%msg%\\n\")\nruleset(name=\"thoth\") {{ action(type=\"omfile\" file=\"{o}\" template=\"t\") }}\ninput(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\" ruleset=\"thoth\")\n",
            d = dir.display(),
            o = out.display(),
        ),
    )
    .unwrap();
    let rs = std::process::Command::new(rsyslogd)
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslog.pid"))
        .spawn()
        .unwrap();
    wait_secs("rsyslog listening", 20, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (rs, port, out)
}

#[test]
fn a_governed_call_reaches_the_controller_and_the_jsonl_sink_with_a_verified_chain() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    write_file(&work, "a.txt", "hello");
    let (sinks, file) = jsonl_sink(dir.path());
    let (mut rs, port, syslog_out) = start_rsyslog(dir.path());
    let sinks = format!(
        "{sinks}\n[[sinks]]\nname = \"rsyslog\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n"
    );
    let controller = Controller::start(dir.path(), &sinks);
    let agent = Agent::start(dir.path(), &controller);
    let v = controller.push(&example_policy("read-only-files-strict.yaml"));
    agent.wait_status("policy", |s| Agent::version(s) == Some(v));
    let mut args: Vec<String> = vec!["--server".into(), "files".into()];
    args.extend(agent.proxy_args());
    let run = mcp_client(
        ClientOpts::default(),
        json!([
            {"op": "call", "tool": "read_text_file", "args": {"path": work.join("a.txt")}},
            {"op": "call", "tool": "write_file", "args": {"path": work.join("b.txt"), "content": "x", "password": "hunter2"}},
        ]),
        &strs(&args),
        &strs(&fs_server(&work)),
    );
    assert_eq!(run.calls()[1]["isError"], true);
    // PRE and POST of both calls arrive in the SIEM file with DESIGN's fields.
    wait_secs("four tool events in the sink", 30, || {
        read_jsonl(&file)
            .iter()
            .filter(|e| {
                e["eventType"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("TOOL_CALL"))
            })
            .count()
            >= 4
    });
    let events = read_jsonl(&file);
    let pre = events
        .iter()
        .find(|e| e["eventType"] == "TOOL_CALL_PRE" && e["toolName"] == "read_text_file")
        .unwrap();
    for field in [
        "eventId",
        "eventType",
        "timestamp",
        "tenantId",
        "agentId",
        "hostname",
        "user",
        "sessionId",
        "serverName",
        "sourceType",
        "toolName",
        "content",
        "sessionToolCalls",
        "decision",
        "policyVersion",
        "latencyUs",
        "seq",
        "prevHash",
        "hash",
    ] {
        assert!(pre.get(field).is_some(), "{field} missing from {pre}");
    }
    let st = agent.status().unwrap();
    assert_eq!(
        pre["agentId"], st["agentId"],
        "identity comes from the agent"
    );
    assert_eq!(pre["tenantId"], "default");
    assert_eq!(pre["policyVersion"], format!("v{v}"));
    let denied = events
        .iter()
        .find(|e| e["eventType"] == "TOOL_CALL_PRE" && e["toolName"] == "write_file")
        .unwrap();
    assert_eq!(denied["decision"]["action"], "deny");
    assert!(
        !denied["content"].as_str().unwrap().contains("hunter2"),
        "secrets are masked: {denied}"
    );
    // The sink file is one unbroken chain from seq 1 (thoth events verify).
    let (code, out, err) = thoth_cmd(&["events", "verify", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // And the controller's query finds them.
    let out = controller.ctl_ok(&["--json", "events", "query", "--tool", "read_text_file"]);
    let found: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(found.len(), 2, "{out}");
    assert!(found.iter().all(|e| e["toolName"] == "read_text_file"));
    let table = controller.ctl_ok(&["events", "query", "--type", "TOOL_CALL_PRE"]);
    assert!(
        table.starts_with("TIME") && table.contains("write_file") && table.contains("deny"),
        "{table}"
    );
    // And rsyslog has the denied call, with its structured data.
    wait_secs("rsyslog got the denied call", 30, || {
        std::fs::read_to_string(&syslog_out)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("toolName=\"write_file\"") && l.contains("action=\"deny\""))
    });
    let _ = rs.kill();
    let _ = rs.wait();
}

#[test]
fn sigkill_while_events_are_in_flight_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (sinks, _file) = jsonl_sink(dir.path());
    let controller = Controller::start(dir.path(), &sinks);
    let mut agent = Agent::start(dir.path(), &controller);
    agent.wait_status("connected", |s| s["connected"] == true);
    let accepted = emit_events(&agent.socket, 10_000, "crash");
    assert_eq!(accepted, 10_000);
    // Kill it while the upload is under way (whatever is durable must survive).
    std::thread::sleep(Duration::from_millis(30));
    agent.kill9();
    agent.boot();
    // Everything durable at the kill arrives exactly once, with an unbroken chain.
    agent.wait_status("the spool drained", |st| {
        st["events"]["acked"] == st["events"]["seq"]
            && st["events"]["seq"].as_u64().unwrap_or(0) > 0
    });
    let out = controller.ctl_ok(&[
        "--json",
        "events",
        "query",
        "--session",
        "crash",
        "--limit",
        "10000",
    ]);
    let got: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: std::collections::BTreeSet<&str> =
        got.iter().map(|e| e["eventId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), got.len(), "duplicates stored");
    // The agent answers a proxy only once its events are durable, so all of them arrive.
    assert_eq!(got.len(), 10_000, "events lost");
    let alerts = controller.ctl_ok(&["--json", "events", "query", "--type", "CHAIN_ALERT"]);
    assert!(alerts.trim().is_empty(), "chain alerts: {alerts}");
}

#[test]
fn a_controller_outage_grows_the_spool_and_everything_is_delivered_after() {
    let dir = tempfile::tempdir().unwrap();
    let (sinks, file) = jsonl_sink(dir.path());
    let mut controller = Controller::start(dir.path(), &sinks);
    let agent = Agent::start(dir.path(), &controller);
    agent.wait_status("connected", |s| s["connected"] == true);
    controller.stop();
    assert_eq!(emit_events(&agent.socket, 3_000, "outage"), 3_000);
    let st = agent.wait_status("spooled", |s| {
        s["events"]["durable"].as_u64().unwrap_or(0) >= 3_000
    });
    assert!(
        st["events"]["spoolBytes"].as_u64().unwrap() > 100_000,
        "{st}"
    );
    controller.restart();
    wait_secs("all 3000 in the sink", 60, || {
        read_jsonl(&file)
            .iter()
            .filter(|e| e["sessionId"] == "outage")
            .count()
            == 3_000
    });
    agent.wait_status("acknowledged", |s| {
        s["events"]["acked"] == s["events"]["seq"]
    });
}

#[test]
fn a_tiny_spool_counts_and_reports_overflow_and_a_flipped_byte_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (sinks, file) = jsonl_sink(dir.path());
    let controller = Controller::start(dir.path(), &sinks);
    let mut agent = Agent::start(dir.path(), &controller);
    agent.wait_status("connected", |s| s["connected"] == true);
    agent.stop();
    // Tiny spool, controller unreachable: overflow.
    let cfg = std::fs::read_to_string(&agent.config).unwrap();
    let offline = cfg
        .lines()
        .map(|l| {
            if l.starts_with("controller_url") {
                "controller_url = \"https://127.0.0.1:1\"".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        &agent.config,
        format!("{offline}\nspool_max_bytes = 65536\n"),
    )
    .unwrap();
    agent.boot();
    emit_events(&agent.socket, 3_000, "tiny");
    let st = agent.wait_status("overflow counted", |s| {
        s["events"]["dropped"].as_u64().unwrap_or(0) > 0
    });
    let dropped = st["events"]["dropped"].as_u64().unwrap();
    assert!(dropped > 1_000, "{st}");
    // Flip a byte in a spool segment, restart: detected and reported.
    agent.stop();
    let seg = std::fs::read_dir(agent.state.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .min()
        .unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let i = 8 + 40;
    data[i] ^= 0x55;
    std::fs::write(&seg, data).unwrap();
    std::fs::write(&agent.config, cfg).unwrap();
    agent.boot();
    let st = agent.wait_status("corruption reported", |s| {
        s["recentEvents"].to_string().contains("SPOOL_CORRUPT")
    });
    assert!(st["events"]["corrupt"].as_u64().unwrap() >= 1, "{st}");
    // The loss reaches the SIEM as an EVENTS_DROPPED event, and nothing corrupt is delivered.
    let st = agent.wait_status("the spool drained", |s| {
        s["events"]["acked"] == s["events"]["seq"]
    });
    wait_secs("EVENTS_DROPPED in the sink", 30, || {
        read_jsonl(&file)
            .iter()
            .any(|e| e["eventType"] == "EVENTS_DROPPED")
    });
    let _ = st;
    let drop_event = read_jsonl(&file)
        .into_iter()
        .find(|e| e["eventType"] == "EVENTS_DROPPED")
        .unwrap();
    assert!(
        drop_event["detail"]["dropped"].as_u64().unwrap() > 0,
        "{drop_event}"
    );
}

#[test]
fn splunk_hec_and_the_webhook_get_the_exact_format_auth_and_hmac() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("http.jsonl");
    let mut server = std::process::Command::new(python())
        .arg(py_script("http_sink.py"))
        .arg("--capture")
        .arg(&capture)
        .args(["--secret", "s3cret-key"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port = port.trim();
    let sinks = format!(
        "[[sinks]]\nname = \"splunk\"\nkind = \"splunk_hec\"\nurl = \"http://127.0.0.1:{port}/services/collector/event\"\ntoken = \"hec-token-1\"\n\n[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/thoth\"\nsecret = \"s3cret-key\"\nevent_types = [\"TOOL_CALL_PRE\"]\n"
    );
    let controller = Controller::start(dir.path(), &sinks);
    let agent = Agent::start(dir.path(), &controller);
    agent.wait_status("connected", |s| s["connected"] == true);
    emit_events(&agent.socket, 20, "http");
    let requests = || -> Vec<Value> {
        std::fs::read_to_string(&capture)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_secs("both sinks delivered the 20 events", 30, || {
        let r = requests();
        let hec: usize = r
            .iter()
            .filter(|q| q["path"] == "/services/collector/event")
            .map(|q| {
                q["body"]
                    .as_str()
                    .unwrap()
                    .lines()
                    .filter(|l| l.contains("\"sessionId\":\"http\""))
                    .count()
            })
            .sum();
        let hook: usize = r
            .iter()
            .filter(|q| q["path"] == "/thoth")
            .map(|q| {
                serde_json::from_str::<Vec<Value>>(q["body"].as_str().unwrap())
                    .unwrap()
                    .iter()
                    .filter(|e| e["sessionId"] == "http")
                    .count()
            })
            .sum();
        hec >= 20 && hook >= 20
    });
    let r = requests();
    let hec = r
        .iter()
        .find(|q| q["path"] == "/services/collector/event")
        .unwrap();
    assert_eq!(hec["headers"]["authorization"], "Splunk hec-token-1");
    let first: Value =
        serde_json::from_str(hec["body"].as_str().unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["sourcetype"], "thoth:event");
    assert!(
        first["time"].as_f64().is_some() && first["event"]["eventId"].is_string(),
        "{first}"
    );
    for q in r.iter().filter(|q| q["path"] == "/thoth") {
        assert_eq!(q["hmacOk"], true, "bad HMAC: {q}");
        let events: Vec<Value> = serde_json::from_str(q["body"].as_str().unwrap()).unwrap();
        assert!(
            events.iter().all(|e| e["eventType"] == "TOOL_CALL_PRE"),
            "the filter leaked: {q}"
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn rsyslog_receives_rfc5424_over_tcp_with_structured_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut rs, port, out) = start_rsyslog(dir.path());
    let sinks = format!(
        "[[sinks]]\nname = \"rsyslog\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n"
    );
    let controller = Controller::start(dir.path(), &sinks);
    let agent = Agent::start(dir.path(), &controller);
    agent.wait_status("connected", |s| s["connected"] == true);
    emit_events(&agent.socket, 50, "syslog");
    wait_secs("rsyslog wrote the 50 events", 30, || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"sessionId\":\"syslog\""))
            .count()
            >= 50
    });
    let text = std::fs::read_to_string(&out).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("\"sessionId\":\"syslog\""))
        .unwrap();
    let parts: Vec<&str> = line.splitn(4, '|').collect();
    assert_eq!(parts[0], "thoth", "{line}");
    assert_eq!(parts[1], "TOOL_CALL_PRE", "{line}");
    assert!(
        // The exported eventId is the agent's (UUIDv7); the proxy's id is kept as proxyEventId.
        parts[2].starts_with("[thoth@32473 eventId=\"")
            && parts[2].contains("toolName=\"read_text_file\"")
            && parts[2].contains("tenantId=\"default\""),
        "{line}"
    );
    let ev: Value = serde_json::from_str(parts[3].trim()).unwrap();
    assert_eq!(ev["toolName"], "read_text_file");
    let _ = rs.kill();
    let _ = rs.wait();
}

#[test]
fn content_cap_and_masked_keys_are_set_by_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "a.txt", "hello");
    let policy = write_file(
        dir.path(),
        "p.yaml",
        "defaults:\n  events:\n    content_max_bytes: 120\n    redact_keys: [ssn, customer-iban]\nservers:\n  - name: files\n    enforcement: observe\n    approved_scope: [\"*\"]\n",
    );
    let events = dir.path().join("ev.jsonl");
    let long = "x".repeat(500);
    let args = [
        "--server",
        "files",
        "--policy",
        policy.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--agent-socket",
        "/nonexistent/agent.sock",
        "--state-dir",
        "/nonexistent",
    ];
    mcp_client(
        ClientOpts::default(),
        json!([{"op": "call", "tool": "read_text_file", "args": {"path": dir.path().join("a.txt"), "SSN": "123-45-6789", "customerIban": "FR76"}},
               {"op": "call", "tool": "read_text_file", "args": {"path": dir.path().join("a.txt"), "note": long}}]),
        &args,
        &strs(&fs_server(dir.path())),
    );
    let evs = read_jsonl(&events);
    let pres: Vec<&Value> = evs
        .iter()
        .filter(|e| e["eventType"] == "TOOL_CALL_PRE")
        .collect();
    let first = pres[0]["content"].as_str().unwrap();
    assert!(
        first.contains("\"SSN\":\"[REDACTED]\"")
            && first.contains("\"customerIban\":\"[REDACTED]\""),
        "{first}"
    );
    assert!(!first.contains("123-45"), "{first}");
    assert_eq!(pres[1]["contentTruncated"], true);
    assert_eq!(pres[1]["content"].as_str().unwrap().len(), 120);
    assert_eq!(pres[1]["contentSha256"].as_str().unwrap().len(), 64);
    // A bad setting is refused with its position.
    let bad = write_file(
        dir.path(),
        "bad.yaml",
        "defaults:\n  events:\n    content_max_bytes: 10\nservers: []\n",
    );
    let (code, out, err) = thoth_cmd(&["policy", "validate", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(
        all.contains("bad.yaml:3") && all.contains("content_max_bytes"),
        "{all}"
    );
}

#[test]
fn syslog_over_tls_delivers_octet_counted_rfc5424() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    // The controller's own CA and server certificate serve as the syslog server's identity.
    let (placeholder, _) = jsonl_sink(dir.path());
    let mut controller = Controller::start(dir.path(), &placeholder);
    let capture = dir.path().join("tls-syslog.txt");
    let mut server = std::process::Command::new(python())
        .arg(py_script("syslog_tls_sink.py"))
        .arg("--cert")
        .arg(controller.data.join("server.crt"))
        .arg("--key")
        .arg(controller.data.join("server.key"))
        .arg("--capture")
        .arg(&capture)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let cfg = format!(
        "[[sinks]]\nname = \"tls-syslog\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{}\"\ntls = true\nca_file = \"{}\"\n",
        port.trim(),
        controller.data.join("ca.crt").display()
    );
    std::fs::write(controller.data.join("controller.toml"), cfg).unwrap();
    controller.restart();
    let agent = Agent::start(dir.path(), &controller);
    agent.wait_status("connected", |s| s["connected"] == true);
    emit_events(&agent.socket, 30, "tls");
    wait_secs("30 events over TLS", 30, || {
        std::fs::read_to_string(&capture)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"sessionId\":\"tls\""))
            .count()
            >= 30
    });
    let text = std::fs::read_to_string(&capture).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("\"sessionId\":\"tls\""))
        .unwrap();
    assert!(
        line.starts_with("<134>1 2026-11-24T10:00:00.000000Z ")
            && line.contains(" thoth - TOOL_CALL_PRE [thoth@32473 "),
        "{line}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_dead_sink_blocks_neither_ingest_nor_other_sinks_and_tail_follows_live() {
    let dir = tempfile::tempdir().unwrap();
    let (file_sink, file) = jsonl_sink(dir.path());
    let sinks = format!(
        "{file_sink}\n[[sinks]]\nname = \"dead\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/nothing\"\nsecret = \"x\"\n"
    );
    let controller = Controller::start(dir.path(), &sinks);
    let agent = Agent::start(dir.path(), &controller);
    agent.wait_status("connected", |s| s["connected"] == true);
    // Follow live with thothctl events tail.
    let mut tail = std::process::Command::new(thoth_e2e::fleet::bin("thothctl"))
        .arg("--credentials")
        .arg(controller.data.join("admin"))
        .args([
            "--controller",
            &controller.url(),
            "--json",
            "events",
            "tail",
            "--session",
            "live",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    emit_events(&agent.socket, 200, "live");
    wait_secs(
        "the file sink got all 200 despite the dead webhook",
        30,
        || {
            read_jsonl(&file)
                .iter()
                .filter(|e| e["sessionId"] == "live")
                .count()
                == 200
        },
    );
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen < 200 && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["sessionId"], "live");
            seen += 1;
        }
    }
    assert_eq!(seen, 200, "tail showed {seen} of 200 live events");
    agent.wait_status("all acknowledged", |s| {
        s["events"]["acked"] == s["events"]["seq"]
    });
    let _ = tail.kill();
    let _ = tail.wait();
}
