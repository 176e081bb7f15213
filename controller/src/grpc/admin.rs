//! The Admin service: policy, tokens, agents, audit, events and key rotation, for admin
//! certificates carrying a role and an optional tenant scope. Every mutation and every refusal is
//! audited.

use super::*;

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
    /// `sha256:<hex>` of the caller's certificate.
    fingerprint: String,
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
        if let Some(leaf) = req.peer_certs().and_then(|c| c.first().cloned())
            && let Ok(Identity::Admin { name, .. }) = Identity::from_cert_der(&leaf)
        {
            // An unknown credential of a revoked name: the store is read here (once, off the
            // TLS verifier), in case `issue-admin` recorded it since.
            ctl.admins
                .settle(ctl, &pki::fingerprint(&leaf), &name)
                .await;
        }
        let Identity::Admin { name, role, tenant } = identity(ctl, req)? else {
            Metrics::inc(&ctl.metrics.auth_refused);
            return Err(Status::permission_denied(
                "this call needs an admin certificate (thothctl); agent certificates cannot make it",
            ));
        };
        let leaf = req
            .peer_certs()
            .and_then(|c| c.first().map(|c| c.to_vec()))
            .unwrap_or_default();
        let caller = AdminCaller {
            name,
            role,
            scope: tenant,
            fingerprint: pki::fingerprint(&leaf),
        };
        // A credential issued before credentials were recorded is recorded at its first use,
        // so that it can be listed and revoked by id.
        if !ctl.admins.is_recorded(&caller.fingerprint)
            && let Ok(rec) = crate::admins::record_for(&leaf, "first use", now_unix())
        {
            let fp = rec.fingerprint.clone();
            // Recorded revoked if its name was revoked meanwhile (one statement): note what
            // was stored, and check again.
            let stored = ctl
                .db(move |s| {
                    s.record_admin(&rec)?;
                    Ok(s.list_admins()?
                        .into_iter()
                        .filter(|a| a.fingerprint == fp)
                        .collect::<Vec<_>>())
                })
                .await
                .map_err(internal)?;
            for a in &stored {
                ctl.admins.note(a);
            }
            if let Some(why) = ctl.admins.refusal(&caller.fingerprint, &caller.name) {
                Metrics::inc(&ctl.metrics.auth_refused);
                return Err(Status::unauthenticated(why));
            }
        }
        // A credential the deny list lets through: this connection is authorised.
        super::authorised(req);
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

fn admin_info(
    a: &crate::store::AdminCredentialRecord,
    caller: &AdminCaller,
) -> pb::AdminCredential {
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
        // Its certificate is refused at the handshake from now on.
        self.0.admins.agent_revoked(&a.agent_id);
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
            newest: !r.oldest_first,
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
        let (c, _) = self.admin(&req, "admins.list", Need::Admin, "").await?;
        let admins = self.0.db(|s| s.list_admins()).await.map_err(internal)?;
        Ok(Response::new(pb::ListAdminsResponse {
            admins: admins.iter().map(|a| admin_info(a, &c)).collect(),
        }))
    }

    async fn revoke_admin(
        &self,
        req: Request<pb::RevokeAdminRequest>,
    ) -> Result<Response<pb::ListAdminsResponse>, Status> {
        let (c, _) = self.admin(&req, "admins.revoke", Need::Admin, "").await?;
        let r = req.into_inner();
        let target = r.id_or_name.trim().to_owned();
        check_len("reason", &r.reason, 1000)?;
        if c.scope.is_some() {
            return Err(Status::permission_denied(
                "revoking admin credentials needs an admin certificate for all tenants",
            ));
        }
        if target.is_empty() {
            return Err(Status::invalid_argument(
                "name a credential id or an admin name",
            ));
        }
        let known = self.0.db(|s| s.list_admins()).await.map_err(internal)?;
        let matching: Vec<_> = known
            .iter()
            .filter(|a| a.revoked_at.is_none() && (a.fingerprint == target || a.name == target))
            .collect();
        if matching.iter().any(|a| a.fingerprint == c.fingerprint) {
            return Err(Status::failed_precondition(format!(
                "{target} includes the credential of this call: revoke it with another admin's \
                 credential (so that an admin always remains)"
            )));
        }
        let by_name = !target.starts_with("sha256:");
        if !by_name && matching.is_empty() {
            return Err(Status::not_found(format!(
                "no unrevoked admin credential {target}"
            )));
        }
        if by_name {
            pki::check_admin_name(&target).map_err(Status::invalid_argument)?;
        }
        let now = now_unix();
        let (by, reason, t) = (c.name.clone(), r.reason.clone(), target.clone());
        let mut revoked = self
            .0
            .db(move |s| {
                // By name, this also refuses every unrecorded credential of the name (issued
                // before credentials were recorded: unknown by fingerprint), in one transaction.
                s.revoke_admins(&t, &by, &reason, now)
            })
            .await
            .map_err(internal)?;
        for a in &revoked {
            self.0.admins.note(a);
        }
        // Connections the revoked credentials hold open are closed.
        self.0.hub.revoked();
        revoked.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        self.audit_ok(
            &c,
            "admins.revoke",
            "",
            serde_json::json!({
                "target": target,
                "reason": r.reason,
                "revoked": revoked.iter().map(|a| a.fingerprint.clone()).collect::<Vec<_>>(),
            }),
        )
        .await;
        Ok(Response::new(pb::ListAdminsResponse {
            admins: revoked.iter().map(|a| admin_info(a, &c)).collect(),
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
