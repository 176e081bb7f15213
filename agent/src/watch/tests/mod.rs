//! The guardian over a temporary users root with several users and hosts, driven by hand (no
//! watcher: events are fed to it as the watch would). This module holds the fake agent
//! ([`Fake`]), the users root ([`Laptop`]) and what the tests share; the tests are by theme:
//!
//! - `hosts`: every host of every user wrapped; which hosts are managed (settings, policy);
//!   new homes and rediscovery.
//! - `drift`: a wrapper removed or altered is re-wrapped, once; a host's own saves are not drift.
//! - `ungoverned`: servers the agent cannot govern are reported once, escaped, in bounded passes.
//! - `ownership`: nothing of one user's files is read for another.
//! - `locks`: a client's lock held for good stalls nothing and is overridden after the grace.

mod drift;
mod hosts;
mod locks;
#[cfg(unix)]
mod ownership;
mod ungoverned;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use thoth_endpoint::config::AgentConfig;
use thoth_endpoint::status::ConfigStatus;
use thoth_proto::EventType;

use super::guardian::Guardian;
use super::{ConfigReport, extra_flags};

const THOTH: &str = "/usr/local/bin/thoth";

/// The agent as the guardian sees it: settings in, reports recorded (type, client, detail).
struct Fake {
    config: AgentConfig,
    policy: Mutex<(Option<u64>, Option<Vec<String>>)>,
    events: Mutex<Vec<(String, String, String)>>,
    statuses: Mutex<Vec<ConfigStatus>>,
}

impl ConfigReport for Fake {
    fn config(&self) -> &AgentConfig {
        &self.config
    }
    fn config_status(&self, configs: Vec<ConfigStatus>) {
        *self.statuses.lock().unwrap() = configs;
    }
    fn guardian_error(&self, message: String) {
        panic!("guardian error: {message}");
    }
    fn raise(&self, event_type: EventType, client: &str, detail: String) {
        self.events.lock().unwrap().push((
            event_type.as_str().to_owned(),
            client.to_owned(),
            detail,
        ));
    }
    fn policy_version(&self) -> Option<u64> {
        self.policy.lock().unwrap().0
    }
    fn policy_clients(&self) -> Option<Vec<String>> {
        self.policy.lock().unwrap().1.clone()
    }
}

impl Fake {
    /// (client, detail) of the events of `event_type`.
    fn events(&self, event_type: &str) -> Vec<(String, String)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == event_type)
            .map(|(_, c, d)| (c.clone(), d.clone()))
            .collect()
    }
    fn all_events(&self) -> usize {
        self.events.lock().unwrap().len()
    }
    fn status(&self, path: &Path) -> Option<ConfigStatus> {
        let p = path.display().to_string();
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.path == p)
            .cloned()
    }
}

fn example_config(root: &Path) -> AgentConfig {
    let mut config: AgentConfig =
        toml::from_str(include_str!("../../../thoth-agent.example.toml")).unwrap();
    config.state_dir = root.join("state");
    config.socket_path = root.join("agent.sock");
    config.users_root = Some(root.join("home"));
    config
}

/// A users root (`home/`) in a temp dir, and a guardian over it.
struct Laptop {
    dir: tempfile::TempDir,
    fake: Arc<Fake>,
}

impl Laptop {
    fn new(clients: Option<&[&str]>) -> Laptop {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let mut config = example_config(dir.path());
        config.clients = clients.map(|c| c.iter().map(|s| (*s).to_owned()).collect());
        Laptop {
            fake: Arc::new(Fake {
                config,
                policy: Mutex::default(),
                events: Mutex::default(),
                statuses: Mutex::default(),
            }),
            dir,
        }
    }

    fn guardian(&self) -> Guardian<Fake> {
        let extra = extra_flags(&*self.fake);
        Guardian::new(Arc::clone(&self.fake), THOTH.into(), extra, None)
    }

    fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user)
    }

    /// Writes `user`'s file at `rel` as editors do (a new file renamed over it).
    fn put(&self, user: &str, rel: &str, text: &str) -> PathBuf {
        let path = self.home(user).join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("editor-tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Runs the guardian's event work until nothing is left (throttled files included).
fn settle(g: &mut Guardian<Fake>) {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        g.rediscover_pending();
        g.process_dirty();
        if g.next_wake().is_none() {
            return;
        }
        assert!(Instant::now() < until, "the guardian does not settle");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const DESKTOP: &str = ".config/Claude/claude_desktop_config.json";
const CURSOR: &str = ".cursor/mcp.json";
const VSCODE: &str = ".config/Code/User/mcp.json";
const WINDSURF: &str = ".codeium/windsurf/mcp_config.json";
const CODE: &str = ".claude.json";

const PLAIN: &str = "{\n  \"mcpServers\": {\n    \"files\": {\"command\": \"npx\", \"args\": [\"-y\", \"server-filesystem\", \"/srv\"]}\n  }\n}\n";
const VSCODE_TEXT: &str = "// my servers\n{\n  \"servers\": {\n    /* the files */\n    \"files\": {\"type\": \"stdio\", \"command\": \"npx\", \"args\": [\"-y\", \"server-filesystem\"],},\n  },\n}\n";
const CODE_TEXT: &str = "{\n  \"numStartups\": 3,\n  \"mcpServers\": {\n    \"files\": {\"type\": \"stdio\", \"command\": \"npx\", \"args\": [\"server-filesystem\"]}\n  },\n  \"tipsHistory\": {}\n}\n";

/// Whether `args` of the server `name` under `table` of the JSON(C) text run this thoth with
/// `--client client`.
fn wrapped_for(text: &str, table: &[&str], name: &str, client: &str) -> bool {
    let v = thoth_hosts::format::json::parse(text, true).unwrap();
    let mut e = &v;
    for k in table {
        e = &e[*k];
    }
    let e = &e[name];
    let args: Vec<&str> = e["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    e["command"] == THOTH && args.windows(2).any(|w| w == ["--client", client])
}
