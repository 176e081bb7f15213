//! The controller's state and the operations more than one service needs: signing and
//! publishing policy versions, re-signing before expiry, rotating the signing key, auditing.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use prost::bytes::Bytes;
use sha2::{Digest, Sha256};
use thoth_proto::bundle::{BundlePayload, sign_bundle};

use crate::config::ControllerConfig;
use crate::datadir::{self, DataDir, DataDirError, SigningIdentity};
use crate::hub::Hub;
use crate::ids::TenantId;
use crate::metrics::Metrics;
use crate::pki::Ca;
use crate::store::{AuditRecord, PolicyRecord, Store, StoreError};

/// Largest policy document accepted.
pub const MAX_POLICY_BYTES: usize = thoth_policy::MAX_POLICY_BYTES;

/// Now, as Unix seconds.
pub fn now_unix() -> i64 {
    unix(SystemTime::now())
}

/// A time as Unix seconds.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64),
    )
    .to_string()
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The document does not validate (the message has file, line and column).
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The running controller's state.
pub struct Controller {
    /// Settings.
    pub config: ControllerConfig,
    /// Storage.
    pub store: Arc<dyn Store>,
    /// The CA.
    pub ca: Ca,
    /// Subscriptions.
    pub hub: Arc<Hub>,
    /// Counters.
    pub metrics: Metrics,
    data_dir: PathBuf,
    root: ed25519_dalek::SigningKey,
    signing: RwLock<SigningIdentity>,
    // Serializes version assignment (the store also refuses a version that does not follow).
    push_lock: tokio::sync::Mutex<()>,
    /// Per-sink lag.
    pub sink_lag: crate::sinks::SinkLag,
    /// Bumped after each event commit (sinks wake on it).
    pub events_tick: tokio::sync::watch::Sender<u64>,
    /// Admin credentials: the deny list checked at every handshake and request.
    pub admins: Arc<crate::admins::AdminGate>,
    /// The approval queue's listeners (agents' streams, admin watches, notifiers).
    pub approvals: Arc<crate::approval_hub::ApprovalHub>,
}

impl Controller {
    /// Builds the state from a loaded data directory and a store, and publishes every tenant's
    /// latest bundle to the hub.
    pub fn new(data: DataDir, store: Arc<dyn Store>) -> Result<Arc<Controller>, StoreError> {
        let hub = Arc::new(Hub::default());
        for tenant in store.policy_tenants()? {
            if let Some(p) = store.latest_policy(&TenantId::trusted(tenant.as_str()))? {
                hub.publish(&tenant, p.version, Bytes::from(p.bundle));
            }
        }
        let admins = Arc::new(crate::admins::AdminGate::load(Arc::clone(&store))?);
        Ok(Arc::new(Controller {
            admins,
            config: data.config,
            store,
            ca: data.ca,
            hub,
            metrics: Metrics::default(),
            data_dir: data.dir,
            root: data.root,
            signing: RwLock::new(data.signing),
            push_lock: tokio::sync::Mutex::new(()),
            events_tick: tokio::sync::watch::channel(0).0,
            sink_lag: crate::sinks::SinkLag::default(),
            approvals: Arc::default(),
        }))
    }

    /// Runs `f` on the store from the blocking pool.
    pub async fn db<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<R, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StoreError::backend(format!("storage task failed: {e}")))?
    }

    /// Wakes the sinks after a commit.
    pub fn events_committed(&self) {
        self.events_tick.send_modify(|n| *n += 1);
    }

    /// The metrics text.
    pub fn metrics_text(&self) -> String {
        let mut text = self.metrics.render(self.hub.connected_count());
        text.push_str(&self.sink_lag.render());
        text
    }

    /// The active signing key's id and certificate validity.
    pub fn signing_key(&self) -> (String, i64, i64) {
        let s = self.signing.read().unwrap_or_else(|p| p.into_inner());
        (s.key_id.clone(), s.not_before, s.not_after)
    }

    /// The root public key, base64 (what agents pin).
    pub fn root_public_key(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.root.verifying_key().to_bytes())
    }

    fn sign(
        &self,
        tenant: &str,
        version: u64,
        document: &str,
        now: i64,
    ) -> (Vec<u8>, i64, i64, String) {
        let expires = now + self.config.bundle_validity.as_secs() as i64;
        let payload = BundlePayload {
            tenant: tenant.to_owned(),
            version,
            issued_at: rfc3339(now),
            expires_at: rfc3339(expires),
            policy: document.to_owned(),
        };
        let s = self.signing.read().unwrap_or_else(|p| p.into_inner());
        let env = sign_bundle(&payload, &s.key, &s.certificate);
        let bytes = serde_json::to_vec(&env).expect("an envelope is valid JSON");
        (bytes, now, expires, s.key_id.clone())
    }

    /// Validates `document`, signs it as the tenant's next version, stores it and publishes it.
    pub async fn push_policy(
        &self,
        tenant: &str,
        document: String,
        source: &str,
        pushed_by: &str,
        comment: String,
        rollback_of: Option<u64>,
    ) -> Result<PolicyRecord, PushError> {
        if document.len() > MAX_POLICY_BYTES {
            return Err(PushError::Invalid(format!(
                "{source}: {} bytes, over the {MAX_POLICY_BYTES} byte limit for a policy",
                document.len()
            )));
        }
        let format = thoth_policy::Format::detect(source, &document);
        thoth_policy::parse_policy(&document, source, format)
            .map_err(|e| PushError::Invalid(e.to_string()))?;
        let _guard = self.push_lock.lock().await;
        let t = TenantId::trusted(tenant);
        let latest = self.db(move |s| s.latest_policy(&t)).await?;
        let version = latest.map_or(1, |p| p.version + 1);
        let now = now_unix();
        let (bundle, issued_at, expires_at, key_id) = self.sign(tenant, version, &document, now);
        let record = PolicyRecord {
            tenant: tenant.to_owned(),
            version,
            sha256: hex::encode(Sha256::digest(document.as_bytes())),
            document,
            bundle,
            issued_at,
            expires_at,
            key_id,
            pushed_by: pushed_by.to_owned(),
            comment,
            rollback_of,
            created_at: now,
        };
        let r = record.clone();
        self.db(move |s| s.insert_policy(&r)).await?;
        Metrics::inc(&self.metrics.policy_versions);
        self.hub
            .publish(tenant, version, Bytes::from(record.bundle.clone()));
        tracing::info!(tenant, version, pushed_by, "policy version published");
        Ok(record)
    }

    /// Re-signs the latest bundle of every tenant that expires within `resign_before` (or all of
    /// them when `all`), keeping its version, and publishes it. Returns the tenants re-signed.
    pub async fn resign_due(&self, all: bool) -> Result<Vec<String>, StoreError> {
        let _guard = self.push_lock.lock().await;
        let now = now_unix();
        let horizon = now + self.config.resign_before.as_secs() as i64;
        let tenants = self.db(|s| s.policy_tenants()).await?;
        let mut done = Vec::new();
        for tenant in tenants {
            let t = TenantId::trusted(tenant.as_str());
            let Some(latest) = self.db(move |s| s.latest_policy(&t)).await? else {
                continue;
            };
            if !all && latest.expires_at > horizon {
                continue;
            }
            let (bundle, issued, expires, key_id) =
                self.sign(&tenant, latest.version, &latest.document, now);
            let (t, b) = (TenantId::trusted(tenant.as_str()), bundle.clone());
            self.db(move |s| s.replace_bundle(&t, latest.version, &b, issued, expires, &key_id))
                .await?;
            self.hub
                .publish(&tenant, latest.version, Bytes::from(bundle));
            Metrics::inc(&self.metrics.bundles_resigned);
            tracing::info!(tenant, version = latest.version, "bundle re-signed");
            done.push(tenant);
        }
        Ok(done)
    }

    /// Makes a new signing key (certified by the root), then re-signs every tenant's latest
    /// bundle with it. Agents need nothing new: they verify the key through the root.
    pub async fn rotate_signing_key(&self) -> Result<(SigningIdentity, Vec<String>), RotateError> {
        let dir = self.data_dir.clone();
        let root = self.root.clone();
        let new = tokio::task::spawn_blocking(move || {
            datadir::new_signing_key(&dir, &root, SystemTime::now())
        })
        .await??;
        *self.signing.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
        tracing::info!(key_id = new.key_id, "policy-signing key rotated");
        let tenants = self.resign_due(true).await?;
        Ok((new, tenants))
    }

    /// The periodic job: re-sign bundles that near expiry, and rotate a signing key whose
    /// certificate would end before a fresh bundle does.
    pub async fn maintenance(&self) {
        let (_, _, key_not_after) = self.signing_key();
        let needed = now_unix() + 2 * self.config.bundle_validity.as_secs() as i64;
        if key_not_after < needed
            && let Err(e) = self.rotate_signing_key().await
        {
            tracing::error!("automatic signing-key rotation failed: {e}");
        }
        if let Err(e) = self.resign_due(false).await {
            tracing::error!("re-signing bundles failed: {e}");
        }
    }

    /// Appends to the audit log (failures are logged, never hidden).
    pub async fn audit(
        &self,
        actor: &str,
        role: &str,
        action: &str,
        tenant: &str,
        outcome: &str,
        detail: serde_json::Value,
    ) {
        let entry = AuditRecord {
            id: 0,
            at_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            actor: actor.to_owned(),
            role: role.to_owned(),
            action: action.to_owned(),
            tenant: tenant.to_owned(),
            outcome: outcome.to_owned(),
            detail: detail.to_string(),
        };
        tracing::info!(actor, role, action, tenant, outcome, "audit");
        if let Err(e) = self.db(move |s| s.append_audit(&entry)).await {
            tracing::error!(actor, action, "could not write the audit log: {e}");
        }
    }
}

/// Why the signing key was not rotated ([`Controller::rotate_signing_key`]).
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The new key cannot be made or stored.
    #[error(transparent)]
    Key(#[from] DataDirError),
    /// The task making it did not finish.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The bundles cannot be re-signed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
