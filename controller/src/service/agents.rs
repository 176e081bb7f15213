//! Enrolled agents: listed, shown, revoked (its certificate is refused from then on).

use crate::controller::{Controller, now_unix};
use crate::ids::AgentId;
use crate::service::{Caller, MAX_TEXT, Need, ServiceError, check_len};
use crate::store::AgentRecord;

/// An agent and whether it holds a subscription open now.
#[derive(Debug, Clone)]
pub struct AgentView {
    /// The agent.
    pub record: AgentRecord,
    /// A subscription of it is open on this controller.
    pub connected: bool,
}

/// The agent service.
pub struct AgentService<'a>(pub &'a Controller);

impl AgentService<'_> {
    fn view(&self, record: AgentRecord) -> AgentView {
        let connected = self.0.hub.is_connected(&record.agent_id);
        AgentView { record, connected }
    }

    /// Agents of the tenant asked (or, for an unscoped caller naming none, of all).
    pub async fn list(&self, c: &Caller, tenant: &str) -> Result<Vec<AgentView>, ServiceError> {
        let ctl = self.0;
        let resolved = c.authorize(ctl, "agent.list", Need::Read, tenant).await?;
        let scope = c.list_scope(tenant, resolved);
        let agents = ctl.db(move |s| s.list_agents(scope.as_ref())).await?;
        Ok(agents.into_iter().map(|a| self.view(a)).collect())
    }

    /// One agent.
    pub async fn get(&self, c: &Caller, agent_id: &str) -> Result<AgentView, ServiceError> {
        let ctl = self.0;
        let id = AgentId::parse(agent_id)?;
        let i = id.clone();
        let found = ctl.db(move |s| s.agent(&i)).await?;
        let Some(agent) = found else {
            c.authorize(ctl, "agent.show", Need::Read, "").await?;
            return Err(ServiceError::NotFound(format!(
                "no agent {:?}",
                id.as_str()
            )));
        };
        c.authorize(ctl, "agent.show", Need::Read, &agent.tenant)
            .await?;
        Ok(self.view(agent))
    }

    /// Revokes an agent: its certificate is refused at the handshake from now on, and its open
    /// connections are closed.
    pub async fn revoke(
        &self,
        c: &Caller,
        agent_id: &str,
        reason: &str,
    ) -> Result<AgentView, ServiceError> {
        let ctl = self.0;
        let id = AgentId::parse(agent_id)?;
        check_len("reason", reason, MAX_TEXT)?;
        let i = id.clone();
        let found = ctl.db(move |s| s.agent(&i)).await?;
        let Some(agent) = found else {
            c.authorize(ctl, "agent.revoke", Need::Manage, "").await?;
            return Err(ServiceError::NotFound(format!(
                "no agent {:?}",
                id.as_str()
            )));
        };
        let tenant = c
            .authorize(ctl, "agent.revoke", Need::Manage, &agent.tenant)
            .await?;
        let i = id.clone();
        let a = ctl
            .db(move |s| s.revoke_agent(&i, now_unix()))
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no agent {:?}", id.as_str())))?;
        // Its certificate is refused at the handshake from now on.
        ctl.admins.agent_revoked(&a.agent_id);
        ctl.hub.revoked();
        c.audit_ok(
            ctl,
            "agent.revoke",
            tenant.as_str(),
            serde_json::json!({"agentId": id.as_str(), "reason": reason}),
        )
        .await;
        Ok(self.view(a))
    }
}
