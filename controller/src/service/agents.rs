//! Enrolled agents: listed, shown, revoked (its certificate is refused from then on).

use crate::controller::{Controller, now_unix};
use crate::ids::{AgentId, TenantId};
use crate::metrics::Metrics;
use crate::service::enrollment::check_hostname;
use crate::service::{Caller, MAX_TEXT, Need, ServiceError, check_len};
use crate::store::{AgentRecord, AgentReportRecord};
use sha2::Digest as _;

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
/// Most text in one MCP inventory, all fields together, bytes: what one agent may add to a
/// `ListAgents` page that includes MCP inventories (the agent keeps its own under this).
pub const MAX_MCP_BYTES: usize = 512 << 10;
/// Most agents in one `ListAgents` page (`page_size` is lowered to it).
pub const MAX_PAGE: usize = 1000;
/// Most agents in one `ListAgents` page with their MCP inventories.
pub const MAX_PAGE_MCP: usize = 100;
/// Most bytes (encoded) of agents in one `ListAgents` page: a page ends before passing it (it
/// always holds at least one agent, which the inventory bounds keep far below it).
pub const PAGE_BYTES: usize = 16 << 20;
/// Most bytes (encoded) of agents in a `ListAgents` answer asked without `page_size` (every
/// agent at once, as clients older than paging ask): past it the request is refused rather than
/// answered in part, under the 64 MiB message limit.
pub const WHOLE_BYTES: usize = 32 << 20;
/// Agents read from the store at a time while filling a page (few with MCP inventories: each
/// can be a megabyte of JSON).
const BATCH: usize = 200;
const BATCH_MCP: usize = 8;
/// Longest page token accepted, characters.
const MAX_TOKEN: usize = 512;

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
    /// The tool definitions pinned per user and server (checked by `service::pins`).
    pub tool_pins: Vec<crate::store::ToolPinRecord>,
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

/// One page of agents.
#[derive(Debug)]
pub struct Page<T> {
    /// The agents, converted.
    pub items: Vec<T>,
    /// The token for the next page; empty after the last.
    pub next: String,
}

/// The page token after `(tenant, agent_id)` for a listing of `scope` (a tenant, or empty for
/// all): opaque to clients (base64url), bound to the listing's scope.
fn make_page_token(scope: &str, tenant: &str, agent_id: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("v1\n{scope}\n{tenant}\n{agent_id}"))
}

/// The (tenant, agent_id) a page token resumes after, if it is one this controller gave out for
/// a listing of `scope`.
fn parse_page_token(token: &str, scope: &str) -> Result<(TenantId, AgentId), ServiceError> {
    use base64::Engine as _;
    let bad = |why: &str| {
        ServiceError::InvalidArgument(format!(
            "invalid page_token ({why}): pass the next_page_token of the previous answer, for the same tenant"
        ))
    };
    if token.len() > MAX_TOKEN {
        return Err(bad("too long"));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad("not one this controller gave"))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not one this controller gave"))?;
    let parts: Vec<&str> = text.split('\n').collect();
    let [version, for_scope, tenant, agent_id] = parts[..] else {
        return Err(bad("not one this controller gave"));
    };
    if version != "v1" {
        return Err(bad("not one this controller gave"));
    }
    if for_scope != scope {
        return Err(bad("it belongs to another listing"));
    }
    let tenant = TenantId::parse(tenant).map_err(|_| bad("not one this controller gave"))?;
    // Ids this controller gives out are `agt-` and hex digits.
    let id_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if agent_id.is_empty() || !agent_id.chars().all(id_chars) {
        return Err(bad("not one this controller gave"));
    }
    let agent_id = AgentId::parse(agent_id).map_err(|_| bad("not one this controller gave"))?;
    if !scope.is_empty() && tenant.as_str() != scope {
        return Err(bad("it belongs to another listing"));
    }
    Ok((tenant, agent_id))
}

/// The agent service.
pub struct AgentService<'a>(pub &'a Controller);

impl AgentService<'_> {
    fn view(&self, record: AgentRecord) -> AgentView {
        let connected = self.0.hub.is_connected(&record.agent_id);
        AgentView { record, connected }
    }

    /// One page of the agents of the tenant asked (or, for an unscoped caller naming none, of
    /// all), ordered by (tenant, agent_id), each converted by `convert` to an item and its
    /// encoded size. `page_size` 0: every agent in one page, refused past [`WHOLE_BYTES`];
    /// else at most `page_size` (lowered to [`MAX_PAGE`] / [`MAX_PAGE_MCP`]) and
    /// [`PAGE_BYTES`]. With `mcp`, each agent's MCP inventory is included.
    pub async fn list_page<T>(
        &self,
        c: &Caller,
        tenant: &str,
        page_size: u32,
        page_token: &str,
        mcp: bool,
        convert: impl Fn(AgentView) -> (T, usize),
    ) -> Result<Page<T>, ServiceError> {
        let ctl = self.0;
        let resolved = c.authorize(ctl, "agent.list", Need::Read, tenant).await?;
        let scope = c.list_scope(tenant, resolved);
        let scope_key = scope.as_ref().map_or("", |t| t.as_str()).to_owned();
        let mut after = if page_token.is_empty() {
            None
        } else {
            let (t, a) = parse_page_token(page_token, &scope_key)?;
            Some((t.as_str().to_owned(), a.as_str().to_owned()))
        };
        let whole = page_size == 0;
        let (limit, budget) = if whole {
            (usize::MAX, WHOLE_BYTES)
        } else {
            let max = if mcp { MAX_PAGE_MCP } else { MAX_PAGE };
            ((page_size as usize).min(max), PAGE_BYTES)
        };
        let batch = if mcp { BATCH_MCP } else { BATCH };
        let (mut items, mut bytes) = (Vec::new(), 0usize);
        loop {
            // One more than the page needs: whether another page follows.
            let want = batch.min(limit - items.len()).saturating_add(1);
            let (scope2, after2) = (scope.clone(), after.clone());
            let got = ctl
                .db(move |s| {
                    s.list_agents_page(
                        scope2.as_ref(),
                        after2.as_ref().map(|(t, a)| (t.as_str(), a.as_str())),
                        want,
                        mcp,
                    )
                })
                .await?;
            let n = got.len();
            for record in got {
                if items.len() == limit {
                    // A full page, and this one follows.
                    let (t, a) = after.as_ref().expect("a full page has a last agent");
                    return Ok(Page {
                        items,
                        next: make_page_token(&scope_key, t, a),
                    });
                }
                let key = (record.tenant.clone(), record.agent_id.clone());
                let (item, size) = convert(self.view(record));
                if !items.is_empty() && bytes.saturating_add(size) > budget {
                    if whole {
                        return Err(ServiceError::ResourceExhausted(format!(
                            "the agents do not fit in one answer ({} MiB at most): ask page by page (page_size and page_token; thothctl does)",
                            WHOLE_BYTES >> 20
                        )));
                    }
                    let (t, a) = after.as_ref().expect("a page holds an agent");
                    return Ok(Page {
                        items,
                        next: make_page_token(&scope_key, t, a),
                    });
                }
                bytes = bytes.saturating_add(size);
                items.push(item);
                after = Some(key);
            }
            if n < want {
                return Ok(Page {
                    items,
                    next: String::new(),
                });
            }
        }
    }

    /// One agent, with its MCP inventory.
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
        let mut mcp = None;
        let mut pins = None;
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
                let pins_sha256 = crate::service::pins::check_tool_pins(&inv.tool_pins)?;
                pins = Some((pins_sha256, inv.tool_pins));
                if !inv.hostname.is_empty() {
                    hostname = Some(inv.hostname.clone());
                }
                // Kept apart, with its digest: stored only when it changed.
                let json = serde_json::json!({"mcpServers": mcp_servers, "mcpFiles": mcp_files})
                    .to_string();
                let digest = hex::encode(sha2::Sha256::digest(json.as_bytes()));
                mcp = Some((json, digest));
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
            mcp,
        };
        let (id, tenant) = (
            AgentId::trusted(agent.agent_id.as_str()),
            TenantId::trusted(agent.tenant.as_str()),
        );
        let (latest, mcp_written) = ctl
            .db(move |s| {
                let written = s.record_report(&id, &record, now_unix())?;
                Ok((s.latest_policy(&tenant)?.map_or(0, |p| p.version), written))
            })
            .await?;
        if mcp_written {
            tracing::debug!(agent = %agent.agent_id, "stored a changed MCP inventory");
        }
        if let Some((sha256, pins)) = pins
            && crate::service::pins::PinService(ctl)
                .record(agent, sha256, pins)
                .await?
        {
            tracing::debug!(agent = %agent.agent_id, "stored changed tool pins");
        }
        Metrics::inc(&ctl.metrics.reports);
        Ok(latest)
    }
}
