//! Admin credentials: every issued admin certificate is recorded (by `init` and `issue-admin`,
//! or at its first use for one issued before they were recorded) so that `thothctl admins
//! list|revoke` can see and revoke it. The [`AdminGate`] holds the deny list in memory (revoked
//! admin credentials, and revoked agent ids) and is consulted at every TLS handshake (the
//! client-certificate verifier, memory only) and at every request, so a revoked admin's (or
//! agent's) next connection and the next call on an open connection are both refused.
//!
//! Revoking by name also refuses every *unrecorded* credential of that name: a certificate
//! issued before credentials were recorded, and never used since, is unknown by fingerprint.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::pki::{self, Identity};
use crate::store::{AdminCredentialRecord, Store, StoreError};

pub use crate::store::unrecorded_id;

#[derive(Debug, Default)]
struct State {
    revoked: HashSet<String>,
    revoked_names: HashSet<String>,
    recorded: HashSet<String>,
    /// Negative cache: unrecorded credentials of a revoked name found unrecorded in the store,
    /// and when. Within [`RECHECK`], their handshakes are refused without reading the store.
    checked_unknown: HashMap<String, Instant>,
    /// Revoked agent ids: their certificates are refused at the handshake too.
    revoked_agents: HashSet<String>,
}

/// How long a credential found unrecorded (of a revoked name) is refused before the store is
/// read again for it (an `issue-admin` in another process may record it meanwhile).
const RECHECK: Duration = Duration::from_secs(60);

/// Most entries in the negative cache (expired ones are dropped first).
const MAX_CHECKED: usize = 10_000;

/// The deny list (and which credentials are recorded), in memory. Nothing here reads the store
/// on the handshake or request path: [`AdminGate::settle`] (async, off the TLS verifier) is the
/// one place that reads it, for an unknown credential of a revoked name, at most once per
/// [`RECHECK`] per credential.
pub struct AdminGate {
    state: RwLock<State>,
}

impl std::fmt::Debug for AdminGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminGate").finish_non_exhaustive()
    }
}

impl AdminGate {
    /// Loads from the store.
    pub fn load(store: Arc<dyn Store>) -> Result<AdminGate, StoreError> {
        let gate = AdminGate {
            state: RwLock::default(),
        };
        for a in store.list_admins()? {
            gate.note(&a);
        }
        for a in store.list_agents(None)? {
            if a.revoked_at.is_some() {
                gate.agent_revoked(&a.agent_id);
            }
        }
        Ok(gate)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a recorded (or just revoked) credential into account. Monotone: a credential
    /// noted revoked stays revoked whatever is noted later.
    pub fn note(&self, a: &AdminCredentialRecord) {
        let mut s = self.write();
        s.recorded.insert(a.fingerprint.clone());
        s.checked_unknown.remove(&a.fingerprint);
        if a.revoked_at.is_some() {
            s.revoked.insert(a.fingerprint.clone());
            // Revoked by name: its unrecorded credentials go too (one revoked by id: only it).
            if a.fingerprint == unrecorded_id(&a.name) {
                s.revoked_names.insert(a.name.clone());
            }
        }
    }

    /// An agent was revoked: its certificate is refused at every later handshake.
    pub fn agent_revoked(&self, agent_id: &str) {
        self.write().revoked_agents.insert(agent_id.to_owned());
    }

    /// Whether this credential is recorded.
    pub fn is_recorded(&self, fingerprint: &str) -> bool {
        self.read().recorded.contains(fingerprint)
    }

    /// Found unrecorded in the store within [`RECHECK`] (the negative cache).
    fn checked_recently(s: &State, fingerprint: &str) -> bool {
        s.checked_unknown
            .get(fingerprint)
            .is_some_and(|at| at.elapsed() < RECHECK)
    }

    fn unknown_of_revoked_name(s: &State, fingerprint: &str, name: &str) -> bool {
        !s.recorded.contains(fingerprint) && s.revoked_names.contains(name)
    }

    /// For an unknown credential of a revoked name (the request path, before [`Self::refusal`]):
    /// reads the store once (off the async workers) in case `issue-admin` recorded it since,
    /// and remembers a negative answer for [`RECHECK`].
    pub async fn settle(&self, store: &Arc<dyn Store>, fingerprint: &str, name: &str) {
        {
            let s = self.read();
            if !Self::unknown_of_revoked_name(&s, fingerprint, name)
                || Self::checked_recently(&s, fingerprint)
            {
                return;
            }
        }
        let (fp, st) = (fingerprint.to_owned(), Arc::clone(store));
        let found = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>(
                st.list_admins()?
                    .into_iter()
                    .filter(|a| a.fingerprint == fp)
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::backend(format!("storage task failed: {e}"))));
        match found {
            Ok(found) if !found.is_empty() => found.iter().for_each(|a| self.note(a)),
            Ok(_) => {
                let mut s = self.write();
                if s.checked_unknown.len() >= MAX_CHECKED {
                    s.checked_unknown.retain(|_, at| at.elapsed() < RECHECK);
                }
                if s.checked_unknown.len() < MAX_CHECKED {
                    s.checked_unknown
                        .insert(fingerprint.to_owned(), Instant::now());
                }
            }
            Err(e) => tracing::warn!("reading admin credentials: {e}"),
        }
    }

    /// Why an admin credential must be refused, if it must (memory only).
    pub fn refusal(&self, fingerprint: &str, name: &str) -> Option<String> {
        let s = self.read();
        if s.revoked.contains(fingerprint) {
            Some(format!(
                "the admin credential of {name} ({fingerprint}) was revoked"
            ))
        } else if Self::unknown_of_revoked_name(&s, fingerprint, name) {
            Some(format!(
                "admin {name} was revoked, and this credential ({fingerprint}) is not one issued since"
            ))
        } else {
            None
        }
    }

    /// Why a verified certificate's identity must be refused, if it must (memory only): a
    /// revoked agent, or an admin credential [`Self::refusal`] refuses.
    pub fn refusal_for(&self, id: &Identity, fingerprint: &str) -> Option<String> {
        match id {
            Identity::Agent { agent_id, .. } => self
                .read()
                .revoked_agents
                .contains(agent_id)
                .then(|| format!("agent {agent_id} was revoked")),
            Identity::Admin { name, .. } => self.refusal(fingerprint, name),
        }
    }

    /// For a client certificate (DER) at the handshake: why to refuse it, if it is a revoked
    /// admin credential (memory only, never the store). An unknown credential of a revoked name
    /// is refused here once the request path found it unrecorded (negative cache); before that,
    /// its handshake completes and its first request is refused (or served, if `issue-admin`
    /// recorded it since). An agent certificate is refused when its agent was revoked.
    pub fn refusal_for_der(&self, der: &[u8]) -> Option<String> {
        let name = match Identity::from_cert_der(der) {
            Ok(Identity::Admin { name, .. }) => name,
            Ok(Identity::Agent { agent_id, .. }) => {
                return self
                    .read()
                    .revoked_agents
                    .contains(&agent_id)
                    .then(|| format!("agent {agent_id} was revoked"));
            }
            _ => return None,
        };
        let fingerprint = pki::fingerprint(der);
        {
            let s = self.read();
            if Self::unknown_of_revoked_name(&s, &fingerprint, &name)
                && !Self::checked_recently(&s, &fingerprint)
            {
                return None;
            }
        }
        self.refusal(&fingerprint, &name)
    }
}

/// Why an admin certificate cannot be recorded ([`record_for`]).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The certificate names no identity.
    #[error(transparent)]
    Identity(#[from] pki::PkiError),
    /// The certificate is not an admin's.
    #[error("not an admin certificate")]
    NotAdmin,
    /// The certificate does not parse.
    #[error("certificate: {0}")]
    Certificate(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
}

/// The record of an admin certificate (PEM or DER) made now by `source`.
pub fn record_for(
    cert_der: &[u8],
    source: &str,
    now: i64,
) -> Result<AdminCredentialRecord, RecordError> {
    let Identity::Admin { name, role, tenant } = Identity::from_cert_der(cert_der)? else {
        return Err(RecordError::NotAdmin);
    };
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(RecordError::Certificate)?;
    Ok(AdminCredentialRecord {
        fingerprint: pki::fingerprint(cert_der),
        name,
        role: role.as_str().to_owned(),
        tenant: tenant.unwrap_or_default(),
        not_after: cert.validity().not_after.timestamp(),
        recorded_at: now,
        source: source.to_owned(),
        ..AdminCredentialRecord::default()
    })
}
