//! The gRPC services: enrollment, agent sync and administration. Identity comes from the verified
//! client certificate only (invariant 5); every admin mutation and every refusal is audited.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use thoth_proto::fleet::{self as pb, admin_server, agent_sync_server, enrollment_server};
use tonic::{Request, Response, Status};

use crate::controller::{Controller, now_unix};
use crate::hub::Published;
use crate::ids::AgentId;
use crate::metrics::Metrics;
use crate::service::agents::{AgentReport, AgentService, Inventory};
use crate::service::enrollment::{self, EnrollRequest};
use crate::service::{self, ServiceError};
use crate::store::AgentRecord;

/// The one place a service error becomes a gRPC status.
impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        match e {
            ServiceError::Unauthenticated(m) => Status::unauthenticated(m),
            ServiceError::PermissionDenied(m) => Status::permission_denied(m),
            ServiceError::InvalidArgument(m) => Status::invalid_argument(m),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::AlreadyExists(m) => Status::already_exists(m),
            ServiceError::Conflict(m) => Status::aborted(m),
            ServiceError::FailedPrecondition(m) => Status::failed_precondition(m),
            ServiceError::Unavailable(m) => Status::unavailable(m),
            ServiceError::Internal(m) => Status::internal(m),
        }
    }
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
    let leaf = req.peer_certs().and_then(|c| c.first().map(|c| c.to_vec()));
    match service::agent_caller(ctl, leaf.as_deref()).await {
        Ok(agent) => {
            authorised(req);
            Ok(agent)
        }
        Err(refusal) => {
            if refusal.withdraw {
                withdraw(req);
            }
            Err(refusal.error.into())
        }
    }
}

/// What a service may tell the server about its request's connection. The server puts a
/// [`Conn`] in each request's extensions; the services know nothing else of it.
pub trait ConnAuthorisation: Send + Sync {
    /// The connection made an authorised request.
    fn authorise(&self);
    /// The store refused a caller the server authorised from memory.
    fn withdraw(&self);
}

/// A request's connection, in its extensions.
#[derive(Clone)]
pub struct Conn(pub Arc<dyn ConnAuthorisation>);

/// Tells the server that this request's connection made an authorised request (an enrolled,
/// unrevoked agent; an admin the deny list lets through): from now on it is bounded by
/// keepalive, not by the limits on connections not yet authorised. (The server already did so
/// from memory when the request started; this confirms it after the store was read.)
fn authorised<T>(req: &Request<T>) {
    if let Some(conn) = req.extensions().get::<Conn>() {
        conn.0.authorise();
    }
}

/// The store refused a caller the server authorised from memory: its connection is under the
/// limits on connections not yet authorised again.
fn withdraw<T>(req: &Request<T>) {
    if let Some(conn) = req.extensions().get::<Conn>() {
        conn.0.withdraw();
    }
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
        let ctl = &self.0;
        let r = req.into_inner();
        let (agent, cert_pem) = enrollment::EnrollmentService(Arc::clone(ctl))
            .enroll(EnrollRequest {
                token: r.token,
                csr_der: r.csr_der,
                hostname: r.hostname,
                labels: r.labels,
                tenant: r.tenant,
            })
            .await?;
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
        let (pem, not_after) = enrollment::EnrollmentService(Arc::clone(ctl))
            .renew(&agent, &r.csr_der)
            .await?;
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
                    let id = AgentId::trusted(self.agent_id.as_str());
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
        let id = AgentId::trusted(agent.agent_id.as_str());
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
        let latest = AgentService(ctl)
            .report(
                &agent,
                AgentReport {
                    applied_version: r.applied_version,
                    stale: r.stale,
                    last_error: r.last_error,
                    agent_version: r.agent_version,
                    inventory: r.inventory.map(|i| Inventory {
                        hostname: i.hostname,
                        os_name: i.os_name,
                        os_version: i.os_version,
                        arch: i.arch,
                        cpus: i.cpus,
                        memory_bytes: i.memory_bytes,
                        uptime_secs: i.uptime_secs,
                        config_dirs: i.config_dirs,
                        governed_servers: i.governed_servers,
                        governed_configs: i.governed_configs,
                    }),
                },
            )
            .await?;
        Ok(Response::new(pb::ReportAck {
            latest_version: latest,
            server_time_unix: now_unix(),
        }))
    }
}

mod admin;
pub use admin::AdminService;
