//! What the agent tells the controller about the machine (sysinfo), and the Claude Desktop
//! configs it finds.

use std::path::{Path, PathBuf};

use thoth_proto::fleet as pb;

/// Claude Desktop config files of every user under `users_root` (or the OS's home root).
pub fn claude_configs(users_root: Option<&Path>) -> Vec<PathBuf> {
    thoth_hosts::claude::file::discover(users_root)
}

/// The inventory sent with each heartbeat (`thoth`, `extra`: see [`thoth_hosts::claude::governed_counts`]).
pub fn collect(users_root: Option<&Path>, thoth: &str, extra: &[String]) -> pb::Inventory {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let configs = claude_configs(users_root);
    let mut servers = 0u32;
    let mut governed_configs = 0u32;
    for c in &configs {
        if let Some((total, governed)) = thoth_hosts::claude::governed_counts(c, thoth, extra) {
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
