//! The gRPC services: enrollment, agent sync and administration. Identity comes from the verified
//! client certificate only (invariant 5); every admin mutation and every refusal is audited.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::Stream;
use sha2::{Digest, Sha256};
use thoth_proto::fleet::{self as pb, admin_server, agent_sync_server, enrollment_server};
use tonic::{Request, Response, Status};

use crate::controller::{Controller, PushError, now_unix};
use crate::hub::Published;
use crate::metrics::Metrics;
use crate::pki::{self, Identity, Role};
use crate::store::{
    AgentRecord, AgentReportRecord, Labels, PolicyRecord, RedeemError, StoreError, TokenRecord,
};

const MAX_TOKEN_LEN: usize = 256;
const MAX_CSR_BYTES: usize = 16 << 10;
const MAX_HOSTNAME_LEN: usize = 253;
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 255;
const MAX_TEXT: usize = 1024;
const MAX_INVENTORY_LIST: usize = 64;

fn internal(e: StoreError) -> Status {
    tracing::error!("storage error: {e}");
    Status::internal(format!(
        "the controller could not complete the request: {e}"
    ))
}

fn push_status(e: PushError) -> Status {
    match e {
        PushError::Invalid(msg) => {
            Status::invalid_argument(format!("policy does not validate: {msg}"))
        }
        PushError::Store(StoreError::Conflict(msg)) => {
            Status::aborted(format!("another push took this version; retry ({msg})"))
        }
        PushError::Store(e) => internal(e),
    }
}

/// The verified identity of the caller, from its client certificate.
fn identity<T>(ctl: &Controller, req: &Request<T>) -> Result<Identity, Status> {
    let Some(certs) = req.peer_certs() else {
        Metrics::inc(&ctl.metrics.auth_refused);
        return Err(Status::unauthenticated(
            "a client certificate is required: enroll the agent, or use an admin credential",
        ));
    };
    let Some(leaf) = certs.first() else {
        Metrics::inc(&ctl.metrics.auth_refused);
        return Err(Status::unauthenticated("a client certificate is required"));
    };
    Identity::from_cert_der(leaf).map_err(|e| {
        Metrics::inc(&ctl.metrics.auth_refused);
        Status::permission_denied(e)
    })
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes, over the {max} byte limit",
            value.len()
        )));
    }
    Ok(())
}

fn check_labels(labels: &std::collections::HashMap<String, String>) -> Result<Labels, Status> {
    if labels.len() > MAX_LABELS {
        return Err(Status::invalid_argument(format!(
            "{} labels, over the limit of {MAX_LABELS}",
            labels.len()
        )));
    }
    let mut out = Labels::new();
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
        if !key_ok {
            return Err(Status::invalid_argument(format!(
                "label key {k:?}: use 1-{MAX_LABEL_KEY} letters, digits, '.', '_', '-' or '/'"
            )));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "label {k}: the value must be at most {MAX_LABEL_VALUE} bytes with no control characters"
            )));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// An enrolled, unrevoked agent calling with its certificate (for other modules).
pub async fn agent_caller_pub<T>(
    ctl: &Controller,
    req: &Request<T>,
) -> Result<AgentRecord, Status> {
    agent_caller(ctl, req).await
}

/// An enrolled, unrevoked agent calling with its certificate.
async fn agent_caller<T>(ctl: &Controller, req: &Request<T>) -> Result<AgentRecord, Status> {
    let Identity::Agent { tenant, agent_id } = identity(ctl, req)? else {
        Metrics::inc(&ctl.metrics.auth_refused);
        return Err(Status::permission_denied(
            "this call is for agents; an admin certificate cannot make it",
        ));
    };
    let id = agent_id.clone();
    let agent = ctl.db(move |s| s.agent(&id)).await.map_err(internal)?;
    let Some(agent) = agent.filter(|a| a.tenant == tenant) else {
        Metrics::inc(&ctl.metrics.auth_refused);
        return Err(Status::permission_denied(format!(
            "agent {agent_id} is not enrolled with this controller"
        )));
    };
    if let Some(at) = agent.revoked_at {
        Metrics::inc(&ctl.metrics.auth_refused);
        return Err(Status::permission_denied(format!(
            "agent {agent_id} was revoked at {}; it must be enrolled again with a new token",
            rfc3339(at)
        )));
    }
    Ok(agent)
}

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64),
    )
    .to_string()
}

fn hostname_ok(h: &str) -> Result<(), Status> {
    check_len("hostname", h, MAX_HOSTNAME_LEN)?;
    if h.chars().any(char::is_control) {
        return Err(Status::invalid_argument("hostname has control characters"));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Enrollment

/// The Enrollment service.
pub struct EnrollmentService(pub Arc<Controller>);

#[tonic::async_trait]
impl enrollment_server::Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let ctl = Arc::clone(&self.0);
        let r = req.into_inner();
        let refused = |s: Status| {
            Metrics::inc(&ctl.metrics.enrollments_refused);
            tracing::warn!("enrollment refused: {}", s.message());
            s
        };
        if r.token.is_empty() {
            return Err(refused(Status::invalid_argument(
                "the enrollment token is empty",
            )));
        }
        check_len("token", &r.token, MAX_TOKEN_LEN).map_err(refused)?;
        if r.csr_der.len() > MAX_CSR_BYTES {
            return Err(refused(Status::invalid_argument(format!(
                "the CSR is {} bytes, over the {MAX_CSR_BYTES} byte limit",
                r.csr_der.len()
            ))));
        }
        hostname_ok(&r.hostname).map_err(refused)?;
        let mut labels = check_labels(&r.labels).map_err(refused)?;
        if !r.tenant.is_empty() {
            pki::check_tenant(&r.tenant).map_err(|e| refused(Status::invalid_argument(e)))?;
        }
        // Verify the CSR before spending a token use.
        pki::parse_csr(&r.csr_der).map_err(|e| refused(Status::invalid_argument(e)))?;
        let hash = hex::encode(Sha256::digest(r.token.as_bytes()));
        let asserted = (!r.tenant.is_empty()).then(|| r.tenant.clone());
        let validity = ctl.config.agent_cert_validity;
        let c2 = Arc::clone(&ctl);
        let csr = r.csr_der.clone();
        let hostname = r.hostname.clone();
        let mut cert_pem = String::new();
        let result = tokio::task::spawn_blocking(move || {
            let now = now_unix();
            let outcome = c2
                .store
                .enroll(&hash, asserted.as_deref(), now, &mut |token| {
                    let agent_id = format!("agt-{}", uuid::Uuid::now_v7().simple());
                    let identity = Identity::Agent {
                        tenant: token.tenant.clone(),
                        agent_id: agent_id.clone(),
                    };
                    let pem = c2
                        .ca
                        .sign_csr(&csr, &identity, SystemTime::now(), validity)
                        .map_err(StoreError::Aborted)?;
                    let not_after = pki::not_after_unix(&pem).map_err(StoreError::Aborted)?;
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
        .map_err(|e| Status::internal(e.to_string()))?;
        let (agent, cert_pem) = match result {
            Ok(Ok(done)) => done,
            Ok(Err(e @ RedeemError::WrongTenant { .. })) => {
                return Err(refused(Status::permission_denied(e.to_string())));
            }
            Ok(Err(e)) => return Err(refused(Status::unauthenticated(e.to_string()))),
            Err(StoreError::Aborted(e)) => return Err(refused(Status::invalid_argument(e))),
            Err(e) => return Err(internal(e)),
        };
        Metrics::inc(&ctl.metrics.enrollments);
        tracing::info!(
            agent_id = agent.agent_id,
            tenant = agent.tenant,
            hostname = agent.hostname,
            "agent enrolled"
        );
        Ok(Response::new(pb::EnrollResponse {
            agent_id: agent.agent_id,
            tenant: agent.tenant,
            certificate_pem: cert_pem,
            ca_certificate_pem: ctl.ca.cert_pem().to_owned(),
            not_after_unix: agent.cert_not_after,
        }))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let ctl = &self.0;
        let agent = agent_caller(ctl, &req).await?;
        let r = req.into_inner();
        if r.csr_der.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument(format!(
                "the CSR is {} bytes, over the {MAX_CSR_BYTES} byte limit",
                r.csr_der.len()
            )));
        }
        let identity = Identity::Agent {
            tenant: agent.tenant.clone(),
            agent_id: agent.agent_id.clone(),
        };
        let pem = ctl
            .ca
            .sign_csr(
                &r.csr_der,
                &identity,
                SystemTime::now(),
                ctl.config.agent_cert_validity,
            )
            .map_err(Status::invalid_argument)?;
        let not_after = pki::not_after_unix(&pem).map_err(Status::internal)?;
        let id = agent.agent_id.clone();
        ctl.db(move |s| s.set_agent_cert(&id, not_after))
            .await
            .map_err(internal)?;
        Metrics::inc(&ctl.metrics.renewals);
        tracing::info!(agent_id = agent.agent_id, "certificate renewed");
        Ok(Response::new(pb::EnrollResponse {
            agent_id: agent.agent_id,
            tenant: agent.tenant,
            certificate_pem: pem,
            ca_certificate_pem: ctl.ca.cert_pem().to_owned(),
            not_after_unix: not_after,
        }))
    }
}

// ------------------------------------------------------------------------------------------
// Agent sync

/// The AgentSync service.
pub struct SyncService(pub Arc<Controller>);

type UpdateStream = Pin<Box<dyn Stream<Item = Result<pb::PolicyUpdate, Status>> + Send>>;

struct Subscription {
    ctl: Arc<Controller>,
    agent_id: String,
    bundles: tokio::sync::watch::Receiver<Option<Arc<Published>>>,
    revocations: tokio::sync::watch::Receiver<u64>,
    first: bool,
    done: bool,
    _connected: crate::hub::ConnectedGuard,
    _open: OpenGuard,
}

struct OpenGuard(Arc<Controller>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .metrics
            .subscriptions
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Subscription {
    fn update(&self, p: &Published) -> pb::PolicyUpdate {
        Metrics::inc(&self.ctl.metrics.bundles_sent);
        pb::PolicyUpdate {
            bundle: p.bundle.clone(),
            version: p.version,
        }
    }

    async fn next(&mut self) -> Option<Result<pb::PolicyUpdate, Status>> {
        if self.done {
            return None;
        }
        if self.first {
            self.first = false;
            let current = self.bundles.borrow_and_update().clone();
            if let Some(p) = current {
                return Some(Ok(self.update(&p)));
            }
        }
        loop {
            tokio::select! {
                changed = self.bundles.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let current = self.bundles.borrow_and_update().clone();
                    if let Some(p) = current {
                        return Some(Ok(self.update(&p)));
                    }
                }
                changed = self.revocations.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let id = self.agent_id.clone();
                    let agent = self.ctl.db(move |s| s.agent(&id)).await;
                    if let Ok(Some(a)) = agent && a.revoked_at.is_some() {
                        self.done = true;
                        tracing::info!(agent_id = self.agent_id, "subscription closed: agent revoked");
                        return Some(Err(Status::permission_denied(format!(
                            "agent {} was revoked", self.agent_id
                        ))));
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl agent_sync_server::AgentSync for SyncService {
    type SubscribeStream = UpdateStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let ctl = Arc::clone(&self.0);
        let agent = agent_caller(&ctl, &req).await?;
        let r = req.into_inner();
        if !r.tenant.is_empty() && r.tenant != agent.tenant {
            Metrics::inc(&ctl.metrics.auth_refused);
            tracing::warn!(
                agent_id = agent.agent_id,
                asked = r.tenant,
                "cross-tenant subscribe refused"
            );
            return Err(Status::permission_denied(format!(
                "agent {} belongs to tenant {:?}, not {:?}",
                agent.agent_id, agent.tenant, r.tenant
            )));
        }
        let id = agent.agent_id.clone();
        let _ = ctl.db(move |s| s.touch_agent(&id, now_unix())).await;
        ctl.metrics
            .subscriptions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sub = Subscription {
            bundles: ctl.hub.subscribe(&agent.tenant),
            revocations: ctl.hub.revocations(),
            _connected: ctl.hub.connect(&agent.agent_id),
            _open: OpenGuard(Arc::clone(&ctl)),
            agent_id: agent.agent_id,
            first: true,
            done: false,
            ctl,
        };
        let stream = futures_util::stream::unfold(sub, |mut sub| async move {
            sub.next().await.map(|item| (item, sub))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report(
        &self,
        req: Request<pb::AgentReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let ctl = &self.0;
        let agent = agent_caller(ctl, &req).await?;
        let r = req.into_inner();
        check_len("last_error", &r.last_error, 4 * MAX_TEXT)?;
        check_len("agent_version", &r.agent_version, 64)?;
        let mut hostname = None;
        let inventory = match r.inventory {
            Some(inv) => {
                hostname_ok(&inv.hostname)?;
                if inv.config_dirs.len() > MAX_INVENTORY_LIST
                    || inv.config_dirs.iter().any(|d| d.len() > MAX_TEXT)
                {
                    return Err(Status::invalid_argument(format!(
                        "inventory.config_dirs: at most {MAX_INVENTORY_LIST} paths of {MAX_TEXT} bytes"
                    )));
                }
                for (name, v) in [
                    ("os_name", &inv.os_name),
                    ("os_version", &inv.os_version),
                    ("arch", &inv.arch),
                ] {
                    check_len(&format!("inventory.{name}"), v, 128)?;
                }
                if !inv.hostname.is_empty() {
                    hostname = Some(inv.hostname.clone());
                }
                Some(
                    serde_json::json!({
                        "hostname": inv.hostname,
                        "osName": inv.os_name,
                        "osVersion": inv.os_version,
                        "arch": inv.arch,
                        "cpus": inv.cpus,
                        "memoryBytes": inv.memory_bytes,
                        "uptimeSecs": inv.uptime_secs,
                        "configDirs": inv.config_dirs,
                        "governedServers": inv.governed_servers,
                        "governedConfigs": inv.governed_configs,
                    })
                    .to_string(),
                )
            }
            None => None,
        };
        let record = AgentReportRecord {
            applied_version: r.applied_version,
            stale: r.stale,
            last_error: r.last_error,
            inventory,
            hostname,
            agent_version: r.agent_version,
        };
        let (id, tenant) = (agent.agent_id.clone(), agent.tenant.clone());
        let latest = ctl
            .db(move |s| {
                s.record_report(&id, &record, now_unix())?;
                Ok(s.latest_policy(&tenant)?.map_or(0, |p| p.version))
            })
            .await
            .map_err(internal)?;
        Metrics::inc(&ctl.metrics.reports);
        Ok(Response::new(pb::ReportAck {
            latest_version: latest,
            server_time_unix: now_unix(),
        }))
    }
}

// ------------------------------------------------------------------------------------------
// Admin

/// What an admin action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Any role.
    Read,
    /// operator or admin.
    Manage,
    /// admin.
    Admin,
}

struct AdminCaller {
    name: String,
    role: Role,
    scope: Option<String>,
}

/// The Admin service.
pub struct AdminService(pub Arc<Controller>);

impl AdminService {
    /// Checks the caller is an admin with the role `need` asks, and resolves the tenant it acts
    /// on (`requested`, or its own scope, or the default). Refusals are audited.
    async fn admin<T>(
        &self,
        req: &Request<T>,
        action: &str,
        need: Need,
        requested: &str,
    ) -> Result<(AdminCaller, String), Status> {
        let ctl = &self.0;
        let Identity::Admin { name, role, tenant } = identity(ctl, req)? else {
            Metrics::inc(&ctl.metrics.auth_refused);
            return Err(Status::permission_denied(
                "this call needs an admin certificate (thothctl); agent certificates cannot make it",
            ));
        };
        let caller = AdminCaller {
            name,
            role,
            scope: tenant,
        };
        let tenant = if requested.is_empty() {
            caller
                .scope
                .clone()
                .unwrap_or_else(|| ctl.config.default_tenant.clone())
        } else {
            pki::check_tenant(requested).map_err(Status::invalid_argument)?;
            requested.to_owned()
        };
        let allowed = match need {
            Need::Read => true,
            Need::Manage => matches!(caller.role, Role::Operator | Role::Admin),
            Need::Admin => caller.role == Role::Admin,
        };
        let refusal = if !allowed {
            Some(format!(
                "{} has role {}; {action} needs {}",
                caller.name,
                caller.role,
                if need == Need::Admin {
                    "admin"
                } else {
                    "operator or admin"
                }
            ))
        } else if let Some(scope) = &caller.scope
            && *scope != tenant
        {
            Some(format!(
                "{} may act on tenant {scope:?} only, not {tenant:?}",
                caller.name
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            Metrics::inc(&ctl.metrics.auth_refused);
            ctl.audit(
                &caller.name,
                caller.role.as_str(),
                action,
                &tenant,
                &format!("refused: {why}"),
                serde_json::json!({}),
            )
            .await;
            return Err(Status::permission_denied(why));
        }
        Ok((caller, tenant))
    }

    /// For listings: `Some(tenant)` to filter, `None` for all (unscoped callers naming none).
    fn list_scope(caller: &AdminCaller, requested: &str, resolved: String) -> Option<String> {
        if requested.is_empty() && caller.scope.is_none() {
            None
        } else {
            Some(resolved)
        }
    }

    async fn audit_ok(
        &self,
        c: &AdminCaller,
        action: &str,
        tenant: &str,
        detail: serde_json::Value,
    ) {
        self.0
            .audit(&c.name, c.role.as_str(), action, tenant, "ok", detail)
            .await;
    }
}

fn version_info(p: &PolicyRecord, applied: u64) -> pb::PolicyVersion {
    pb::PolicyVersion {
        tenant: p.tenant.clone(),
        version: p.version,
        issued_at_unix: p.issued_at,
        expires_at_unix: p.expires_at,
        sha256: p.sha256.clone(),
        pushed_by: p.pushed_by.clone(),
        comment: p.comment.clone(),
        rollback_of: p.rollback_of.unwrap_or(0),
        key_id: p.key_id.clone(),
        agents_applied: applied,
    }
}

fn token_info(t: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id.clone(),
        tenant: t.tenant.clone(),
        created_at_unix: t.created_at,
        expires_at_unix: t.expires_at,
        max_uses: t.max_uses,
        uses: t.uses,
        labels: t.labels.clone().into_iter().collect(),
        revoked: t.revoked,
        created_by: t.created_by.clone(),
        comment: t.comment.clone(),
    }
}

fn agent_info(a: &AgentRecord, connected: bool) -> pb::AgentInfo {
    let inventory = a.inventory.as_deref().and_then(|text| {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Some(pb::Inventory {
            hostname: s("hostname"),
            os_name: s("osName"),
            os_version: s("osVersion"),
            arch: s("arch"),
            cpus: n("cpus") as u32,
            memory_bytes: n("memoryBytes"),
            uptime_secs: n("uptimeSecs"),
            config_dirs: v["configDirs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            governed_servers: n("governedServers") as u32,
            governed_configs: n("governedConfigs") as u32,
        })
    });
    pb::AgentInfo {
        agent_id: a.agent_id.clone(),
        tenant: a.tenant.clone(),
        hostname: a.hostname.clone(),
        labels: a.labels.clone().into_iter().collect(),
        enrolled_at_unix: a.enrolled_at,
        last_seen_unix: a.last_seen.unwrap_or(0),
        applied_version: a.applied_version,
        stale: a.stale,
        last_error: a.last_error.clone(),
        revoked: a.revoked_at.is_some(),
        cert_not_after_unix: a.cert_not_after,
        inventory,
        agent_version: a.agent_version.clone(),
        connected,
    }
}

fn new_token_secret() -> (String, String) {
    use base64::Engine;
    let mut id = [0u8; 5];
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    let id = format!("tok-{}", hex::encode(id));
    let token = format!(
        "{id}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    (id, token)
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::AdminIdentity>, Status> {
        let (c, _) = self.admin(&req, "whoami", Need::Read, "").await?;
        Ok(Response::new(pb::AdminIdentity {
            name: c.name,
            role: c.role.as_str().to_owned(),
            tenant_scope: c.scope.unwrap_or_else(|| "*".into()),
        }))
    }

    async fn push_policy(
        &self,
        req: Request<pb::PushPolicyRequest>,
    ) -> Result<Response<pb::PolicyVersion>, Status> {
        let r = req.get_ref();
        let (c, tenant) = self
            .admin(&req, "policy.push", Need::Manage, &r.tenant)
            .await?;
        let r = req.into_inner();
        check_len("comment", &r.comment, MAX_TEXT)?;
        check_len("source", &r.source, MAX_TEXT)?;
        let source = if r.source.is_empty() {
            "<pushed policy>".to_owned()
        } else {
            r.source
        };
        let pushed = self
            .0
            .push_policy(&tenant, r.document, &source, &c.name, r.comment, None)
            .await;
        let p = match pushed {
            Ok(p) => p,
            Err(e) => {
                let status = push_status(e);
                self.0
                    .audit(
                        &c.name,
                        c.role.as_str(),
                        "policy.push",
                        &tenant,
                        &format!("refused: {}", status.message()),
                        serde_json::json!({"source": source}),
                    )
                    .await;
                return Err(status);
            }
        };
        self.audit_ok(
            &c,
            "policy.push",
            &tenant,
            serde_json::json!({"version": p.version, "sha256": p.sha256, "source": source}),
        )
        .await;
        Ok(Response::new(version_info(&p, 0)))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyDocument>, Status> {
        let r = req.get_ref();
        let (_, tenant) = self
            .admin(&req, "policy.show", Need::Read, &r.tenant)
            .await?;
        let version = r.version;
        let t = tenant.clone();
        let found = self
            .0
            .db(move |s| {
                let p = if version == 0 {
                    s.latest_policy(&t)?
                } else {
                    s.policy(&t, version)?
                };
                let applied = match &p {
                    Some(p) => s.count_applied(&t, p.version)?,
                    None => 0,
                };
                Ok(p.map(|p| (p, applied)))
            })
            .await
            .map_err(internal)?;
        let Some((p, applied)) = found else {
            return Err(Status::not_found(if version == 0 {
                format!(
                    "tenant {tenant:?} has no policy yet: push one with `thothctl policy push FILE`"
                )
            } else {
                format!("tenant {tenant:?} has no policy version {version}")
            }));
        };
        Ok(Response::new(pb::PolicyDocument {
            version: Some(version_info(&p, applied)),
            document: p.document,
            bundle: p.bundle.into(),
        }))
    }

    async fn policy_history(
        &self,
        req: Request<pb::PolicyHistoryRequest>,
    ) -> Result<Response<pb::PolicyHistoryResponse>, Status> {
        let r = req.get_ref();
        let (_, tenant) = self
            .admin(&req, "policy.history", Need::Read, &r.tenant)
            .await?;
        let limit = r.limit;
        let versions = self
            .0
            .db(move |s| {
                let mut out = Vec::new();
                for p in s.policy_history(&tenant, limit)? {
                    let applied = s.count_applied(&tenant, p.version)?;
                    out.push(version_info(&p, applied));
                }
                Ok(out)
            })
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::PolicyHistoryResponse { versions }))
    }

    async fn rollback_policy(
        &self,
        req: Request<pb::RollbackPolicyRequest>,
    ) -> Result<Response<pb::PolicyVersion>, Status> {
        let r = req.get_ref();
        let (c, tenant) = self
            .admin(&req, "policy.rollback", Need::Manage, &r.tenant)
            .await?;
        let r = req.into_inner();
        check_len("comment", &r.comment, MAX_TEXT)?;
        let (t, to) = (tenant.clone(), r.to_version);
        let old = self
            .0
            .db(move |s| s.policy(&t, to))
            .await
            .map_err(internal)?;
        let Some(old) = old else {
            return Err(Status::not_found(format!(
                "tenant {tenant:?} has no policy version {to}"
            )));
        };
        let comment = if r.comment.is_empty() {
            format!("rollback to version {to}")
        } else {
            r.comment
        };
        let p = self
            .0
            .push_policy(
                &tenant,
                old.document,
                &format!("<version {to}>"),
                &c.name,
                comment,
                Some(to),
            )
            .await
            .map_err(push_status)?;
        self.audit_ok(
            &c,
            "policy.rollback",
            &tenant,
            serde_json::json!({"toVersion": to, "newVersion": p.version}),
        )
        .await;
        Ok(Response::new(version_info(&p, 0)))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let r = req.get_ref();
        let (c, tenant) = self
            .admin(&req, "token.create", Need::Manage, &r.tenant)
            .await?;
        let r = req.into_inner();
        let labels = check_labels(&r.labels)?;
        check_len("comment", &r.comment, MAX_TEXT)?;
        const MAX_TTL: u64 = 365 * 86_400;
        if r.ttl_secs > MAX_TTL {
            return Err(Status::invalid_argument(
                "a token may live at most 365 days",
            ));
        }
        let ttl = if r.ttl_secs == 0 {
            self.0.config.token_ttl.as_secs()
        } else {
            r.ttl_secs
        };
        let (id, token) = new_token_secret();
        let now = now_unix();
        let record = TokenRecord {
            id,
            hash: hex::encode(Sha256::digest(token.as_bytes())),
            tenant: tenant.clone(),
            created_at: now,
            expires_at: now + ttl as i64,
            max_uses: r.max_uses.max(1),
            uses: 0,
            labels,
            revoked: false,
            created_by: c.name.clone(),
            comment: r.comment,
        };
        let rec = record.clone();
        self.0
            .db(move |s| s.insert_token(&rec))
            .await
            .map_err(internal)?;
        self.audit_ok(&c, "token.create", &tenant, serde_json::json!({"tokenId": record.id, "maxUses": record.max_uses, "expiresAt": record.expires_at}))
            .await;
        Ok(Response::new(pb::CreatedToken {
            info: Some(token_info(&record)),
            token,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let r = req.get_ref();
        let (c, tenant) = self
            .admin(&req, "token.list", Need::Read, &r.tenant)
            .await?;
        let scope = Self::list_scope(&c, &r.tenant, tenant);
        let inactive = r.include_inactive;
        let tokens = self
            .0
            .db(move |s| s.list_tokens(scope.as_deref(), inactive, now_unix()))
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let id = req.get_ref().id.clone();
        check_len("id", &id, 64)?;
        let i = id.clone();
        let found = self.0.db(move |s| s.token(&i)).await.map_err(internal)?;
        let Some(token) = found else {
            // Check the caller first so strangers learn nothing about ids.
            self.admin(&req, "token.revoke", Need::Manage, "").await?;
            return Err(Status::not_found(format!("no enrollment token {id:?}")));
        };
        let (c, tenant) = self
            .admin(&req, "token.revoke", Need::Manage, &token.tenant)
            .await?;
        let i = id.clone();
        let t = self
            .0
            .db(move |s| s.revoke_token(&i))
            .await
            .map_err(internal)?;
        let t = t.ok_or_else(|| Status::not_found(format!("no enrollment token {id:?}")))?;
        self.audit_ok(
            &c,
            "token.revoke",
            &tenant,
            serde_json::json!({"tokenId": id}),
        )
        .await;
        Ok(Response::new(token_info(&t)))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let r = req.get_ref();
        let (c, tenant) = self
            .admin(&req, "agent.list", Need::Read, &r.tenant)
            .await?;
        let scope = Self::list_scope(&c, &r.tenant, tenant);
        let agents = self
            .0
            .db(move |s| s.list_agents(scope.as_deref()))
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents
                .iter()
                .map(|a| agent_info(a, self.0.hub.is_connected(&a.agent_id)))
                .collect(),
        }))
    }

    async fn get_agent(
        &self,
        req: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let id = req.get_ref().agent_id.clone();
        check_len("agent_id", &id, 64)?;
        let i = id.clone();
        let found = self.0.db(move |s| s.agent(&i)).await.map_err(internal)?;
        let Some(agent) = found else {
            self.admin(&req, "agent.show", Need::Read, "").await?;
            return Err(Status::not_found(format!("no agent {id:?}")));
        };
        self.admin(&req, "agent.show", Need::Read, &agent.tenant)
            .await?;
        Ok(Response::new(agent_info(
            &agent,
            self.0.hub.is_connected(&agent.agent_id),
        )))
    }

    async fn revoke_agent(
        &self,
        req: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let id = req.get_ref().agent_id.clone();
        let reason = req.get_ref().reason.clone();
        check_len("agent_id", &id, 64)?;
        check_len("reason", &reason, MAX_TEXT)?;
        let i = id.clone();
        let found = self.0.db(move |s| s.agent(&i)).await.map_err(internal)?;
        let Some(agent) = found else {
            self.admin(&req, "agent.revoke", Need::Manage, "").await?;
            return Err(Status::not_found(format!("no agent {id:?}")));
        };
        let (c, tenant) = self
            .admin(&req, "agent.revoke", Need::Manage, &agent.tenant)
            .await?;
        let i = id.clone();
        let a = self
            .0
            .db(move |s| s.revoke_agent(&i, now_unix()))
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no agent {id:?}")))?;
        self.0.hub.revoked();
        self.audit_ok(
            &c,
            "agent.revoke",
            &tenant,
            serde_json::json!({"agentId": id, "reason": reason}),
        )
        .await;
        Ok(Response::new(agent_info(
            &a,
            self.0.hub.is_connected(&a.agent_id),
        )))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = req.get_ref();
        let (c, tenant) = self
            .admin(&req, "audit.list", Need::Admin, &r.tenant)
            .await?;
        let scope = Self::list_scope(&c, &r.tenant, tenant);
        let (after, limit) = (
            r.after_id,
            if r.limit == 0 {
                100
            } else {
                r.limit.min(10_000)
            },
        );
        let entries = self
            .0
            .db(move |s| s.list_audit(scope.as_deref(), after, limit))
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    id: e.id,
                    at_unix_ms: e.at_ms,
                    actor: e.actor,
                    role: e.role,
                    action: e.action,
                    tenant: e.tenant,
                    outcome: e.outcome,
                    detail: e.detail,
                })
                .collect(),
        }))
    }

    async fn query_events(
        &self,
        req: Request<pb::EventQuery>,
    ) -> Result<Response<pb::EventList>, Status> {
        let r = req.get_ref();
        let (c, tenant) = self
            .admin(&req, "events.query", Need::Read, &r.tenant)
            .await?;
        let scope = Self::list_scope(&c, &r.tenant, tenant);
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        for (name, v) in [("since", &r.since), ("until", &r.until)] {
            if !v.is_empty() && humantime::parse_rfc3339_weak(v).is_err() {
                return Err(Status::invalid_argument(format!(
                    "{name} {v:?} is not an RFC 3339 time like 2026-11-24T10:00:00Z"
                )));
            }
        }
        let filter = crate::store::EventFilter {
            tenant: scope,
            agent_id: opt(&r.agent_id),
            session_id: opt(&r.session_id),
            tool_name: opt(&r.tool_name),
            event_types: opt(&r.event_type).into_iter().collect(),
            since: opt(&r.since),
            until: opt(&r.until),
            after_id: r.after_id,
            limit: if r.limit == 0 {
                100
            } else {
                r.limit.min(10_000)
            },
            newest: true,
            ..Default::default()
        };
        let events = self
            .0
            .db(move |s| s.query_events(&filter))
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::EventList {
            events: events
                .into_iter()
                .map(|e| pb::StoredEvent {
                    id: e.id,
                    json: e.json,
                    chain_ok: e.chain_ok,
                })
                .collect(),
        }))
    }

    async fn rotate_signing_key(
        &self,
        req: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKeyInfo>, Status> {
        let (c, _) = self.admin(&req, "key.rotate", Need::Admin, "").await?;
        if c.scope.is_some() {
            return Err(Status::permission_denied(
                "rotating the signing key affects every tenant: it needs an admin certificate for all tenants",
            ));
        }
        let (key, tenants) = self
            .0
            .rotate_signing_key()
            .await
            .map_err(|e| Status::internal(format!("rotation failed: {e}")))?;
        self.audit_ok(
            &c,
            "key.rotate",
            "",
            serde_json::json!({"keyId": key.key_id, "resigned": tenants}),
        )
        .await;
        Ok(Response::new(pb::SigningKeyInfo {
            key_id: key.key_id,
            not_before_unix: key.not_before,
            not_after_unix: key.not_after,
            resigned_tenants: tenants,
        }))
    }
}
