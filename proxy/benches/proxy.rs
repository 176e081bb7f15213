//! Proxy benchmark: `cargo bench -p thoth-proxy --bench proxy`.
//!
//! Runs `tools/call` round trips against a minimal MCP echo server three ways — direct, through a
//! no-op byte relay (the floor for any stdio proxy), and through `thoth run` with a realistic
//! policy (50 servers × 50 tools, argument globs, a sequence rule, events on) — interleaved in
//! blocks (A B C A B C …) so machine noise hits all three alike. Prints latency percentiles, the
//! latency each adds over direct, pipelined throughput, thoth's peak RSS and its start-up time.
//!
//! The same executable plays the echo server (`--echo-server`) and the relay (`--relay`).
//! Environment:
//! - `BENCH_CALLS` (default 20000), `BENCH_BLOCK` (default 500);
//! - `BENCH_EVENTS=0`: run thoth without an events file, to see what events cost (with events,
//!   thoth runs standalone with `--events FILE`, which renders and hash-chains every event);
//! - `BENCH_PAYLOAD=N`: each call carries an N-byte text argument, which the echo server returns
//!   (so results are about N bytes);
//! - `BENCH_DLP=compare`: a further way runs the same thoth with DLP off (`dlp: {arguments:
//!   allow, results: allow}`; it is on by default, `warn`), and what DLP adds is printed as a
//!   share of the latency thoth adds without it (issue 17's target: at most 20% at 1 KiB);
//! - `THOTH_BASELINE=path/to/thoth`: a second thoth binary (say, an older build) runs as a fourth
//!   way, interleaved in the same blocks, with the same policy and events setting, so the two
//!   builds are compared under the same noise;
//! - `BENCH_CALLGRIND=1`: instead of timing, counts instructions per call with `valgrind
//!   --tool=callgrind` (stable on a noisy machine): the relay, thoth (and the baseline) each run
//!   under callgrind for N and 2N sequential calls (N = `BENCH_CALLGRIND_CALLS`, default 2000;
//!   `BENCH_CALLGRIND_KEEP=1` keeps the outputs for `callgrind_annotate`),
//!   and (I(2N) − I(N)) / N is printed, start-up and shutdown cancelling out. Only the measured
//!   process is counted (all its threads, the event writer included), not the echo server.
//!   valgrind puts its own library in `LD_PRELOAD`, and `thoth run` then refuses to govern
//!   (it denies every call, as it must): so under callgrind thoth runs as this executable's
//!   `--thoth-run` (`thoth_proxy::run` with the same policy file, events file and threads, only
//!   without the CLI's loader-variable check). A baseline binary cannot be run that way; it is
//!   compared by time only.
//!
//! ```text
//! cargo bench -p thoth-proxy --bench proxy
//! THOTH_BASELINE=/tmp/baseline/thoth cargo bench -p thoth-proxy --bench proxy
//! BENCH_CALLGRIND=1 THOTH_BASELINE=/tmp/baseline/thoth cargo bench -p thoth-proxy --bench proxy
//! ```

mod common;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--echo-server") => echo_server(),
        Some("--relay") => relay(&args[2..]),
        Some("--thoth-run") => thoth_in_process(&args[2..]),
        _ => bench(),
    }
}

/// A minimal MCP server: answers `initialize`, and echoes `tools/call` arguments back.
fn echo_server() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    let mut r = stdin.lock();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(id) = msg.get("id") else { continue };
        let reply = match msg["method"].as_str() {
            Some("initialize") => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "echo", "version": "1"}}}),
            Some("tools/call") => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {
                "content": [{"type": "text", "text": msg["params"]["arguments"].to_string()}],
                "isError": false}}),
            _ => {
                serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}})
            }
        };
        let mut bytes = serde_json::to_vec(&reply).unwrap();
        bytes.push(b'\n');
        if out.write_all(&bytes).and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}

/// `thoth run --server srv-25 --policy P [--events E] -- CMD...` in this process, without the
/// CLI's refusal of loader variables (valgrind sets `LD_PRELOAD`).
fn thoth_in_process(args: &[String]) {
    let (opts, cmd) = args.split_at(args.iter().position(|a| a == "--").expect("--"));
    let opt = |name: &str| {
        opts.iter()
            .position(|a| a == name)
            .map(|i| PathBuf::from(&opts[i + 1]))
    };
    let argv: Vec<String> = cmd[1..].to_vec();
    let missing = std::env::temp_dir().join("thoth-bench-no-agent");
    let policy = thoth_proxy::source::start(thoth_proxy::source::Sources {
        agent_socket: missing.join("agent.sock"),
        state_dir: missing.clone(),
        policy_file: opt("--policy"),
        server: "srv-25".into(),
        argv: argv.clone(),
    });
    let code = thoth_proxy::run(thoth_proxy::RunConfig {
        server_name: "srv-25".into(),
        argv,
        policy,
        events: opt("--events"),
        max_message_bytes: thoth_proxy::framing::DEFAULT_MAX_MESSAGE_BYTES,
        content: thoth_proto::ContentLimits {
            max_bytes: 16 * 1024,
            ..thoth_proto::ContentLimits::default()
        },
        agent_events: None,
        refusal: None,
        client: None,
        env: Vec::new(),
        original_argv: None,
    })
    .expect("thoth run");
    std::process::exit(code);
}

/// A no-op relay: copies bytes both ways, parses nothing.
fn relay(cmd: &[String]) {
    let cmd = &cmd[usize::from(cmd.first().map(String::as_str) == Some("--"))..];
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut out = std::io::stdout();
        copy_eager(&mut from_child, &mut out);
    });
    copy_eager(&mut std::io::stdin(), &mut to_child);
    drop(to_child);
    let _ = child.wait();
}

fn copy_eager(r: &mut dyn Read, w: &mut dyn Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if w.write_all(&buf[..n]).and_then(|_| w.flush()).is_err() {
                    return;
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    Direct,
    Relay,
    Thoth,
    Baseline,
    /// `thoth` with DLP off (`BENCH_DLP=compare`).
    NoDlp,
}

impl Way {
    /// Whether this way is a thoth binary (which writes events).
    fn is_thoth(self) -> bool {
        matches!(self, Way::Thoth | Way::Baseline | Way::NoDlp)
    }
}

/// The second thoth binary to compare with, if any (`THOTH_BASELINE`).
fn baseline() -> Option<PathBuf> {
    std::env::var_os("THOTH_BASELINE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

fn ways() -> Vec<Way> {
    let mut w = vec![Way::Direct, Way::Relay, Way::Thoth];
    if baseline().is_some() {
        w.push(Way::Baseline);
    }
    if dlp_compare() {
        w.push(Way::NoDlp);
    }
    w
}

fn dlp_compare() -> bool {
    std::env::var("BENCH_DLP").as_deref() == Ok("compare")
}

/// `BENCH_PAYLOAD`: bytes of text each call carries (and its result echoes).
fn payload() -> usize {
    std::env::var("BENCH_PAYLOAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn events_on() -> bool {
    std::env::var("BENCH_EVENTS").as_deref() != Ok("0")
}

struct Target {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    ready: Duration,
    next_id: u64,
}

fn command(way: Way, policy: &Path, events: &Path) -> Command {
    let me = std::env::current_exe().unwrap();
    match way {
        Way::Direct => {
            let mut c = Command::new(&me);
            c.arg("--echo-server");
            c
        }
        Way::Relay => {
            let mut c = Command::new(&me);
            c.args(["--relay", "--"]).arg(&me).arg("--echo-server");
            c
        }
        Way::Thoth | Way::Baseline | Way::NoDlp => {
            let mut c = match way {
                Way::Baseline => Command::new(baseline().expect("THOTH_BASELINE")),
                _ => Command::new(env!("CARGO_BIN_EXE_thoth")),
            };
            let policy = if way == Way::NoDlp {
                policy.with_file_name("bench-policy-no-dlp.yaml")
            } else {
                policy.to_path_buf()
            };
            c.args(["run", "--server", "srv-25", "--policy"])
                .arg(policy);
            if events_on() {
                c.arg("--events").arg(events);
            }
            c.arg("--").arg(&me).arg("--echo-server");
            c.env("THOTH_LOG", "warn");
            c
        }
    }
}

impl Target {
    fn start(way: Way, policy: &Path, events: &Path) -> Target {
        Self::spawn(command(way, policy, events))
    }

    fn spawn(mut command: Command) -> Target {
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn target");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"bench\",\"version\":\"1\"}}}\n")
            .unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("\"result\""), "bad initialize reply: {line}");
        let ready = started.elapsed();
        stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .unwrap();
        Target {
            child,
            stdin,
            stdout,
            ready,
            next_id: 1,
        }
    }

    fn request(&mut self) -> Vec<u8> {
        let text = PAYLOAD_TEXT.with(|t| t.clone());
        let id = self.next_id;
        self.next_id += 1;
        let tool = if id.is_multiple_of(7) {
            "read_file"
        } else {
            "tool_25"
        };
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"{tool}\",\"arguments\":{{\"path\":\"/srv/data/project/src/file_{id}.rs\",\"line\":{id},\"mode\":\"read\"{text}}}}}}}\n"
        )
        .into_bytes()
    }

    /// One call, waited for; returns its latency.
    fn round_trip(&mut self, line: &mut String) -> Duration {
        let req = self.request();
        let t = Instant::now();
        self.stdin.write_all(&req).unwrap();
        self.stdin.flush().unwrap();
        line.clear();
        self.stdout.read_line(line).unwrap();
        let d = t.elapsed();
        assert!(line.contains("\"isError\":false"), "call failed: {line}");
        d
    }

    /// `n` calls with up to `window` in flight; returns elapsed time.
    fn pipelined(&mut self, n: usize, window: usize) -> Duration {
        let reqs: Vec<Vec<u8>> = (0..n).map(|_| self.request()).collect();
        let mut line = String::new();
        let t = Instant::now();
        let mut sent = 0;
        let mut got = 0;
        while got < n {
            while sent < n && sent - got < window {
                self.stdin.write_all(&reqs[sent]).unwrap();
                sent += 1;
            }
            self.stdin.flush().unwrap();
            line.clear();
            self.stdout.read_line(&mut line).unwrap();
            assert!(line.contains("\"isError\":false"), "call failed: {line}");
            got += 1;
        }
        t.elapsed()
    }

    /// CPU time (user + system) the process has used so far, all threads.
    fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        let hz = rustix::param::clock_ticks_per_second().max(1);
        Some(Duration::from_micros(ticks * 1_000_000 / hz))
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

/// Waits (outside any measurement) until thoth has written the events of every call made so
/// far, so that its writer's backlog does not run into the next way's block.
fn settle(events: &Path, t: &Target) {
    if !events_on() {
        return;
    }
    let want = 2 * (t.next_id as usize - 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let have = std::fs::read(events)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0);
        if have >= want || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn write_policy(dir: &Path) -> PathBuf {
    let p = dir.join("bench-policy.yaml");
    let text = common::policy_50x50();
    std::fs::write(&p, &text).unwrap();
    let off = text.replacen(
        "defaults:\n",
        "defaults:\n  dlp:\n    arguments: allow\n    results: allow\n",
        1,
    );
    assert_ne!(off, text, "the bench policy has a defaults section");
    std::fs::write(p.with_file_name("bench-policy-no-dlp.yaml"), off).unwrap();
    p
}

thread_local! {
    /// `,"text":"…"` of `BENCH_PAYLOAD` bytes (ordinary prose, no secret), or empty.
    static PAYLOAD_TEXT: String = {
        let n = payload();
        if n == 0 {
            String::new()
        } else {
            let prose = "The quick brown fox jumps over the lazy dog while the build runs; ";
            let body: String = prose.chars().cycle().take(n).collect();
            format!(",\"text\":\"{body}\"")
        }
    };
}

fn bench() {
    if std::env::var("BENCH_CALLGRIND").as_deref() == Ok("1") {
        return callgrind();
    }
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let block: usize = std::env::var("BENCH_BLOCK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let dir = std::env::temp_dir().join(format!("thoth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = write_policy(&dir);
    let ways = ways();
    let n_ways = ways.len();
    // One events file per thoth binary, so each one's backlog is waited for on its own.
    let events: Vec<PathBuf> = ways
        .iter()
        .map(|w| dir.join(format!("events-{w:?}.jsonl")))
        .collect();
    println!(
        "thoth proxy benchmark: {calls} sequential calls per way, interleaved in blocks of {block}; events {}",
        if events_on() {
            "on (--events FILE)"
        } else {
            "off"
        }
    );
    if let Some(b) = baseline() {
        println!("baseline: {}", b.display());
    }

    // Start-up: spawn → initialize reply, interleaved, 10 times each.
    let mut ready: Vec<Vec<Duration>> = vec![Vec::new(); n_ways];
    for _ in 0..10 {
        for (i, way) in ways.iter().enumerate() {
            let t = Target::start(*way, &policy, &events[i]);
            ready[i].push(t.ready);
            t.stop();
        }
    }
    for e in &events {
        let _ = std::fs::remove_file(e);
    }

    let mut targets: Vec<Target> = ways
        .iter()
        .enumerate()
        .map(|(i, w)| Target::start(*w, &policy, &events[i]))
        .collect();
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); n_ways];
    let mut line = String::new();
    for t in targets.iter_mut() {
        for _ in 0..200 {
            t.round_trip(&mut line); // warm-up
        }
    }
    let mut done = 0;
    while done < calls {
        let n = block.min(calls - done);
        for (i, t) in targets.iter_mut().enumerate() {
            for _ in 0..n {
                lat[i].push(t.round_trip(&mut line));
            }
            if ways[i].is_thoth() {
                settle(&events[i], t);
            }
        }
        done += n;
    }
    // Pipelined throughput, 16 in flight, interleaved.
    let mut tput: Vec<Vec<f64>> = vec![Vec::new(); n_ways];
    let mut tput_rounds: Vec<Vec<f64>> = Vec::new();
    for _ in 0..5 {
        let mut round = vec![0.0; n_ways];
        for (i, t) in targets.iter_mut().enumerate() {
            let n = 4000;
            let el = t.pipelined(n, 16);
            round[i] = n as f64 / el.as_secs_f64();
            tput[i].push(round[i]);
            if ways[i].is_thoth() {
                settle(&events[i], t);
            }
        }
        tput_rounds.push(round);
    }
    let rss: Vec<Option<u64>> = targets.iter().map(Target::peak_rss_kib).collect();
    let total_calls = (200 + calls + 5 * 4000) as f64;
    let cpu: Vec<Option<f64>> = targets
        .iter()
        .map(|t| t.cpu_time().map(|d| d.as_secs_f64() * 1e6 / total_calls))
        .collect();
    for t in targets {
        t.stop();
    }

    let mut p50 = vec![0.0; n_ways];
    let mut p99 = vec![0.0; n_ways];
    println!(
        "\n{:<8} {:>10} {:>10} {:>12} {:>14} {:>12}",
        "way", "p50 µs", "p99 µs", "ready ms", "calls/s (16)", "CPU µs/call"
    );
    for (i, way) in ways.iter().enumerate() {
        lat[i].sort();
        ready[i].sort();
        tput[i].sort_by(|a, b| a.partial_cmp(b).unwrap());
        p50[i] = us(pct(&lat[i], 0.50));
        p99[i] = us(pct(&lat[i], 0.99));
        println!(
            "{:<8} {:>10.1} {:>10.1} {:>12.1} {:>14.0} {:>12}",
            format!("{way:?}").to_lowercase(),
            p50[i],
            p99[i],
            pct(&ready[i], 0.5).as_secs_f64() * 1e3,
            tput[i][tput[i].len() / 2],
            cpu[i].map_or("-".to_owned(), |c| format!("{c:.1}")),
        );
    }
    let add = |i: usize, p: &[f64]| p[i] - p[0];
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "\nadded over direct:   relay p50 {:.1} µs, p99 {:.1} µs",
        add(1, &p50),
        add(1, &p99),
    );
    for (i, way) in ways.iter().enumerate().skip(2) {
        let name = format!("{way:?}").to_lowercase();
        println!(
            "                     {name} p50 {:.1} µs, p99 {:.1} µs",
            add(i, &p50),
            add(i, &p99)
        );
    }
    for (i, way) in ways.iter().enumerate().skip(2) {
        let name = format!("{way:?}").to_lowercase();
        let r50 = add(i, &p50) / add(1, &p50);
        let r99 = add(i, &p99) / add(1, &p99);
        let tp = tput[i][2] / tput[1][2];
        let mut per_round: Vec<f64> = tput_rounds.iter().map(|r| r[i] / r[1]).collect();
        per_round.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name}/relay added latency: p50 {r50:.2}x, p99 {r99:.2}x (target <= 1.25x)  [{}, {}]",
            verdict(r50 <= 1.25),
            verdict(r99 <= 1.25)
        );
        println!(
            "{name}/relay throughput:    {:.0}% (target >= 80%)  [{}]  (rounds: {:.0}%..{:.0}%)",
            tp * 100.0,
            verdict(tp >= 0.8),
            per_round[0] * 100.0,
            per_round[per_round.len() - 1] * 100.0
        );
        match rss[i] {
            Some(kib) => println!(
                "{name} peak RSS:            {:.1} MB (target <= 15 MB)  [{}]",
                kib as f64 / 1024.0,
                verdict(kib as f64 / 1024.0 <= 15.0)
            ),
            None => println!("{name} peak RSS:            unavailable (no /proc)"),
        }
        let ready_extra =
            (pct(&ready[i], 0.5).as_secs_f64() - pct(&ready[0], 0.5).as_secs_f64()) * 1e3;
        println!(
            "{name} ready after server:  {ready_extra:.1} ms (target <= 50 ms)  [{}]",
            verdict(ready_extra <= 50.0)
        );
        if let (Some(r), Some(t)) = (cpu[1], cpu[i]) {
            println!(
                "{name} CPU per call:        {t:.1} µs vs relay {r:.1} µs (user + system, all threads)"
            );
        }
        let ev_lines = std::fs::read_to_string(&events[i])
            .map(|s| s.lines().count())
            .unwrap_or(0);
        println!("{name} events written:      {ev_lines}");
    }
    if let (Some(t), Some(n)) = (
        ways.iter().position(|w| *w == Way::Thoth),
        ways.iter().position(|w| *w == Way::NoDlp),
    ) {
        let base50 = add(n, &p50);
        let dlp50 = p50[t] - p50[n];
        let dlp99 = p99[t] - p99[n];
        let share = dlp50 / base50 * 100.0;
        println!(
            "\nDLP (default: warn on arguments and results), {} B payload: adds p50 {dlp50:.1} µs, \
             p99 {dlp99:.1} µs = {share:.0}% of the {base50:.1} µs thoth adds without it \
             (target <= 20%)  [{}]",
            payload(),
            verdict(share <= 20.0)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `BENCH_CALLGRIND=1`: instructions per call, from callgrind runs of N and 2N calls.
fn callgrind() {
    let n: usize = std::env::var("BENCH_CALLGRIND_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = std::env::temp_dir().join(format!("thoth-bench-cg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = write_policy(&dir);
    println!(
        "thoth proxy benchmark under callgrind: instructions per call = (I({}) - I({n})) / {n}; events {}",
        2 * n,
        if events_on() {
            "on (--events FILE)"
        } else {
            "off"
        }
    );
    let mut relay_per_call = None;
    // A baseline binary refuses to govern under valgrind (see the header): time only.
    for way in [Way::Relay, Way::Thoth] {
        let mut totals = [0u64; 2];
        for (k, calls) in [n, 2 * n].into_iter().enumerate() {
            let out = dir.join(format!("callgrind-{way:?}-{calls}.out"));
            let events = dir.join(format!("events-{way:?}-{calls}.jsonl"));
            let mut inner = command(way, &policy, &events);
            if way == Way::Thoth {
                // The same arguments, to this executable's in-process `thoth run`.
                let mut args: Vec<_> = inner.get_args().map(ToOwned::to_owned).collect();
                args[0] = "--thoth-run".into();
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.args(args);
                inner = c;
            }
            let mut c = Command::new("valgrind");
            c.args(["--tool=callgrind", "--quiet"])
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(inner.get_program())
                .args(inner.get_args());
            for (k, v) in inner.get_envs() {
                match v {
                    Some(v) => c.env(k, v),
                    None => c.env_remove(k),
                };
            }
            let mut t = Target::spawn(c);
            let mut line = String::new();
            for _ in 0..calls {
                t.round_trip(&mut line);
            }
            t.stop();
            totals[k] = callgrind_total(&out);
        }
        let per_call = totals[1].saturating_sub(totals[0]) as f64 / n as f64;
        let name = format!("{way:?}").to_lowercase();
        match way {
            Way::Relay => {
                relay_per_call = Some(per_call);
                println!("{name:<8} {per_call:>10.0} instructions per call");
            }
            _ => println!(
                "{name:<8} {per_call:>10.0} instructions per call ({:.1}x the relay's)",
                per_call / relay_per_call.unwrap_or(f64::NAN)
            ),
        }
    }
    if std::env::var_os("BENCH_CALLGRIND_KEEP").is_some() {
        println!(
            "callgrind outputs kept in {} (callgrind_annotate FILE)",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The total instruction count a callgrind output file reports.
fn callgrind_total(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).expect("callgrind output (is valgrind installed?)");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a summary line in the callgrind output")
}
