//! `thoth-loadgen`: see `thoth-loadgen --help`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use thoth_client::{self as client, Credentials};
use thoth_proto::fleet::{
    self as pb, admin_client::AdminClient, agent_sync_client::AgentSyncClient,
};
use tokio::sync::{Semaphore, watch};

/// Load generator for the controller: starts a real `thoth-controller serve` in a temporary
/// directory, enrolls N agents, opens N mutual-TLS connections each with its own policy
/// subscription, pushes a new policy, and prints how long until every agent received it
/// (p50/p99/max after the push returned), with the controller's RSS and CPU.
///
/// Example (the target; needs `ulimit -n` above 2×N+100 for both processes):
///   cargo build --release -p thoth-controller -p thoth-devtools
///   target/release/thoth-loadgen --agents 10000
#[derive(Parser)]
#[command(name = "thoth-loadgen", version, verbatim_doc_comment)]
struct Cli {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// The controller binary [default: thoth-controller next to this program].
    #[arg(long)]
    controller_bin: Option<PathBuf>,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Give up on any phase after this long.
    #[arg(long, default_value = "300s")]
    timeout: humantime::Duration,
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    json: bool,
}

struct Controller {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
    admin: Credentials,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    if lim.current < lim.maximum || (lim.current.is_some() && lim.maximum.is_none()) {
        lim.current = lim.maximum;
        if setrlimit(Resource::Nofile, lim).is_err() {
            lim = getrlimit(Resource::Nofile);
        }
    }
    lim.current.unwrap_or(u64::MAX)
}

/// (RSS bytes, peak RSS bytes) of a process, from /proc.
fn rss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = rustix::param::clock_ticks_per_second() as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn start_controller(bin: &PathBuf) -> anyhow::Result<Controller> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--data",
        ])
        .arg(&data)
        .env("THOTH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
    let url_file = data.join("admin").join("controller.url");
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Ok(u) = std::fs::read_to_string(&url_file) {
            break u.trim().to_owned();
        }
        if Instant::now() > deadline {
            anyhow::bail!("the controller did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let admin = Credentials::from_dir(&data.join("admin")).map_err(anyhow::Error::msg)?;
    Ok(Controller {
        child,
        _dir: dir,
        url,
        admin,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn progress(label: &str, done: usize, total: usize, started: Instant) {
    eprint!(
        "\r  {label}: {done}/{total} ({:.1}s)   ",
        started.elapsed().as_secs_f64()
    );
    if done == total {
        eprintln!();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let n = cli.agents.max(1);
    let limit = raise_fd_limit();
    if limit != 0 && limit < n as u64 + 100 {
        anyhow::bail!(
            "the open-file limit is {limit}, too low for {n} connections: raise it with `ulimit -n {}`",
            2 * n + 200
        );
    }
    let timeout: Duration = cli.timeout.into();
    let bin = match cli.controller_bin {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("thoth-controller"),
    };
    eprintln!("thoth-loadgen: {n} agents against {}", bin.display());
    let ctl = start_controller(&bin)?;
    let pid = ctl.child.id();
    eprintln!("  controller pid {pid} at {}", ctl.url);
    let admin_ch = client::connect(&ctl.url, &ctl.admin, Some(Duration::from_secs(60)))
        .await
        .map_err(anyhow::Error::msg)?;
    let mut admin = AdminClient::new(admin_ch);
    let token = admin
        .create_token(pb::CreateTokenRequest {
            tenant: "load".into(),
            max_uses: n as u32,
            ttl_secs: 3600,
            ..Default::default()
        })
        .await?
        .into_inner()
        .token;

    // 1. Enroll (each agent makes its own key and CSR).
    let started = Instant::now();
    let ca = ctl.admin.ca_pem.clone();
    let enrolled = Arc::new(AtomicUsize::new(0));
    let sem = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (url, ca, token, sem, enrolled) = (
            ctl.url.clone(),
            ca.clone(),
            token.clone(),
            Arc::clone(&sem),
            Arc::clone(&enrolled),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore");
            let r = client::enroll(&url, &ca, &token, "load", &format!("load-{i}")).await;
            let done = enrolled.fetch_add(1, Ordering::Relaxed) + 1;
            if done % (n / 20).max(1) == 0 || done == n {
                progress("enrolled", done, n, started);
            }
            r
        }));
    }
    let mut agents = Vec::with_capacity(n);
    for t in tasks {
        agents.push(
            t.await?
                .map_err(|s| anyhow::anyhow!("enroll failed: {s}"))?,
        );
    }
    let enroll_secs = started.elapsed().as_secs_f64();

    // 2. A first policy, so that each subscription proves itself by receiving it.
    let doc1 = "name: load-1\nservers:\n  - name: files\n    enforcement: block\n    approved_scope: [read_text_file]\n";
    admin
        .push_policy(pb::PushPolicyRequest {
            tenant: "load".into(),
            document: doc1.into(),
            source: "load-1.yaml".into(),
            comment: "loadgen".into(),
        })
        .await?;

    // 3. N connections, N subscriptions.
    let started = Instant::now();
    let cpu_before_connect = cpu_secs(pid);
    let ready = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = watch::channel(false);
    let sem = Arc::new(Semaphore::new(cli.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n);
    let (arrival_tx, mut arrival_rx) = tokio::sync::mpsc::channel::<Instant>(n);
    let mut subs = Vec::with_capacity(n);
    for agent in agents {
        let (url, sem, ready, ready_tx, arrival_tx, mut release) = (
            ctl.url.clone(),
            Arc::clone(&sem),
            Arc::clone(&ready),
            ready_tx.clone(),
            arrival_tx.clone(),
            release_rx.clone(),
        );
        subs.push(tokio::spawn(async move {
            let permit = sem.acquire().await.expect("semaphore");
            let ch = client::connect(&url, &agent.credentials, None)
                .await
                .map_err(anyhow::Error::msg)?;
            let mut stream = AgentSyncClient::new(ch)
                .subscribe(pb::SubscribeRequest {
                    tenant: "load".into(),
                    applied_version: 0,
                })
                .await?
                .into_inner();
            let first = stream
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
            anyhow::ensure!(
                first.version == 1,
                "first bundle is version {}",
                first.version
            );
            drop(permit);
            ready.fetch_add(1, Ordering::Relaxed);
            let _ = ready_tx.send(()).await;
            let second = stream
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
            let at = Instant::now();
            anyhow::ensure!(
                second.version == 2,
                "second bundle is version {}",
                second.version
            );
            let _ = arrival_tx.send(at).await;
            // Hold the connection until every agent is measured.
            let _ = release.wait_for(|r| *r).await;
            Ok::<(), anyhow::Error>(())
        }));
    }
    drop(ready_tx);
    drop(arrival_tx);
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(timeout, ready_rx.recv()).await {
            Ok(Some(())) => {
                got += 1;
                if got % (n / 20).max(1) == 0 || got == n {
                    progress("subscribed", got, n, started);
                }
            }
            Ok(None) => break,
            Err(_) => anyhow::bail!("only {got} of {n} agents subscribed within {timeout:?}"),
        }
    }
    if got < n {
        // Some task failed: report the first error.
        for s in subs {
            if s.is_finished() {
                s.await??;
            }
        }
        anyhow::bail!("only {got} of {n} agents subscribed");
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let connect_cpu = cpu_secs(pid) - cpu_before_connect;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_idle, _) = rss(pid);

    // 4. Push, and time delivery to all N.
    let doc2 = doc1.replace("load-1", "load-2");
    let cpu_before = cpu_secs(pid);
    let push_start = Instant::now();
    admin
        .push_policy(pb::PushPolicyRequest {
            tenant: "load".into(),
            document: doc2,
            source: "load-2.yaml".into(),
            comment: "loadgen".into(),
        })
        .await?;
    let push_returned = Instant::now();
    let mut wait_all = Vec::with_capacity(n);
    let all_deadline = Instant::now() + timeout;
    while wait_all.len() < n {
        match tokio::time::timeout(
            all_deadline.saturating_duration_since(Instant::now()),
            arrival_rx.recv(),
        )
        .await
        {
            Ok(Some(at)) => wait_all.push(at),
            _ => break,
        }
    }
    let cpu_push = cpu_secs(pid) - cpu_before;
    let (rss_after, rss_peak) = rss(pid);
    anyhow::ensure!(
        wait_all.len() == n,
        "only {} of {n} agents received the push",
        wait_all.len()
    );
    let mut after_return: Vec<Duration> = wait_all
        .iter()
        .map(|at| at.saturating_duration_since(push_returned))
        .collect();
    after_return.sort();
    let mut after_start: Vec<Duration> = wait_all
        .iter()
        .map(|at| at.saturating_duration_since(push_start))
        .collect();
    after_start.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (own_rss, _) = rss(std::process::id());
    let push_ms = ms(push_returned - push_start);
    let summary = serde_json::json!({
        "agents": n,
        "enrollSecs": enroll_secs,
        "connectSecs": connect_secs,
        "connectCpuSecs": connect_cpu,
        "pushCallMs": push_ms,
        "deliveryAfterPushReturnedMs": {
            "p50": ms(percentile(&after_return, 0.50)),
            "p99": ms(percentile(&after_return, 0.99)),
            "max": ms(percentile(&after_return, 1.0)),
        },
        "deliveryAfterPushStartedMs": {
            "p50": ms(percentile(&after_start, 0.50)),
            "p99": ms(percentile(&after_start, 0.99)),
            "max": ms(percentile(&after_start, 1.0)),
        },
        "controllerRssMiB": { "idleConnected": mib(rss_idle), "afterPush": mib(rss_after), "peak": mib(rss_peak) },
        "controllerCpuSecsDuringPush": cpu_push,
        "loadgenRssMiB": mib(own_rss),
        "at": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    });
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("agents                         {n}");
        println!("enroll all                     {enroll_secs:.1} s");
        println!(
            "connect + subscribe all        {connect_secs:.1} s (controller CPU {connect_cpu:.1} s)"
        );
        println!("push call                      {push_ms:.1} ms");
        println!(
            "delivery after push returned   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            ms(percentile(&after_return, 0.50)),
            ms(percentile(&after_return, 0.99)),
            ms(percentile(&after_return, 1.0))
        );
        println!(
            "delivery after push started    p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            ms(percentile(&after_start, 0.50)),
            ms(percentile(&after_start, 0.99)),
            ms(percentile(&after_start, 1.0))
        );
        println!(
            "controller RSS                 {:.0} MiB connected idle, {:.0} MiB after push, {:.0} MiB peak",
            mib(rss_idle),
            mib(rss_after),
            mib(rss_peak)
        );
        println!("controller CPU during fan-out  {cpu_push:.2} s");
        println!("load generator RSS             {:.0} MiB", mib(own_rss));
    }
    let _ = release_tx.send(true);
    for s in subs {
        let _ = s.await;
    }
    drop(ctl);
    Ok(())
}
