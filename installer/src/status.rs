//! `thoth-installer status`: what is installed and how it is doing, for people (a table), MDM
//! detection (`--json`) and a Jamf extension attribute (`--summary`).

use thoth_hosts::claude::file as claude;

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
    let configs = claude::discover(Some(&l.users_root()));
    // Governed means wrapped exactly as this installation's agent writes it: its thoth binary
    // (as the agent resolves it), its socket and state dir.
    let bin = l.bin_dir().join(l.exe("thoth"));
    let thoth = std::fs::canonicalize(&bin).unwrap_or(bin);
    let thoth = thoth.display().to_string();
    let extra = thoth_hosts::claude::rewrite::canonical_extra(&l.socket(), &l.state());
    let governed = configs
        .iter()
        .filter(|c| {
            thoth_hosts::claude::governed_counts(c, &thoth, &extra)
                .is_some_and(|(t, g)| t > 0 && g == t)
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
            "thoth {} {service}, {}, {}, {governed}/{} configs governed",
            m.version,
            if identity.is_some() {
                "enrolled"
            } else {
                "not enrolled"
            },
            policy.map_or("no policy".to_owned(), |v| format!("policy v{v}")),
            configs.len()
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
        "configs": configs.len(),
        "governedConfigs": governed,
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
