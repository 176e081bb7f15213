//! The agent's side of the controller connection: enrollment, renewal, the policy
//! subscription, status reports, and the loops that keep them going.

use std::sync::Arc;
use std::time::Duration;

use thoth_endpoint::state::IdentityInfo;
use thoth_endpoint::status::now_rfc3339;
use thoth_proto::fleet::{
    self as pb, agent_sync_client::AgentSyncClient, enrollment_client::EnrollmentClient,
};
use tonic::transport::Channel;

use super::identity::KeyError;
use super::shared::*;
use super::{inventory, pipeline};
use thoth_endpoint::backoff::{backoff, jitter};
use thoth_endpoint::config::ConfigError;
use thoth_endpoint::state::StateError;
use thoth_endpoint::tls::{self, TlsError};

/// Why enrollment or renewal failed; its text is the session's end and the status' error.
#[derive(Debug, thiserror::Error)]
pub(super) enum IdentityError {
    #[error("the stored controller CA ({}) does not match ca_fingerprint; re-enroll", .0.display())]
    StoredCaMismatch(std::path::PathBuf),
    #[error(
        "this agent is enrolled in tenant {enrolled:?} but configured for {configured:?}; re-enroll"
    )]
    TenantMismatch {
        enrolled: String,
        configured: String,
    },
    #[error("not enrolled, and no enrollment token is configured (set enrollment_token_file)")]
    NoToken,
    #[error("the controller returned a CA that does not match ca_fingerprint")]
    ReturnedCaMismatch,
    #[error("enrollment refused: {}", describe(.0))]
    EnrollRefused(Box<tonic::Status>),
    #[error("certificate renewal refused: {}", describe(.0))]
    RenewRefused(Box<tonic::Status>),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl Shared {
    pub(super) fn set_connected(&self, connected: bool, channel: Option<Channel>) {
        *lock(&self.channel) = channel;
        self.update_status(|s| {
            s.connected = connected;
            if connected {
                s.last_connected_at = Some(now_rfc3339());
            }
        });
    }

    pub(super) fn client_cert(&self) -> Option<tls::ClientCert> {
        let (_, cert, _) = self.state.identity()?;
        let key = std::fs::read_to_string(self.state.key_path()).ok()?;
        Some(tls::ClientCert {
            cert_pem: cert,
            key_pem: key,
        })
    }

    /// Enrolls if this machine has no identity yet.
    pub(super) async fn ensure_identity(&self) -> Result<IdentityInfo, IdentityError> {
        if let Some((info, _, ca)) = self.state.identity() {
            if tls::pem_fingerprint(&ca) != Some(self.fingerprint) {
                return Err(IdentityError::StoredCaMismatch(
                    self.state.root().join("identity/ca.crt"),
                ));
            }
            if info.tenant != self.config.tenant {
                return Err(IdentityError::TenantMismatch {
                    enrolled: info.tenant,
                    configured: self.config.tenant.clone(),
                });
            }
            return Ok(info);
        }
        let token = self
            .config
            .token()?
            .filter(|t| !t.is_empty())
            .ok_or(IdentityError::NoToken)?;
        let csr = super::identity::csr(&self.state)?;
        let ch = tls::controller_channel(
            &self.config.controller_url,
            self.fingerprint,
            None,
            Some(Duration::from_secs(30)),
        )?;
        let resp = EnrollmentClient::new(ch)
            .enroll(pb::EnrollRequest {
                token,
                csr_der: csr,
                hostname: gethostname::gethostname().to_string_lossy().into_owned(),
                labels: self.config.labels.clone().into_iter().collect(),
                tenant: self.config.tenant.clone(),
            })
            .await
            .map_err(|s| IdentityError::EnrollRefused(Box::new(s)))?
            .into_inner();
        if tls::pem_fingerprint(&resp.ca_certificate_pem) != Some(self.fingerprint) {
            return Err(IdentityError::ReturnedCaMismatch);
        }
        let info = IdentityInfo {
            agent_id: resp.agent_id.clone(),
            tenant: resp.tenant,
            not_after: resp.not_after_unix,
            issued_at: now_unix(),
        };
        self.state
            .save_identity(&info, &resp.certificate_pem, &resp.ca_certificate_pem)?;
        tracing::info!(agent_id = info.agent_id, "enrolled");
        self.raise(
            thoth_proto::EventType::AgentEnrolled,
            format!("enrolled as {}", info.agent_id),
        );
        Ok(info)
    }

    /// Renews the certificate once two thirds of its life have passed.
    pub(super) async fn maybe_renew(
        &self,
        info: &IdentityInfo,
        ch: Channel,
    ) -> Result<(), IdentityError> {
        let life = (info.not_after - info.issued_at).max(1);
        if now_unix() < info.issued_at + life * 2 / 3 {
            return Ok(());
        }
        let csr = super::identity::csr(&self.state)?;
        let resp = EnrollmentClient::new(ch)
            .renew(pb::RenewRequest { csr_der: csr })
            .await
            .map_err(|s| IdentityError::RenewRefused(Box::new(s)))?
            .into_inner();
        let renewed = IdentityInfo {
            not_after: resp.not_after_unix,
            issued_at: now_unix(),
            ..info.clone()
        };
        self.state
            .save_identity(&renewed, &resp.certificate_pem, &resp.ca_certificate_pem)?;
        tracing::info!(
            until = unix_to_rfc3339(resp.not_after_unix),
            "certificate renewed"
        );
        Ok(())
    }

    /// One connection: identity, renewal, subscription until it ends. Returns why it ended.
    pub(super) async fn session(self: &Arc<Self>) -> String {
        let info = match self.ensure_identity().await {
            Ok(i) => i,
            Err(e) => return e.to_string(),
        };
        self.update_status(|s| {
            s.agent_id = Some(info.agent_id.clone());
            s.enrolled = true;
            s.certificate_not_after = Some(unix_to_rfc3339(info.not_after));
        });
        self.set_spool_identity(&info.agent_id);
        let Some(cert) = self.client_cert() else {
            return "the stored agent certificate or key is unreadable; re-enroll".into();
        };
        let ch = match tls::controller_channel(
            &self.config.controller_url,
            self.fingerprint,
            Some(&cert),
            None,
        ) {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        if let Err(e) = self.maybe_renew(&info, ch.clone()).await {
            let e = e.to_string();
            tracing::warn!("{e}");
            if e.contains("revoked") {
                self.mark_revoked(&e);
                return e;
            }
        }
        let applied = self
            .current
            .borrow()
            .as_ref()
            .map_or(self.state.applied_floor(), |c| c.version);
        let stream = AgentSyncClient::new(ch.clone())
            .subscribe(pb::SubscribeRequest {
                tenant: self.config.tenant.clone(),
                applied_version: applied,
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) => return self.session_error(&s),
        };
        tracing::info!(
            url = self.config.controller_url,
            "subscribed to policy updates"
        );
        self.set_connected(true, Some(ch));
        self.update_status(|s| {
            s.revoked = false;
            if s.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("controller"))
            {
                s.last_error = None;
            }
        });
        self.report_now.notify_one();
        // Approval requests that could not be queued while disconnected are queued now.
        self.approvals.resubmit();
        let why = loop {
            match stream.message().await {
                Ok(Some(update)) => {
                    // An update carries an admin's approval decision, an admin's decision on
                    // a tool definition, a bundle, or some of them.
                    let decision_only = (update.approval.is_some() || update.pin.is_some())
                        && update.bundle.is_empty();
                    if let Some(decision) = update.approval {
                        self.approvals.admin_decision(decision);
                    }
                    if let Some(pin) = update.pin {
                        self.pins.decide_soon(&pin);
                    }
                    if !decision_only {
                        self.apply(&update.bundle);
                    }
                }
                Ok(None) => break "controller closed the subscription".to_owned(),
                Err(s) => break self.session_error(&s),
            }
        };
        self.set_connected(false, None);
        why
    }

    pub(super) fn session_error(&self, s: &tonic::Status) -> String {
        let msg = format!("controller: {}", describe(s));
        if (s.code() == tonic::Code::PermissionDenied && s.message().contains("revoked"))
            || refused_as_revoked(s)
        {
            self.mark_revoked(&msg);
        }
        msg
    }

    pub(super) fn mark_revoked(&self, msg: &str) {
        let version = self.current.borrow().as_ref().map(|c| c.version);
        let text = format!(
            "{msg}. This agent keeps enforcing policy version {}. To re-enroll: stop the agent, remove {}, configure a new enrollment token, start it.",
            version.map_or("none".into(), |v| v.to_string()),
            self.state.root().join("identity").display()
        );
        tracing::error!("{text}");
        self.update_status(|s| {
            s.revoked = true;
            s.last_error = Some(text);
        });
    }

    pub(super) fn is_revoked(&self) -> bool {
        lock(&self.status).revoked
    }

    pub(super) async fn report(&self) {
        let Some(ch) = lock(&self.channel).clone() else {
            return;
        };
        // A connection can outlive a certificate: renew on the open channel when it is time.
        if let Some((info, _, _)) = self.state.identity() {
            match self.maybe_renew(&info, ch.clone()).await {
                Ok(()) => {
                    if let Some((info, _, _)) = self.state.identity() {
                        self.update_status(|s| {
                            s.certificate_not_after = Some(unix_to_rfc3339(info.not_after));
                        });
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    tracing::warn!("{e}");
                    if e.contains("revoked") {
                        self.mark_revoked(&e);
                    }
                }
            }
        }
        let status = self.status();
        let inventory = {
            let root = self.config.users_root.clone();
            let extra = thoth_hosts::wrapper::canonical_extra(
                &self.config.socket_path,
                &self.config.state_dir,
            );
            // No usable thoth binary: no wrapper can be the agent's, none counts as governed.
            let thoth = crate::watch::canonical_thoth(&self.config)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            // The MCP clients managed: the agent's settings ∩ the policy's managed_clients.
            let filter = crate::watch::managed(&self.config, self.managed_clients().as_deref());
            let pins = Arc::clone(&self.pins);
            ready_inventory(
                &self.inventory_task,
                move || {
                    let mut inv = inventory::collect(
                        root.as_deref(),
                        &thoth,
                        &extra,
                        &filter,
                        inventory::MCP_BUDGET,
                    );
                    inv.tool_pins = inventory::tool_pins(&pins);
                    inv
                },
                INVENTORY_WAIT,
            )
            .await
        };
        let report = pb::AgentReport {
            applied_version: status.policy.as_ref().map_or(0, |p| p.version),
            stale: status.policy.as_ref().is_some_and(|p| p.stale),
            last_error: status.last_error.unwrap_or_default(),
            inventory,
            agent_version: env!("CARGO_PKG_VERSION").into(),
        };
        let mut client = AgentSyncClient::new(ch);
        match tokio::time::timeout(Duration::from_secs(15), client.report(report)).await {
            Ok(Ok(_)) => {}
            Ok(Err(s)) => {
                let msg = self.session_error(&s);
                tracing::warn!("report failed: {msg}");
            }
            Err(_) => tracing::warn!("report timed out"),
        }
    }
}

/// How long a report waits for its inventory (collected within [`inventory::MCP_BUDGET`] plus
/// the system's facts); past it the report goes without one (the controller keeps the last).
const INVENTORY_WAIT: Duration = Duration::from_secs(12);

/// The oldest kept inventory collection a report may still use.
const INVENTORY_MAX_AGE: Duration = Duration::from_secs(120);

/// The inventory for a report: the one being collected since an earlier report, else a new
/// collection (`collect`, on a blocking thread), awaited at most `wait`. `None` when it is not
/// ready by then: it is kept (`slot`) for the next report, which starts no other meanwhile.
///
/// A kept collection older than [`INVENTORY_MAX_AGE`] (the connection was down meanwhile) is
/// dropped and a new one started: a report never carries an old inventory as current.
async fn ready_inventory<T: Send + 'static>(
    slot: &std::sync::Mutex<Option<(tokio::time::Instant, tokio::task::JoinHandle<T>)>>,
    collect: impl FnOnce() -> T + Send + 'static,
    wait: Duration,
) -> Option<T> {
    let pending = lock(slot)
        .take()
        .filter(|(started, _)| started.elapsed() <= INVENTORY_MAX_AGE);
    let (started, mut task) = pending.unwrap_or_else(|| {
        (
            tokio::time::Instant::now(),
            tokio::task::spawn_blocking(collect),
        )
    });
    match tokio::time::timeout(wait, &mut task).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::warn!("the inventory could not be collected: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(
                "the inventory is not ready after {:.0}s: this report goes without it",
                wait.as_secs_f64()
            );
            *lock(slot) = Some((started, task));
            None
        }
    }
}

pub(super) async fn connection_loop(sh: Arc<Shared>) {
    let mut attempt = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        let why = sh.session().await;
        if started.elapsed() > Duration::from_secs(30) {
            attempt = 0;
        }
        tracing::warn!("{why}");
        sh.update_status(|s| {
            if !s.revoked {
                s.last_error = Some(why.clone());
            }
        });
        let wait = if sh.is_revoked() {
            sh.config.reconnect_max
        } else {
            backoff(attempt, Duration::from_secs(1), sh.config.reconnect_max)
        };
        attempt = attempt.saturating_add(1);
        tracing::info!("reconnecting in {:.1}s", wait.as_secs_f64());
        tokio::time::sleep(wait).await;
    }
}

pub(super) async fn upload_loop(sh: Arc<Shared>) {
    let mut attempt = 0u32;
    loop {
        let ch = lock(&sh.channel).clone();
        let id = lock(&sh.status).agent_id.clone();
        let key = std::fs::read_to_string(sh.state.key_path()).ok();
        let (Some(ch), Some(id), Some(key), Some(spool)) = (ch, id, key, sh.spool.get()) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let started = tokio::time::Instant::now();
        if let Err(e) = pipeline::upload(spool, ch, &id, &key).await {
            tracing::warn!("{e}");
            // The moment the upload counts as stalled, the controller hears of it (heartbeat).
            if lock(&spool.upload).failures == pipeline::STALL_ATTEMPTS {
                sh.report_now.notify_one();
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            attempt = 0;
        }
        tokio::time::sleep(backoff(
            attempt,
            Duration::from_millis(500),
            sh.config.reconnect_max,
        ))
        .await;
        attempt = attempt.saturating_add(1);
    }
}

pub(super) async fn heartbeat_loop(sh: Arc<Shared>) {
    loop {
        let every = sh.config.heartbeat_interval.mul_f64(0.8 + 0.4 * jitter());
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = sh.report_now.notified() => {}
        }
        sh.report().await;
    }
}

/// Whether the controller refused this agent's certificate at the TLS handshake as revoked (the
/// `certificate_revoked` alert it sends to an agent that was revoked while it was away): the
/// alert is somewhere in the status's chain of sources.
fn refused_as_revoked(s: &tonic::Status) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(s);
    while let Some(err) = e {
        if format!("{err:?}").contains("CertificateRevoked") {
            return true;
        }
        e = err.source();
    }
    false
}

#[cfg(test)]
mod inventory_wait_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Review F3: the heartbeat awaited the inventory with no bound. Now a report goes without
    /// an inventory not ready in time, the collection under way is kept for the next report,
    /// and no second one is started meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_inventory_does_not_hold_the_report_and_is_used_by_the_next() {
        let slot = std::sync::Mutex::new(None);
        let started = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let s = Arc::clone(&started);
        let t = tokio::time::Instant::now();
        let first = ready_inventory(
            &slot,
            move || {
                s.fetch_add(1, Ordering::SeqCst);
                gate.recv().unwrap();
                "slow"
            },
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(first, None);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(lock(&slot).is_some(), "kept for the next report");
        // Still not ready: the next report does not start another collection.
        let s = Arc::clone(&started);
        let second = ready_inventory(
            &slot,
            move || {
                s.fetch_add(1, Ordering::SeqCst);
                "another"
            },
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(second, None);
        assert_eq!(started.load(Ordering::SeqCst), 1);
        release.send(()).unwrap();
        let third = ready_inventory(&slot, || "fresh", Duration::from_secs(5)).await;
        assert_eq!(third, Some("slow"), "the collection under way, once done");
        assert!(lock(&slot).is_none());
        let fourth = ready_inventory(&slot, || "fresh", Duration::from_secs(5)).await;
        assert_eq!(fourth, Some("fresh"));
    }

    /// Review: a collection kept across a long outage was sent as current. One older than
    /// INVENTORY_MAX_AGE is dropped and a new one made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_inventory_from_long_ago_is_not_sent_as_current() {
        let old = tokio::task::spawn_blocking(|| "from before the outage");
        let long_ago = tokio::time::Instant::now()
            .checked_sub(INVENTORY_MAX_AGE + Duration::from_secs(1))
            .unwrap();
        let slot = std::sync::Mutex::new(Some((long_ago, old)));
        let got = ready_inventory(&slot, || "fresh", Duration::from_secs(5)).await;
        assert_eq!(got, Some("fresh"));
    }
}
