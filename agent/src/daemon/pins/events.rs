//! The agent's TOOL_NAME_SHADOWED events: a tool name offered by two servers of one user and
//! MCP client (the second could answer calls meant for the first).

use serde_json::json;
use thoth_proto::EventType;

use super::shadow::Shadowed;
use crate::daemon::shared::Shared;

/// Raises one TOOL_NAME_SHADOWED: logged, held for upload, noted in the status. `user`: the
/// uid's login name.
pub fn raise_shadowed(sh: &Shared, user: &str, f: &Shadowed) {
    let summary = format!(
        "tool {:?} of server {:?} is also offered by server {:?} (user {user}, client {:?})",
        f.tool, f.server, f.other, f.client
    );
    tracing::warn!(event = %EventType::ToolNameShadowed, "{summary}");
    let client = (!f.client.is_empty()).then_some(f.client.as_str());
    let mut servers = [f.other.as_str(), f.server.as_str()];
    servers.sort_unstable();
    let detail = json!({
        "client": f.client,
        "tool": f.tool,
        "servers": servers,
        "user": user,
    });
    let mut record = sh.agent_event_about(EventType::ToolNameShadowed, client, detail);
    record.user = user.to_owned().into();
    record.server_name = Some(f.server.clone().into());
    record.tool_name = Some(f.tool.clone().into());
    if let Some(sp) = sh.spool.get() {
        sp.append(record);
    }
    sh.update_status(|s| s.note(EventType::ToolNameShadowed.as_str(), summary));
}
