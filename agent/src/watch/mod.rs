//! The agent's config guardian: keeps every managed MCP client's ("host's") files of every user
//! wrapped through `thoth run` — Claude Desktop and its extensions, Claude Code, Cursor, VS Code,
//! Windsurf, Codex (see `thoth_hosts::host::all`). On start and on each policy change it finds
//! every file (`thoth_hosts::host::discover`) and wraps it; it watches the hosts' directories
//! (editors and hosts replace files rather than write them in place, and an extension update
//! replaces its whole directory, so directories are watched, not files), re-wraps within a
//! second of a change (CONFIG_DRIFT, saying what changed and naming the host), never touches a
//! file that does not parse (CONFIG_INVALID), raises MCP_SERVER_UNGOVERNED once for each server
//! it cannot govern (remote ones, malformed entries), and finds new homes, new hosts and new
//! files by rediscovering (on a directory event, at most every 500 ms, and periodically).
//!
//! It cannot loop on its own writes, nor fight a host that rewrites its own file (Claude Code):
//! wrapping is idempotent, so the event a write causes finds nothing to change and writes
//! nothing; a host's stale write that drops the wrapper is ordinary drift, re-wrapped once.
//!
//! - [`guardian`]: what the guardian knows and does per file.
//! - `drift`: CONFIG_DRIFT's description of a change.

mod drift;
pub(crate) mod guardian;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use thoth_endpoint::config::AgentConfig;
use thoth_endpoint::status::ConfigStatus;
use thoth_hosts::host::{HostFilter, by_id};
use thoth_hosts::wrapper;

use guardian::Guardian;

/// What the guardian reads from and reports to the agent (the daemon's shared state implements
/// it): the guardian names nothing of the daemon.
pub trait ConfigReport: Send + Sync + 'static {
    /// The agent's settings.
    fn config(&self) -> &AgentConfig;
    /// The state of every file the guardian knows, for the agent's status.
    fn config_status(&self, configs: Vec<ConfigStatus>);
    /// An error that stops the guardian, for the agent's status.
    fn guardian_error(&self, message: String);
    /// Raises an agent event about one MCP client's file (CONFIG_WRAPPED, CONFIG_DRIFT,
    /// CONFIG_INVALID, MCP_SERVER_UNGOVERNED); `client` is the host's id (the event's
    /// `clientName`).
    fn raise(&self, event_type: thoth_proto::EventType, client: &str, detail: String);
    /// The version of the policy in force, if any (a change means a full pass).
    fn policy_version(&self) -> Option<u64>;
    /// The MCP clients the policy in force lets the agent manage (its `managed_clients`), or
    /// `None`: every client.
    fn policy_clients(&self) -> Option<Vec<String>> {
        None
    }
}

/// The clients the agent's own settings let it manage (`clients`; absent: every one). An
/// unknown id is an error naming the known ones: the agent refuses to start with it.
pub fn config_filter(config: &AgentConfig) -> Result<HostFilter, String> {
    match &config.clients {
        None => Ok(HostFilter::all()),
        Some(ids) => HostFilter::only(ids).map_err(|e| format!("clients: {e}")),
    }
}

/// No client at all.
fn no_client() -> HostFilter {
    match HostFilter::only(&[]) {
        Ok(f) => f,
        Err(_) => unreachable!("an empty list names no unknown client"),
    }
}

/// The clients managed: the agent's settings ∩ the policy's `managed_clients` (ids the agent
/// does not know are ignored; the policy crate refuses them anyway).
pub fn managed(config: &AgentConfig, policy: Option<&[String]>) -> HostFilter {
    let own = config_filter(config).unwrap_or_else(|_| no_client());
    match policy {
        None => own,
        Some(ids) => {
            let known: Vec<String> = ids
                .iter()
                .filter(|id| by_id(id).is_some())
                .cloned()
                .collect();
            own.and(&HostFilter::only(&known).unwrap_or_else(|_| no_client()))
        }
    }
}

/// `text` fit for an admin's terminal and the controller's limits: control characters escaped
/// (`\u{1b}`), cut to `max` bytes on a character boundary (ending in `…` when cut).
pub fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            break;
        }
    }
    if out.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
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

/// Starts the guardian thread (it runs for the life of the agent). Refuses settings naming an
/// unknown client.
pub fn spawn(sh: Arc<impl ConfigReport>) -> std::io::Result<()> {
    config_filter(sh.config())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if !sh.config().wrap_configs {
        tracing::info!("wrap_configs is off: MCP client configs are not managed");
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
            let msg = format!("cannot wrap MCP client configs: {e} (set thoth_path)");
            tracing::error!("{msg}");
            sh.guardian_error(msg);
            return;
        }
    };
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let watcher = match notify::recommended_watcher(move |ev| {
        let _ = tx.send(ev);
    }) {
        Ok(w) => w,
        Err(e) => {
            let msg = format!("cannot watch MCP client configs: {e}");
            tracing::error!("{msg}");
            sh.guardian_error(msg);
            return;
        }
    };
    let extra = extra_flags(&*sh);
    let mut g = Guardian::new(
        Arc::clone(&sh),
        thoth.display().to_string(),
        extra,
        Some(watcher),
    );
    let mut policy_seen = sh.policy_version();
    g.full_pass("agent start", false);
    let mut last_rescan = Instant::now();
    let rescan = sh
        .config()
        .config_rescan_interval
        .max(Duration::from_millis(200));
    loop {
        let wait = g
            .next_wake()
            .map_or(Duration::from_millis(250), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(250));
        let mut paths: HashSet<PathBuf> = HashSet::new();
        if let Ok(ev) = rx.recv_timeout(wait) {
            collect(ev, &mut paths);
            // Gather the burst (an editor's save is several events), briefly.
            let until = Instant::now() + Duration::from_millis(20);
            while let Ok(ev) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                collect(ev, &mut paths);
            }
        }
        for p in &paths {
            g.on_event(p);
        }
        g.rediscover_pending();
        g.process_dirty();
        let version = sh.policy_version();
        if version != policy_seen {
            policy_seen = version;
            g.full_pass("policy changed", false);
        }
        if last_rescan.elapsed() >= rescan {
            last_rescan = Instant::now();
            g.full_pass("periodic check", true);
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
