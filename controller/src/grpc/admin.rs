//! The Admin service over gRPC: builds the [`Caller`] once from the verified client
//! certificate, calls the service (`crate::service`, where the authorization checks, validation,
//! token minting and audit writes live), and converts between protobuf and domain types.

use std::sync::Arc;

use thoth_proto::fleet::{self as pb, admin_server};
use tonic::{Request, Response, Status};

use crate::controller::Controller;
use crate::service::agents::{AgentService, AgentView, mcp_from_json};
use crate::service::approvals::ApprovalService;
use crate::service::audit::AuditService;
use crate::service::events::{EventQuery, EventService};
use crate::service::policy::{PolicyService, PolicyVersion};
use crate::service::tokens::{NewToken, TokenService};
use crate::service::{Caller, admins};
use crate::store::TokenRecord;

/// The Admin service.
pub struct AdminService(pub Arc<Controller>);

impl AdminService {
    /// The admin making this request (refused unless an admin credential the deny list lets
    /// through); the connection is then authorised.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let leaf = req.peer_certs().and_then(|c| c.first().map(|c| c.to_vec()));
        let caller = Caller::admin(&self.0, leaf.as_deref()).await?;
        // A credential the deny list lets through: this connection is authorised.
        super::conn::authorised(req);
        Ok(caller)
    }
}

fn version_info(v: &PolicyVersion) -> pb::PolicyVersion {
    let (p, applied) = (&v.record, v.agents_applied);
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

fn admin_info(a: &crate::store::AdminCredentialRecord, caller: &Caller) -> pb::AdminCredential {
    pb::AdminCredential {
        id: a.fingerprint.clone(),
        name: a.name.clone(),
        role: a.role.clone(),
        tenant_scope: a.tenant.clone(),
        not_after_unix: a.not_after,
        recorded_at_unix: a.recorded_at,
        source: a.source.clone(),
        revoked_at_unix: a.revoked_at.unwrap_or(0),
        revoked_by: a.revoked_by.clone(),
        reason: a.reason.clone(),
        current: a.fingerprint == caller.fingerprint,
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

fn agent_info(v: &AgentView) -> pb::AgentInfo {
    let (a, connected) = (&v.record, v.connected);
    let inventory = a.inventory.as_deref().and_then(|text| {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        // Kept apart from the rest (and left out of a listing not asking for it).
        let (servers, files) = a
            .mcp
            .as_deref()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .map(|m| mcp_from_json(&m))
            .unwrap_or_default();
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
            mcp_servers: servers
                .into_iter()
                .map(|s| pb::McpServer {
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
            mcp_files: files
                .into_iter()
                .map(|f| pb::McpFile {
                    user: f.user,
                    client: f.client,
                    path: f.path,
                    error: f.error,
                })
                .collect(),
            tool_pins: Vec::new(),
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

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    // Approvals (issue 16).
    async fn list_approvals(
        &self,
        req: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let list = ApprovalService(&self.0).list(&c, &r.tenant, r.all).await?;
        Ok(Response::new(pb::ListApprovalsResponse {
            approvals: list.iter().map(super::approvals::info).collect(),
        }))
    }
    async fn get_approval(
        &self,
        req: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::ApprovalInfo>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let rec = ApprovalService(&self.0).get(&c, &r.approval_id).await?;
        Ok(Response::new(super::approvals::info(&rec)))
    }
    async fn decide_approval(
        &self,
        req: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::ApprovalInfo>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let rec = ApprovalService(&self.0)
            .decide(&c, &r.approval_id, r.approve, &r.remember, &r.comment)
            .await?;
        Ok(Response::new(super::approvals::info(&rec)))
    }
    type WatchApprovalsStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::ApprovalInfo, Status>> + Send>,
    >;
    async fn list_pins(
        &self,
        req: Request<pb::ListPinsRequest>,
    ) -> Result<Response<pb::ListPinsResponse>, Status> {
        super::pins::list(&self.0, self.caller(&req).await?, req.into_inner()).await
    }

    async fn decide_pin(
        &self,
        req: Request<pb::DecidePinRequest>,
    ) -> Result<Response<pb::PinInfo>, Status> {
        super::pins::decide(&self.0, self.caller(&req).await?, req.into_inner()).await
    }

    async fn watch_approvals(
        &self,
        req: Request<pb::WatchApprovalsRequest>,
    ) -> Result<Response<Self::WatchApprovalsStream>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let watch = ApprovalService(&self.0).watch(&c, &r.tenant).await?;
        let stream = futures_util::stream::unfold(watch, |mut w| async move {
            let rec = w.next().await?;
            Some((Ok(super::approvals::info(&rec)), w))
        });
        Ok(Response::new(Box::pin(stream)))
    }
    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::AdminIdentity>, Status> {
        let c = self.caller(&req).await?;
        admins::AdminService(&self.0).who_am_i(&c).await?;
        Ok(Response::new(pb::AdminIdentity {
            name: c.name,
            role: c.role.as_str().to_owned(),
            tenant_scope: c
                .scope
                .map_or_else(|| "*".into(), |t| t.as_str().to_owned()),
        }))
    }

    async fn push_policy(
        &self,
        req: Request<pb::PushPolicyRequest>,
    ) -> Result<Response<pb::PolicyVersion>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let p = PolicyService(&self.0)
            .push(&c, &r.tenant, r.document, r.source, r.comment)
            .await?;
        Ok(Response::new(version_info(&p)))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyDocument>, Status> {
        let c = self.caller(&req).await?;
        let r = req.get_ref();
        let p = PolicyService(&self.0).get(&c, &r.tenant, r.version).await?;
        Ok(Response::new(pb::PolicyDocument {
            version: Some(version_info(&p)),
            document: p.record.document,
            bundle: p.record.bundle.into(),
        }))
    }

    async fn policy_history(
        &self,
        req: Request<pb::PolicyHistoryRequest>,
    ) -> Result<Response<pb::PolicyHistoryResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.get_ref();
        let versions = PolicyService(&self.0)
            .history(&c, &r.tenant, r.limit)
            .await?;
        Ok(Response::new(pb::PolicyHistoryResponse {
            versions: versions.iter().map(version_info).collect(),
        }))
    }

    async fn rollback_policy(
        &self,
        req: Request<pb::RollbackPolicyRequest>,
    ) -> Result<Response<pb::PolicyVersion>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let p = PolicyService(&self.0)
            .rollback(&c, &r.tenant, r.to_version, r.comment)
            .await?;
        Ok(Response::new(version_info(&p)))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let (record, token) = TokenService(&self.0)
            .create(
                &c,
                NewToken {
                    tenant: r.tenant,
                    labels: r.labels,
                    ttl_secs: r.ttl_secs,
                    max_uses: r.max_uses,
                    comment: r.comment,
                },
            )
            .await?;
        Ok(Response::new(pb::CreatedToken {
            info: Some(token_info(&record)),
            token,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.get_ref();
        let tokens = TokenService(&self.0)
            .list(&c, &r.tenant, r.include_inactive)
            .await?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let c = self.caller(&req).await?;
        let t = TokenService(&self.0).revoke(&c, &req.get_ref().id).await?;
        Ok(Response::new(token_info(&t)))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.get_ref();
        let page = AgentService(&self.0)
            .list_page(
                &c,
                &r.tenant,
                r.page_size,
                &r.page_token,
                r.include_mcp,
                |v| {
                    let info = agent_info(&v);
                    let size = prost::Message::encoded_len(&info);
                    // The field's tag and length prefix too.
                    (info, size + 8)
                },
            )
            .await?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: page.items,
            next_page_token: page.next,
        }))
    }

    async fn get_agent(
        &self,
        req: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let c = self.caller(&req).await?;
        let a = AgentService(&self.0)
            .get(&c, &req.get_ref().agent_id)
            .await?;
        let mut info = agent_info(&a);
        if let Some(inv) = info.inventory.as_mut() {
            inv.tool_pins = super::pins::agent_pins(&self.0, &a.record.agent_id).await?;
        }
        Ok(Response::new(info))
    }

    async fn revoke_agent(
        &self,
        req: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let c = self.caller(&req).await?;
        let r = req.get_ref();
        let a = AgentService(&self.0)
            .revoke(&c, &r.agent_id, &r.reason)
            .await?;
        Ok(Response::new(agent_info(&a)))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.get_ref();
        let entries = AuditService(&self.0)
            .list(&c, &r.tenant, r.after_id, r.limit)
            .await?;
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
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let events = EventService(&self.0)
            .query(
                &c,
                EventQuery {
                    tenant: r.tenant,
                    agent_id: r.agent_id,
                    session_id: r.session_id,
                    tool_name: r.tool_name,
                    event_type: r.event_type,
                    since: r.since,
                    until: r.until,
                    after_id: r.after_id,
                    limit: r.limit,
                    oldest_first: r.oldest_first,
                    event_types: r.event_types,
                    dlp_only: r.dlp_only,
                    dlp_detector: r.dlp_detector,
                },
            )
            .await?;
        Ok(Response::new(pb::EventList {
            events: events
                .into_iter()
                .map(|e| pb::StoredEvent {
                    id: e.id,
                    json: e.json,
                    chain_ok: e.chain_ok,
                    // Ingest stores an agent's event at its seq (from 1; seq 0 is refused), its
                    // own records at 0.
                    controller: e.seq == 0,
                    agent_id: e.agent_id,
                })
                .collect(),
        }))
    }

    async fn list_admins(
        &self,
        req: Request<pb::ListAdminsRequest>,
    ) -> Result<Response<pb::ListAdminsResponse>, Status> {
        let c = self.caller(&req).await?;
        let list = admins::AdminService(&self.0).list(&c).await?;
        Ok(Response::new(pb::ListAdminsResponse {
            admins: list.iter().map(|a| admin_info(a, &c)).collect(),
        }))
    }

    async fn revoke_admin(
        &self,
        req: Request<pb::RevokeAdminRequest>,
    ) -> Result<Response<pb::ListAdminsResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.get_ref();
        let revoked = admins::AdminService(&self.0)
            .revoke(&c, &r.id_or_name, &r.reason)
            .await?;
        Ok(Response::new(pb::ListAdminsResponse {
            admins: revoked.iter().map(|a| admin_info(a, &c)).collect(),
        }))
    }

    async fn rotate_signing_key(
        &self,
        req: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKeyInfo>, Status> {
        let c = self.caller(&req).await?;
        let (key, tenants) = PolicyService(&self.0).rotate_signing_key(&c).await?;
        Ok(Response::new(pb::SigningKeyInfo {
            key_id: key.key_id,
            not_before_unix: key.not_before,
            not_after_unix: key.not_after,
            resigned_tenants: tenants,
        }))
    }
}
