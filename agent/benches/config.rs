//! Config rollout benchmark: a full wrapping pass over 100 users × 20 servers (target ≤ 200 ms),
//! and drift-heal latency with the real agent, from a foreign write to the re-wrapped file on
//! disk (target p99 ≤ 1 s).
//!
//!   cargo build --release --workspace --bins && cargo bench -p thoth-agent --bench config
//!
//! `BENCH_DRIFTS` (default 100) sets how many foreign writes are timed.

#[path = "../../proxy/benches/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pct;
use serde_json::json;
use thoth_hosts::file;
use thoth_hosts::format::Op;
use thoth_hosts::host::{HostFilter, discover};

fn config_text(user: usize, servers: usize) -> String {
    let mut m = serde_json::Map::new();
    for s in 0..servers {
        m.insert(
            format!("server-{s}"),
            json!({"command": "npx", "args": ["-y", format!("@acme/mcp-{s}"), format!("/Users/u{user}/p{s}")],
                   "env": {"TOKEN": format!("t-{user}-{s}")}}),
        );
    }
    serde_json::to_string_pretty(&json!({"globalShortcut": "Alt+Space", "mcpServers": m})).unwrap()
        + "\n"
}

fn path_of(home: &Path) -> PathBuf {
    home.join(".config/Claude/claude_desktop_config.json")
}

fn wrapped(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| {
            v["mcpServers"].as_object().is_some_and(|m| {
                m.values()
                    .all(|e| thoth_hosts::wrapper::Entry::from_json(e).is_wrapped())
            })
        })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("home");
    for u in 0..100 {
        let p = path_of(&users.join(format!("user{u}")));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, config_text(u, 20)).unwrap();
    }
    let op = Op::wrap("/usr/local/bin/thoth");
    let t0 = Instant::now();
    let found = discover(&file::homes(Some(&users)), &HostFilter::all());
    let mut wrapped_n = 0;
    for p in &found {
        wrapped_n += file::rewrite_file(p.host, &p.path, &op, false)
            .unwrap()
            .report
            .wrapped
            .len();
    }
    let first = t0.elapsed();
    let t0 = Instant::now();
    for p in &found {
        assert!(
            !file::rewrite_file(p.host, &p.path, &op, false)
                .unwrap()
                .written
        );
    }
    let again = t0.elapsed();
    println!(
        "full pass, 100 users × 20 servers: {:.1} ms wrapping ({} configs, {wrapped_n} entries, each written atomically with fsync), {:.1} ms when already wrapped (target <= 200 ms)  [{}]",
        first.as_secs_f64() * 1000.0,
        found.len(),
        again.as_secs_f64() * 1000.0,
        if first <= Duration::from_millis(200) {
            "ok"
        } else {
            "MISSED"
        }
    );

    // Drift healing with the real agent.
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let agent_bin = bin.join("thoth-agent");
    if !agent_bin.exists() {
        eprintln!(
            "{} is missing: cargo build --release --workspace --bins",
            agent_bin.display()
        );
        std::process::exit(1);
    }
    let home = dir.path().join("drift");
    let target = path_of(&home.join("ann"));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, config_text(0, 20)).unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "controller_url = \"https://127.0.0.1:1\"\ntenant = \"default\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\nusers_root = \"{}\"\nthoth_path = \"{}\"\n",
            "0".repeat(64),
            dir.path().join("state").display(),
            dir.path().join("agent.sock").display(),
            home.display(),
            bin.join("thoth").display()
        ),
    )
    .unwrap();
    let mut agent = Command::new(&agent_bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("THOTH_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !wrapped(&target) {
        assert!(
            Instant::now() < deadline,
            "the agent did not wrap the config"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let drifts: usize = std::env::var("BENCH_DRIFTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut lat = Vec::new();
    for i in 0..drifts {
        let tmp = target.with_extension("editor-tmp");
        std::fs::write(&tmp, config_text(i, 20)).unwrap();
        let t0 = Instant::now();
        std::fs::rename(&tmp, &target).unwrap();
        while !wrapped(&target) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "drift {i} not healed"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        lat.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&agent),
        rustix::process::Signal::TERM,
    );
    let _ = agent.wait();
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "drift healed ({drifts} foreign rewrites of a 20-server config): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= 1000 ms)  [{}]",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(pct(&lat, 1.0)),
        if pct(&lat, 0.99) <= Duration::from_secs(1) {
            "ok"
        } else {
            "MISSED"
        }
    );
}
