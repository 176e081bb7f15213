//! Bringing one file to the wrapped state, and reporting what was done: CONFIG_WRAPPED,
//! CONFIG_DRIFT (what changed), CONFIG_INVALID (once per content or reason),
//! MCP_SERVER_UNGOVERNED (once per server and reason), the file's status.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use thoth_endpoint::status::{ConfigStatus, now_rfc3339};
use thoth_hosts::file::{self, FileError, Options};
use thoth_hosts::format;
use thoth_hosts::inventory::{self, ServerInfo, State};
use thoth_proto::EventType;

use super::super::ConfigReport;
use super::super::drift;
use super::{
    CONTENDED_RETRY, Guardian, MAX_UNGOVERNED_EVENTS, MAX_UNGOVERNED_KNOWN, Place, RACE_ATTEMPTS,
    RETRY_WITHIN, found_of, is_claude_app, raise, stamp,
};

impl<R: ConfigReport> Guardian<R> {
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

    /// Brings one known file to the wrapped state; returns whether it wrote. A file changed
    /// while it was being rewritten (its host saving it, or holding its lock) is tried again a
    /// few times within [`RETRY_WITHIN`] (the guardian's thread serves every user's files), then
    /// again every [`CONTENDED_RETRY`]; after [`Guardian::lock_grace`] of nothing but such
    /// failures it is rewritten without the host's lock ([`Guardian::contended`]).
    pub(crate) fn process(&mut self, path: &Path, cause: &str) -> bool {
        let Some(place) = self.files.get(path).cloned() else {
            return false;
        };
        self.dirty.remove(path);
        self.processed.remove(path);
        let started = Instant::now();
        self.last_run.insert(path.to_path_buf(), started);
        let opts = Options {
            owner: place.owner,
            ..Options::default()
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_process(&place, path, cause, &opts) {
                Ok(wrote) => {
                    self.done(path);
                    return wrote;
                }
                Err(FileError::Raced { .. })
                    if attempt < RACE_ATTEMPTS && started.elapsed() < RETRY_WITHIN =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e @ FileError::Raced { .. }) => return self.contended(&place, path, cause, &e),
                Err(e) => {
                    // The contention clock keeps running: a file made invalid for a moment
                    // must not restart it (the lock would then never be overridden).
                    tracing::warn!("{}: {e}", place.host.name());
                    return false;
                }
            }
        }
    }

    /// A pass over `path` ended, and is skipped while unchanged. (It is no longer contended only
    /// when it parsed and reached the wrapped state: see `try_process`.)
    fn done(&mut self, path: &Path) {
        let more = self.known.get(path).is_some_and(|k| k.more_ungoverned);
        if let Some(st) = stamp(path).filter(|_| !more) {
            self.processed.insert(path.to_path_buf(), st);
        }
    }

    /// Every attempt at `path` in this pass found it changing under the rewrite (`e`), or its
    /// host holding its lock. Since when that has been so is remembered; past
    /// [`Guardian::lock_grace`] the file is rewritten without the host's lock (a user cannot
    /// keep their file unwrapped by holding or refreshing the lock; the exchange check still
    /// keeps the host's own saves) and CONFIG_DRIFT says so. Until then, and when even that
    /// races, the file's status says it is locked, and it is tried again in
    /// [`CONTENDED_RETRY`].
    fn contended(&mut self, place: &Place, path: &Path, cause: &str, e: &FileError) -> bool {
        let host = place.host;
        let since = *self
            .known
            .entry(path.to_path_buf())
            .or_default()
            .raced_since
            .get_or_insert_with(Instant::now);
        let held = since.elapsed();
        let lock = host.lock_path(path);
        if held >= self.lock_grace
            && let Some(lock) = &lock
        {
            let opts = Options {
                owner: place.owner,
                ignore_host_lock: true,
                ..Options::default()
            };
            match self.try_process(place, path, cause, &opts) {
                Ok(wrote) => {
                    self.done(path);
                    if wrote {
                        raise(
                            &*self.sh,
                            EventType::ConfigDrift,
                            host.id(),
                            format!(
                                "{}: {}: the client's lock {} was held for {}s, keeping the file \
                                 from being wrapped; the file was rewritten without the lock",
                                host.name(),
                                path.display(),
                                lock.display(),
                                held.as_secs()
                            ),
                        );
                    }
                    return wrote;
                }
                Err(FileError::Raced { .. }) => {}
                Err(e) => {
                    tracing::warn!("{}: {e}", host.name());
                    return false;
                }
            }
        }
        let why = match &lock {
            Some(lock) => format!(
                "the client's lock {} has been held for {}s against the agent's rewrite ({e}); \
                 tried again every {}s, and without the lock after {}s",
                lock.display(),
                held.as_secs(),
                CONTENDED_RETRY.as_secs(),
                self.lock_grace.as_secs()
            ),
            None => format!(
                "{e} (for {}s); tried again every {}s",
                held.as_secs(),
                CONTENDED_RETRY.as_secs()
            ),
        };
        tracing::debug!(client = host.id(), config = %path.display(), "{why}");
        if held >= self.locked_after
            && let Some(status) = self.statuses.get_mut(path)
        {
            let before = status.clone();
            status.state = "locked".into();
            status.error = Some(why);
            if *status != before {
                self.publish_status();
            }
        }
        self.dirty
            .entry(path.to_path_buf())
            .or_insert("the client's lock was held");
        false
    }

    fn try_process(
        &mut self,
        place: &Place,
        path: &Path,
        cause: &str,
        opts: &Options,
    ) -> Result<bool, FileError> {
        let host = place.host;
        if std::fs::symlink_metadata(path).is_err() {
            self.forget(path);
            return Ok(false);
        }
        let result = file::rewrite_file_with(host, path, &self.op, opts);
        let name = host.name();
        let known = self.known.entry(path.to_path_buf()).or_default();
        let status = self
            .statuses
            .entry(path.to_path_buf())
            .or_insert_with(|| ConfigStatus {
                path: path.display().to_string(),
                client: host.id().to_owned(),
                pickup: host.pickup().to_owned(),
                ..ConfigStatus::default()
            });
        // The status is published (status.json rewritten) only when it changed.
        let before = status.clone();
        match result {
            Ok(out) => {
                // Parsed and brought to the wrapped state: no longer contended.
                known.raced_since = None;
                let found = found_of(host, path, &out.after).unwrap_or_default();
                let infos: Vec<ServerInfo> = found
                    .iter()
                    .map(|f| {
                        inventory::server_info(host, path, &out.after, f, &self.thoth, &self.extra)
                    })
                    .collect();
                let remote = infos.iter().filter(|s| s.state == State::Remote).count();
                let governed = infos.iter().filter(|s| s.state == State::Governed).count();
                // An entry whose env makes the loader run other code in the proxy: the proxy
                // refuses to govern with it (every call denied); the admins hear of it here.
                let loaders: Vec<String> = found
                    .iter()
                    .filter_map(|f| {
                        let vars = f.entry.loader_variables();
                        (!vars.is_empty()).then(|| format!("{} ({})", f.label(), vars.join(", ")))
                    })
                    .collect();
                if loaders != known.loader_reported {
                    if !loaders.is_empty() {
                        raise(
                            &*self.sh,
                            EventType::ConfigDrift,
                            host.id(),
                            format!(
                                "{name}: {}: env sets dynamic loader variables for {}; thoth run \
                                 refuses to govern with them and denies every tool call of these \
                                 servers",
                                path.display(),
                                loaders.join(", ")
                            ),
                        );
                    }
                    known.loader_reported = loaders;
                }
                status.servers = infos.len() as u32;
                status.remote = remote as u32;
                status.governed = governed as u32;
                status.error = None;
                status.state = if infos.is_empty() {
                    "no servers".into()
                } else if governed + remote == infos.len() {
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
                        .map(|(label, diff)| format!("wrapper of {label} altered ({diff})"))
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
                    let was = found_of(host, path, &out.before).map(|f| drift::servers(&f));
                    let drift_base = match (&known.servers, was) {
                        (Some(b), Some(now)) => Some((b.clone(), now)),
                        // An altered wrapper is drift even when this agent never saw the file
                        // before (edited while the agent was stopped).
                        (None, Some(now)) if !altered.is_empty() => Some((now.clone(), now)),
                        _ => None,
                    };
                    let detail = match &drift_base {
                        Some((before, now)) => {
                            let mut drift = drift::describe(before, now);
                            if !altered.is_empty() {
                                if drift == drift::REWRITTEN {
                                    drift.clear();
                                } else {
                                    drift.push_str("; ");
                                }
                                drift.push_str(&altered.join("; "));
                            }
                            raise(
                                &*self.sh,
                                EventType::ConfigDrift,
                                host.id(),
                                format!(
                                    "{name}: {}: {drift}; re-wrapped ({})",
                                    path.display(),
                                    what.join("; ")
                                ),
                            );
                            drift
                        }
                        _ => {
                            raise(
                                &*self.sh,
                                EventType::ConfigWrapped,
                                host.id(),
                                format!(
                                    "{name}: {}: {} ({cause})",
                                    path.display(),
                                    what.join("; ")
                                ),
                            );
                            what.join("; ")
                        }
                    };
                    status.last_change = format!("{} {detail}", now_rfc3339());
                    status.restart_needed =
                        is_claude_app(host) && self.sh.config().claude_restart_command.is_none();
                }
                for (label, why) in &out.report.skipped {
                    tracing::warn!(client = host.id(), config = %path.display(), server = label, "left alone: {why}");
                }
                known.servers = Some(drift::servers(&found));
                let changed = *status != before;
                self.report_ungoverned(place, path, &infos);
                if changed {
                    self.publish_status();
                }
                if out.written && is_claude_app(host) {
                    self.restart_claude();
                }
                Ok(out.written)
            }
            Err(e @ (FileError::Config { .. } | FileError::NotUtf8 { .. })) => {
                let text = file::read_config(path)
                    .map(|(b, _)| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let why = match &e {
                    FileError::Config { source, .. } => source.to_string(),
                    _ => "not UTF-8 text".to_owned(),
                };
                status.state = "invalid".into();
                status.error = Some(e.to_string());
                let changed = *status != before;
                if known.invalid_reported.as_deref() != Some(text.as_str()) {
                    known.invalid_reported = Some(text);
                    raise(
                        &*self.sh,
                        EventType::ConfigInvalid,
                        host.id(),
                        format!(
                            "{name}: {}: {why}; the file was left untouched and its servers are \
                             not governed until it is fixed",
                            path.display()
                        ),
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
                    let source = match &e {
                        FileError::Read { source, .. } => source.to_string(),
                        _ => String::new(),
                    };
                    raise(
                        &*self.sh,
                        EventType::ConfigInvalid,
                        host.id(),
                        format!(
                            "{name}: {}: cannot read it: {source}; the file was left untouched \
                             and its servers are not governed",
                            path.display()
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

    /// Raises MCP_SERVER_UNGOVERNED for each server of `path` still not governed after its
    /// pass (remote ones, malformed entries, loader variables…), once per server and reason.
    fn report_ungoverned(&mut self, place: &Place, path: &Path, infos: &[ServerInfo]) {
        let remembered: usize = self.known.values().map(|k| k.ungoverned.len()).sum();
        let Some(known) = self.known.get_mut(path) else {
            return;
        };
        let mut room = MAX_UNGOVERNED_KNOWN.saturating_sub(remembered);
        let user = &place.user;
        let mut now = BTreeMap::new();
        let (mut raised, mut cut) = (0usize, 0usize);
        for s in infos {
            if s.state == State::Governed {
                continue;
            }
            let label = format::label(&s.name, s.scope.as_deref());
            let reason = s.state.reason();
            if known.ungoverned.get(&label) == Some(&reason) {
                now.insert(label, reason);
                continue;
            }
            if raised >= MAX_UNGOVERNED_EVENTS || room == 0 {
                cut += 1;
                continue;
            }
            let what = if s.target.is_empty() {
                s.transport.clone()
            } else {
                format!("{} {}", s.transport, s.target)
            };
            raise(
                &*self.sh,
                EventType::McpServerUngoverned,
                place.host.id(),
                format!(
                    "{}: {user}: {label} ({what}) is not governed: {reason}",
                    place.host.name()
                ),
            );
            raised += 1;
            room = room.saturating_sub(1);
            now.insert(label, reason);
        }
        known.ungoverned = now;
        known.more_ungoverned = cut > 0;
        if cut > 0 {
            tracing::warn!(
                client = place.host.id(),
                config = %path.display(),
                "{cut} more servers not governed: reported at the next periodic check"
            );
        }
    }
}
