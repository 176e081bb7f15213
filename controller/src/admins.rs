//! Admin credentials: every issued admin certificate is recorded (by `init` and `issue-admin`,
//! or at its first use for one issued before they were recorded) so that `thothctl admins
//! list|revoke` can see and revoke it. The [`AdminGate`] holds the deny list in memory and is
//! consulted at every TLS handshake (the client-certificate verifier) and at every request, so a
//! revoked admin's next connection and the next call on an open connection are both refused.
//!
//! Revoking by name also refuses every *unrecorded* credential of that name: a certificate
//! issued before credentials were recorded, and never used since, is unknown by fingerprint.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::pki::{self, Identity};
use crate::store::{AdminCredentialRecord, Store, StoreError};

/// `fingerprint` of the row that stands for "every unrecorded credential of NAME".
pub fn unrecorded_id(name: &str) -> String {
    format!("unrecorded:{name}")
}

#[derive(Debug, Default)]
struct State {
    revoked: HashSet<String>,
    revoked_names: HashSet<String>,
    recorded: HashSet<String>,
}

/// The deny list (and which credentials are recorded), in memory.
pub struct AdminGate {
    state: RwLock<State>,
    /// Read again for an unknown credential of a revoked name: `issue-admin` may have recorded
    /// it while the controller runs.
    store: Option<Arc<dyn Store>>,
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
            store: None,
        };
        for a in store.list_admins()? {
            gate.note(&a);
        }
        Ok(AdminGate {
            store: Some(store),
            ..gate
        })
    }

    /// Takes a recorded (or just revoked) credential into account.
    pub fn note(&self, a: &AdminCredentialRecord) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        s.recorded.insert(a.fingerprint.clone());
        if a.revoked_at.is_some() {
            s.revoked.insert(a.fingerprint.clone());
            // Revoked by name: its unrecorded credentials go too (one revoked by id: only it).
            if a.fingerprint == unrecorded_id(&a.name) {
                s.revoked_names.insert(a.name.clone());
            }
        }
    }

    /// Whether this credential is recorded.
    pub fn is_recorded(&self, fingerprint: &str) -> bool {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        s.recorded.contains(fingerprint)
    }

    /// Why an admin credential must be refused, if it must.
    pub fn refusal(&self, fingerprint: &str, name: &str) -> Option<String> {
        let unknown_of_revoked_name = {
            let s = self.state.read().unwrap_or_else(|p| p.into_inner());
            !s.recorded.contains(fingerprint) && s.revoked_names.contains(name)
        };
        if unknown_of_revoked_name && let Some(store) = &self.store {
            // Rare (a revoked name): was it issued and recorded since?
            match store.list_admins() {
                Ok(all) => {
                    for a in all.iter().filter(|a| a.fingerprint == fingerprint) {
                        self.note(a);
                    }
                }
                Err(e) => tracing::warn!("reading admin credentials: {e}"),
            }
        }
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        if s.revoked.contains(fingerprint) {
            Some(format!(
                "the admin credential of {name} ({fingerprint}) was revoked"
            ))
        } else if !s.recorded.contains(fingerprint) && s.revoked_names.contains(name) {
            Some(format!(
                "admin {name} was revoked, and this credential ({fingerprint}) is not one issued since"
            ))
        } else {
            None
        }
    }

    /// For a client certificate (DER) at the handshake: why to refuse it, if it is a revoked
    /// admin credential. Agent certificates are not this gate's (agents are revoked by id).
    pub fn refusal_for_der(&self, der: &[u8]) -> Option<String> {
        match Identity::from_cert_der(der) {
            Ok(Identity::Admin { name, .. }) => self.refusal(&pki::fingerprint(der), &name),
            _ => None,
        }
    }
}

/// The record of an admin certificate (PEM or DER) made now by `source`.
pub fn record_for(
    cert_der: &[u8],
    source: &str,
    now: i64,
) -> Result<AdminCredentialRecord, String> {
    let Identity::Admin { name, role, tenant } = Identity::from_cert_der(cert_der)? else {
        return Err("not an admin certificate".into());
    };
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| format!("certificate: {e}"))?;
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
