//! A whole fleet on loopback for the end-to-end tests: a real `thoth-controller serve`, real
//! `thothctl`, a real `thoth-agent run`, each in a temp directory on ports chosen at run time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A built binary of this workspace, next to `thoth`.
pub fn bin(name: &str) -> PathBuf {
    let p = super::thoth().with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: cargo build --workspace --bins",
        p.display()
    );
    p
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kill(child: &mut Child) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::TERM,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A `[[sinks]]` entry for a JSON lines SIEM file under `dir`, and the file.
pub fn jsonl_sink(dir: &Path) -> (String, PathBuf) {
    let file = dir.join("siem/events.jsonl");
    (
        format!(
            "[[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"{}\"\n",
            file.display()
        ),
        file,
    )
}

/// A controller process.
pub struct Controller {
    /// Its data directory.
    pub data: PathBuf,
    /// Its port (fixed across restarts).
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Controller {
    /// Starts a controller on a fresh data directory under `dir`, with `config` (TOML) as its
    /// controller.toml.
    pub fn start(dir: &Path, config: &str) -> Controller {
        let data = dir.join("controller");
        let init = Command::new(bin("thoth-controller"))
            .args(["init", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        std::fs::write(data.join("controller.toml"), config).unwrap();
        let mut c = Controller {
            data,
            port: free_port(),
            child: None,
            log: dir.join("controller.log"),
        };
        c.boot();
        c
    }

    fn boot(&mut self) {
        let _ = std::fs::remove_file(self.data.join("admin/controller.url"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin("thoth-controller"))
            .args(["serve", "--metrics-listen", "off", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data")
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = self.data.join("admin/controller.url");
        super::wait_for("the controller to listen", || url.exists());
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }

    /// Runs thothctl with the admin credential; returns (code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin("thothctl"))
            .arg("--credentials")
            .arg(self.data.join("admin"))
            .arg("--controller")
            .arg(self.url())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// thothctl that must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(args);
        assert_eq!(code, 0, "thothctl {args:?}: {err}");
        out
    }

    /// Pushes a file; returns the new version.
    pub fn push(&self, file: &Path) -> u64 {
        let out = self.ctl_ok(&["--json", "policy", "push", file.to_str().unwrap()]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["version"].as_u64().unwrap()
    }

    /// (CA fingerprint, root public key).
    pub fn trust(&self) -> (String, String) {
        let out = Command::new(bin("thoth-controller"))
            .args(["info", "--json", "--data"])
            .arg(&self.data)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["caFingerprint"].as_str().unwrap().to_owned(),
            v["rootPublicKey"].as_str().unwrap().to_owned(),
        )
    }

    /// A new enrollment token.
    pub fn token(&self) -> String {
        self.ctl_ok(&["token", "create"]).trim().to_owned()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An agent process.
pub struct Agent {
    /// Its config file.
    pub config: PathBuf,
    /// State directory.
    pub state: PathBuf,
    /// Socket.
    pub socket: PathBuf,
    /// Its log.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    /// Writes a config for `controller` (token included) under `dir` and starts the agent.
    pub fn start(dir: &Path, controller: &Controller) -> Agent {
        let (fp, root) = controller.trust();
        let token_file = dir.join("token");
        std::fs::write(&token_file, controller.token()).unwrap();
        let state = dir.join("state");
        let socket = dir.join("agent.sock");
        let config = dir.join("agent.toml");
        // Configured from the shipped example, as an installer would: its placeholders are
        // replaced and the local paths appended.
        let example =
            std::fs::read_to_string(super::repo_root().join("agent/thoth-agent.example.toml"))
                .unwrap();
        let mut text = String::new();
        for line in example.lines() {
            let line = if line.starts_with("controller_url = ") {
                format!("controller_url = \"{}\"", controller.url())
            } else if line.starts_with("ca_fingerprint = ") {
                format!("ca_fingerprint = \"{fp}\"")
            } else if line.starts_with("root_public_key = ") {
                format!("root_public_key = \"{root}\"")
            } else {
                line.to_owned()
            };
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str(&format!(
            "enrollment_token_file = \"{}\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\nheartbeat_interval = \"2s\"\nreconnect_max = \"2s\"\nusers_root = \"{}\"\n",
            token_file.display(),
            state.display(),
            socket.display(),
            dir.join("home").display(),
        ));
        std::fs::write(&config, text).unwrap();
        let mut a = Agent {
            config,
            state,
            socket,
            log: dir.join("agent.log"),
            child: None,
        };
        a.boot();
        a
    }

    /// An agent with no reachable controller (enough for config rollout), managing the homes
    /// under `users_root`; `extra` is appended to its config.
    pub fn start_offline(dir: &Path, users_root: &Path, extra: &str) -> Agent {
        let state = dir.join("state");
        let socket = dir.join("agent.sock");
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "controller_url = \"https://127.0.0.1:1\"\ntenant = \"default\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\nusers_root = \"{}\"\nthoth_path = \"{}\"\nconfig_rescan_interval = \"1s\"\n{extra}\n",
                "0".repeat(64),
                state.display(),
                socket.display(),
                users_root.display(),
                super::thoth().display(),
            ),
        )
        .unwrap();
        let mut a = Agent {
            config,
            state,
            socket,
            log: dir.join("agent.log"),
            child: None,
        };
        a.boot();
        a
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it with SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process without waiting for its socket.
    pub fn spawn_only(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new(bin("thoth-agent"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("THOTH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Starts the process and waits until it answers on its socket.
    pub fn boot(&mut self) {
        self.spawn_only();
        super::wait_for("the agent socket", || self.status().is_some());
    }

    /// Stops it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// `thoth-agent status --json`, or None when it does not answer.
    pub fn status(&self) -> Option<Value> {
        let out = Command::new(bin("thoth-agent"))
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.get("running") != Some(&Value::Bool(false))).then_some(v)
    }

    /// Waits until the status satisfies `cond`; returns it.
    pub fn wait_status(&self, what: &str, mut cond: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + super::WAIT;
        loop {
            if let Some(s) = self.status()
                && cond(&s)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status: {:?}\nagent log:\n{}",
                self.status(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The applied policy version, if any.
    pub fn version(s: &Value) -> Option<u64> {
        s["policy"]["version"].as_u64()
    }

    /// `thoth run` arguments that point a proxy at this agent.
    pub fn proxy_args(&self) -> Vec<String> {
        vec![
            "--agent-socket".into(),
            self.socket.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
        ]
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `n` synthetic tool-call events to an agent's local socket, as proxies do, in batches.
pub fn emit_events(socket: &Path, n: usize, tag: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = thoth_endpoint::tls::local_channel(socket).unwrap();
        let mut c = thoth_proto::fleet::local_agent_client::LocalAgentClient::new(ch);
        let mut accepted = 0u64;
        let mut i = 0;
        while i < n {
            let batch: Vec<Vec<u8>> = (i..(i + 500).min(n))
                .map(|k| {
                    serde_json::json!({
                        "eventId": format!("{tag}-{k:08}"),
                        "eventType": "TOOL_CALL_PRE",
                        "timestamp": "2026-11-24T10:00:00.000000Z",
                        "sessionId": tag,
                        "serverName": "load",
                        "sourceType": "agent_tool_call",
                        "toolName": "read_text_file",
                        "content": format!("{{\"k\":{k}}}"),
                    })
                    .to_string()
                    .into_bytes()
                })
                .collect();
            i += batch.len();
            let r = c
                .emit_events(thoth_proto::fleet::LocalEvents { events: batch })
                .await
                .unwrap()
                .into_inner();
            accepted += u64::from(r.accepted);
        }
        accepted
    })
}
