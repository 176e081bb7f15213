//! Tool integrity over gRPC (issue 17): ListPins / DecidePin, the pin decisions pushed to
//! agents, the pins of a heartbeat: translation to and from `service::pins` only.

use thoth_proto::fleet as pb;
use tonic::{Response, Status};

use crate::controller::Controller;
use crate::service::Caller;
use crate::service::pins::{PinService, PinView};
use crate::store::{PinDecisionRecord, ToolPinRecord};

/// A recorded decision as agents and admins receive it.
pub(crate) fn decision(d: &PinDecisionRecord) -> pb::PinDecision {
    pb::PinDecision {
        server_key: d.server_key.clone(),
        tool: d.tool.clone(),
        digest: d.digest.clone(),
        accepted: d.accepted,
        decided_by: d.decided_by.clone(),
        reason: d.reason.clone(),
        decided_unix_ms: d.decided_ms,
    }
}

/// A definition as `thothctl pins list` shows it.
pub(crate) fn info(v: &PinView) -> pb::PinInfo {
    let r = &v.row;
    pb::PinInfo {
        id: v.id.clone(),
        server_key: r.server_key.clone(),
        client: r.client.clone(),
        server_name: r.server_name.clone(),
        command: r.command.clone(),
        tool: r.tool.clone(),
        digest: r.digest.clone(),
        state: v.state.clone(),
        pinned_digest: r.pinned_digest.clone(),
        changes: r.changes.clone(),
        agents: r.agents,
        users: r.users,
        decision: r.decision.as_ref().map(decision),
        last_seen_unix_ms: r.last_seen_ms,
        description: r.description.clone(),
        reports_differ: r.reports_differ,
    }
}

/// A reported pin, unchecked (the service checks it).
pub(crate) fn from_report(p: pb::ToolPinReport) -> ToolPinRecord {
    ToolPinRecord {
        user: p.user,
        client: p.client,
        server_name: p.server_name,
        server_key: p.server_key,
        command: p.command,
        tool: p.tool,
        digest: p.digest,
        state: p.state,
        pending_digest: p.pending_digest,
        source: p.source,
        accepted: p.accepted,
        changes: p.changes,
        first_seen_ms: p.first_seen_unix_ms,
        changed_ms: p.changed_unix_ms,
        pending_description: p.pending_description,
    }
}

/// A stored pin as an agent's inventory shows it.
pub(crate) fn to_report(p: ToolPinRecord) -> pb::ToolPinReport {
    pb::ToolPinReport {
        user: p.user,
        client: p.client,
        server_name: p.server_name,
        server_key: p.server_key,
        command: p.command,
        tool: p.tool,
        digest: p.digest,
        state: p.state,
        pending_digest: p.pending_digest,
        source: p.source,
        accepted: p.accepted,
        changes: p.changes,
        first_seen_unix_ms: p.first_seen_ms,
        changed_unix_ms: p.changed_ms,
        pending_description: p.pending_description,
    }
}

/// The pins one agent reported last, for its inventory.
pub(crate) async fn agent_pins(
    ctl: &Controller,
    agent_id: &str,
) -> Result<Vec<pb::ToolPinReport>, Status> {
    let pins = PinService(ctl).agent_pins(agent_id).await?;
    Ok(pins.into_iter().map(to_report).collect())
}

/// ListPins.
pub(crate) async fn list(
    ctl: &Controller,
    c: Caller,
    r: pb::ListPinsRequest,
) -> Result<Response<pb::ListPinsResponse>, Status> {
    let list = PinService(ctl)
        .list(&c, &r.tenant, r.pending_only, &r.agent_id)
        .await?;
    Ok(Response::new(pb::ListPinsResponse {
        pins: list.iter().map(info).collect(),
    }))
}

/// DecidePin.
pub(crate) async fn decide(
    ctl: &Controller,
    c: Caller,
    r: pb::DecidePinRequest,
) -> Result<Response<pb::PinInfo>, Status> {
    let v = PinService(ctl)
        .decide(&c, &r.tenant, &r.id, r.accept, &r.reason)
        .await?;
    Ok(Response::new(info(&v)))
}

/// The updates carrying decisions, oldest first.
pub(crate) fn updates(found: &[PinDecisionRecord]) -> impl Iterator<Item = pb::PolicyUpdate> + '_ {
    found.iter().rev().map(|d| pb::PolicyUpdate {
        bundle: Default::default(),
        version: 0,
        approval: None,
        pin: Some(decision(d)),
    })
}
