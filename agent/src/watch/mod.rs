//! The agent's config guardian: wraps every user's Claude Desktop config on start and on each
//! policy change, watches the config directories (editors and Claude Desktop replace the file
//! rather than write it in place, so directories are watched, not files), re-wraps within a
//! second of a change (CONFIG_DRIFT, saying what changed), never touches a file that does not
//! parse (CONFIG_INVALID), and finds new homes by rescanning. It cannot loop on its own writes:
//! wrapping is idempotent, so the event its write causes finds nothing to change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use serde_json::Value;

use thoth_endpoint::config::AgentConfig;
use thoth_endpoint::status::{ConfigStatus, now_rfc3339};
use thoth_hosts::clients::claude_desktop::{self as cd, ClaudeDesktop};
use thoth_hosts::file::{self, FileError};
use thoth_hosts::format::Op;
use thoth_hosts::host::{Host, Os};
use thoth_hosts::wrapper::{self, Entry};

fn is_wrapped(v: &Value) -> bool {
    Entry::from_json(v).is_wrapped()
}

/// What the guardian reads from and reports to the agent (the daemon's shared state implements
/// it): the guardian names nothing of the daemon.
pub trait ConfigReport: Send + Sync + 'static {
    /// The agent's settings.
    fn config(&self) -> &AgentConfig;
    /// The state of every config the guardian knows, for the agent's status.
    fn config_status(&self, configs: Vec<ConfigStatus>);
    /// An error that stops the guardian, for the agent's status.
    fn guardian_error(&self, message: String);
    /// Raises an agent event (CONFIG_WRAPPED, CONFIG_DRIFT, CONFIG_INVALID).
    fn raise(&self, event_type: thoth_proto::EventType, detail: String);
    /// The version of the policy in force, if any (a change means a full pass).
    fn policy_version(&self) -> Option<u64>;
}

/// What the guardian remembers about one file.
#[derive(Default)]
struct Known {
    /// The servers as last seen wrapped (name → entry).
    servers: Option<serde_json::Map<String, Value>>,
    /// The text of an invalid file already reported (report once per content).
    invalid_reported: Option<String>,
    /// Entries whose `env` sets loader variables, as last reported (report once per change).
    loader_reported: Vec<String>,
}

/// Describes how `now` differs from what the agent left.
fn describe_drift(
    before: &serde_json::Map<String, Value>,
    now: &serde_json::Map<String, Value>,
) -> String {
    let mut parts = Vec::new();
    let added: Vec<&str> = now
        .keys()
        .filter(|k| !before.contains_key(*k))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = before
        .keys()
        .filter(|k| !now.contains_key(*k))
        .map(String::as_str)
        .collect();
    let mut unwrapped = Vec::new();
    let mut edited = Vec::new();
    for (k, e) in now {
        if let Some(b) = before.get(k) {
            if b == e {
                continue;
            }
            if is_wrapped(b) && !is_wrapped(e) && e.get("command").is_some() {
                unwrapped.push(k.as_str());
            } else if b != e {
                edited.push(k.as_str());
            }
        }
    }
    if !added.is_empty() {
        parts.push(format!("server added: {}", added.join(", ")));
    }
    if !unwrapped.is_empty() {
        parts.push(format!("wrapper removed: {}", unwrapped.join(", ")));
    }
    if !edited.is_empty() {
        parts.push(format!("entry edited: {}", edited.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("server removed: {}", removed.join(", ")));
    }
    if parts.is_empty() {
        "the file was rewritten".into()
    } else {
        parts.join("; ")
    }
}

fn servers_of(text: &str) -> Option<serde_json::Map<String, Value>> {
    let v = thoth_hosts::format::json::parse(text, false).ok()?;
    v.get("mcpServers")?.as_object().cloned()
}

struct Guardian<R: ConfigReport> {
    sh: Arc<R>,
    op: Op,
    known: BTreeMap<PathBuf, Known>,
    statuses: BTreeMap<PathBuf, ConfigStatus>,
    watched: HashSet<PathBuf>,
    /// Each config as it was when last processed (device, inode, size, change time): the
    /// periodic check skips a file still exactly so. The change time cannot be set back by a
    /// user (any write or `utimes` moves it), so an edit is never skipped.
    processed: HashMap<PathBuf, Stamp>,
}

/// What identifies a config file's content without reading it (see `Guardian::processed`).
type Stamp = (u64, u64, u64, i64, i64);

#[cfg(unix)]
fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec()))
}

#[cfg(not(unix))]
fn stamp(_: &Path) -> Option<Stamp> {
    None
}

impl<R: ConfigReport> Guardian<R> {
    fn config_dirs(&self) -> Vec<PathBuf> {
        file::homes(self.sh.config().users_root.as_deref())
            .iter()
            .flat_map(|h| ClaudeDesktop.watch_dirs(h, Os::current()))
            .filter(|d| d.is_dir())
            .collect()
    }

    fn users_root(&self) -> PathBuf {
        self.sh.config().users_root.clone().unwrap_or_else(|| {
            PathBuf::from(if cfg!(target_os = "macos") {
                "/Users"
            } else {
                "/home"
            })
        })
    }

    /// Watches config directories not watched yet (new homes, newly installed Claude Desktop).
    fn watch_new(&mut self, watcher: &mut notify::RecommendedWatcher) {
        let root = self.users_root();
        if !self.watched.contains(&root)
            && root.is_dir()
            && watcher.watch(&root, RecursiveMode::NonRecursive).is_ok()
        {
            self.watched.insert(root);
        }
        for dir in self.config_dirs() {
            if self.watched.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "watching a Claude Desktop config directory");
                    self.watched.insert(dir);
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch: {e}"),
            }
        }
    }

    fn all_configs(&self) -> Vec<PathBuf> {
        file::homes(self.sh.config().users_root.as_deref())
            .iter()
            .flat_map(|h| ClaudeDesktop.files(h, Os::current()))
            .collect()
    }

    fn publish_status(&self) {
        let configs: Vec<ConfigStatus> = self.statuses.values().cloned().collect();
        self.sh.config_status(configs);
    }

    fn restart_claude(&self) {
        let Some(cmd) = self
            .sh
            .config()
            .claude_restart_command
            .clone()
            .filter(|c| !c.trim().is_empty())
        else {
            return;
        };
        match std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .status()
        {
            Ok(st) if st.success() => tracing::info!("ran claude_restart_command"),
            Ok(st) => tracing::warn!("claude_restart_command exited with {st}"),
            Err(e) => tracing::warn!("cannot run claude_restart_command: {e}"),
        }
    }

    /// Brings one file to the wrapped state; returns whether it wrote.
    fn process(&mut self, path: &Path, cause: &str) -> bool {
        self.processed.remove(path);
        for attempt in 0..5 {
            match self.try_process(path, cause) {
                Ok(wrote) => {
                    if let Some(st) = stamp(path) {
                        self.processed.insert(path.to_path_buf(), st);
                    }
                    return wrote;
                }
                Err(FileError::Raced { .. }) if attempt < 4 => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    return false;
                }
            }
        }
        false
    }

    fn try_process(&mut self, path: &Path, cause: &str) -> Result<bool, FileError> {
        if !path.is_file() {
            if self.statuses.remove(path).is_some() {
                self.known.remove(path);
                self.publish_status();
            }
            return Ok(false);
        }
        let result = file::rewrite_file(&ClaudeDesktop, path, &self.op, false);
        let (thoth, extra) = match &self.op {
            Op::Wrap { thoth, extra, .. } => (thoth.clone(), extra.clone()),
            _ => (String::new(), Vec::new()),
        };
        let known = self.known.entry(path.to_path_buf()).or_default();
        let status = self
            .statuses
            .entry(path.to_path_buf())
            .or_insert_with(|| ConfigStatus {
                path: path.display().to_string(),
                ..ConfigStatus::default()
            });
        // The status is published (status.json rewritten) only when it changed.
        let before = status.clone();
        match result {
            Ok(out) => {
                let servers = servers_of(&out.after).unwrap_or_default();
                let remote = servers
                    .values()
                    .filter(|e| e.get("command").is_none())
                    .count();
                let governed = servers
                    .iter()
                    .filter(|(name, e)| {
                        wrapper::governed(
                            name,
                            "claude-desktop",
                            &Entry::from_json(e),
                            &thoth,
                            &extra,
                        )
                        .is_ok()
                    })
                    .count();
                // An entry whose env makes the loader run other code in the proxy: the proxy
                // refuses to govern with it (every call denied); the admins hear of it here.
                let loaders: Vec<String> = servers
                    .iter()
                    .filter_map(|(name, e)| {
                        let vars = Entry::from_json(e).loader_variables();
                        (!vars.is_empty()).then(|| format!("{name} ({})", vars.join(", ")))
                    })
                    .collect();
                if loaders != known.loader_reported {
                    if !loaders.is_empty() {
                        self.sh.raise(
                            thoth_proto::EventType::ConfigDrift,
                            format!(
                                "{}: env sets dynamic loader variables for {}; thoth run refuses \
                                 to govern with them and denies every tool call of these servers",
                                path.display(),
                                loaders.join(", ")
                            ),
                        );
                    }
                    known.loader_reported = loaders;
                }
                status.servers = servers.len() as u32;
                status.remote = remote as u32;
                status.governed = governed as u32;
                status.error = None;
                status.state = if servers.is_empty() {
                    "no servers".into()
                } else if governed + remote == servers.len() {
                    "governed".into()
                } else {
                    "partly governed".into()
                };
                known.invalid_reported = None;
                if out.written {
                    let r = &out.report;
                    let mut what = Vec::new();
                    if !r.wrapped.is_empty() {
                        what.push(format!("wrapped {}", r.wrapped.join(", ")));
                    }
                    if !r.updated.is_empty() {
                        what.push(format!(
                            "updated the thoth path of {}",
                            r.updated.join(", ")
                        ));
                    }
                    let altered: Vec<String> = r
                        .rewrapped
                        .iter()
                        .map(|(name, diff)| format!("wrapper of {name} altered ({diff})"))
                        .collect();
                    if !altered.is_empty() {
                        what.push(format!(
                            "restored the wrapper of {}",
                            r.rewrapped
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    let drift_base = match (&known.servers, servers_of(&out.before)) {
                        (Some(b), Some(now)) => Some((b.clone(), now)),
                        // An altered wrapper is drift even when this agent never saw the file
                        // before (edited while the agent was stopped).
                        (None, Some(now)) if !altered.is_empty() => Some((now.clone(), now)),
                        _ => None,
                    };
                    let detail = match &drift_base {
                        Some((before, now)) => {
                            let mut drift = describe_drift(before, now);
                            if !altered.is_empty() {
                                if drift == "the file was rewritten" {
                                    drift.clear();
                                } else {
                                    drift.push_str("; ");
                                }
                                drift.push_str(&altered.join("; "));
                            }
                            self.sh.raise(
                                thoth_proto::EventType::ConfigDrift,
                                format!(
                                    "{}: {drift}; re-wrapped ({})",
                                    path.display(),
                                    what.join("; ")
                                ),
                            );
                            drift
                        }
                        _ => {
                            self.sh.raise(
                                thoth_proto::EventType::ConfigWrapped,
                                format!("{}: {} ({cause})", path.display(), what.join("; ")),
                            );
                            what.join("; ")
                        }
                    };
                    status.last_change = format!("{} {detail}", now_rfc3339());
                    status.restart_needed = self.sh.config().claude_restart_command.is_none();
                }
                for (name, why) in &out.report.skipped {
                    tracing::warn!(config = %path.display(), server = name, "left alone: {why}");
                }
                known.servers = Some(servers);
                let wrote = out.written;
                if *status != before {
                    self.publish_status();
                }
                if wrote {
                    self.restart_claude();
                }
                Ok(wrote)
            }
            Err(e @ (FileError::Config { .. } | FileError::NotUtf8 { .. })) => {
                let text = file::read_config(path)
                    .map(|(b, _)| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                status.state = "invalid".into();
                status.error = Some(e.to_string());
                let changed = *status != before;
                if known.invalid_reported.as_deref() != Some(text.as_str()) {
                    known.invalid_reported = Some(text);
                    self.sh.raise(
                        thoth_proto::EventType::ConfigInvalid,
                        format!("{e}; the file was left untouched and its servers are not governed until it is fixed"),
                    );
                }
                if changed {
                    self.publish_status();
                }
                Ok(false)
            }
            Err(e @ FileError::Read { .. }) => {
                // Refused (a symlink, a FIFO, too large, someone else's file) or unreadable:
                // not governed, and said so once per reason.
                let why = e.to_string();
                status.state = "refused".into();
                status.error = Some(why.clone());
                let changed = *status != before;
                if known.invalid_reported.as_deref() != Some(why.as_str()) {
                    known.invalid_reported = Some(why);
                    self.sh.raise(
                        thoth_proto::EventType::ConfigInvalid,
                        format!(
                            "{e}; the file was left untouched and its servers are not governed"
                        ),
                    );
                }
                if changed {
                    self.publish_status();
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn pass(&mut self, cause: &str) {
        for path in self.all_configs() {
            self.process(&path, cause);
        }
    }

    /// The periodic check: like [`Self::pass`], but a file unchanged since it was last processed
    /// is not read again (edits arrive as watch events; this pass is for what the watch
    /// missed, and for new homes).
    fn pass_changed(&mut self, cause: &str) {
        for path in self.all_configs() {
            let now = stamp(&path);
            if now.is_some() && self.processed.get(&path) == now.as_ref() {
                continue;
            }
            self.process(&path, cause);
        }
    }
}

/// Why the installed `thoth` could not be resolved. Clone (the agent caches the result).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ThothPathError {
    /// No `thoth_path` set and the agent's own path is unknown.
    #[error("{0}")]
    CurrentExe(Arc<std::io::Error>),
    /// The path does not resolve (absent, a dangling link, unreadable).
    #[error("thoth binary {}: {err}", path.display())]
    Canonicalize {
        path: PathBuf,
        err: Arc<std::io::Error>,
    },
}

/// The `thoth` binary wrapped entries run.
pub fn thoth_path(sh: &impl ConfigReport) -> Result<PathBuf, ThothPathError> {
    canonical_thoth(sh.config())
}

/// The `thoth` binary an agent with `config` wraps entries with, canonical: a wrapper governs
/// only when its command is exactly this path.
pub fn canonical_thoth(config: &AgentConfig) -> Result<PathBuf, ThothPathError> {
    let p = match &config.thoth_path {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| ThothPathError::CurrentExe(Arc::new(e)))?
            .with_file_name(format!("thoth{}", std::env::consts::EXE_SUFFIX)),
    };
    std::fs::canonicalize(&p).map_err(|e| ThothPathError::Canonicalize {
        err: Arc::new(e),
        path: p,
    })
}

/// The extra `thoth run` options wrapped entries need to reach this agent.
fn extra_flags(sh: &impl ConfigReport) -> Vec<String> {
    wrapper::canonical_extra(&sh.config().socket_path, &sh.config().state_dir)
}

/// Starts the guardian thread (it runs for the life of the agent).
pub fn spawn(sh: Arc<impl ConfigReport>) -> std::io::Result<()> {
    if !sh.config().wrap_configs {
        tracing::info!("wrap_configs is off: Claude Desktop configs are not managed");
        return Ok(());
    }
    std::thread::Builder::new()
        .name("thoth-config-guard".into())
        .spawn(move || run(sh))
        .map(|_| ())
}

fn run<R: ConfigReport>(sh: Arc<R>) {
    let thoth = match thoth_path(&*sh) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("cannot wrap Claude Desktop configs: {e} (set thoth_path)");
            tracing::error!("{msg}");
            sh.guardian_error(msg);
            return;
        }
    };
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = match notify::recommended_watcher(move |ev| {
        let _ = tx.send(ev);
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("cannot watch Claude Desktop configs: {e}");
            return;
        }
    };
    let mut g = Guardian {
        op: Op::wrap_strict(thoth.display().to_string(), extra_flags(&*sh)),
        sh: Arc::clone(&sh),
        known: BTreeMap::new(),
        statuses: BTreeMap::new(),
        watched: HashSet::new(),
        processed: HashMap::new(),
    };
    g.watch_new(&mut watcher);
    g.pass("agent start");
    let mut policy_seen = sh.policy_version();
    let mut last_rescan = Instant::now();
    let rescan = sh
        .config()
        .config_rescan_interval
        .max(Duration::from_millis(200));
    loop {
        let first = rx.recv_timeout(Duration::from_millis(250));
        let mut paths: HashSet<PathBuf> = HashSet::new();
        let mut any = false;
        if let Ok(ev) = first {
            any = true;
            collect(ev, &mut paths);
            // Gather the burst (an editor's save is several events), briefly.
            let until = Instant::now() + Duration::from_millis(20);
            while let Ok(ev) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                collect(ev, &mut paths);
            }
        }
        if any {
            let configs: HashSet<PathBuf> = paths
                .iter()
                .filter(|p| p.file_name().is_some_and(|n| n == cd::FILE_NAME))
                .cloned()
                .collect();
            for p in &configs {
                g.process(p, "the file changed");
            }
            // Something else in a watched directory (a new home, a new Claude dir): rescan.
            if paths.iter().any(|p| !configs.contains(p) && p.is_dir()) {
                g.watch_new(&mut watcher);
                g.pass("a new home or Claude Desktop directory");
            }
        }
        let version = sh.policy_version();
        if version != policy_seen {
            policy_seen = version;
            g.pass("policy changed");
        }
        if last_rescan.elapsed() >= rescan {
            last_rescan = Instant::now();
            g.watch_new(&mut watcher);
            g.pass_changed("periodic check");
        }
    }
}

fn collect(ev: notify::Result<notify::Event>, paths: &mut HashSet<PathBuf>) {
    match ev {
        // A file opened, read or closed unwritten (the guardian's own reads among them)
        // changes nothing: reacting to it made the guardian re-read its files in a loop.
        Ok(ev)
            if matches!(ev.kind, notify::EventKind::Access(a)
                if a != notify::event::AccessKind::Close(notify::event::AccessMode::Write)) => {}
        Ok(ev) => paths.extend(ev.paths),
        Err(e) => tracing::warn!("watch error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::Shared;

    fn guardian(home: &Path) -> Guardian<Shared> {
        let mut config: AgentConfig =
            toml::from_str(include_str!("../thoth-agent.example.toml")).unwrap();
        config.state_dir = home.join("state");
        config.users_root = Some(home.to_path_buf());
        let sh = Shared::new(config).unwrap();
        let extra = extra_flags(&*sh);
        Guardian {
            op: Op::wrap_strict("/usr/local/bin/thoth", extra),
            sh,
            known: BTreeMap::new(),
            statuses: BTreeMap::new(),
            watched: HashSet::new(),
            processed: HashMap::new(),
        }
    }

    fn drift_notes(g: &Guardian<Shared>) -> Vec<String> {
        g.sh.status()
            .recent_events
            .iter()
            .filter(|e| e.event_type == "CONFIG_DRIFT")
            .map(|e| e.detail.clone())
            .collect()
    }

    #[test]
    fn a_wrapper_running_another_thoth_is_drift_on_first_sight() {
        // Edited while the agent was stopped: the agent's first look at the file.
        let home = std::env::temp_dir().join(format!("thoth-guard-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&home).unwrap();
        let mut g = guardian(&home);
        let state = home.join("state").display().to_string();
        let path = home.join("claude_desktop_config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"mcpServers": {{"files": {{"command": "/home/ann/bin/thoth", "args": ["run", "--server", "files", "--state-dir", "{state}", "--", "npx", "server-filesystem", "/home/ann"]}}}}}}"#
            ),
        )
        .unwrap();
        assert!(g.process(&path, "agent start"), "re-wrapped");
        let after: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            after["mcpServers"]["files"]["command"],
            "/usr/local/bin/thoth"
        );
        let notes = drift_notes(&g).join("\n");
        assert!(
            notes.contains("command /home/ann/bin/thoth instead of /usr/local/bin/thoth"),
            "CONFIG_DRIFT, not a quiet path update: {notes}"
        );
        let wrapped: Vec<String> =
            g.sh.status()
                .recent_events
                .iter()
                .filter(|e| e.event_type == "CONFIG_WRAPPED")
                .map(|e| e.detail.clone())
                .collect();
        assert!(wrapped.is_empty(), "{wrapped:?}");
        assert_eq!(g.statuses[&path].state, "governed");
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn an_opt_out_wrapper_is_drift_re_wrapped_and_not_counted_as_governed() {
        let home = std::env::temp_dir().join(format!("thoth-guard-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&home).unwrap();
        let mut g = guardian(&home);
        let state = home.join("state").display().to_string();
        let canonical = |name: &str| {
            format!(
                r#"["run", "--server", "{name}", "--state-dir", "{state}", "--", "npx", "server-filesystem", "/home/ann"]"#
            )
        };
        let path = home.join("claude_desktop_config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"mcpServers": {{"files": {{"command": "/usr/local/bin/thoth", "args": {}}}}}}}"#,
                canonical("files")
            ),
        )
        .unwrap();
        assert!(
            !g.process(&path, "start"),
            "already canonical: nothing to do"
        );
        assert_eq!(g.statuses[&path].state, "governed");
        // The user keeps `thoth run` but points it at their own policy, socket and state.
        let opted_out = r#"{"mcpServers": {"files": {"command": "/usr/local/bin/thoth", "args": ["run", "--server", "files", "--policy", "/home/ann/allow.yaml", "--agent-socket", "/home/ann/nosock", "--state-dir", "/home/ann/st", "--", "npx", "server-filesystem", "/home/ann"], "env": {"LD_PRELOAD": "/usr/lib/faketime/libfaketime.so.1", "FAKETIME": "+1d"}}}}"#;
        std::fs::write(&path, opted_out).unwrap();
        assert!(g.process(&path, "the file changed"), "re-wrapped");
        let after: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let want: Value = serde_json::from_str(&canonical("files")).unwrap();
        assert_eq!(after["mcpServers"]["files"]["args"], want);
        let notes = drift_notes(&g).join("\n");
        assert!(
            notes.contains("added --policy /home/ann/allow.yaml --agent-socket /home/ann/nosock --state-dir /home/ann/st"),
            "CONFIG_DRIFT says what was added: {notes}"
        );
        assert!(
            notes.contains("LD_PRELOAD"),
            "the loader variable is reported: {notes}"
        );
        // env is the user's (only command and args are ever changed), so the entry stays
        // "partly governed" until it is removed; the proxy denies every call meanwhile.
        assert_eq!(g.statuses[&path].state, "partly governed");
        let reported = drift_notes(&g).len();
        assert!(!g.process(&path, "periodic check"));
        assert_eq!(drift_notes(&g).len(), reported, "reported once");
        std::fs::remove_dir_all(&home).unwrap();
    }
}
