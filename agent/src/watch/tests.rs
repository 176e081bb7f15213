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

use super::guardian::{Guardian, REDISCOVER_EVERY};
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
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 2, "{ung:#?}");
    assert!(ung.iter().all(|(c, _)| c == "cursor"), "{ung:?}");
    assert!(
        ung.iter().any(|(_, d)| d.starts_with(
            "Cursor: ann: linear (url https://mcp.linear.app/sse) is not governed: a remote server"
        )),
        "{ung:#?}"
    );
    assert!(
        ung.iter().any(|(_, d)| d
            .starts_with("Cursor: ann: odd (stdio) is not governed: the entry cannot be read")),
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
    assert!(
        d.starts_with("Cursor: ann: evil\\u{1b}[2J\\nCONFIG_OK (url https://x/\\u{7})"),
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
