//! Enrollment (token + CSR → certificate, renewal) and AgentSync (the policy subscription and
//! reports) over gRPC: translation to and from the services only.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use thoth_proto::fleet::{self as pb, agent_sync_server, enrollment_server};
use tonic::{Request, Response, Status};

use crate::controller::{Controller, now_unix};
use crate::hub::Published;
use crate::ids::AgentId;
use crate::metrics::Metrics;
use crate::service::agents::{AgentReport, AgentService, Inventory, McpFile, McpServer};
use crate::service::enrollment::{self, EnrollRequest};

use super::conn::agent_caller;

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
    // Approval decisions: woken when one is made; those sent on this stream, and those to send.
    approvals: tokio::sync::watch::Receiver<u64>,
    sent_decisions: std::collections::HashSet<String>,
    decisions: std::collections::VecDeque<pb::PolicyUpdate>,
    // Tool definition decisions of the tenant: woken when one is made; those sent (by
    // definition, with the time decided).
    tenant: String,
    pins: tokio::sync::watch::Receiver<u64>,
    sent_pins: std::collections::HashMap<(String, String, String), (bool, i64)>,
    pins_since: i64,
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
            approval: None,
            pin: None,
        }
    }

    /// Queues the agent's decided approvals not yet sent on this stream (all of them, until
    /// they expire, on a new stream: the agent ignores ones it knows).
    async fn load_decisions(&mut self) {
        let found = crate::service::approvals::ApprovalService(&self.ctl)
            .agent_decisions(&self.agent_id)
            .await;
        let Ok(found) = found else {
            return;
        };
        if self.sent_decisions.len() > 4096 {
            self.sent_decisions.clear();
        }
        for rec in found.iter().rev() {
            if self.sent_decisions.insert(rec.approval_id.clone()) {
                self.decisions.push_back(pb::PolicyUpdate {
                    bundle: Default::default(),
                    version: 0,
                    approval: super::approvals::decision(rec),
                    pin: None,
                });
            }
        }
    }

    /// Queues the tenant's recorded tool definition decisions not yet sent on this stream (the
    /// newest 4096 on a new stream: the agent ignores ones it applied).
    async fn load_pins(&mut self) {
        let found = crate::service::pins::PinService(&self.ctl)
            .tenant_decisions(&self.tenant, self.pins_since)
            .await;
        let Ok(found) = found else {
            return;
        };
        if self.sent_pins.len() > 2 * crate::service::pins::MAX_AGENT_DECISIONS as usize {
            self.sent_pins.clear();
        }
        // Next time, from the newest seen, less a minute (clock steps; the map skips repeats).
        if let Some(newest) = found.iter().map(|d| d.decided_ms).max() {
            self.pins_since = self.pins_since.max(newest.saturating_sub(60_000));
        }
        let fresh: Vec<_> = found
            .into_iter()
            .filter(|d| {
                let key = (d.server_key.clone(), d.tool.clone(), d.digest.clone());
                self.sent_pins.insert(key, (d.accepted, d.decided_ms))
                    != Some((d.accepted, d.decided_ms))
            })
            .collect();
        self.decisions.extend(super::pins::updates(&fresh));
    }

    async fn next(&mut self) -> Option<Result<pb::PolicyUpdate, Status>> {
        if self.done {
            return None;
        }
        if self.first {
            self.first = false;
            self.approvals.borrow_and_update();
            self.load_decisions().await;
            self.pins.borrow_and_update();
            self.load_pins().await;
            let current = self.bundles.borrow_and_update().clone();
            if let Some(p) = current {
                return Some(Ok(self.update(&p)));
            }
        }
        loop {
            if let Some(d) = self.decisions.pop_front() {
                return Some(Ok(d));
            }
            tokio::select! {
                changed = self.approvals.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    self.approvals.borrow_and_update();
                    self.load_decisions().await;
                }
                changed = self.pins.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    self.pins.borrow_and_update();
                    self.load_pins().await;
                }
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
            approvals: ctl.approvals.agent(&agent.agent_id),
            sent_decisions: Default::default(),
            decisions: Default::default(),
            pins: ctl.hub.pin_decisions(&agent.tenant),
            sent_pins: Default::default(),
            pins_since: 0,
            tenant: agent.tenant.clone(),
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
                        mcp_servers: i
                            .mcp_servers
                            .into_iter()
                            .map(|s| McpServer {
                                user: s.user,
                                client: s.client,
                                file: s.file,
                                name: s.name,
                                transport: s.transport,
                                target: s.target,
                                governed: s.governed,
                                reason: s.reason,
                                enabled: s.enabled,
                                scope: s.scope,
                            })
                            .collect(),
                        mcp_files: i
                            .mcp_files
                            .into_iter()
                            .map(|f| McpFile {
                                user: f.user,
                                client: f.client,
                                path: f.path,
                                error: f.error,
                            })
                            .collect(),
                        tool_pins: i
                            .tool_pins
                            .into_iter()
                            .take(crate::service::pins::MAX_TOOL_PINS + 1)
                            .map(super::pins::from_report)
                            .collect(),
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
