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
        assert_eq!(client, "claude-desktop", "{detail}");
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
        config.config_rescan_interval = Duration::from_millis(200);
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
