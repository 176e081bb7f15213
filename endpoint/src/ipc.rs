//! The local-socket IPC client: what CLIs ask a running agent.

/// Asks a running agent for its status (blocking; for CLIs). `Err` says why it is unreachable.
#[cfg(unix)]
pub fn fetch_status(socket: &std::path::Path) -> Result<crate::status::Status, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        if !socket.exists() {
            return Err(format!("no agent socket at {}", socket.display()));
        }
        let ch = crate::tls::local_channel(socket)?;
        let mut client = thoth_proto::fleet::local_agent_client::LocalAgentClient::new(ch);
        let resp = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.status(thoth_proto::fleet::LocalStatusRequest {}),
        )
        .await
        .map_err(|_| {
            format!(
                "the agent at {} did not answer within 5 s",
                socket.display()
            )
        })?
        .map_err(|s| {
            format!(
                "the agent at {} did not answer: {}",
                socket.display(),
                s.message()
            )
        })?;
        serde_json::from_str(&resp.into_inner().json).map_err(|e| format!("unreadable status: {e}"))
    })
}
