//! What the agent tells the controller about the machine (sysinfo), and its MCP inventory:
//! every server of every managed MCP client ("host") of every user, governed or not and why,
//! and the host files it could not read. Bounded and cleaned as the controller requires (it
//! refuses a whole report over its limits), since every string in it comes from users' files.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use thoth_hosts::host::HostFilter;
use thoth_hosts::inventory::State;
use thoth_proto::fleet as pb;

use crate::watch::clean;
use crate::watch::guardian::user_of;

/// Most MCP servers in one report (the controller's limit).
pub const MAX_MCP_SERVERS: usize = 2000;
/// Most unreadable host files in one report (the controller's limit).
pub const MAX_MCP_FILES: usize = 500;
/// Most text in the MCP inventory, all fields together: under the controller's 512 KiB.
const MAX_MCP_BYTES: usize = 450 << 10;
/// Longest path (a file, a project), name (a user, a server), command line or URL, reason,
/// transport: the controller's limits, in bytes.
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 256;
const MAX_TARGET: usize = 4096;
const MAX_REASON: usize = 1024;
const MAX_TRANSPORT: usize = 64;
/// Most config directories in one report, and their longest (the controller's limits).
const MAX_CONFIG_DIRS: usize = 64;
const MAX_CONFIG_DIR: usize = 1024;

/// The MCP part of the inventory.
#[derive(Debug, Default)]
pub struct McpInventory {
    /// Every server (at most [`MAX_MCP_SERVERS`]).
    pub servers: Vec<pb::McpServer>,
    /// Files that could not be read or parsed (at most [`MAX_MCP_FILES`]).
    pub files: Vec<pb::McpFile>,
    /// The directories of every file (bounded).
    pub config_dirs: Vec<String>,
    /// Servers governed (all of them, not only those listed).
    pub governed_servers: u32,
    /// Files with a local server whose local servers are all governed.
    pub governed_configs: u32,
    /// Servers and files left out of the lists by the bounds.
    pub cut: (usize, usize),
    /// Files not read at all: the time budget ran out first.
    pub unread: usize,
    /// Homes not looked into at all: the time budget ran out first.
    pub unread_homes: usize,
}

/// Scans the managed hosts' files under `users_root` (`thoth`, `extra`: the agent's wrapper)
/// for at most `budget`: past it no more files are read (a slow disk or a home with thousands
/// of projects must not hold the heartbeat back); what was gathered is reported and the files
/// left unread are counted in [`McpInventory::unread`].
pub fn mcp(
    users_root: Option<&Path>,
    thoth: &str,
    extra: &[String],
    filter: &HostFilter,
    budget: Duration,
) -> McpInventory {
    let started = Instant::now();
    let homes = thoth_hosts::file::homes(users_root);
    let mut inv = McpInventory::default();
    let mut dirs = BTreeSet::new();
    let mut bytes = 0usize;
    let mut found = Vec::new();
    for home in &homes {
        if started.elapsed() >= budget {
            inv.unread_homes += 1;
            continue;
        }
        let home_owner = thoth_hosts::host::home_owner(home);
        let user = clean(&user_of(home), MAX_NAME);
        for hf in thoth_hosts::host::discover(std::slice::from_ref(home), filter) {
            found.push((hf, home_owner, user.clone()));
        }
    }
    for (hf, home_owner, user) in found {
        if started.elapsed() >= budget {
            inv.unread += 1;
            continue;
        }
        // Read as the home's owner: a link swapped in since discovery is refused.
        let info =
            thoth_hosts::inventory::scan_file_as(hf.host, &hf.path, thoth, extra, home_owner);
        let path = clean(&hf.path.display().to_string(), MAX_PATH);
        if let Some(d) = hf.path.parent() {
            dirs.insert(d.display().to_string());
        }
        let governed = info
            .servers
            .iter()
            .filter(|s| s.state == State::Governed)
            .count();
        let local = info
            .servers
            .iter()
            .filter(|s| s.state != State::Remote)
            .count();
        inv.governed_servers += governed as u32;
        if local > 0 && governed == local {
            inv.governed_configs += 1;
        }
        if let Some(error) = &info.error {
            let f = pb::McpFile {
                user: user.clone(),
                client: hf.host.id().to_owned(),
                path: path.clone(),
                error: clean(error, MAX_REASON),
            };
            let size = f.user.len() + f.client.len() + f.path.len() + f.error.len();
            if inv.files.len() < MAX_MCP_FILES && bytes + size <= MAX_MCP_BYTES {
                bytes += size;
                inv.files.push(f);
            } else {
                inv.cut.1 += 1;
            }
        }
        for s in &info.servers {
            let m = pb::McpServer {
                user: user.clone(),
                client: hf.host.id().to_owned(),
                file: path.clone(),
                name: clean(&s.name, MAX_NAME),
                transport: clean(&s.transport, MAX_TRANSPORT),
                target: clean(&s.target, MAX_TARGET),
                governed: s.state == State::Governed,
                reason: clean(&s.state.reason(), MAX_REASON),
                enabled: s.enabled,
                scope: s
                    .scope
                    .as_deref()
                    .map(|p| clean(p, MAX_PATH))
                    .unwrap_or_default(),
            };
            let size = m.user.len()
                + m.client.len()
                + m.file.len()
                + m.name.len()
                + m.transport.len()
                + m.target.len()
                + m.reason.len()
                + m.scope.len();
            if inv.servers.len() < MAX_MCP_SERVERS && bytes + size <= MAX_MCP_BYTES {
                bytes += size;
                inv.servers.push(m);
            } else {
                inv.cut.0 += 1;
            }
        }
    }
    inv.config_dirs = dirs
        .into_iter()
        .filter(|d| d.len() <= MAX_CONFIG_DIR)
        .take(MAX_CONFIG_DIRS)
        .collect();
    if inv.unread > 0 || inv.unread_homes > 0 {
        tracing::warn!(
            files = inv.unread,
            homes = inv.unread_homes,
            "the MCP inventory took over {:.1}s: the files and homes not read yet are left out of this report",
            budget.as_secs_f64(),
        );
    }
    if inv.cut != (0, 0) {
        tracing::warn!(
            servers = inv.cut.0,
            files = inv.cut.1,
            "the MCP inventory is over its bounds ({MAX_MCP_SERVERS} servers, {MAX_MCP_FILES} files, {MAX_MCP_BYTES} bytes): left out of this report"
        );
    }
    inv
}

/// How long the MCP part of an inventory may take (see [`mcp`]).
pub const MCP_BUDGET: Duration = Duration::from_secs(10);

/// The inventory sent with each heartbeat (`thoth`, `extra`: the agent's wrapper; `filter`:
/// the MCP clients managed; `budget`: see [`mcp`]).
pub fn collect(
    users_root: Option<&Path>,
    thoth: &str,
    extra: &[String],
    filter: &HostFilter,
    budget: Duration,
) -> pb::Inventory {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let mcp = mcp(users_root, thoth, extra, filter, budget);
    pb::Inventory {
        hostname: sysinfo::System::host_name()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        os_name: sysinfo::System::name().unwrap_or_default(),
        os_version: sysinfo::System::os_version().unwrap_or_default(),
        arch: sysinfo::System::cpu_arch(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_bytes: sys.total_memory(),
        uptime_secs: sysinfo::System::uptime(),
        config_dirs: mcp.config_dirs,
        governed_servers: mcp.governed_servers,
        governed_configs: mcp.governed_configs,
        mcp_servers: mcp.servers,
        mcp_files: mcp.files,
        tool_pins: Vec::new(),
    }
}

/// The pinned tools of every user, for the heartbeat (bounded: see
/// [`super::pins::report::reports`]). Blocking (user-name lookups).
pub fn tool_pins(pins: &super::pins::PinBook) -> Vec<pb::ToolPinReport> {
    let name_of = |uid: u32| {
        #[cfg(unix)]
        let name = super::sys::login_name(uid);
        #[cfg(not(unix))]
        let name: Option<String> = None;
        name.unwrap_or_else(|| format!("uid {uid}"))
    };
    let (out, cut) = pins.reports(&name_of);
    if cut > 0 {
        tracing::warn!(
            cut,
            "the pinned tools are over the report's bounds: left out of this report"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Shared;
    use super::*;

    #[test]
    fn text_is_escaped_and_cut_on_a_character_boundary() {
        assert_eq!(clean("files", 10), "files");
        assert_eq!(clean("a\u{1b}[31mb\n", 64), "a\\u{1b}[31mb\\n");
        let cut = clean(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
        assert!(clean(&"\u{7}".repeat(1000), 64).len() <= 64);
    }

    #[test]
    fn every_server_of_every_user_and_client_with_what_could_not_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            p
        };
        let extra: Vec<String> = Vec::new();
        let thoth = "/usr/local/bin/thoth";
        put(
            "ann/.cursor/mcp.json",
            &format!(
                r#"{{"mcpServers": {{"files": {{"command": "{thoth}", "args": ["run", "--server", "files", "--client", "cursor", "--", "npx", "srv"]}}, "linear": {{"url": "https://mcp.linear.app/sse"}}}}}}"#
            ),
        );
        put(
            "bob/.config/Claude/claude_desktop_config.json",
            "{\"mcpServers\": {\"x\\u001b\": {\"command\": \"npx\"}}}",
        );
        let broken = put(
            "bob/.codeium/windsurf/mcp_config.json",
            "{\"mcpServers\": {",
        );
        let inv = mcp(
            Some(dir.path()),
            thoth,
            &extra,
            &HostFilter::all(),
            MCP_BUDGET,
        );
        assert_eq!(inv.servers.len(), 3, "{inv:#?}");
        let files = inv.servers.iter().find(|s| s.name == "files").unwrap();
        let ann = user_of(&dir.path().join("ann"));
        assert_eq!(
            (
                files.user.as_str(),
                files.client.as_str(),
                files.transport.as_str()
            ),
            (ann.as_str(), "cursor", "stdio")
        );
        assert!(files.governed && files.reason.is_empty() && files.enabled);
        assert_eq!(files.target, "npx srv", "the original command line");
        let linear = inv.servers.iter().find(|s| s.name == "linear").unwrap();
        assert!(!linear.governed && linear.reason.contains("remote"));
        assert_eq!(linear.target, "https://mcp.linear.app/sse");
        let x = inv
            .servers
            .iter()
            .find(|s| s.file.ends_with("claude_desktop_config.json"))
            .unwrap();
        assert_eq!(x.user, user_of(&dir.path().join("bob")));
        assert_eq!(x.name, "x\\u{1b}", "escaped");
        assert_eq!((x.client.as_str(), x.governed), ("claude-desktop", false));
        assert_eq!(inv.files.len(), 1, "{:?}", inv.files);
        assert_eq!(inv.files[0].path, broken.display().to_string());
        assert_eq!(inv.files[0].client, "windsurf");
        assert!(inv.files[0].error.contains("line 1"), "{:?}", inv.files[0]);
        assert_eq!((inv.governed_servers, inv.governed_configs), (1, 1));
        assert_eq!(inv.config_dirs.len(), 3);
        // Only the managed clients.
        let only = HostFilter::only(&["windsurf".into()]).unwrap();
        let inv = mcp(Some(dir.path()), thoth, &extra, &only, MCP_BUDGET);
        assert!(inv.servers.is_empty() && inv.files.len() == 1);
    }

    /// Review F3: the heartbeat awaited the inventory with no bound. Past its budget no more
    /// files (nor homes) are read, and what was gathered is reported.
    #[test]
    fn the_inventory_stops_reading_past_its_time_budget() {
        let dir = tempfile::tempdir().unwrap();
        for user in ["ann", "bob", "carol"] {
            let p = dir.path().join(user).join(".cursor/mcp.json");
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, r#"{"mcpServers": {"files": {"command": "npx"}}}"#).unwrap();
        }
        let all = mcp(
            Some(dir.path()),
            "/t/thoth",
            &[],
            &HostFilter::all(),
            MCP_BUDGET,
        );
        assert_eq!((all.servers.len(), all.unread, all.unread_homes), (3, 0, 0));
        let none = mcp(
            Some(dir.path()),
            "/t/thoth",
            &[],
            &HostFilter::all(),
            Duration::ZERO,
        );
        assert!(none.servers.is_empty() && none.files.is_empty(), "{none:?}");
        assert_eq!(none.unread_homes, 3, "{none:?}");
        // A whole inventory still goes out with what was gathered.
        let inv = collect(
            Some(dir.path()),
            "/t/thoth",
            &[],
            &HostFilter::all(),
            Duration::ZERO,
        );
        assert!(inv.mcp_servers.is_empty() && inv.cpus > 0);
    }

    use crate::daemon::test_bundle::signed_bundle as bundle;

    #[test]
    fn the_policy_in_force_names_the_clients_managed() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let root = base64::engine::general_purpose::STANDARD.encode(
            ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes(),
        );
        let text = format!(
            "controller_url = \"https://127.0.0.1:9\"\ntenant = \"acme\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"{root}\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\nclients = [\"cursor\", \"vscode\", \"codex\"]\n",
            "ab".repeat(32),
            dir.path().join("state").display(),
            dir.path().join("agent.sock").display()
        );
        let sh = Shared::new(toml::from_str(&text).unwrap()).unwrap();
        sh.state.create().unwrap();
        assert_eq!(sh.managed_clients(), None, "no policy: every client");
        sh.apply(&bundle(1, "servers: []\n"));
        assert_eq!(sh.current.borrow().as_ref().map(|c| c.version), Some(1));
        assert_eq!(sh.managed_clients(), None, "not limited by the policy");
        sh.apply(&bundle(
            2,
            "managed_clients: [cursor, codex, claude-code]\n",
        ));
        assert_eq!(sh.current.borrow().as_ref().map(|c| c.version), Some(2));
        let ids = sh.managed_clients().unwrap();
        assert_eq!(ids, ["cursor", "codex", "claude-code"]);
        let f = crate::watch::managed(&sh.config, Some(&ids));
        let managed: Vec<&str> = f.hosts().iter().map(|h| h.id()).collect();
        assert_eq!(managed, ["cursor", "codex"], "the settings ∩ the policy");
    }

    #[test]
    fn the_inventory_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ann/.cursor/mcp.json");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // Under the client's 4 MiB read cap, over the report's 900 KiB.
        let servers: Vec<String> = (0..2500)
            .map(|i| format!("\"s{i}\": {{\"url\": \"https://x/{}\"}}", "a".repeat(1500)))
            .collect();
        std::fs::write(&p, format!("{{\"mcpServers\": {{{}}}}}", servers.join(","))).unwrap();
        let inv = mcp(
            Some(dir.path()),
            "/t/thoth",
            &[],
            &HostFilter::all(),
            MCP_BUDGET,
        );
        assert!(inv.servers.len() <= MAX_MCP_SERVERS);
        let bytes: usize = inv
            .servers
            .iter()
            .map(|s| s.target.len() + s.file.len() + s.reason.len() + s.name.len() + 20)
            .sum();
        assert!(bytes <= 1 << 20, "{bytes}");
        assert!(inv.servers.iter().all(|s| s.target.len() <= MAX_TARGET));
        assert_eq!(inv.servers.len() + inv.cut.0, 2500, "{:?}", inv.files);
        assert!(inv.cut.0 > 0);
    }
}
