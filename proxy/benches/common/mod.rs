//! Shared by the benchmarks (the proxy crate's, and the agent's, which include this file).
#![allow(dead_code)]

/// The benchmark policy: 50 servers × 50 tools, argument globs, constraints, a sequence rule.
pub(crate) fn policy_50x50() -> String {
    let mut y = String::from(
        "name: bench\nversion: 1\ndefaults:\n  enforcement: block\n  unknown_servers: block\nservers:\n",
    );
    for s in 0..50 {
        y.push_str(&format!(
            "  - name: \"srv-{s}\"\n    enforcement: block\n    approved_scope:\n"
        ));
        for t in 0..50 {
            y.push_str(&format!("      - tool_{t}\n"));
        }
        y.push_str("      - \"read_*\"\n    deny: [\"drop_*\", \"exec_*\"]\n    constraints:\n");
        y.push_str("      - tool: \"{tool_*,read_*}\"\n        arg: path\n        path_glob: [\"/srv/data/**\", \"/home/*/projects/**\"]\n");
        y.push_str("      - tool: \"tool_1*\"\n        arg: mode\n        one_of: [read, list]\n");
        y.push_str("    sequences:\n      - after: \"read_*\"\n        then: \"send_*\"\n        action: deny\n");
    }
    y
}

/// A built binary of this workspace, next to the bench executable's `deps/` folder.
pub(crate) fn bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps/..")
        .join(name);
    if !p.exists() {
        eprintln!(
            "{} is missing: run `cargo build --release --workspace --bins` first",
            p.display()
        );
        std::process::exit(1);
    }
    p
}

/// A child process stopped with SIGTERM when dropped.
pub(crate) struct Killer(pub std::process::Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.0.wait();
    }
}

/// The `p` quantile of sorted durations.
pub(crate) fn pct(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Starts `thoth-controller serve` on a free loopback port with data in `data` (initialized
/// first if it is not); returns the process and its URL once it listens.
pub(crate) fn start_controller(data: &std::path::Path) -> (Killer, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(bin("thoth-controller"))
        .args(["serve", "--metrics-listen", "off", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data)
        .env("THOTH_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let killer = Killer(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !data.join("admin/controller.url").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the controller did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (killer, format!("https://127.0.0.1:{port}"))
}
