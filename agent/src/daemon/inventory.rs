//! What the agent tells the controller about the machine (sysinfo), and the Claude Desktop
//! configs it finds.

use std::path::{Path, PathBuf};

use thoth_proto::fleet as pb;

/// The inventory sent with each heartbeat (`thoth`, `extra`: the agent's wrapper).
pub fn collect(users_root: Option<&Path>, thoth: &str, extra: &[String]) -> pb::Inventory {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let homes = thoth_hosts::file::homes(users_root);
    let files =
        thoth_hosts::inventory::scan(&homes, &thoth_hosts::host::HostFilter::all(), thoth, extra);
    let configs: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let (_, governed) = thoth_hosts::inventory::counts(&files);
    let servers = governed as u32;
    let governed_configs = files
        .iter()
        .filter(|f| {
            !f.servers.is_empty()
                && f.servers
                    .iter()
                    .all(|s| s.state == thoth_hosts::inventory::State::Governed)
        })
        .count() as u32;
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
        // Filled by the inventory work (issue 15).
        mcp_servers: Vec::new(),
        mcp_files: Vec::new(),
    }
}
