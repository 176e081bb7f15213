//! Enrolled agents: listed, shown, revoked (its certificate is refused from then on).

use crate::controller::{Controller, now_unix};
use crate::ids::{AgentId, TenantId};
use crate::metrics::Metrics;
use crate::service::enrollment::check_hostname;
use crate::service::{Caller, MAX_TEXT, Need, ServiceError, check_len};
use crate::store::{AgentRecord, AgentReportRecord};

/// Most config directories in one inventory.
const MAX_INVENTORY_LIST: usize = 64;
/// Most MCP servers in one inventory.
pub const MAX_MCP_SERVERS: usize = 2000;
/// Most unreadable host files in one inventory.
pub const MAX_MCP_FILES: usize = 500;
/// Longest path (a host file, a project) in the MCP inventory, bytes.
pub const MAX_MCP_PATH: usize = 4096;
/// Longest name (a user, a server), bytes.
pub const MAX_MCP_NAME: usize = 256;
/// Longest command line or URL, bytes.
pub const MAX_MCP_TARGET: usize = 4096;
/// Longest reason or error, bytes.
pub const MAX_MCP_REASON: usize = 1024;
/// Longest transport (`stdio`, `http`, `sse`…), bytes.
pub const MAX_MCP_TRANSPORT: usize = 64;
/// Longest host id (`claude-desktop`…), bytes; ids are `[a-z0-9-]`.
pub const MAX_MCP_CLIENT: usize = 32;
/// Most text in one MCP inventory, all fields together, bytes: what one agent may add to every
/// `ListAgents` answer.
pub const MAX_MCP_BYTES: usize = 1 << 20;

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
    /// Every server of every MCP client ("host") of every user.
    pub mcp_servers: Vec<McpServer>,
    /// Host files that could not be read or parsed.
    pub mcp_files: Vec<McpFile>,
}

/// One MCP server configured on the machine (see `McpServer` in fleet.proto).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpServer {
    /// The OS user.
    pub user: String,
    /// The host's id (`claude-desktop`, `cursor`…).
    pub client: String,
    /// The file it is configured in.
    pub file: String,
    /// Its name.
    pub name: String,
    /// `stdio`, or the remote transport.
    pub transport: String,
    /// The command line it runs, or its URL.
    pub target: String,
    /// Runs through the agent's thoth.
    pub governed: bool,
    /// Why not governed.
    pub reason: String,
    /// The host runs it.
    pub enabled: bool,
    /// Its project, else empty.
    pub scope: String,
}

/// A host file whose servers could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpFile {
    /// The OS user.
    pub user: String,
    /// The host's id.
    pub client: String,
    /// The file.
    pub path: String,
    /// Why.
    pub error: String,
}

/// Refuses a field over `max` bytes or with a control character (the inventory is shown on
/// admins' terminals; an agent escapes what it reads before sending it).
fn check_mcp_text(
    field: &dyn Fn() -> String,
    value: &str,
    max: usize,
) -> Result<usize, ServiceError> {
    if value.len() > max {
        return Err(ServiceError::InvalidArgument(format!(
            "{} is {} bytes, over the {max} byte limit",
            field(),
            value.len()
        )));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ServiceError::InvalidArgument(format!(
            "{} has a control character ({:?}): escape it",
            field(),
            c
        )));
    }
    Ok(value.len())
}

/// Refuses a host id that is not `[a-z0-9-]{1,32}`.
fn check_mcp_client(field: &dyn Fn() -> String, value: &str) -> Result<usize, ServiceError> {
    let ok = (1..=MAX_MCP_CLIENT).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(ServiceError::InvalidArgument(format!(
            "{}: a host id is 1 to {MAX_MCP_CLIENT} characters of a-z, 0-9 and -, not {:?}",
            field(),
            value.chars().take(MAX_MCP_CLIENT + 8).collect::<String>()
        )));
    }
    Ok(value.len())
}

/// Checks the MCP inventory (hostile input: counts, lengths, characters) and returns it as the
/// JSON kept in the store (`mcpServers`, `mcpFiles`).
fn check_mcp(
    servers: &[McpServer],
    files: &[McpFile],
) -> Result<(serde_json::Value, serde_json::Value), ServiceError> {
    if servers.len() > MAX_MCP_SERVERS {
        return Err(ServiceError::InvalidArgument(format!(
            "inventory.mcp_servers: {} servers, over the limit of {MAX_MCP_SERVERS}",
            servers.len()
        )));
    }
    if files.len() > MAX_MCP_FILES {
        return Err(ServiceError::InvalidArgument(format!(
            "inventory.mcp_files: {} files, over the limit of {MAX_MCP_FILES}",
            files.len()
        )));
    }
    let mut total = 0usize;
    for (i, s) in servers.iter().enumerate() {
        let at = |k: &'static str| move || format!("inventory.mcp_servers[{i}].{k}");
        total += check_mcp_text(&at("user"), &s.user, MAX_MCP_NAME)?
            + check_mcp_client(&at("client"), &s.client)?
            + check_mcp_text(&at("file"), &s.file, MAX_MCP_PATH)?
            + check_mcp_text(&at("name"), &s.name, MAX_MCP_NAME)?
            + check_mcp_text(&at("transport"), &s.transport, MAX_MCP_TRANSPORT)?
            + check_mcp_text(&at("target"), &s.target, MAX_MCP_TARGET)?
            + check_mcp_text(&at("reason"), &s.reason, MAX_MCP_REASON)?
            + check_mcp_text(&at("scope"), &s.scope, MAX_MCP_PATH)?;
    }
    for (i, f) in files.iter().enumerate() {
        let at = |k: &'static str| move || format!("inventory.mcp_files[{i}].{k}");
        total += check_mcp_text(&at("user"), &f.user, MAX_MCP_NAME)?
            + check_mcp_client(&at("client"), &f.client)?
            + check_mcp_text(&at("path"), &f.path, MAX_MCP_PATH)?
            + check_mcp_text(&at("error"), &f.error, MAX_MCP_REASON)?;
    }
    if total > MAX_MCP_BYTES {
        return Err(ServiceError::InvalidArgument(format!(
            "inventory.mcp_servers and mcp_files: {total} bytes of text, over the {MAX_MCP_BYTES} byte limit"
        )));
    }
    let servers = servers
        .iter()
        .map(|s| {
            serde_json::json!({
                "user": s.user, "client": s.client, "file": s.file, "name": s.name,
                "transport": s.transport, "target": s.target, "governed": s.governed,
                "reason": s.reason, "enabled": s.enabled, "scope": s.scope,
            })
        })
        .collect();
    let files = files
        .iter()
        .map(|f| {
            serde_json::json!({
                "user": f.user, "client": f.client, "path": f.path, "error": f.error,
            })
        })
        .collect();
    Ok((
        serde_json::Value::Array(servers),
        serde_json::Value::Array(files),
    ))
}

/// The MCP inventory kept in a stored inventory (`mcpServers`, `mcpFiles`); entries that are not
/// objects are skipped, missing fields are empty.
pub fn mcp_from_json(inventory: &serde_json::Value) -> (Vec<McpServer>, Vec<McpFile>) {
    let list = |k: &str| inventory[k].as_array().cloned().unwrap_or_default();
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let b = |v: &serde_json::Value, k: &str| v[k].as_bool().unwrap_or(false);
    let servers = list("mcpServers")
        .iter()
        .filter(|v| v.is_object())
        .map(|v| McpServer {
            user: s(v, "user"),
            client: s(v, "client"),
            file: s(v, "file"),
            name: s(v, "name"),
            transport: s(v, "transport"),
            target: s(v, "target"),
            governed: b(v, "governed"),
            reason: s(v, "reason"),
            enabled: b(v, "enabled"),
            scope: s(v, "scope"),
        })
        .collect();
    let files = list("mcpFiles")
        .iter()
        .filter(|v| v.is_object())
        .map(|v| McpFile {
            user: s(v, "user"),
            client: s(v, "client"),
            path: s(v, "path"),
            error: s(v, "error"),
        })
        .collect();
    (servers, files)
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
                let (mcp_servers, mcp_files) = check_mcp(&inv.mcp_servers, &inv.mcp_files)?;
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
                        "mcpServers": mcp_servers,
                        "mcpFiles": mcp_files,
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
