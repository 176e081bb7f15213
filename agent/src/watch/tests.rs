//! The guardian over a temporary users root with several users and hosts, driven by hand (no
//! watcher: events are fed to it as the watch would).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use thoth_endpoint::config::AgentConfig;
use thoth_endpoint::status::ConfigStatus;
use thoth_hosts::host::{HostFilter, by_id};
use thoth_proto::EventType;

use super::guardian::{Guardian, REDISCOVER_EVERY, user_of};
use super::{ConfigReport, config_filter, extra_flags, managed};
use crate::daemon::Shared;

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
        toml::from_str(include_str!("../../thoth-agent.example.toml")).unwrap();
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

#[test]
fn every_host_of_every_user_is_wrapped_and_each_event_names_its_host() {
    let l = Laptop::new(None);
    let files = [
        ("ann", DESKTOP, PLAIN, "claude-desktop", "Claude Desktop"),
        ("ann", CURSOR, PLAIN, "cursor", "Cursor"),
        ("ann", VSCODE, VSCODE_TEXT, "vscode", "VS Code"),
        ("ann", CODE, CODE_TEXT, "claude-code", "Claude Code"),
        ("bob", CURSOR, PLAIN, "cursor", "Cursor"),
        ("bob", WINDSURF, PLAIN, "windsurf", "Windsurf"),
    ];
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(u, rel, text, _, _)| l.put(u, rel, text))
        .collect();
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let wrapped = l.fake.events("CONFIG_WRAPPED");
    assert_eq!(wrapped.len(), files.len(), "{wrapped:#?}");
    for ((_, _, _, id, name), path) in files.iter().zip(&paths) {
        let text = read(path);
        let table: &[&str] = if *id == "vscode" {
            &["servers"]
        } else {
            &["mcpServers"]
        };
        assert!(wrapped_for(&text, table, "files", id), "{id}: {text}");
        let want = format!("{name}: {}: wrapped files (agent start)", path.display());
        assert!(
            wrapped.contains(&((*id).to_owned(), want.clone())),
            "{want} in {wrapped:#?}"
        );
        let st = l.fake.status(path).unwrap();
        assert_eq!((st.client.as_str(), st.state.as_str()), (*id, "governed"));
        assert_eq!(st.pickup, by_id(id).unwrap().pickup());
        assert_eq!(
            st.restart_needed,
            *id == "claude-desktop",
            "{id}: only Claude Desktop needs its restart"
        );
    }
    // JSONC: the comments and trailing commas are kept.
    let vscode = read(&paths[2]);
    assert!(
        vscode.starts_with("// my servers\n") && vscode.contains("/* the files */"),
        "{vscode}"
    );
    // Claude Code's other keys are kept.
    assert!(read(&paths[3]).contains("\"numStartups\": 3"));
    assert!(l.fake.events("CONFIG_DRIFT").is_empty());
    assert!(l.fake.events("MCP_SERVER_UNGOVERNED").is_empty());

    // A second full pass (a policy change) finds nothing to do.
    let before = l.fake.all_events();
    g.full_pass("policy changed", false);
    assert_eq!(
        l.fake.all_events(),
        before,
        "wrapping twice is wrapping once"
    );
}

#[test]
fn drift_is_healed_on_each_host_and_the_event_names_the_host() {
    let l = Laptop::new(None);
    let cursor = l.put("ann", CURSOR, PLAIN);
    let vscode = l.put("bob", VSCODE, VSCODE_TEXT);
    let desktop = l.put("bob", DESKTOP, PLAIN);
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let healed: Vec<(PathBuf, String)> = [&cursor, &vscode, &desktop]
        .iter()
        .map(|p| ((*p).clone(), read(p)))
        .collect();
    // Each file gets its unwrapped entry back, as a user or the client's settings page would.
    l.put("ann", CURSOR, PLAIN);
    l.put("bob", VSCODE, VSCODE_TEXT);
    l.put("bob", DESKTOP, PLAIN);
    for p in [&cursor, &vscode, &desktop] {
        g.on_event(p);
    }
    settle(&mut g);
    for (p, text) in &healed {
        assert_eq!(&read(p), text, "{} healed to the same text", p.display());
    }
    let drift = l.fake.events("CONFIG_DRIFT");
    assert_eq!(drift.len(), 3, "{drift:#?}");
    for (id, name, p) in [
        ("cursor", "Cursor", &cursor),
        ("vscode", "VS Code", &vscode),
        ("claude-desktop", "Claude Desktop", &desktop),
    ] {
        let want = format!(
            "{name}: {}: wrapper removed: files; re-wrapped",
            p.display()
        );
        assert!(
            drift.iter().any(|(c, d)| c == id && d.starts_with(&want)),
            "{want} in {drift:#?}"
        );
    }
    assert_eq!(
        l.fake.events("CONFIG_WRAPPED").len(),
        3,
        "drift, not new wraps"
    );
}

#[test]
fn claude_codes_own_rewrites_cause_no_write_and_no_event_and_its_stale_write_is_drift_once() {
    let l = Laptop::new(None);
    let path = l.put("ann", CODE, CODE_TEXT);
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let wrapped = read(&path);
    assert!(wrapped_for(
        &wrapped,
        &["mcpServers"],
        "files",
        "claude-code"
    ));
    let events = l.fake.all_events();
    // Claude Code saves its user state many times: the servers are as the agent left them.
    for n in 4..20 {
        let state = wrapped.replace("\"numStartups\": 3", &format!("\"numStartups\": {n}"));
        l.put("ann", CODE, &state);
        g.on_event(&path);
        g.on_event(&l.home("ann").join(".claude.json.lock"));
        settle(&mut g);
        assert_eq!(
            read(&path),
            state,
            "the agent wrote over Claude Code's save"
        );
    }
    assert_eq!(
        l.fake.all_events(),
        events,
        "no event for Claude Code's own saves"
    );
    // A stale save (from before the wrap) drops the wrapper: drift, re-wrapped once.
    let stale = CODE_TEXT.replace("\"numStartups\": 3", "\"numStartups\": 20");
    l.put("ann", CODE, &stale);
    g.on_event(&path);
    settle(&mut g);
    let healed = read(&path);
    assert!(healed.contains("\"numStartups\": 20"), "{healed}");
    assert!(wrapped_for(
        &healed,
        &["mcpServers"],
        "files",
        "claude-code"
    ));
    let drift = l.fake.events("CONFIG_DRIFT");
    assert_eq!(drift.len(), 1, "{drift:#?}");
    assert_eq!(drift[0].0, "claude-code");
    assert!(drift[0].1.starts_with("Claude Code: "), "{drift:?}");
    // The event the agent's own write causes changes nothing.
    g.on_event(&path);
    settle(&mut g);
    assert_eq!(read(&path), healed);
    assert_eq!(l.fake.events("CONFIG_DRIFT").len(), 1, "no loop");
}

#[test]
fn an_ungoverned_server_is_reported_once_per_reason() {
    let l = Laptop::new(None);
    let text = |bad: &str| {
        format!(
            "{{\"mcpServers\": {{\"linear\": {{\"url\": \"https://mcp.linear.app/sse\"}}, \"files\": {{\"command\": \"npx\", \"args\": [\"x\"]}}, \"odd\": {{\"command\": \"npx\", \"args\": {bad}}}}}}}"
        )
    };
    let path = l.put("ann", CURSOR, &text("\"x\""));
    let ann = user_of(&l.home("ann"));
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 2, "{ung:#?}");
    assert!(ung.iter().all(|(c, _)| c == "cursor"), "{ung:?}");
    assert!(
        ung.iter().any(|(_, d)| d.starts_with(&format!(
            "Cursor: {ann}: linear (url https://mcp.linear.app/sse) is not governed: a remote server"
        ))),
        "{ung:#?}"
    );
    assert!(
        ung.iter().any(|(_, d)| d.starts_with(&format!(
            "Cursor: {ann}: odd (stdio) is not governed: the entry cannot be read"
        ))),
        "{ung:#?}"
    );
    assert_eq!(l.fake.status(&path).unwrap().state, "partly governed");
    // Not again while it stays so: a full pass, the file rewritten with the same servers.
    g.full_pass("policy changed", false);
    l.put("ann", CURSOR, &read(&path));
    g.on_event(&path);
    settle(&mut g);
    assert_eq!(l.fake.events("MCP_SERVER_UNGOVERNED").len(), 2);
    // Again when the reason changes.
    l.put("ann", CURSOR, &text("[1]"));
    g.on_event(&path);
    settle(&mut g);
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 3, "{ung:#?}");
    assert!(ung[2].1.contains("odd (stdio)"), "{ung:#?}");
}

#[test]
fn hosts_outside_the_config_and_the_policy_are_not_touched() {
    let l = Laptop::new(Some(&["cursor", "claude-desktop"]));
    *l.fake.policy.lock().unwrap() = (
        Some(1),
        Some(vec!["claude-desktop".into(), "vscode".into()]),
    );
    let desktop = l.put("ann", DESKTOP, PLAIN);
    let cursor = l.put("ann", CURSOR, PLAIN);
    let vscode = l.put("ann", VSCODE, VSCODE_TEXT);
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    assert!(wrapped_for(
        &read(&desktop),
        &["mcpServers"],
        "files",
        "claude-desktop"
    ));
    assert_eq!(read(&cursor), PLAIN, "cursor: not in the policy");
    assert_eq!(
        read(&vscode),
        VSCODE_TEXT,
        "vscode: not in the agent's settings"
    );
    assert!(l.fake.status(&cursor).is_none() && l.fake.status(&vscode).is_none());
    let events = l.fake.events("CONFIG_WRAPPED");
    assert_eq!(events.len(), 1, "{events:#?}");
    // An event on an unmanaged host's file changes nothing.
    g.on_event(&cursor);
    settle(&mut g);
    assert_eq!(read(&cursor), PLAIN);
    // The policy lets every client be managed: the next full pass wraps Cursor too.
    *l.fake.policy.lock().unwrap() = (Some(2), None);
    g.full_pass("policy changed", false);
    assert!(wrapped_for(
        &read(&cursor),
        &["mcpServers"],
        "files",
        "cursor"
    ));
    assert_eq!(
        read(&vscode),
        VSCODE_TEXT,
        "still not in the agent's settings"
    );
    // The policy narrows again: Cursor's file is left as it is, and no longer reported.
    *l.fake.policy.lock().unwrap() = (Some(3), Some(vec!["claude-desktop".into()]));
    let wrapped = read(&cursor);
    g.full_pass("policy changed", false);
    assert_eq!(read(&cursor), wrapped);
    assert!(l.fake.status(&cursor).is_none());
    assert!(l.fake.status(&desktop).is_some());
}

#[test]
fn new_homes_are_found_busy_homes_ignored_and_rediscovery_rate_limited() {
    let l = Laptop::new(None);
    l.put("ann", CODE, CODE_TEXT);
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    // A busy home: a file that is no client's changes: ignored at once.
    let noise = l.home("ann").join("notes.txt");
    std::fs::write(&noise, "x").unwrap();
    g.on_event(&noise);
    assert!(g.next_wake().is_none(), "nothing to do for another file");
    // A new home with a Cursor config: found through the users root's event.
    let carol = l.put("carol", CURSOR, PLAIN);
    g.on_event(&l.home("carol"));
    settle(&mut g);
    assert!(wrapped_for(
        &read(&carol),
        &["mcpServers"],
        "files",
        "cursor"
    ));
    // A new directory in a home (a client's first start) is rediscovered, not at once after
    // the last rediscovery.
    let dave = l.put("ann", ".codeium/windsurf/mcp_config.json", PLAIN);
    g.on_event(&l.home("ann").join(".codeium"));
    g.rediscover_pending();
    assert!(
        g.next_wake().is_some(),
        "rate-limited: {REDISCOVER_EVERY:?}"
    );
    assert_eq!(read(&dave), PLAIN, "not yet");
    settle(&mut g);
    assert!(wrapped_for(
        &read(&dave),
        &["mcpServers"],
        "files",
        "windsurf"
    ));
}

#[test]
fn a_wrapper_running_another_thoth_is_drift_on_first_sight() {
    // Edited while the agent was stopped: the agent's first look at the file.
    let l = Laptop::new(None);
    let state = l.dir.path().join("state").display().to_string();
    let sock = l.dir.path().join("agent.sock").display().to_string();
    let path = l.put(
        "ann",
        DESKTOP,
        &format!(
            r#"{{"mcpServers": {{"files": {{"command": "/home/ann/bin/thoth", "args": ["run", "--server", "files", "--client", "claude-desktop", "--agent-socket", "{sock}", "--state-dir", "{state}", "--", "npx", "server-filesystem", "/home/ann"]}}}}}}"#
        ),
    );
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let after: Value = serde_json::from_str(&read(&path)).unwrap();
    assert_eq!(after["mcpServers"]["files"]["command"], THOTH);
    let notes: Vec<String> = l
        .fake
        .events("CONFIG_DRIFT")
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert!(
        notes
            .join("\n")
            .contains("command /home/ann/bin/thoth instead of /usr/local/bin/thoth"),
        "CONFIG_DRIFT, not a quiet path update: {notes:?}"
    );
    assert!(l.fake.events("CONFIG_WRAPPED").is_empty());
    assert_eq!(l.fake.status(&path).unwrap().state, "governed");
}

#[test]
fn an_opt_out_wrapper_is_drift_re_wrapped_and_not_counted_as_governed() {
    let l = Laptop::new(None);
    let state = l.dir.path().join("state").display().to_string();
    let sock = l.dir.path().join("agent.sock").display().to_string();
    let canonical = format!(
        r#"["run", "--server", "files", "--client", "claude-desktop", "--agent-socket", "{sock}", "--state-dir", "{state}", "--", "npx", "server-filesystem", "/home/ann"]"#
    );
    let path = l.put(
        "ann",
        DESKTOP,
        &format!(r#"{{"mcpServers": {{"files": {{"command": "{THOTH}", "args": {canonical}}}}}}}"#),
    );
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    assert_eq!(l.fake.all_events(), 0, "already canonical: nothing to do");
    assert_eq!(l.fake.status(&path).unwrap().state, "governed");
    // The user keeps `thoth run` but points it at their own policy, socket and state.
    let opted_out = r#"{"mcpServers": {"files": {"command": "/usr/local/bin/thoth", "args": ["run", "--server", "files", "--client", "claude-desktop", "--policy", "/home/ann/allow.yaml", "--agent-socket", "/home/ann/nosock", "--state-dir", "/home/ann/st", "--", "npx", "server-filesystem", "/home/ann"], "env": {"LD_PRELOAD": "/usr/lib/faketime/libfaketime.so.1", "FAKETIME": "+1d"}}}}"#;
    l.put("ann", DESKTOP, opted_out);
    assert!(g.process(&path, "the file changed"), "re-wrapped");
    let after: Value = serde_json::from_str(&read(&path)).unwrap();
    let want: Value = serde_json::from_str(&canonical).unwrap();
    assert_eq!(after["mcpServers"]["files"]["args"], want);
    let notes = l
        .fake
        .events("CONFIG_DRIFT")
        .into_iter()
        .map(|(_, d)| d)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        notes.contains("added --policy /home/ann/allow.yaml"),
        "CONFIG_DRIFT says what was added: {notes}"
    );
    assert!(
        notes.contains("LD_PRELOAD"),
        "the loader variable is reported: {notes}"
    );
    // env is the user's (only command and args are ever changed), so the entry stays
    // "partly governed" until it is removed; the proxy denies every call meanwhile.
    assert_eq!(l.fake.status(&path).unwrap().state, "partly governed");
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 1, "{ung:?}");
    assert!(ung[0].1.contains("env sets LD_PRELOAD"), "{ung:?}");
    let reported = l.fake.all_events();
    assert!(!g.process(&path, "periodic check"));
    assert_eq!(l.fake.all_events(), reported, "reported once");
}

#[test]
fn the_clients_setting_is_checked_and_meets_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = example_config(dir.path());
    assert_eq!(config_filter(&config).unwrap(), HostFilter::all());
    config.clients = Some(vec!["cursor".into(), "zed".into()]);
    let e = config_filter(&config).unwrap_err();
    assert!(
        e.contains("\"zed\"") && e.contains("claude-desktop, claude-extension, claude-code"),
        "{e}"
    );
    assert!(
        !managed(&config, None).allows("cursor"),
        "an invalid setting manages nothing"
    );
    config.clients = Some(vec!["cursor".into(), "codex".into()]);
    let both = managed(&config, Some(&["codex".into(), "vscode".into()]));
    assert!(both.allows("codex") && !both.allows("cursor") && !both.allows("vscode"));
    config.clients = None;
    let policy = managed(&config, Some(&["vscode".into()]));
    assert!(policy.allows("vscode") && !policy.allows("claude-desktop"));
}

#[test]
fn the_policy_knows_every_host_the_agent_knows() {
    let hosts: Vec<&str> = thoth_hosts::host::all().iter().map(|h| h.id()).collect();
    assert_eq!(hosts, thoth_policy::KNOWN_CLIENTS);
}

#[test]
fn agent_events_about_a_client_carry_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let sh = Shared::new(example_config(dir.path())).unwrap();
    let e = sh.agent_event_about(
        EventType::McpServerUngoverned,
        Some("cursor"),
        Value::String("Cursor: ann: x".into()),
    );
    assert_eq!(e.client_name.as_deref(), Some("cursor"));
    let text = serde_json::to_string(&e).unwrap();
    assert!(
        text.contains("\"clientName\":\"cursor\"") && text.contains("MCP_SERVER_UNGOVERNED"),
        "{text}"
    );
    assert_eq!(
        sh.agent_event(EventType::AgentStarted, Value::Null)
            .client_name,
        None
    );
}

#[test]
fn names_and_targets_from_users_files_are_escaped_in_events() {
    let l = Laptop::new(None);
    l.put(
        "ann",
        CURSOR,
        r#"{"mcpServers": {"evil\u001b[2J\nCONFIG_OK": {"url": "https://x/\u0007"}}}"#,
    );
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 1, "{ung:?}");
    let d = &ung[0].1;
    assert!(!d.chars().any(char::is_control), "{d:?}");
    let ann = user_of(&l.home("ann"));
    assert!(
        d.starts_with(&format!(
            "Cursor: {ann}: evil\\u{{1b}}[2J\\nCONFIG_OK (url https://x/\\u{{7}})"
        )),
        "{d}"
    );
}

#[test]
fn a_flood_of_ungoverned_servers_is_reported_in_bounded_passes() {
    let l = Laptop::new(None);
    let servers: Vec<String> = (0..250)
        .map(|i| format!("\"r{i:03}\": {{\"url\": \"https://x/{i}\"}}"))
        .collect();
    l.put(
        "ann",
        CURSOR,
        &format!("{{\"mcpServers\": {{{}}}}}", servers.join(", ")),
    );
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let count = || l.fake.events("MCP_SERVER_UNGOVERNED").len();
    assert_eq!(count(), 100, "at most 100 in one pass");
    g.full_pass("periodic check", true);
    assert_eq!(count(), 200, "the periodic check reports more");
    g.full_pass("periodic check", true);
    assert_eq!(count(), 250);
    g.full_pass("periodic check", true);
    g.full_pass("policy changed", false);
    assert_eq!(count(), 250, "each once");
    let mut names: Vec<String> = l
        .fake
        .events("MCP_SERVER_UNGOVERNED")
        .into_iter()
        .map(|(_, d)| d.split(' ').nth(2).unwrap().to_owned())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 250);
}

/// Gives `path` and everything under it (links themselves, not followed) to `uid`.
#[cfg(unix)]
fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    let is_dir = std::fs::symlink_metadata(path).unwrap().is_dir();
    if is_dir {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// A uid with no passwd entry (from `from` on).
#[cfg(unix)]
fn unnamed_uid(from: u32) -> u32 {
    (from..from + 10_000)
        .find(|u| crate::daemon::local::login_name(*u).is_none())
        .unwrap()
}

/// What `uid` (named `user`) would see of the agent's status holding the guardian's statuses
/// and events, as JSON.
#[cfg(unix)]
fn seen_by(l: &Laptop, uid: u32, user: &str) -> String {
    let mut st = thoth_endpoint::status::Status {
        configs: l.fake.statuses.lock().unwrap().clone(),
        ..Default::default()
    };
    for (t, _, d) in l.fake.events.lock().unwrap().iter() {
        st.note(t, d.clone());
    }
    serde_json::to_string(&st.only_for(uid, user)).unwrap()
}

const BOB_TEXT: &str = r#"{"mcpServers": {"bobs-tool": {"command": "/home/bob/secret-tool", "args": ["--token", "b0b-secret"]}, "bobs-remote": {"url": "https://b0b-secret@mcp.example/sse"}}}"#;

/// Review F1: the guardian listed `host.files(home)` without discovery's owner filter, so a
/// user whose `~/.cursor` links to another user's `.cursor` made the root agent read that
/// user's servers (secrets in args and URLs) into their own status and events. Now such a file
/// is read only as the home's owner: listed, refused with why, never read for them — also a
/// link swapped in after discovery.
#[cfg(unix)]
#[test]
fn another_users_file_reached_through_a_link_is_not_read_for_this_user() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: ownership only matters to the root agent");
        return;
    }
    let l = Laptop::new(None);
    let ann_uid = unnamed_uid(41_001);
    let bob_uid = unnamed_uid(ann_uid + 1);
    let bob_file = l.put("bob", CURSOR, BOB_TEXT);
    chown_tree(&l.home("bob"), bob_uid);
    std::fs::create_dir_all(l.home("ann")).unwrap();
    // Ann's ~/.cursor is a link to Bob's.
    std::os::unix::fs::symlink(l.home("bob").join(".cursor"), l.home("ann").join(".cursor"))
        .unwrap();
    chown_tree(&l.home("ann"), ann_uid);
    let ann = user_of(&l.home("ann"));
    assert_eq!(ann, "ann", "no passwd entry: the home's name");
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    // Ann's path is seen (listed, refused with why) but nothing of Bob's is read for her.
    let leaked = |g: &Guardian<Fake>| {
        let events = l.fake.events.lock().unwrap().clone();
        let secret = |d: &str| d.contains("b0b") || d.contains("bobs-");
        let mut bad: Vec<String> = events
            .iter()
            .filter(|(_, _, d)| {
                (d.contains(&l.home("ann").display().to_string())
                    || d.starts_with(&format!("Cursor: {ann}: ")))
                    && secret(d)
            })
            .map(|(_, _, d)| d.clone())
            .collect();
        bad.extend(
            g.statuses
                .iter()
                .filter(|(p, _)| p.starts_with(l.home("ann")))
                .filter(|(_, st)| st.state != "refused" || st.error.as_deref().is_some_and(secret))
                .map(|(p, st)| format!("{}: {st:?}", p.display())),
        );
        let seen = seen_by(&l, ann_uid, &ann);
        if seen.contains("b0b") || seen.contains("bobs-") {
            bad.push(seen);
        }
        bad
    };
    assert_eq!(leaked(&g), Vec::<String>::new());
    // Bob's file is governed as his, and his remote server reported as his.
    assert_eq!(l.fake.status(&bob_file).unwrap().state, "governed");
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert!(
        ung.len() == 1 && ung[0].1.starts_with("Cursor: bob: bobs-remote"),
        "{ung:?}"
    );
    assert!(seen_by(&l, bob_uid, "bob").contains("bobs-remote"));

    // Ann's own file, found; then her ~/.cursor is swapped for the link before the guardian
    // reads it again: refused when opened, nothing of Bob's read into Ann's status.
    std::fs::remove_file(l.home("ann").join(".cursor")).unwrap();
    let own = l.put("ann", CURSOR, PLAIN);
    chown_tree(&l.home("ann"), ann_uid);
    g.full_pass("periodic check", false);
    assert_eq!(l.fake.status(&own).unwrap().state, "governed");
    let bobs = read(&bob_file);
    std::fs::rename(
        l.home("ann").join(".cursor"),
        l.home("ann").join(".cursor-old"),
    )
    .unwrap();
    std::os::unix::fs::symlink(l.home("bob").join(".cursor"), l.home("ann").join(".cursor"))
        .unwrap();
    chown_tree(&l.home("ann"), ann_uid);
    assert!(!g.process(&own, "the file changed"));
    assert_eq!(
        read(&bob_file),
        bobs,
        "Bob's file untouched through Ann's path"
    );
    let st = l.fake.status(&own).unwrap();
    assert_eq!(st.state, "refused", "{st:?}");
    assert!(
        st.error
            .as_deref()
            .is_some_and(|e| e.contains("not by the home's owner") && !e.contains("b0b")),
        "{st:?}"
    );
    let seen = seen_by(&l, ann_uid, &ann);
    assert!(!seen.contains("b0b") && !seen.contains("bobs-"), "{seen}");
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 1, "{ung:?}");
}

/// Review F7: events named a home's user by the home's directory name, while a user's status
/// is filtered by their login name: a home not named after its login (`/Users/Ann.Smith`, or
/// Bob's home named `ann`) showed one user's MCP_SERVER_UNGOVERNED details to another. Now the
/// user is the login name of the home's owner (the directory's name only for a uid with no
/// passwd entry).
#[cfg(unix)]
#[test]
fn events_name_the_homes_owner_by_login_not_the_homes_directory_name() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: homes cannot be given to other users");
        return;
    }
    let (login_uid, login) = (1..1000)
        .chain([65_534])
        .find_map(|u| {
            crate::daemon::local::login_name(u)
                .filter(|n| n != "ann")
                .map(|n| (u, n))
        })
        .expect("a uid with a passwd entry");
    let unnamed = unnamed_uid(42_001);
    let other = unnamed_uid(unnamed + 1);
    let l = Laptop::new(None);
    // The login user's home is named "ann"; Carol.Smith's uid has no passwd entry.
    let text = |who: &str| {
        format!(r#"{{"mcpServers": {{"{who}-remote": {{"url": "https://{who}-secret@x/sse"}}}}}}"#)
    };
    let p1 = l.put("ann", CURSOR, &text("theirs"));
    let p2 = l.put("Carol.Smith", CURSOR, &text("carols"));
    chown_tree(&l.home("ann"), login_uid);
    chown_tree(&l.home("Carol.Smith"), unnamed);
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    assert_eq!(l.fake.status(&p1).unwrap().state, "governed");
    assert_eq!(l.fake.status(&p2).unwrap().state, "governed");
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 2, "{ung:?}");
    assert!(
        ung.iter()
            .any(|(_, d)| d.starts_with(&format!("Cursor: {login}: theirs-remote "))),
        "{ung:?}"
    );
    assert!(
        ung.iter()
            .any(|(_, d)| d.starts_with("Cursor: Carol.Smith: carols-remote ")),
        "{ung:?}"
    );
    // A user logged in as "ann" does not see the servers of the home named ann; its owner does.
    let seen = seen_by(&l, other, "ann");
    assert!(!seen.contains("theirs-"), "{seen}");
    assert!(seen_by(&l, login_uid, &login).contains("theirs-remote"));
    // The heartbeat's inventory names the same user.
    let inv = crate::daemon::inventory::mcp(
        l.fake.config.users_root.as_deref(),
        THOTH,
        &[],
        &HostFilter::all(),
        crate::daemon::inventory::MCP_BUDGET,
    );
    let users: Vec<(&str, &str)> = inv
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.user.as_str()))
        .collect();
    assert!(
        users.contains(&("theirs-remote", login.as_str())),
        "{users:?}"
    );
    assert!(
        users.contains(&("carols-remote", "Carol.Smith")),
        "{users:?}"
    );
}

/// Review F2: a lock kept fresh by its user (`~/.claude.json.lock` touched every second) made
/// every rewrite wait and end raced, five times a pass: the file stayed unwrapped for good and
/// the guardian's thread stalled ~10 s a pass for every user. Now a pass over one file takes
/// under a second, the file's status says it is locked, other users' drift is healed
/// meanwhile, and past the grace the file is rewritten without the lock (CONFIG_DRIFT says so).
#[test]
fn a_lock_held_for_good_stalls_nothing_and_is_overridden_after_the_grace() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let l = Laptop::new(None);
    let code = l.put("ann", CODE, CODE_TEXT);
    let lock = l.home("ann").join(".claude.json.lock");
    std::fs::create_dir(&lock).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let toucher = {
        let (stop, lock) = (Arc::clone(&stop), lock.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::File::open(&lock)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let cursor = l.put("bob", CURSOR, PLAIN);
    let mut g = l.guardian();
    let grace = Duration::from_secs(3);
    g.lock_grace = grace;
    g.locked_after = Duration::ZERO;
    let t = Instant::now();
    g.full_pass("agent start", false);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let held_from = t;
    assert_eq!(read(&code), CODE_TEXT, "the lock is honoured at first");
    let st = l.fake.status(&code).unwrap();
    assert_eq!(st.state, "locked", "{st:?}");
    assert!(
        st.error
            .as_deref()
            .is_some_and(|e| e.contains(".claude.json.lock") && e.contains("held")),
        "{st:?}"
    );
    assert!(wrapped_for(
        &read(&cursor),
        &["mcpServers"],
        "files",
        "cursor"
    ));
    // The guardian runs as its thread does; Bob's file drifts twice meanwhile.
    let mut drifted: Option<Instant> = None;
    let mut healed = Vec::new();
    let mut wrapped_at = None;
    while held_from.elapsed() < grace + Duration::from_secs(5) {
        let next_drift = Duration::from_millis(1000 + 1500 * healed.len() as u64);
        if drifted.is_none() && healed.len() < 2 && held_from.elapsed() > next_drift {
            l.put("bob", CURSOR, PLAIN);
            g.on_event(&cursor);
            drifted = Some(Instant::now());
        }
        let pass = Instant::now();
        g.rediscover_pending();
        g.process_dirty();
        assert!(
            pass.elapsed() < Duration::from_millis(1100),
            "a pass took {:?}",
            pass.elapsed()
        );
        if let Some(at) = drifted
            && wrapped_for(&read(&cursor), &["mcpServers"], "files", "cursor")
        {
            healed.push(at.elapsed());
            drifted = None;
        }
        if wrapped_at.is_none()
            && wrapped_for(&read(&code), &["mcpServers"], "files", "claude-code")
        {
            wrapped_at = Some(held_from.elapsed());
        }
        if wrapped_at.is_some() && healed.len() == 2 {
            break;
        }
        let wait = g
            .next_wake()
            .map_or(Duration::from_millis(250), |w| {
                w.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(250));
        std::thread::sleep(wait.max(Duration::from_millis(10)));
    }
    stop.store(true, Ordering::Relaxed);
    toucher.join().unwrap();
    assert_eq!(
        healed.len(),
        2,
        "Bob's drift healed while Ann's lock was held"
    );
    assert!(
        healed.iter().all(|d| *d < Duration::from_millis(1500)),
        "{healed:?}"
    );
    let at = wrapped_at.expect("wrapped without the lock after the grace");
    assert!(at >= grace, "not before the grace: {at:?}");
    let text = read(&code);
    assert!(
        text.contains("\"numStartups\": 3") && text.contains("tipsHistory"),
        "{text}"
    );
    assert!(lock.is_dir(), "the client's lock is left to it");
    let drift = l.fake.events("CONFIG_DRIFT");
    assert!(
        drift.iter().any(|(c, d)| c == "claude-code"
            && d.contains(".claude.json.lock was held for")
            && d.contains("rewritten without the lock")),
        "{drift:#?}"
    );
    assert_eq!(l.fake.status(&code).unwrap().state, "governed");
}

/// Review: the lock's override clock restarted on any error that was not a race, so a user
/// holding `~/.claude.json.lock` and making the file invalid for a moment every so often kept it
/// unwrapped for ever. The clock now runs until the file is brought to the wrapped state.
#[test]
fn making_the_file_invalid_for_a_moment_does_not_restart_the_lock_override() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let l = Laptop::new(None);
    let code = l.put("ann", CODE, CODE_TEXT);
    let lock = l.home("ann").join(".claude.json.lock");
    std::fs::create_dir(&lock).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let toucher = {
        let (stop, lock) = (Arc::clone(&stop), lock.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::File::open(&lock)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let mut g = l.guardian();
    let grace = Duration::from_secs(3);
    g.lock_grace = grace;
    let t = Instant::now();
    g.full_pass("agent start", false);
    let mut wrapped_at = None;
    let (mut broken, mut restored) = (false, false);
    while t.elapsed() < grace * 3 && wrapped_at.is_none() {
        // Invalid for a while (long enough for a retry to see it), then unwrapped again.
        if !broken && t.elapsed() > Duration::from_millis(1000) {
            l.put("ann", CODE, "{ not json");
            g.on_event(&code);
            broken = true;
        }
        if broken && !restored && t.elapsed() > Duration::from_millis(2300) {
            assert!(
                !l.fake.events("CONFIG_INVALID").is_empty(),
                "the invalid moment was seen"
            );
            l.put("ann", CODE, CODE_TEXT);
            g.on_event(&code);
            restored = true;
        }
        g.rediscover_pending();
        g.process_dirty();
        if restored && wrapped_for(&read(&code), &["mcpServers"], "files", "claude-code") {
            wrapped_at = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    toucher.join().unwrap();
    let at = wrapped_at.expect("never wrapped: the override clock was restarted");
    assert!(
        at < grace + Duration::from_millis(1500),
        "wrapped only after {at:?} (grace {grace:?})"
    );
}
