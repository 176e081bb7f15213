//! `thoth-agent run`: the endpoint daemon. It gives the machine an identity (enrollment with a
//! locally made key), keeps the verified policy current through one long-lived subscription
//! (reconnecting with capped, jittered exponential backoff), persists it atomically as
//! last-known-good so enforcement never depends on the controller being up, serves it to proxies
//! on a local socket, and reports status and inventory.

pub mod approval;
mod budget;
mod connection;
mod gate;
mod identity;
pub mod inventory;
mod lkg;
pub mod local;
pub mod peer;
pub mod pins;
pub mod pipeline;
pub mod raise;
pub mod shared;
pub mod spool;
mod sys;
#[cfg(test)]
mod test_bundle;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use thoth_endpoint::config::AgentConfig;
use thoth_endpoint::state::Trust;

pub use shared::{Current, Shared};
use shared::{agent_event, unix_to_rfc3339};

async fn stale_loop(sh: Arc<Shared>) {
    let mut rx = sh.current.subscribe();
    loop {
        let until = rx
            .borrow_and_update()
            .as_ref()
            .filter(|c| !c.stale)
            .map(|c| c.expires_at);
        match until {
            Some(t) => {
                let wait = t
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    + Duration::from_millis(50);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => sh.check_stale(),
                    r = rx.changed() => if r.is_err() { return },
                }
            }
            None => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let sh = Shared::new(config).map_err(anyhow::Error::msg)?;
    sh.state.create().map_err(anyhow::Error::msg)?;
    // The pinned tool definitions (a file that cannot be used is logged now).
    sh.pins.load();
    sh.start_status_writer()?;
    sh.state
        .write_trust(&Trust {
            tenant: sh.config.tenant.clone(),
            root_public_key: sh.config.root_public_key.clone(),
        })
        .map_err(anyhow::Error::msg)?;
    if let Some((info, _, _)) = sh.state.identity() {
        sh.update_status(|s| {
            s.agent_id = Some(info.agent_id.clone());
            s.enrolled = true;
            s.certificate_not_after = Some(unix_to_rfc3339(info.not_after));
        });
    }
    let (tenant, sid) = (
        sh.config.tenant.clone(),
        sh.state.identity().map(|(i, _, _)| i.agent_id),
    );
    let (spool, recovery) = pipeline::start(
        &sh.state.root().join("spool"),
        sh.config.spool_max_bytes,
        move |t, d| agent_event(&tenant, sid.as_deref(), t, d),
    )?;
    let _ = sh.spool.set(spool);
    if let Some((info, _, _)) = sh.state.identity() {
        sh.set_spool_identity(&info.agent_id);
    }
    for note in &recovery.corrupt {
        sh.raise(
            thoth_proto::EventType::SpoolCorrupt,
            format!("{note}; the record was not uploaded"),
        );
    }
    if recovery.truncated_bytes > 0 {
        tracing::warn!(
            bytes = recovery.truncated_bytes,
            "cut a torn record off the spool (an unsynced write before a crash)"
        );
    }
    sh.load_lkg();
    let server = local::serve(Arc::clone(&sh)).await?;
    sh.raise(
        thoth_proto::EventType::AgentStarted,
        format!(
            "thoth-agent {} started (pid {}), serving proxies on {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            sh.config.socket_path.display()
        ),
    );
    crate::watch::spawn(Arc::clone(&sh))?;
    let tasks = [
        tokio::spawn(connection::upload_loop(Arc::clone(&sh))),
        tokio::spawn(connection::connection_loop(Arc::clone(&sh))),
        tokio::spawn(connection::heartbeat_loop(Arc::clone(&sh))),
        tokio::spawn(stale_loop(Arc::clone(&sh))),
    ];
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
            _ = term.recv() => tracing::info!("terminated: stopping"),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    for t in &tasks {
        t.abort();
    }
    server.stop().await;
    sh.set_connected(false, None);
    Ok(())
}
