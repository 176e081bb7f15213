//! The config guardian driven in process: the real guardian thread (its directory watch, its
//! rescans and its policy passes) over a temporary users root, reporting to a fake
//! [`ConfigReport`] instead of the daemon. Each test waits for what the guardian reports and for
//! what it did to the files.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use thoth_agent::watch::{self, ConfigReport};
use thoth_endpoint::config::AgentConfig;
use thoth_endpoint::status::ConfigStatus;

/// How long a test waits for the guardian to act.
const WAIT: Duration = Duration::from_secs(15);

/// A Claude Desktop config with one unwrapped server.
const ORIGINAL: &str = "{\n  \"mcpServers\": {\n    \"files\": {\"command\": \"npx\", \"args\": [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"/home/ann\"]}\n  },\n  \"globalShortcut\": \"Ctrl+Space\"\n}\n";

/// What the guardian reported, in order.
#[derive(Default)]
struct Reports {
    events: Vec<(String, String)>,
    statuses: Vec<ConfigStatus>,
    errors: Vec<String>,
}

/// The agent as the guardian sees it: settings in, reports recorded.
struct Fake {
    config: AgentConfig,
    policy: AtomicU64,
    reports: Mutex<Reports>,
}

impl ConfigReport for Fake {
    fn config(&self) -> &AgentConfig {
        &self.config
    }

    fn config_status(&self, configs: Vec<ConfigStatus>) {
        self.reports.lock().unwrap().statuses = configs;
    }

    fn guardian_error(&self, message: String) {
        self.reports.lock().unwrap().errors.push(message);
    }

    fn raise(&self, event_type: thoth_proto::EventType, client: &str, detail: String) {
        let name = thoth_hosts::host::by_id(client).unwrap().name();
        assert!(
            detail.starts_with(&format!("{name}: ")),
            "{client}: {detail}"
        );
        self.reports
            .lock()
            .unwrap()
            .events
            .push((event_type.as_str().to_owned(), detail));
    }

    fn policy_version(&self) -> Option<u64> {
        match self.policy.load(Ordering::SeqCst) {
            0 => None,
            v => Some(v),
        }
    }
}

impl Fake {
    /// The details of the events of `event_type` so far.
    fn events(&self, event_type: &str) -> Vec<String> {
        let r = self.reports.lock().unwrap();
        assert!(r.errors.is_empty(), "guardian error: {:?}", r.errors);
        r.events
            .iter()
            .filter(|(t, _)| t == event_type)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// The published state of the config at `path`, if any.
    fn state(&self, path: &Path) -> Option<String> {
        let p = path.display().to_string();
        let r = self.reports.lock().unwrap();
        r.statuses
            .iter()
            .find(|s| s.path == p)
            .map(|s| s.state.clone())
    }
}

/// A users root in a temp dir, the `thoth` binary wrapped entries run, and a started guardian.
struct Laptop {
    _dir: tempfile::TempDir,
    users: PathBuf,
    thoth: String,
    fake: Arc<Fake>,
}

impl Laptop {
    /// Creates `configs` (user, text) under the users root, then starts the guardian.
    fn start(configs: &[(&str, &str)]) -> Laptop {
        Laptop::start_every(configs, Duration::from_millis(200))
    }

    /// [`Laptop::start`], with the periodic check every `rescan`.
    fn start_every(configs: &[(&str, &str)], rescan: Duration) -> Laptop {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let users = root.join("home");
        std::fs::create_dir_all(&users).unwrap();
        let bin = root.join("bin/thoth");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let mut config: AgentConfig =
            toml::from_str(include_str!("../thoth-agent.example.toml")).unwrap();
        config.state_dir = root.join("state");
        config.socket_path = root.join("agent.sock");
        config.users_root = Some(users.clone());
        config.wrap_configs = true;
        config.thoth_path = Some(bin.clone());
        config.claude_restart_command = None;
        config.config_rescan_interval = rescan;
        let laptop = Laptop {
            _dir: dir,
            users,
            thoth: bin.display().to_string(),
            fake: Arc::new(Fake {
                config,
                policy: AtomicU64::new(0),
                reports: Mutex::default(),
            }),
        };
        for (user, text) in configs {
            laptop.write(user, text);
        }
        watch::spawn(Arc::clone(&laptop.fake)).unwrap();
        laptop
    }

    /// `user`'s Claude Desktop config path (Linux layout).
    fn path(&self, user: &str) -> PathBuf {
        self.users
            .join(user)
            .join(".config/Claude/claude_desktop_config.json")
    }

    /// Replaces `user`'s config as editors and Claude Desktop do: a new file renamed over it.
    fn write(&self, user: &str, text: &str) {
        let path = self.path(user);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    fn read(&self, user: &str) -> String {
        std::fs::read_to_string(self.path(user)).unwrap()
    }

    /// Whether `user`'s `files` entry runs this agent's thoth.
    fn wrapped(&self, user: &str) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(&self.read(user)) else {
            return false;
        };
        v["mcpServers"]["files"]["command"] == self.thoth.as_str()
    }
}

/// Waits until `cond` holds, at most [`WAIT`].
fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_new_config_is_wrapped_and_reported_config_wrapped() {
    // Bob's config is there when the guardian starts; Ann's appears later (a new Claude
    // Desktop install), found by the guardian's own watch and rescans.
    let l = Laptop::start(&[("bob", ORIGINAL)]);
    let bob = format!("Claude Desktop: {}", l.path("bob").display());
    wait("bob's CONFIG_WRAPPED", || {
        l.fake
            .events("CONFIG_WRAPPED")
            .iter()
            .any(|d| d.starts_with(&bob))
    });
    assert!(l.wrapped("bob"), "{}", l.read("bob"));

    l.write("ann", ORIGINAL);
    let ann = format!("Claude Desktop: {}", l.path("ann").display());
    wait("ann's CONFIG_WRAPPED", || {
        l.fake
            .events("CONFIG_WRAPPED")
            .iter()
            .any(|d| d.starts_with(&ann))
    });
    assert!(l.wrapped("ann"), "{}", l.read("ann"));
    let v: Value = serde_json::from_str(&l.read("ann")).unwrap();
    let args = v["mcpServers"]["files"]["args"].as_array().unwrap();
    assert_eq!(args[..3], ["run", "--server", "files"]);
    assert!(
        args.iter()
            .any(|a| a == "@modelcontextprotocol/server-filesystem"),
        "the server's own command is kept: {args:?}"
    );
    assert_eq!(v["globalShortcut"], "Ctrl+Space", "the rest is kept");
    let detail = l
        .fake
        .events("CONFIG_WRAPPED")
        .into_iter()
        .find(|d| d.starts_with(&ann))
        .unwrap();
    assert!(detail.contains("wrapped files"), "{detail}");
    wait("ann's config governed", || {
        l.fake.state(&l.path("ann")).as_deref() == Some("governed")
    });
    assert!(
        l.fake.events("CONFIG_DRIFT").is_empty(),
        "a first wrap is not drift: {:?}",
        l.fake.events("CONFIG_DRIFT")
    );
}

#[test]
fn a_foreign_rewrite_is_healed_and_reported_config_drift() {
    let l = Laptop::start(&[("ann", ORIGINAL)]);
    wait("CONFIG_WRAPPED", || {
        !l.fake.events("CONFIG_WRAPPED").is_empty()
    });
    assert!(l.wrapped("ann"));
    let wrapped = l.read("ann");

    // Something else (a user, Claude Desktop's settings page) puts the unwrapped entry back.
    l.write("ann", ORIGINAL);
    wait("CONFIG_DRIFT", || !l.fake.events("CONFIG_DRIFT").is_empty());
    wait("the wrapper restored", || l.wrapped("ann"));
    assert_eq!(l.read("ann"), wrapped, "healed to the same wrapped text");
    let drift = l.fake.events("CONFIG_DRIFT");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(
        drift[0].contains("wrapper removed: files") && drift[0].contains("re-wrapped"),
        "CONFIG_DRIFT says what changed: {drift:?}"
    );
    assert_eq!(
        l.fake.events("CONFIG_WRAPPED").len(),
        1,
        "the heal is drift, not a new wrap"
    );
    assert_eq!(
        l.fake.state(&l.path("ann")).as_deref(),
        Some("governed"),
        "governed again"
    );
}

#[test]
fn an_invalid_file_is_left_alone_and_reported_config_invalid_once() {
    let invalid = "{\n  \"mcpServers\": {\n    \"files\": {\"command\": \"npx\",\n";
    let l = Laptop::start(&[("ann", invalid)]);
    wait("CONFIG_INVALID", || {
        !l.fake.events("CONFIG_INVALID").is_empty()
    });
    wait("the invalid state published", || {
        l.fake.state(&l.path("ann")).as_deref() == Some("invalid")
    });

    // The guardian looks again, for every reason it has: a policy change (a full pass), the
    // same text written again (a watch event) and a new home (a rescan).
    l.fake.policy.store(2, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(800));
    l.write("ann", invalid);
    std::thread::sleep(Duration::from_millis(300));
    l.write("bob", ORIGINAL);
    let bob = format!("Claude Desktop: {}", l.path("bob").display());
    wait("bob's CONFIG_WRAPPED", || {
        l.fake
            .events("CONFIG_WRAPPED")
            .iter()
            .any(|d| d.starts_with(&bob))
    });
    std::thread::sleep(Duration::from_millis(500));

    assert_eq!(l.read("ann"), invalid, "left untouched");
    let reported = l.fake.events("CONFIG_INVALID");
    assert_eq!(reported.len(), 1, "reported once: {reported:?}");
    assert!(
        reported[0].contains("left untouched"),
        "says the file was left alone: {reported:?}"
    );
    assert!(
        l.fake
            .events("CONFIG_WRAPPED")
            .iter()
            .all(|d| d.starts_with(&bob)),
        "ann's file was not wrapped"
    );
    assert_eq!(l.fake.state(&l.path("ann")).as_deref(), Some("invalid"));
}

/// The real `thoth-agent run` (no controller reachable: enough for the guardian), managing the
/// homes under `users`; killed when dropped.
struct RealAgent {
    child: std::process::Child,
    socket: PathBuf,
    log: PathBuf,
}

impl RealAgent {
    fn start(root: &Path, users: &Path, thoth: &Path) -> RealAgent {
        let config = root.join("agent.toml");
        let socket = root.join("agent.sock");
        std::fs::write(
            &config,
            format!(
                "controller_url = \"https://127.0.0.1:1\"\ntenant = \"default\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\nusers_root = \"{}\"\nthoth_path = \"{}\"\nconfig_rescan_interval = \"2s\"\n",
                "0".repeat(64),
                root.join("state").display(),
                socket.display(),
                users.display(),
                thoth.display(),
            ),
        )
        .unwrap();
        let log = root.join("agent.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_thoth-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .env("THOTH_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        RealAgent { child, socket, log }
    }

    /// `thoth-agent status --json`, when it answers.
    fn status(&self) -> Option<Value> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_thoth-agent"))
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.get("running") != Some(&Value::Bool(false))).then_some(v)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether every local server of `path` (a file of the host `client`) runs `thoth` with
/// `--client client`, read with the host's own format.
fn governed(thoth: &str, client: &str, path: &Path) -> bool {
    let host = thoth_hosts::host::by_id(client).unwrap();
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(found) = thoth_hosts::format::entries(&text, &host.format(path)) else {
        return false;
    };
    let local: Vec<_> = found.iter().filter(|f| !f.entry.is_remote()).collect();
    !local.is_empty()
        && local.iter().all(|f| {
            let args = f.entry.args.clone().unwrap_or_default();
            f.entry.command.as_deref() == Some(thoth)
                && args
                    .windows(2)
                    .any(|w| w[0] == "--client" && w[1] == client)
        })
}

#[test]
fn the_real_agent_governs_every_client_of_every_user_heals_drift_and_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let users = root.join("home");
    let thoth = root.join("bin/thoth");
    std::fs::create_dir_all(thoth.parent().unwrap()).unwrap();
    std::fs::write(&thoth, "#!/bin/sh\n").unwrap();
    let json = "{\n  \"mcpServers\": {\n    \"files\": {\"command\": \"npx\", \"args\": [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"/srv\"], \"env\": {\"TOKEN\": \"s3cret\"}},\n    \"linear\": {\"url\": \"https://mcp.linear.app/sse\"}\n  }\n}\n";
    let vscode = "// VS Code's MCP servers\n{\n  \"servers\": {\n    /* files, read-only */\n    \"files\": {\n      \"type\": \"stdio\",\n      \"command\": \"npx\",\n      \"args\": [\"-y\", \"@modelcontextprotocol/server-filesystem\"], // the tree\n    },\n  },\n}\n";
    let code = "{\n  \"numStartups\": 7,\n  \"mcpServers\": {\n    \"files\": {\"type\": \"stdio\", \"command\": \"npx\", \"args\": [\"server-filesystem\"]}\n  }\n}\n";
    let codex = "# Codex\nmodel = \"o4\"\n\n[mcp_servers.files]\ncommand = 'npx' # literal\nargs = [\"-y\", \"server-filesystem\"]\n";
    let mut files: Vec<(&str, PathBuf, &str)> = Vec::new();
    for user in ["ann", "bob", "eve"] {
        let home = users.join(user);
        for (client, rel, text) in [
            (
                "claude-desktop",
                ".config/Claude/claude_desktop_config.json",
                json,
            ),
            ("cursor", ".cursor/mcp.json", json),
            ("vscode", ".config/Code/User/mcp.json", vscode),
            ("claude-code", ".claude.json", code),
            ("codex", ".codex/config.toml", codex),
        ] {
            let path = home.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            files.push((client, path, text));
        }
    }
    // Codex is governed once its TOML engine is there (the host finds its file).
    let codex_host = thoth_hosts::host::by_id("codex").unwrap();
    if codex_host
        .files(&users.join("ann"), thoth_hosts::host::Os::current())
        .is_empty()
    {
        eprintln!("note: the codex host does not find ~/.codex/config.toml yet: codex skipped");
        files.retain(|(c, _, _)| *c != "codex");
    }
    let t0 = Instant::now();
    let agent = RealAgent::start(&root, &users, &thoth);
    let thoth = thoth.display().to_string();
    let until = t0 + Duration::from_secs(20);
    while !files.iter().all(|(c, p, _)| governed(&thoth, c, p)) {
        assert!(
            Instant::now() < until,
            "not every file governed: {:#?}\nagent log:\n{}",
            files
                .iter()
                .filter(|(c, p, _)| !governed(&thoth, c, p))
                .map(|(_, p, _)| p)
                .collect::<Vec<_>>(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{} files of {} clients of 3 users governed {} ms after the agent started",
        files.len(),
        files.len() / 3,
        t0.elapsed().as_millis()
    );
    // Only command and args changed: comments, other keys and env are kept.
    let v = std::fs::read_to_string(users.join("ann/.config/Code/User/mcp.json")).unwrap();
    assert!(
        v.starts_with("// VS Code's MCP servers\n") && v.contains("/* files, read-only */"),
        "{v}"
    );
    assert!(
        std::fs::read_to_string(users.join("bob/.claude.json"))
            .unwrap()
            .contains("\"numStartups\": 7")
    );

    // The status lists every file with its client.
    let mut status = Value::Null;
    let until = Instant::now() + WAIT;
    loop {
        if let Some(s) = agent.status() {
            let listed = s["configs"].as_array().cloned().unwrap_or_default();
            let all = files.iter().all(|(c, p, _)| {
                listed.iter().any(|x| {
                    x["path"] == p.display().to_string()
                        && x["client"] == *c
                        && x["state"] == "governed"
                })
            });
            status = s;
            if all {
                break;
            }
        }
        assert!(
            Instant::now() < until,
            "the status does not list every file: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = status["recentEvents"].to_string();
    // Events name a home's user by the login name of its owner (its directory's name only
    // without a passwd entry).
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(users.join("ann")).unwrap());
    let ann = thoth_agent::daemon::local::login_name(owner).unwrap_or_else(|| "ann".into());
    assert!(
        events.contains("MCP_SERVER_UNGOVERNED")
            && events.contains(&format!(
                "Cursor: {ann}: linear (url https://mcp.linear.app/sse) is not governed"
            )),
        "{events}"
    );

    // Drift on every file of one user: each healed, each CONFIG_DRIFT naming its client.
    let t1 = Instant::now();
    for (_, p, text) in files
        .iter()
        .filter(|(_, p, _)| p.starts_with(users.join("eve")))
    {
        let tmp = p.with_extension("drift-tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, p).unwrap();
    }
    let until = Instant::now() + WAIT;
    while !files.iter().all(|(c, p, _)| governed(&thoth, c, p)) {
        assert!(
            Instant::now() < until,
            "drift not healed\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "drift on {} files healed in {:?}",
        files.len() / 3,
        t1.elapsed()
    );
    let names = [
        ("claude-desktop", "Claude Desktop"),
        ("cursor", "Cursor"),
        ("vscode", "VS Code"),
        ("claude-code", "Claude Code"),
        ("codex", "Codex"),
    ];
    let until = Instant::now() + WAIT;
    loop {
        let s = agent.status().unwrap_or(Value::Null);
        let drift: Vec<String> = s["recentEvents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|e| e["eventType"] == "CONFIG_DRIFT")
            .filter_map(|e| e["detail"].as_str().map(str::to_owned))
            .collect();
        let all = files
            .iter()
            .filter(|(_, p, _)| p.starts_with(users.join("eve")))
            .all(|(c, p, _)| {
                let name = names.iter().find(|(id, _)| id == c).unwrap().1;
                let want = format!("{name}: {}: wrapper removed: files", p.display());
                drift.iter().any(|d| d.starts_with(&want))
            });
        if all {
            break;
        }
        assert!(
            Instant::now() < until,
            "CONFIG_DRIFT per client: {drift:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Claude Desktop extension's manifest (version `v`).
fn extension_manifest(v: &str) -> String {
    format!(
        "{{\n  \"manifest_version\": \"0.3\",\n  \"name\": \"filesystem\",\n  \"version\": \"{v}\",\n  \"server\": {{\n    \"type\": \"node\",\n    \"entry_point\": \"server/index.js\",\n    \"mcp_config\": {{\"command\": \"node\", \"args\": [\"${{__dirname}}/server/index.js\", \"${{user_config.dirs}}\"]}}\n  }}\n}}\n"
    )
}

/// Whether the extension manifest at `path` runs `thoth` for the client `claude-extension`.
fn extension_wrapped(thoth: &str, path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| {
        serde_json::from_str::<Value>(&t).is_ok_and(|v| {
            let c = &v["server"]["mcp_config"];
            c["command"] == thoth
                && c["args"].as_array().is_some_and(|a| {
                    a.windows(2)
                        .any(|w| w[0] == "--client" && w[1] == "claude-extension")
                })
        })
    })
}

#[test]
fn an_extension_update_replacing_its_directory_is_wrapped_again_within_a_second() {
    // No periodic check during the test: only the watch can find the update.
    let l = Laptop::start_every(&[("ann", ORIGINAL)], Duration::from_secs(600));
    let exts = l.users.join("ann/.config/Claude/Claude Extensions");
    let dir = exts.join("ant.dir.filesystem");
    let manifest = dir.join("manifest.json");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&manifest, extension_manifest("0.2.0")).unwrap();
    wait("the extension wrapped", || {
        extension_wrapped(&l.thoth, &manifest)
    });
    // The event is raised just after the file is written.
    wait("CONFIG_WRAPPED for the extension", || {
        l.fake
            .events("CONFIG_WRAPPED")
            .iter()
            .any(|d| d.starts_with("Claude Desktop extensions: "))
    });
    // Claude updates it: the new version unpacked beside it, renamed into its place.
    let new = exts.join(".ant.dir.filesystem.new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(new.join("manifest.json"), extension_manifest("0.3.0")).unwrap();
    std::fs::rename(&dir, exts.join(".ant.dir.filesystem.old")).unwrap();
    let t0 = Instant::now();
    std::fs::rename(&new, &dir).unwrap();
    wait("the update wrapped", || {
        extension_wrapped(&l.thoth, &manifest)
            && std::fs::read_to_string(&manifest).is_ok_and(|t| t.contains("0.3.0"))
    });
    let took = t0.elapsed();
    eprintln!(
        "the updated extension wrapped {} ms after the update",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // A second update of the same directory is found as well (its new directory is watched).
    std::fs::write(dir.join("manifest.json.tmp"), extension_manifest("0.4.0")).unwrap();
    std::fs::rename(dir.join("manifest.json.tmp"), &manifest).unwrap();
    wait("the second update wrapped", || {
        extension_wrapped(&l.thoth, &manifest)
            && std::fs::read_to_string(&manifest).is_ok_and(|t| t.contains("0.4.0"))
    });
}

#[test]
fn the_agent_refuses_to_start_with_an_unknown_client() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "controller_url = \"https://127.0.0.1:1\"\ntenant = \"default\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\nclients = [\"cursor\", \"zed\"]\n",
            "0".repeat(64),
            dir.path().join("state").display(),
            dir.path().join("agent.sock").display(),
        ),
    )
    .unwrap();
    for cmd in ["run", "check-config"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_thoth-agent"))
            .args([cmd, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("clients: unknown MCP client \"zed\"")
                && err.contains(
                    "claude-desktop, claude-extension, claude-code, cursor, vscode, windsurf, codex"
                ),
            "{cmd}: {err}"
        );
    }
    assert!(!dir.path().join("agent.sock").exists(), "not started");
}
