//! The local-socket IPC client: what CLIs ask a running agent.

use std::path::PathBuf;

/// Why a running agent's status cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// No runtime to ask with.
    #[error("{0}")]
    Runtime(std::io::Error),
    /// No socket where the agent listens.
    #[error("no agent socket at {}", .0.display())]
    NoSocket(PathBuf),
    /// The channel cannot be made.
    #[error(transparent)]
    Channel(#[from] crate::tls::TlsError),
    /// The agent did not answer in time.
    #[error("the agent at {} did not answer within 5 s", .0.display())]
    Timeout(PathBuf),
    /// The agent refused or the connection failed.
    #[error("the agent at {} did not answer: {}", socket.display(), status.message())]
    NoAnswer {
        /// The socket.
        socket: PathBuf,
        /// What the call returned.
        status: tonic::Status,
    },
    /// The answer is not a status document.
    #[error("unreadable status: {0}")]
    Unreadable(serde_json::Error),
}

/// Asks a running agent for its status (blocking; for CLIs). `Err` says why it is unreachable.
#[cfg(unix)]
pub fn fetch_status(socket: &std::path::Path) -> Result<crate::status::Status, IpcError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(IpcError::Runtime)?;
    rt.block_on(async {
        if !socket.exists() {
            return Err(IpcError::NoSocket(socket.to_owned()));
        }
        let ch = crate::tls::local_channel(socket)?;
        let mut client = thoth_proto::fleet::local_agent_client::LocalAgentClient::new(ch);
        let resp = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.status(thoth_proto::fleet::LocalStatusRequest {}),
        )
        .await
        .map_err(|_| IpcError::Timeout(socket.to_owned()))?
        .map_err(|status| IpcError::NoAnswer {
            socket: socket.to_owned(),
            status,
        })?;
        serde_json::from_str(&resp.into_inner().json).map_err(IpcError::Unreadable)
    })
}
