//! Agent benchmark: a real `thoth-controller serve` and `thoth-agent run` on loopback.
//!
//! Prints: idle agent RSS and CPU over an idle period (targets ≤ 20 MB, < 0.5% of a core, no
//! busy polling), push → applied on the agent (target p99 ≤ 1 s), and how long a proxy takes at
//! start to get the policy and verify it (target ≤ 5 ms for a 50-server policy), from the agent
//! and from the last-known-good bundle.
//!
//!   cargo build --release --workspace --bins && cargo bench -p thoth-agent --bench agent
//!
//! Environment: `BENCH_IDLE_SECS` (default 60), `BENCH_PUSHES` (default 50),
//! `BENCH_STARTS` (default 100).

#[path = "../../proxy/benches/common/mod.rs"]
mod common;

use common::{Killer, bin, pct};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thoth_endpoint::tls::{self, ClientCert};
use thoth_proto::fleet::{
    self as pb, admin_client::AdminClient, local_agent_client::LocalAgentClient,
};
use thoth_proxy::policy::PolicyState;
use thoth_proxy::source::{self, Sources};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = rustix::param::clock_ticks_per_second() as f64;
    (t(11) + t(12)) / hz
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench --list
    }
    let idle_secs = env_num("BENCH_IDLE_SECS", 60);
    let pushes = env_num("BENCH_PUSHES", 50) as usize;
    let starts = env_num("BENCH_STARTS", 100) as usize;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    let (_controller, url) = common::start_controller(&data);
    let ca = std::fs::read_to_string(data.join("ca.crt")).unwrap();
    let fp = tls::pem_fingerprint(&ca).unwrap();
    let root = std::fs::read_to_string(data.join("root.pub"))
        .unwrap()
        .trim()
        .to_owned();
    let admin = ClientCert {
        cert_pem: std::fs::read_to_string(data.join("admin/client.crt")).unwrap(),
        key_pem: std::fs::read_to_string(data.join("admin/client.key")).unwrap(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = rt.enter();
    let mut admin_client =
        AdminClient::new(tls::controller_channel(&url, fp, Some(&admin), None).unwrap());
    let token = rt
        .block_on(admin_client.create_token(pb::CreateTokenRequest::default()))
        .unwrap()
        .into_inner()
        .token;
    let state = dir.path().join("state");
    let socket = dir.path().join("agent.sock");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "controller_url = \"{url}\"\ntenant = \"default\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"{root}\"\nenrollment_token = \"{token}\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\nusers_root = \"{}\"\nthoth_path = \"{}\"\n",
            hex::encode(fp),
            state.display(),
            socket.display(),
            dir.path().join("home").display(),
            // This process plays the proxies (policy watch, proxy starts): the agent serves
            // policy only to its installed thoth.
            std::env::current_exe().unwrap().display()
        ),
    )
    .unwrap();
    let agent = Killer(
        Command::new(bin("thoth-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .env("THOTH_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let agent_pid = agent.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let policy = common::policy_50x50();
    println!("policy: 50 servers × 50 tools ({} bytes)", policy.len());

    // Push → applied, observed on the agent's local socket as proxies see it.
    let latencies = rt.block_on(async {
        let local = LocalAgentClient::new(tls::local_channel(&socket).unwrap());
        let mut watch = local
            .clone()
            .watch_policy(pb::LocalPolicyRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut lat = Vec::new();
        for i in 0..=pushes {
            let t0 = Instant::now();
            let v = admin_client
                .push_policy(pb::PushPolicyRequest {
                    document: policy.clone(),
                    source: "bench.yaml".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .version;
            loop {
                let u = tokio::time::timeout(Duration::from_secs(10), watch.message())
                    .await
                    .expect("the agent applied the push within 10 s")
                    .unwrap()
                    .unwrap();
                if u.version >= v {
                    break;
                }
            }
            if i > 0 {
                lat.push(t0.elapsed()); // the first push also enrolled and connected
            }
        }
        lat
    });
    let mut lat = latencies;
    lat.sort();
    println!(
        "push → applied on the agent ({pushes} pushes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= 1000 ms)  [{}]",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(pct(&lat, 1.0)),
        verdict(pct(&lat, 0.99) <= Duration::from_secs(1))
    );

    // Idle.
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = cpu_secs(agent_pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let cpu = cpu_secs(agent_pid) - cpu0;
    let share = cpu / t0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_kib(agent_pid) as f64 / 1024.0;
    println!(
        "agent idle over {idle_secs} s: CPU {cpu:.3} s = {share:.3}% of a core (target < 0.5%)  [{}]",
        verdict(share < 0.5)
    );
    println!(
        "agent RSS idle (connected, 50-server policy): {rss:.1} MiB (target <= 20 MB)  [{}]",
        verdict(rss * 1.048_576 <= 20.0)
    );
    // Proxy start: get the policy and verify it.
    let measure = |sock: &Path| {
        let mut d = Vec::new();
        for _ in 0..starts {
            let t0 = Instant::now();
            let h = source::start(Sources {
                agent_socket: sock.to_path_buf(),
                state_dir: state.clone(),
                policy_file: None,
                server: "srv-7".into(),
                argv: vec!["srv-7".into()],
            });
            let e = t0.elapsed();
            assert!(
                matches!(h.get(), PolicyState::Loaded(_)),
                "no policy loaded"
            );
            d.push(e);
        }
        d.sort();
        d
    };
    let from_agent = measure(&socket);
    let from_disk = measure(&dir.path().join("no-agent.sock"));
    for (what, d) in [
        ("from the agent", &from_agent),
        ("from the last-known-good file", &from_disk),
    ] {
        println!(
            "proxy start, policy {what}: p50 {:.2} ms, p99 {:.2} ms (target <= 5 ms)  [{}]",
            ms(pct(d, 0.5)),
            ms(pct(d, 0.99)),
            verdict(pct(d, 0.5) <= Duration::from_millis(5))
        );
    }

    println!(
        "agent RSS with {starts} proxies watching its socket: {:.1} MiB",
        rss_kib(agent_pid) as f64 / 1024.0
    );
    drop(agent);
}
