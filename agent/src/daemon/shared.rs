//! The daemon's shared state: settings, pinned trust, the policy in force, the status, the
//! spool, and what proxy checks share; every task of the agent holds it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use prost::bytes::Bytes;
use serde_json::Value;
use thoth_proto::bundle::{BundleError, verify_bundle};
use thoth_proto::{Event, EventType};
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;

pub use super::raise::{MAX_DETAIL_BYTES, MAX_DETAIL_TEXT, agent_event, bound_detail, bound_text};
use super::{peer, pipeline};
use thoth_endpoint::config::AgentConfig;
use thoth_endpoint::state::{StateDir, Trust};
use thoth_endpoint::status::{PolicyStatus, Status, now_rfc3339};

/// The policy in force, as served to proxies.
#[derive(Debug)]
pub struct Current {
    /// Signed bundle bytes.
    pub bytes: Bytes,
    /// Version.
    pub version: u64,
    /// Expired (still enforced).
    pub stale: bool,
    /// Expiry.
    pub expires_at: SystemTime,
}

/// Everything the agent's tasks share.
pub struct Shared {
    /// Settings.
    pub config: AgentConfig,
    /// Pinned root.
    pub root: ed25519_dalek::VerifyingKey,
    /// Pinned CA.
    pub fingerprint: [u8; 32],
    /// State directory.
    pub state: StateDir,
    /// The policy in force.
    pub current: watch::Sender<Option<Arc<Current>>>,
    pub(super) status: Mutex<Status>,
    pub(super) status_dirty: std::sync::atomic::AtomicBool,
    pub(super) status_writer: Mutex<Option<std::thread::Thread>>,
    pub(super) spool: std::sync::OnceLock<pipeline::SpoolHandle>,
    /// Wakes the heartbeat to report at once.
    pub report_now: Notify,
    pub(super) channel: Mutex<Option<Channel>>,
    /// Failed proxy checks lately reported, per owner and kind.
    pub(super) peer_reports: peer::Raised,
    /// What proxy checks share (the installed thoth, bounds on checks at once).
    pub(super) peer_checks: peer::Checks,
    /// The inventory being collected, when a report went out without it (not ready in time):
    /// the next report takes it rather than starting another.
    pub(super) inventory_task: Mutex<
        Option<(
            tokio::time::Instant,
            tokio::task::JoinHandle<thoth_proto::fleet::Inventory>,
        )>,
    >,
    /// Tool-call approvals: pending requests, their channels, the grants they left.
    pub approvals: Arc<super::approval::Broker>,
    /// Every user's pinned tool definitions and the admins' decisions on them.
    pub pins: Arc<super::pins::PinBook>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(super) fn unix_to_rfc3339(secs: i64) -> String {
    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

pub(super) use super::sys::describe;

impl Shared {
    /// The MCP clients the policy in force lets the agent manage (its `managed_clients`), or
    /// `None`: every client (also when there is no policy yet).
    pub(crate) fn managed_clients(&self) -> Option<Vec<String>> {
        let current = self.current.borrow().clone()?;
        let (bundle, _) = thoth_proto::bundle::verify_bundle_keeping_expired(
            &current.bytes,
            &self.root,
            &self.config.tenant,
            None,
            std::time::SystemTime::now(),
        )
        .ok()?;
        let source = format!("<bundle v{}>", bundle.payload.version);
        let policy = thoth_policy::parse_policy(
            &bundle.payload.policy,
            &source,
            thoth_policy::Format::detect(&source, &bundle.payload.policy),
        )
        .ok()?;
        policy
            .managed_clients
            .map(|ids| ids.iter().map(|c| c.as_str().to_owned()).collect())
    }

    /// Builds the shared state (no IO beyond what `config` needs).
    pub fn new(config: AgentConfig) -> Result<Arc<Shared>, String> {
        let root = config.root_key().map_err(|e| e.to_string())?;
        let fingerprint = config.pinned_fingerprint().map_err(|e| e.to_string())?;
        let state = StateDir::new(config.state_dir.clone());
        let status = Status {
            tenant: config.tenant.clone(),
            controller_url: config.controller_url.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started_at: now_rfc3339(),
            socket: config.socket_path.display().to_string(),
            state_dir: config.state_dir.display().to_string(),
            thoth_path: crate::watch::canonical_thoth(&config)
                .ok()
                .map(|p| p.display().to_string()),
            ..Status::default()
        };
        let peer_checks = peer::Checks::new(&config);
        let pins = Arc::new(super::pins::PinBook::new(config.state_dir.join("pins")));
        Ok(Arc::new_cyclic(|me| Shared {
            approvals: super::approval::broker_for(
                me.clone() as std::sync::Weak<dyn super::approval::Daemon>
            ),
            config,
            root,
            fingerprint,
            state,
            current: watch::channel(None).0,
            status: Mutex::new(status),
            status_dirty: std::sync::atomic::AtomicBool::new(false),
            status_writer: Mutex::new(None),
            spool: std::sync::OnceLock::new(),
            report_now: Notify::new(),
            channel: Mutex::new(None),
            peer_reports: peer::Raised::default(),
            peer_checks,
            inventory_task: Mutex::new(None),
            pins,
        }))
    }

    /// A snapshot of the status, with computed fields.
    pub fn status(&self) -> Status {
        let mut s = lock(&self.status).clone();
        if let Some(sp) = self.spool.get() {
            let st = lock(&sp.stats).clone();
            s.events.held = st.seq - st.acked;
            s.events.dropped = st.lost + st.refused;
            s.events.seq = st.seq;
            s.events.durable = st.durable;
            s.events.acked = st.acked;
            s.events.spool_bytes = st.bytes;
            s.events.corrupt = st.corrupt;
            s.events.id_reused = st.id_reused;
            let up = lock(&sp.upload);
            s.events.quarantined = up.quarantined;
            // An upload that makes no progress while events wait, or a spool that cannot
            // write, is an error everywhere the status goes (CLIs, heartbeat, thothctl).
            let problem = st
                .write_error
                .clone()
                .or_else(|| up.stalled(s.events.held, st.waiting_since));
            drop(up);
            if let Some(p) = problem {
                s.events.error = Some(p.clone());
                if s.connected || s.last_error.is_none() {
                    s.last_error = Some(p);
                }
            }
        }
        s.for_display()
    }

    /// Changes the status (and rewrites status.json).
    pub fn update_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.status));
        // status.json (for people and MDM checks when the agent is down) is written by its own
        // thread, at most every 500 ms: no file IO here, which async tasks call.
        self.status_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = lock(&self.status_writer).as_ref() {
            t.unpark();
        }
    }

    /// Starts the thread that writes status.json when the status changed.
    pub fn start_status_writer(self: &Arc<Self>) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        let handle = std::thread::Builder::new()
            .name("thoth-status".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(Duration::from_secs(5));
                    let Some(sh) = weak.upgrade() else { return };
                    if sh
                        .status_dirty
                        .swap(false, std::sync::atomic::Ordering::AcqRel)
                    {
                        let snapshot = lock(&sh.status).clone();
                        if let Ok(bytes) = serde_json::to_vec_pretty(&snapshot) {
                            let _ = sh.state.write_status(&bytes);
                        }
                    }
                    drop(sh);
                    std::thread::sleep(Duration::from_millis(500));
                }
            })?;
        *lock(&self.status_writer) = Some(handle.thread().clone());
        Ok(())
    }

    /// Raises an agent event: logged, held for upload, and kept in the status.
    pub fn raise(&self, event_type: EventType, detail: String) {
        self.raise_about(event_type, None, detail);
    }

    /// [`Shared::raise`], about one MCP client (`clientName`: its host id).
    pub fn raise_about(&self, event_type: EventType, client: Option<&str>, detail: String) {
        let detail = bound_text(&detail);
        match event_type {
            EventType::PolicyRejected => tracing::warn!(event = %event_type, "{detail}"),
            _ => tracing::info!(event = %event_type, "{detail}"),
        }
        let record = self.agent_event_about(event_type, client, Value::String(detail.clone()));
        if let Some(sp) = self.spool.get() {
            sp.append(record);
        }
        self.update_status(|s| s.note(event_type.as_str(), detail));
    }

    /// Raises an approval event (APPROVAL_REQUESTED, APPROVAL_DECIDED) about `req`: its user,
    /// session, server, tool and client name on the event, `detail` as given (bounded).
    pub fn raise_approval(
        &self,
        event_type: EventType,
        req: &thoth_proto::fleet::ApprovalRequest,
        detail: Value,
    ) {
        // The approval the event is about (a remembered call names the approval that granted it).
        let id = detail
            .get("approvalId")
            .and_then(Value::as_str)
            .unwrap_or(&req.approval_id)
            .to_owned();
        let summary = format!(
            "approval {id} for {} ({} {}): {}",
            req.user,
            req.server_name,
            req.tool_name,
            detail
                .get("decision")
                .and_then(Value::as_str)
                .unwrap_or("requested")
        );
        tracing::info!(event = %event_type, "{summary}");
        let client = (!req.client_name.is_empty()).then_some(req.client_name.as_str());
        let mut record = self.agent_event_about(event_type, client, detail);
        record.user = req.user.clone().into();
        record.approval_id = Some(id.into());
        record.session_id = (!req.session_id.is_empty()).then(|| req.session_id.clone().into());
        record.server_name = Some(req.server_name.clone().into());
        record.tool_name = Some(req.tool_name.clone().into());
        if let Some(sp) = self.spool.get() {
            sp.append(record);
        }
        self.update_status(|s| s.note(event_type.as_str(), summary));
    }

    /// An event the agent itself raises, ready for the chain.
    pub fn agent_event(&self, event_type: EventType, detail: Value) -> Event<'static> {
        self.agent_event_about(event_type, None, detail)
    }

    /// [`Shared::agent_event`] about one MCP client: `clientName` is its host id.
    pub fn agent_event_about(
        &self,
        event_type: EventType,
        client: Option<&str>,
        detail: Value,
    ) -> Event<'static> {
        let agent_id = lock(&self.status).agent_id.clone();
        let mut e = agent_event(&self.config.tenant, agent_id.as_deref(), event_type, detail);
        e.client_name = client.map(|c| c.to_owned().into());
        e
    }

    /// Takes events from a proxy: each is checked and made the agent's on its own
    /// ([`pipeline::admit`]: types a proxy may send, schema, size; identity fields from the
    /// agent and the caller's OS user, never from the proxy); the bad ones are refused one by
    /// one, counted and reported, the rest kept. `Err` when the spool cannot write now (the proxy
    /// keeps its events and re-sends them).
    pub async fn spool_events(
        &self,
        events: Vec<Vec<u8>>,
        user: &str,
    ) -> Result<pipeline::EmitOutcome, EmitError> {
        self.spool_events_as(events, user, user).await
    }

    /// [`Shared::spool_events`], counting the events against `owner`'s spool quota (the login
    /// user owning the caller's uid).
    pub async fn spool_events_as(
        &self,
        events: Vec<Vec<u8>>,
        user: &str,
        owner: &str,
    ) -> Result<pipeline::EmitOutcome, EmitError> {
        let Some(sp) = self.spool.get() else {
            return Err(EmitError::NotOpen);
        };
        // Parsing and checking up to 1000 events is CPU work: off the async workers.
        let (u, o) = (user.to_owned(), owner.to_owned());
        let (admitted, refused, reason) = tokio::task::spawn_blocking(move || {
            let hostname = gethostname::gethostname().to_string_lossy().into_owned();
            let now = SystemTime::now();
            let mut admitted = Vec::with_capacity(events.len());
            let (mut refused, mut reason) = (0u32, String::new());
            for e in &events {
                match pipeline::admit(e, &u, &hostname, now) {
                    Ok(mut a) => {
                        a.owner.clone_from(&o);
                        admitted.push(a);
                    }
                    Err(why) => {
                        refused += 1;
                        if reason.is_empty() {
                            reason = why.to_string();
                        }
                    }
                }
            }
            (admitted, refused, reason)
        })
        .await
        .map_err(EmitError::Check)?;
        if refused > 0 {
            tracing::warn!(user, refused, "refused events from a proxy: {reason}");
            {
                let mut s = lock(&self.status);
                s.events.refused += u64::from(refused);
                s.events.last_refusal = Some(format!("{user}: {reason}"));
            }
            if let Some(detail) = sp.note_refused(user, u64::from(refused), &reason) {
                sp.append(self.agent_event(EventType::EventsRefused, detail));
                self.update_status(|s| {
                    s.note(
                        EventType::EventsRefused.as_str(),
                        format!("{refused} events from a proxy refused: {reason}"),
                    )
                });
            }
        }
        // Answered once durable: a proxy whose call fails re-sends (an identical record from
        // the same caller is de-duplicated).
        let (accepted, dropped) = sp.append_durable(admitted).await?;
        lock(&self.status).events.accepted += u64::from(accepted);
        Ok(pipeline::EmitOutcome {
            accepted,
            dropped,
            refused,
            reason,
        })
    }

    /// Tells the spool who this agent is (events wait for it).
    pub(super) fn set_spool_identity(&self, agent_id: &str) {
        if let Some(sp) = self.spool.get() {
            *lock(&sp.identity) = Some((agent_id.to_owned(), self.config.tenant.clone()));
        }
    }

    /// Records a proxy caller.
    pub fn saw_caller(&self, user: &str, server: &str) {
        let mut s = lock(&self.status);
        let c = s.callers.entry(user.to_owned()).or_default();
        c.calls += 1;
        c.last_seen = now_rfc3339();
        if !server.is_empty() && !c.servers.iter().any(|x| x == server) && c.servers.len() < 64 {
            c.servers.push(server.to_owned());
        }
    }

    pub(super) fn publish(
        &self,
        bytes: Vec<u8>,
        payload: &thoth_proto::bundle::BundlePayload,
        key_id: &str,
        stale: bool,
    ) {
        let expires_at =
            humantime::parse_rfc3339(&payload.expires_at).unwrap_or(SystemTime::UNIX_EPOCH);
        self.current.send_replace(Some(Arc::new(Current {
            bytes: Bytes::from(bytes),
            version: payload.version,
            stale,
            expires_at,
        })));
        let policy = PolicyStatus {
            version: payload.version,
            issued_at: payload.issued_at.clone(),
            expires_at: payload.expires_at.clone(),
            applied_at: now_rfc3339(),
            stale,
            key_id: key_id.to_owned(),
            age_secs: 0,
        };
        self.update_status(|s| s.policy = Some(policy));
    }

    /// Loads the last-known-good bundle at start: enforced even if expired (then stale); a
    /// tampered or foreign one is refused (and re-fetched from the controller).
    pub fn load_lkg(&self) {
        let trust = Trust {
            tenant: self.config.tenant.clone(),
            root_public_key: self.config.root_public_key.clone(),
        };
        match self.state.load_lkg(&trust, SystemTime::now()) {
            Ok(Some(lkg)) => {
                if let Err(e) = parse_policy(&lkg.bundle.payload) {
                    self.raise(
                        EventType::PolicyRejected,
                        format!("last-known-good policy does not validate: {e}"),
                    );
                    return;
                }
                let stale = lkg.expired.is_some();
                tracing::info!(
                    version = lkg.bundle.payload.version,
                    stale,
                    "enforcing the last-known-good policy from disk"
                );
                self.publish(lkg.bytes, &lkg.bundle.payload, &lkg.bundle.key_id, stale);
            }
            Ok(None) => tracing::info!("no last-known-good policy yet"),
            Err(e) => {
                let e = e.to_string();
                self.raise(EventType::PolicyRejected, e.clone());
                self.update_status(|s| s.last_error = Some(e));
            }
        }
    }

    /// Verifies and applies a bundle from the controller; anything wrong changes nothing.
    pub fn apply(&self, bytes: &[u8]) {
        let floor = self.state.applied_floor();
        let current_version = self.current.borrow().as_ref().map(|c| c.version);
        let applied = current_version.max((floor > 0).then_some(floor));
        match verify_bundle(
            bytes,
            &self.root,
            &self.config.tenant,
            applied,
            SystemTime::now(),
        ) {
            Ok(v) => {
                if let Err(e) = parse_policy(&v.payload) {
                    let msg = format!(
                        "bundle version {} refused: its policy does not validate: {e}",
                        v.payload.version
                    );
                    self.raise(EventType::PolicyRejected, msg.clone());
                    self.update_status(|s| s.last_error = Some(msg));
                    return;
                }
                let same = self
                    .current
                    .borrow()
                    .as_ref()
                    .is_some_and(|c| c.bytes.as_ref() == bytes);
                if same {
                    return;
                }
                if let Err(e) = super::lkg::save_lkg(&self.state, bytes, v.payload.version) {
                    // Not persisted: do not apply either, so disk and memory never disagree.
                    let msg = format!("cannot persist policy version {}: {e}", v.payload.version);
                    self.raise(EventType::PolicyRejected, msg.clone());
                    self.update_status(|s| s.last_error = Some(msg));
                    return;
                }
                let new_version = current_version != Some(v.payload.version);
                self.publish(bytes.to_vec(), &v.payload, &v.key_id, false);
                // Grants were given under the old policy: the identical call is asked again.
                let dropped = self.approvals.clear_grants();
                if dropped > 0 {
                    tracing::info!(dropped, "a new policy was applied: approval grants dropped");
                }
                if new_version {
                    self.raise(
                        EventType::PolicyApplied,
                        format!(
                            "policy version {} applied (signed by {})",
                            v.payload.version, v.key_id
                        ),
                    );
                } else {
                    tracing::info!(version = v.payload.version, "re-signed bundle applied");
                }
                self.update_status(|s| s.last_error = None);
                self.report_now.notify_one();
            }
            Err(e) => {
                let msg = format!("bundle refused: {e}");
                if let BundleError::Expired { .. } = e {
                    // Keep enforcing last-known-good; stale if that one has expired too.
                    self.check_stale();
                }
                self.raise(EventType::PolicyRejected, msg.clone());
                self.update_status(|s| s.last_error = Some(msg));
                self.report_now.notify_one();
            }
        }
    }

    /// Marks the policy stale once it has expired (it stays in force).
    pub fn check_stale(&self) {
        let cur = self.current.borrow().clone();
        if let Some(c) = cur
            && !c.stale
            && SystemTime::now() > c.expires_at
        {
            self.current.send_replace(Some(Arc::new(Current {
                bytes: c.bytes.clone(),
                version: c.version,
                stale: true,
                expires_at: c.expires_at,
            })));
            self.update_status(|s| {
                if let Some(p) = &mut s.policy {
                    p.stale = true;
                }
            });
            self.raise(
                EventType::PolicyStale,
                format!(
                    "policy version {} expired at {}; it stays in force until a newer one arrives",
                    c.version,
                    rfc3339(c.expires_at)
                ),
            );
            self.report_now.notify_one();
        }
    }
}

impl super::approval::Daemon for Shared {
    fn record_approval(
        &self,
        event_type: EventType,
        req: &thoth_proto::fleet::ApprovalRequest,
        detail: serde_json::Value,
    ) {
        self.raise_approval(event_type, req, detail);
    }

    fn controller_channel(&self) -> Option<tonic::transport::Channel> {
        lock(&self.channel).clone()
    }

    fn accept_pin(&self, uid: u32, server_name: &str, pin: &thoth_proto::fleet::PinRef) {
        if self.pins.approved(uid, server_name, pin) {
            tracing::info!(uid, tool = %pin.tool, "an approval let the user use a changed tool definition");
            self.pins.flush_soon();
        }
    }
}

impl crate::watch::ConfigReport for Shared {
    fn config(&self) -> &AgentConfig {
        &self.config
    }

    fn config_status(&self, configs: Vec<thoth_endpoint::status::ConfigStatus>) {
        self.update_status(|s| s.configs = configs);
    }

    fn guardian_error(&self, message: String) {
        self.update_status(|s| s.last_error = Some(message));
    }

    fn raise(&self, event_type: EventType, client: &str, detail: String) {
        self.raise_about(event_type, Some(client), detail);
    }

    fn policy_version(&self) -> Option<u64> {
        self.current.borrow().as_ref().map(|c| c.version)
    }

    fn policy_clients(&self) -> Option<Vec<String>> {
        self.managed_clients()
    }
}

/// Why a proxy's events were not taken (the proxy keeps them and re-sends them).
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The spool did not open at start.
    #[error("the agent's event spool is not open")]
    NotOpen,
    /// The blocking task checking the events failed.
    #[error("checking the events failed: {0}")]
    Check(tokio::task::JoinError),
    /// The spool cannot take them now.
    #[error(transparent)]
    Spool(#[from] pipeline::SpoolUnavailable),
}

pub(super) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(super) fn parse_policy(
    p: &thoth_proto::bundle::BundlePayload,
) -> Result<(), thoth_policy::PolicyError> {
    let source = format!("<bundle v{}>", p.version);
    thoth_policy::parse_policy(
        &p.policy,
        &source,
        thoth_policy::Format::detect(&source, &p.policy),
    )
    .map(|_| ())
}

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
