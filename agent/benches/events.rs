//! Event pipeline benchmark: the agent spool's append rate with group commit (target ≥ 50,000
//! events/s), durable ingest through a real agent and controller (target ≥ 50,000 events/s
//! sustained), and end-to-end latency from a proxy's emit to the JSON lines sink under that load
//! (target p99 ≤ 2 s).
//!
//!   cargo build --release --workspace --bins && cargo bench -p thoth-agent --bench events
//!
//! `BENCH_EVENTS` (default 100000) sets the load. `BENCH_CONTROLLER=PATH` measures ingest and
//! latency with that controller binary too (first, then this tree's), e.g. one built before a
//! change.

#[path = "../../proxy/benches/common/mod.rs"]
mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Killer, bin};
use serde_json::{Value, json};
use thoth_agent::daemon::pipeline;
use thoth_endpoint::tls;
use thoth_proto::fleet::{self as pb, local_agent_client::LocalAgentClient};

fn event(i: usize, tag: &str) -> Value {
    json!({
        "eventId": format!("{tag}-{i:09}"),
        "eventType": "TOOL_CALL_PRE",
        "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "sessionId": tag,
        "serverName": "bench",
        "sourceType": "agent_tool_call",
        "toolName": "read_text_file",
        "content": "{\"path\":\"/srv/data/projects/report.txt\"}",
        "decision": {"action": "allow", "mode": "block", "rule": "servers[0].approved_scope", "reason": "in scope"},
        "policyVersion": "v1",
        "latencyUs": 42,
        "sessionToolCalls": ["read_text_file"],
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();

    // 1. Spool append with group commit, in process.
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = pipeline::start(&dir.path().join("spool"), 4 << 30, |t, d| {
        let id = thoth_proto::Identity {
            tenant_id: "default".into(),
            agent_id: "agt-bench".into(),
            hostname: "host".into(),
            user: String::new(),
        };
        let mut e = thoth_proto::Event::new(t, "id".into(), "ts".into(), &id).into_owned();
        e.detail = Some(d);
        e
    })
    .unwrap();
    *spool.identity.lock().unwrap() = Some(("agt-bench".into(), "default".into()));
    let t0 = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        // 16 writers (proxies): each waits for its batch to be durable before sending the next.
        for w in 0..16 {
            let sp = spool.clone();
            tasks.push(tokio::spawn(async move {
                for b in 0..(n / 16 / 500) {
                    // As the agent takes them from a proxy: checked and made the agent's.
                    let now = std::time::SystemTime::now();
                    let batch: Vec<pipeline::Admitted> = (0..500)
                        .map(|i| {
                            let e = event(w * 10_000_000 + b * 500 + i, "spool");
                            pipeline::admit(e.to_string().as_bytes(), "bench", "host", now).unwrap()
                        })
                        .collect();
                    sp.append_durable(batch).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let spool_rate = (n / 16 / 500 * 500 * 16) as f64 / t0.elapsed().as_secs_f64();
    println!(
        "agent spool: {spool_rate:.0} events/s appended durably by 16 writers (chained, checksummed, group commit ≤ 50 ms) (target >= 50000)  [{}]",
        if spool_rate >= 50_000.0 {
            "ok"
        } else {
            "MISSED"
        }
    );
    drop(spool);

    // 2 and 3, against each controller: `BENCH_CONTROLLER` (e.g. one built from an older tree)
    // first when it is set, then this tree's, so both are measured in one run.
    let mut controllers = Vec::new();
    if let Some(other) = std::env::var_os("BENCH_CONTROLLER") {
        controllers.push(std::path::PathBuf::from(other));
    }
    controllers.push(bin("thoth-controller"));
    for (i, controller) in controllers.iter().enumerate() {
        println!("controller {}:", controller.display());
        ingest(&rt, n, &dir.path().join(format!("run-{i}")), controller);
    }
}

/// Ingest and latency through a real agent and `controller` (JSON lines sink), under `dir`.
fn ingest(
    rt: &tokio::runtime::Runtime,
    n: usize,
    dir: &std::path::Path,
    controller: &std::path::Path,
) {
    std::fs::create_dir_all(dir).unwrap();
    let data = dir.join("controller");
    let init = Command::new(controller)
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(init.status.success());
    let sink = dir.join("siem.jsonl");
    std::fs::write(
        data.join("controller.toml"),
        format!("[[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"{}\"\nmax_bytes = 10000000000\nbatch = 5000\n", sink.display()),
    )
    .unwrap();
    let (controller_proc, url) = start_controller(controller, &data);
    let controller_pid = controller_proc.0.id();
    let out = Command::new(bin("thothctl"))
        .arg("--credentials")
        .arg(data.join("admin"))
        .args(["--controller", &url, "token", "create"])
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let ca = std::fs::read_to_string(data.join("ca.crt")).unwrap();
    let fp = hex::encode(tls::pem_fingerprint(&ca).unwrap());
    let root = std::fs::read_to_string(data.join("root.pub"))
        .unwrap()
        .trim()
        .to_owned();
    let socket = dir.join("agent.sock");
    let cfg = dir.join("agent.toml");
    std::fs::write(&cfg, format!(
        "controller_url = \"{url}\"\ntenant = \"default\"\nca_fingerprint = \"sha256:{fp}\"\nroot_public_key = \"{root}\"\nenrollment_token = \"{token}\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\nusers_root = \"{}\"\nspool_max_bytes = 4294967296\n",
        dir.join("state").display(), socket.display(), dir.join("home").display())).unwrap();
    let agent = Killer(
        Command::new(bin("thoth-agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("THOTH_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let agent_pid = agent.0.id();
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = || -> Value {
        let out = Command::new(bin("thoth-agent"))
            .args(["status", "--json", "--socket"])
            .arg(&socket)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    while status()["connected"] != true {
        std::thread::sleep(Duration::from_millis(50));
    }
    let me = std::process::id();
    let cpu0 = (cpu_secs(agent_pid), cpu_secs(controller_pid), cpu_secs(me));
    let t0 = Instant::now();
    let lat = rt.block_on(async {
        let client = LocalAgentClient::new(tls::local_channel(&socket).unwrap());
        let mut load = Vec::new();
        for w in 0..4 {
            let mut c = client.clone();
            load.push(tokio::spawn(async move {
                for b in 0..(n / 4 / 500) {
                    let events: Vec<Vec<u8>> = (0..500)
                        .map(|i| {
                            event(w * 10_000_000 + b * 500 + i, "load")
                                .to_string()
                                .into_bytes()
                        })
                        .collect();
                    c.emit_events(pb::LocalEvents { events }).await.unwrap();
                }
            }));
        }
        // Markers: emitted every 100 ms during the load, timed until they are in the sink.
        let mut lat = Vec::new();
        let mut c = client.clone();
        let mut k = 0;
        while load.iter().any(|t| !t.is_finished()) || k < 5 {
            let id = format!("marker-{k:06}");
            let sent = Instant::now();
            let mut e = event(k, "marker");
            e["eventId"] = Value::from(id.clone());
            c.emit_events(pb::LocalEvents {
                events: vec![e.to_string().into_bytes()],
            })
            .await
            .unwrap();
            let sink = sink.clone();
            lat.push(tokio::spawn(async move {
                let needle = format!("\"proxyEventId\":\"{id}\"");
                let mut offset = 0u64;
                loop {
                    if let Ok(f) = std::fs::File::open(&sink) {
                        use std::io::{Seek, SeekFrom};
                        let mut r = std::io::BufReader::new(f);
                        let _ = r.seek(SeekFrom::Start(offset));
                        let mut line = String::new();
                        while r.read_line(&mut line).unwrap_or(0) > 0 {
                            if line.ends_with('\n') {
                                if line.contains(&needle) {
                                    return sent.elapsed();
                                }
                                offset += line.len() as u64;
                            }
                            line.clear();
                        }
                    }
                    if sent.elapsed() > Duration::from_secs(120) {
                        return Duration::from_secs(120);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
            k += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for t in load {
            t.await.unwrap();
        }
        let mut out = Vec::new();
        for t in lat {
            out.push(t.await.unwrap());
        }
        out
    });
    let emitted = t0.elapsed();
    loop {
        let st = status();
        if st["events"]["acked"] == st["events"]["seq"]
            && st["events"]["seq"].as_u64().unwrap_or(0) > 0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ingested = t0.elapsed();
    let cpu = (
        cpu_secs(agent_pid) - cpu0.0,
        cpu_secs(controller_pid) - cpu0.1,
        cpu_secs(me) - cpu0.2,
    );
    let total = n / 4 / 500 * 500 * 4;
    let rate = total as f64 / ingested.as_secs_f64();
    println!(
        "proxy emit → agent spool → controller commit: {total} events in {:.1} s = {rate:.0} events/s (emit took {:.1} s) (target >= 50000)  [{}]",
        ingested.as_secs_f64(),
        emitted.as_secs_f64(),
        if rate >= 50_000.0 { "ok" } else { "MISSED" }
    );
    let mut lat = lat;
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "emit → JSON lines sink under that load ({} markers): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 <= 2000 ms)  [{}]",
        lat.len(),
        p(0.5),
        p(0.99),
        p(1.0),
        if p(0.99) <= 2000.0 { "ok" } else { "MISSED" }
    );
    let per = |secs: f64| secs * 1e6 / total as f64;
    println!(
        "CPU during the load: agent {:.1} s ({:.1} µs/event), controller {:.1} s ({:.1} µs/event), this load generator {:.1} s",
        cpu.0,
        per(cpu.0),
        cpu.1,
        per(cpu.1),
        cpu.2
    );
    let rss = std::fs::read_to_string(format!("/proc/{agent_pid}/status")).unwrap_or_default();
    let rss = rss
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("")
        .to_owned();
    println!(
        "agent peak memory during the load: {}",
        rss.trim_start_matches("VmHWM:").trim()
    );
    drop(agent);
}

/// User + system CPU seconds a process has used (0 where /proc is not there).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses): utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // Clock ticks: 100 per second on Linux.
    f.iter().sum::<f64>() / 100.0
}

/// `controller serve` on a free loopback port with data in `data`; the process and its URL once
/// it listens (as `common::start_controller`, for any controller binary).
fn start_controller(controller: &std::path::Path, data: &std::path::Path) -> (Killer, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(controller)
        .args(["serve", "--metrics-listen", "off", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data)
        .env("THOTH_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let killer = Killer(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("admin/controller.url").exists() {
        assert!(Instant::now() < deadline, "the controller did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (killer, format!("https://127.0.0.1:{port}"))
}
