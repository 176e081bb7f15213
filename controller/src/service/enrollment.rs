//! Enrollment: a token (spent once per use) and a CSR become an agent certificate and an
//! enrolled agent, atomically. The caller is anonymous: the token is its credential.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::controller::{Controller, now_unix};
use crate::ids::{AgentId, TenantId};
use crate::metrics::Metrics;
use crate::pki::{self, Identity};
use crate::service::{ServiceError, check_labels, check_len};
use crate::store::{AgentRecord, RedeemError, StoreError};

/// Longest enrollment token accepted.
const MAX_TOKEN_LEN: usize = 256;
/// Largest CSR accepted (enrollment and renewal).
pub const MAX_CSR_BYTES: usize = 16 << 10;
/// Longest hostname accepted.
pub const MAX_HOSTNAME_LEN: usize = 253;

/// What an agent enrolls with.
#[derive(Debug, Clone, Default)]
pub struct EnrollRequest {
    /// The enrollment token (`<id>.<secret>`).
    pub token: String,
    /// Its certificate signing request (DER).
    pub csr_der: Vec<u8>,
    /// Its hostname.
    pub hostname: String,
    /// Its own labels (the token's win).
    pub labels: HashMap<String, String>,
    /// The tenant it says it belongs to (empty: none asserted).
    pub tenant: String,
}

/// Refuses a hostname that is too long or has control characters.
pub fn check_hostname(h: &str) -> Result<(), ServiceError> {
    check_len("hostname", h, MAX_HOSTNAME_LEN)?;
    if h.chars().any(char::is_control) {
        return Err(ServiceError::InvalidArgument(
            "hostname has control characters".into(),
        ));
    }
    Ok(())
}

/// Refuses a CSR over [`MAX_CSR_BYTES`].
pub fn check_csr_len(csr_der: &[u8]) -> Result<(), ServiceError> {
    if csr_der.len() > MAX_CSR_BYTES {
        return Err(ServiceError::InvalidArgument(format!(
            "the CSR is {} bytes, over the {MAX_CSR_BYTES} byte limit",
            csr_der.len()
        )));
    }
    Ok(())
}

/// The enrollment service.
pub struct EnrollmentService(pub Arc<Controller>);

impl EnrollmentService {
    /// Enrolls an agent; returns it and its certificate (PEM). Refusals are counted and logged.
    pub async fn enroll(&self, r: EnrollRequest) -> Result<(AgentRecord, String), ServiceError> {
        let ctl = Arc::clone(&self.0);
        let refused = |e: ServiceError| {
            Metrics::inc(&ctl.metrics.enrollments_refused);
            tracing::warn!("enrollment refused: {}", e.message());
            e
        };
        if r.token.is_empty() {
            return Err(refused(ServiceError::InvalidArgument(
                "the enrollment token is empty".into(),
            )));
        }
        check_len("token", &r.token, MAX_TOKEN_LEN).map_err(refused)?;
        check_csr_len(&r.csr_der).map_err(refused)?;
        check_hostname(&r.hostname).map_err(refused)?;
        let mut labels = check_labels(&r.labels).map_err(refused)?;
        let asserted = if r.tenant.is_empty() {
            None
        } else {
            Some(TenantId::parse(&r.tenant).map_err(|e| refused(e.into()))?)
        };
        // Verify the CSR before spending a token use.
        pki::parse_csr(&r.csr_der)
            .map_err(|e| refused(ServiceError::InvalidArgument(e.to_string())))?;
        let hash = hex::encode(Sha256::digest(r.token.as_bytes()));
        let validity = ctl.config.agent_cert_validity;
        let c2 = Arc::clone(&ctl);
        let (csr, hostname) = (r.csr_der, r.hostname);
        let mut cert_pem = String::new();
        let result = tokio::task::spawn_blocking(move || {
            let now = now_unix();
            let outcome = c2
                .store
                .enroll(&hash, asserted.as_ref(), now, &mut |token| {
                    let agent_id = format!("agt-{}", uuid::Uuid::now_v7().simple());
                    let identity = Identity::Agent {
                        tenant: token.tenant.clone(),
                        agent_id: agent_id.clone(),
                    };
                    let pem = c2
                        .ca
                        .sign_csr(&csr, &identity, SystemTime::now(), validity)
                        .map_err(|e| StoreError::Aborted(e.to_string()))?;
                    let not_after = pki::not_after_unix(&pem)
                        .map_err(|e| StoreError::Aborted(e.to_string()))?;
                    cert_pem = pem;
                    // The token's labels win over the agent's own.
                    labels.extend(token.labels.clone());
                    Ok(AgentRecord {
                        agent_id,
                        tenant: token.tenant.clone(),
                        hostname: hostname.clone(),
                        labels: labels.clone(),
                        enrolled_at: now,
                        cert_not_after: not_after,
                        token_id: token.id.clone(),
                        ..AgentRecord::default()
                    })
                });
            outcome.map(|o| o.map(|a| (a, cert_pem)))
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let (agent, cert_pem) = match result {
            Ok(Ok(done)) => done,
            Ok(Err(e @ RedeemError::WrongTenant { .. })) => {
                return Err(refused(ServiceError::PermissionDenied(e.to_string())));
            }
            Ok(Err(e)) => return Err(refused(ServiceError::Unauthenticated(e.to_string()))),
            Err(StoreError::Aborted(e)) => {
                return Err(refused(ServiceError::InvalidArgument(e)));
            }
            Err(e) => return Err(e.into()),
        };
        Metrics::inc(&ctl.metrics.enrollments);
        tracing::info!(
            agent_id = agent.agent_id,
            tenant = agent.tenant,
            hostname = agent.hostname,
            "agent enrolled"
        );
        Ok((agent, cert_pem))
    }

    /// Signs a renewed certificate for an enrolled agent (same identity); returns it (PEM) and
    /// its expiry.
    pub async fn renew(
        &self,
        agent: &AgentRecord,
        csr_der: &[u8],
    ) -> Result<(String, i64), ServiceError> {
        let ctl = &self.0;
        check_csr_len(csr_der)?;
        let identity = Identity::Agent {
            tenant: agent.tenant.clone(),
            agent_id: agent.agent_id.clone(),
        };
        let pem = ctl
            .ca
            .sign_csr(
                csr_der,
                &identity,
                SystemTime::now(),
                ctl.config.agent_cert_validity,
            )
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let not_after =
            pki::not_after_unix(&pem).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let id = AgentId::trusted(agent.agent_id.as_str());
        ctl.db(move |s| s.set_agent_cert(&id, not_after)).await?;
        Metrics::inc(&ctl.metrics.renewals);
        tracing::info!(agent_id = agent.agent_id, "certificate renewed");
        Ok((pem, not_after))
    }
}
