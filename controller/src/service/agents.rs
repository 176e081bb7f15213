//! Enrolled agents: listed, shown, revoked (its certificate is refused from then on).

use crate::controller::{Controller, now_unix};
use crate::ids::{AgentId, TenantId};
use crate::metrics::Metrics;
use crate::service::enrollment::check_hostname;
use crate::service::{Caller, MAX_TEXT, Need, ServiceError, check_len};
use crate::store::{AgentRecord, AgentReportRecord};

/// Most config directories in one inventory.
const MAX_INVENTORY_LIST: usize = 64;

/// What an agent says about its machine.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Hostname.
    pub hostname: String,
    /// OS name.
    pub os_name: String,
    /// OS version.
    pub os_version: String,
    /// CPU architecture.
    pub arch: String,
    /// CPUs.
    pub cpus: u32,
    /// Memory.
    pub memory_bytes: u64,
    /// Uptime.
    pub uptime_secs: u64,
    /// MCP host config directories it watches.
    pub config_dirs: Vec<String>,
    /// MCP servers governed.
    pub governed_servers: u32,
    /// Configs governed.
    pub governed_configs: u32,
}

/// What an agent reports.
#[derive(Debug, Clone, Default)]
pub struct AgentReport {
    /// The bundle version it applied.
    pub applied_version: u64,
    /// Its bundle expired.
    pub stale: bool,
    /// Its last error.
    pub last_error: String,
    /// Its software version.
    pub agent_version: String,
    /// Its machine, when sent.
    pub inventory: Option<Inventory>,
}

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

    /// Records what an enrolled agent reports; returns its tenant's latest policy version.
    pub async fn report(&self, agent: &AgentRecord, r: AgentReport) -> Result<u64, ServiceError> {
        let ctl = self.0;
        check_len("last_error", &r.last_error, 4 * MAX_TEXT)?;
        check_len("agent_version", &r.agent_version, 64)?;
        let mut hostname = None;
        let inventory = match r.inventory {
            Some(inv) => {
                check_hostname(&inv.hostname)?;
                if inv.config_dirs.len() > MAX_INVENTORY_LIST
                    || inv.config_dirs.iter().any(|d| d.len() > MAX_TEXT)
                {
                    return Err(ServiceError::InvalidArgument(format!(
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
        let (id, tenant) = (
            AgentId::trusted(agent.agent_id.as_str()),
            TenantId::trusted(agent.tenant.as_str()),
        );
        let latest = ctl
            .db(move |s| {
                s.record_report(&id, &record, now_unix())?;
                Ok(s.latest_policy(&tenant)?.map_or(0, |p| p.version))
            })
            .await?;
        Metrics::inc(&ctl.metrics.reports);
        Ok(latest)
    }
}
