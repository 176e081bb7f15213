//! What the agent tells the controller about the machine (sysinfo), and the Claude Desktop
//! configs it finds.

use std::path::{Path, PathBuf};

use thoth_proto::fleet as pb;

/// Claude Desktop config files of every user under `users_root` (or the OS's home root).
pub fn claude_configs(users_root: Option<&Path>) -> Vec<PathBuf> {
    let root = users_root.map_or_else(
        || {
            PathBuf::from(if cfg!(target_os = "macos") {
                "/Users"
            } else {
                "/home"
            })
        },
        Path::to_path_buf,
    );
    let mut homes: Vec<PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    if users_root.is_none() && Path::new("/root").is_dir() {
        homes.push(PathBuf::from("/root"));
    }
    homes.sort();
    let mut found = Vec::new();
    for home in homes {
        for rel in [
            "Library/Application Support/Claude/claude_desktop_config.json",
            ".config/Claude/claude_desktop_config.json",
            "AppData/Roaming/Claude/claude_desktop_config.json",
        ] {
            let p = home.join(rel);
            if p.is_file() {
                found.push(p);
            }
        }
    }
    found
}

/// (servers in the file, servers running through `thoth run`) of one config; `None` if it does
/// not parse.
pub fn governed_counts(config: &Path) -> Option<(usize, usize)> {
    let text = std::fs::read_to_string(config).ok()?;
    let v: serde_json::Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).ok()?;
    let servers = v.get("mcpServers")?.as_object()?;
    let governed = servers
        .values()
        .filter(|s| {
            let cmd = s.get("command").and_then(|c| c.as_str()).unwrap_or("");
            let first = s
                .get("args")
                .and_then(|a| a.as_array())
                .and_then(|a| a.first())
                .and_then(|a| a.as_str());
            let base = Path::new(cmd)
                .file_stem()
                .and_then(|f| f.to_str())
                .unwrap_or("");
            base == "thoth" && first == Some("run")
        })
        .count();
    Some((servers.len(), governed))
}

/// The inventory sent with each heartbeat.
pub fn collect(users_root: Option<&Path>) -> pb::Inventory {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let configs = claude_configs(users_root);
    let mut servers = 0u32;
    let mut governed_configs = 0u32;
    for c in &configs {
        if let Some((total, governed)) = governed_counts(c) {
            servers += governed as u32;
            if total > 0 && governed == total {
                governed_configs += 1;
            }
        }
    }
    pb::Inventory {
        hostname: sysinfo::System::host_name()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        os_name: sysinfo::System::name().unwrap_or_default(),
        os_version: sysinfo::System::os_version().unwrap_or_default(),
        arch: sysinfo::System::cpu_arch(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_bytes: sys.total_memory(),
        uptime_secs: sysinfo::System::uptime(),
        config_dirs: configs
            .iter()
            .filter_map(|c| c.parent().map(|d| d.display().to_string()))
            .collect(),
        governed_servers: servers,
        governed_configs,
    }
}
