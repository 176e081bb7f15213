//! `thoth-installer status`: what is installed and how it is doing, for people (a table), MDM
//! detection (`--json`) and a Jamf extension attribute (`--summary`).

use crate::error::InstallerError;
use crate::layout::Layout;
use crate::manifest::Manifest;

pub(crate) fn status(l: &Layout, json: bool, summary: bool) -> Result<u8, InstallerError> {
    let manifest: Option<Manifest> = std::fs::read_to_string(l.manifest())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let agent = thoth_endpoint::ipc::fetch_status(&l.socket()).ok();
    let identity: Option<serde_json::Value> =
        std::fs::read_to_string(l.state().join("identity/agent.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    // Governed means wrapped exactly as this installation's agent writes it: its thoth binary
    // (as the agent resolves it), its socket and state dir.
    let bin = l.bin_dir().join(l.exe("thoth"));
    let thoth = std::fs::canonicalize(&bin).unwrap_or(bin);
    let thoth = thoth.display().to_string();
    let extra = thoth_hosts::wrapper::canonical_extra(&l.socket(), &l.state());
    // Every MCP client's files of every user, and their local servers (remote ones cannot be
    // governed by a wrapper and are counted apart).
    let homes = thoth_hosts::file::homes(Some(&l.users_root()));
    let files = thoth_hosts::inventory::scan(
        &homes,
        &thoth_hosts::host::HostFilter::all(),
        &thoth,
        &extra,
    );
    let servers: Vec<&thoth_hosts::inventory::ServerInfo> =
        files.iter().flat_map(|f| &f.servers).collect();
    let remote = servers
        .iter()
        .filter(|s| s.state == thoth_hosts::inventory::State::Remote)
        .count();
    let local = servers.len() - remote;
    let governed = servers
        .iter()
        .filter(|s| s.state == thoth_hosts::inventory::State::Governed)
        .count();
    let clients: std::collections::BTreeSet<&str> = files.iter().map(|f| f.host).collect();
    // Files whose every local server is governed (a file of remote servers only counts).
    let governed_files = files
        .iter()
        .filter(|f| {
            f.error.is_none()
                && f.servers
                    .iter()
                    .all(|s| !matches!(s.state, thoth_hosts::inventory::State::NotGoverned(_)))
        })
        .count();
    let service = match (&manifest, &agent) {
        (None, _) => "not installed",
        (Some(_), Some(_)) => "running",
        (Some(_), None) => "stopped",
    };
    let policy = agent
        .as_ref()
        .and_then(|a| a.policy.as_ref().map(|p| p.version));
    let line = match &manifest {
        None => "not installed".to_owned(),
        Some(m) => format!(
            "thoth {} {service}, {}, {}, {governed}/{local} MCP servers governed, {remote} remote, in {} files of {} clients",
            m.version,
            if identity.is_some() {
                "enrolled"
            } else {
                "not enrolled"
            },
            policy.map_or("no policy".to_owned(), |v| format!("policy v{v}")),
            files.len(),
            clients.len()
        ),
    };
    let doc = serde_json::json!({
        "installed": manifest.is_some(),
        "version": manifest.as_ref().map(|m| m.version.clone()),
        "installedAt": manifest.as_ref().map(|m| m.installed_at.clone()),
        "controller": manifest.as_ref().map(|m| m.controller.clone()),
        "tenant": manifest.as_ref().map(|m| m.tenant.clone()),
        "service": service,
        "enrolled": identity.is_some(),
        "agentId": identity.as_ref().and_then(|i| i.get("agentId").cloned()),
        "policyVersion": policy,
        "configs": files.len(),
        "governedConfigs": governed_files,
        "clients": clients.iter().collect::<Vec<_>>(),
        "servers": local,
        "governedServers": governed,
        "remoteServers": remote,
        "summary": line,
    });
    if summary {
        say!("{line}");
    } else if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(InstallerError::Json)?
        );
    } else {
        for (k, v) in doc.as_object().expect("object") {
            say!(
                "{k:<16} {}",
                if v.is_null() {
                    "-".to_owned()
                } else {
                    v.to_string().trim_matches('"').to_owned()
                }
            );
        }
    }
    Ok(if manifest.is_some() { 0 } else { 1 })
}
