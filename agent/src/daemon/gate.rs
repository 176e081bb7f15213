//! The gate in front of proxy calls: checks the process behind a connection (see [`super::peer`])
//! with the agent's shared state, and reports a refused one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::peer::*;
use super::shared::Shared;

/// Runs one check of `process` (for `owner`): one at a time per owner, [`MAX_CHECKS`] in all,
/// on a blocking thread. With the installed `thoth`'s path, or why it is not known.
async fn check(
    sh: &Arc<Shared>,
    process: Option<Process>,
    owner: u32,
) -> (Verdict, Option<PathBuf>) {
    // Both held by the blocking task, which runs on when the call is dropped: a caller who
    // gives up does not free a place for another check before this one ends.
    let mine = sh.peer_checks.owner(owner).lock_owned().await;
    let Ok(slot) = Arc::clone(&sh.peer_checks.slots).acquire_owned().await else {
        return (
            Verdict::Refused(Kind::Unverifiable, "the agent is stopping".into()),
            None,
        );
    };
    let shared = Arc::clone(sh);
    tokio::task::spawn_blocking(move || {
        let _held = (slot, mine);
        let c = &shared.peer_checks;
        let _running = Running::new(c);
        match c.installed(&shared.config) {
            (Ok(path), known) => (verify(process, &path, &known), Some(path)),
            (Err(e), _) => (
                Verdict::Refused(
                    Kind::Unverifiable,
                    format!("the installed thoth is not known: {e}"),
                ),
                None,
            ),
        }
    })
    .await
    .unwrap_or_else(|e| (Verdict::Refused(Kind::Unverifiable, e.to_string()), None))
}

/// The verdict on the process behind a connection: its last one while younger than
/// [`RECHECK`] (and while the process that connected still runs), else a new check.
/// With whether to report it: a refusal worth reporting for `call` (any for a policy call, a
/// tampered thoth's for events) that this connection's verdict has not been reported for.
async fn verdict_of(
    sh: &Arc<Shared>,
    info: Option<&ConnInfo>,
    owner: u32,
    call: Call,
) -> (Verdict, bool) {
    let reportable = |v: &Verdict| match v {
        Verdict::Refused(kind, _) => {
            call != Call::Events || matches!(kind, Kind::LoaderVariable | Kind::Library)
        }
        _ => false,
    };
    let Some(info) = info else {
        let v = check(sh, None, owner).await.0;
        let report = reportable(&v);
        return (v, report);
    };
    let mut last = info.checked.lock().await;
    if let Some((v, at, reported)) = &mut *last
        && at.elapsed() < RECHECK
    {
        // The socket may have been handed on: the process that connected must still be there.
        #[cfg(target_os = "linux")]
        if let Some(p) = info.process
            && start_time(p.pid) != Some(p.start)
        {
            return (
                Verdict::Refused(
                    Kind::Unverifiable,
                    format!("process {} that connected has exited", p.pid),
                ),
                false,
            );
        }
        let report = !*reported && reportable(v);
        *reported |= report;
        return (v.clone(), report);
    }
    let (v, _) = check(sh, info.process, owner).await;
    let report = reportable(&v);
    *last = Some((v.clone(), Instant::now(), report));
    (v, report)
}

/// Checks the process behind a proxy call ([`verify`], off the async workers, once per
/// connection per [`RECHECK`]; `owner` is the caller's budget key, see `local::Owners`). A
/// refused one is reported as a `PROXY_TAMPERED` event (at most once an hour per owner and
/// kind, and [`MAX_RAISED`] an hour in all); a policy call from it is refused with
/// `PERMISSION_DENIED` saying why, which a proxy takes as "no policy" (it then denies every
/// call: fail closed).
pub(super) async fn gate(
    sh: &Arc<Shared>,
    info: Option<&ConnInfo>,
    user: &str,
    owner: u32,
    call: Call,
) -> Result<(), tonic::Status> {
    let uid = info.and_then(ConnInfo::uid);
    let process = info.and_then(|i| i.process);
    // Events from a process that is not thoth at all are not a proxy's (tests, tools): taken
    // without a report. A tampered thoth is reported whatever it calls, once per check.
    let (verdict, report) = verdict_of(sh, info, owner, call).await;
    let Verdict::Refused(kind, reason) = verdict else {
        return Ok(());
    };
    if report && let Some(held_back) = sh.peer_reports.should_raise(owner, kind, Instant::now()) {
        let what = match call {
            Call::Policy => "policy refused",
            Call::Approval => "approval request refused",
            Call::Events => "its events are kept",
        };
        tracing::warn!(
            event = "PROXY_TAMPERED",
            user,
            pid = process.map(|p| p.pid),
            "a proxy of {user} failed the agent's check ({what}): {reason}"
        );
        let installed = sh
            .peer_checks
            .installed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .path
            .as_ref()
            .and_then(|(p, _)| p.as_ref().ok().map(|p| p.display().to_string()));
        let detail = serde_json::json!({
            "user": user,
            "uid": uid,
            "pid": process.map(|p| p.pid),
            "kind": kind.as_str(),
            "reason": reason,
            "call": match call {
                Call::Policy => "policy",
                Call::Approval => "approval",
                Call::Events => "events",
            },
            "installedThoth": installed,
            "heldBack": held_back,
        });
        if let Some(sp) = sh.spool.get() {
            sp.append(sh.agent_event(thoth_proto::EventType::ProxyTampered, detail));
        }
        sh.update_status(|s| {
            s.note(
                thoth_proto::EventType::ProxyTampered.as_str(),
                format!("{user}: {reason} ({what})"),
            )
        });
    }
    match call {
        Call::Events => Ok(()),
        Call::Policy => Err(tonic::Status::permission_denied(format!(
            "the agent does not serve policy to this process: {reason}. Every call is denied \
             until the MCP server runs through the installed thoth without them"
        ))),
        Call::Approval => Err(tonic::Status::permission_denied(format!(
            "the agent puts approval requests before a human only for the installed thoth: \
             {reason}"
        ))),
    }
}
