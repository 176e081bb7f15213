//! The Approvals service (agents submit and withdraw requests) and the protobuf forms of the
//! approval queue the Admin and AgentSync services share: translation only.

use std::sync::Arc;

use thoth_proto::fleet::{self as pb, approvals_server};
use tonic::{Request, Response, Status};

use crate::controller::Controller;
use crate::service::approvals::{ApprovalService, NewApproval};
use crate::store::ApprovalRecord;

use super::conn::agent_caller;

/// The request as approvers see it.
pub(super) fn request(r: &ApprovalRecord) -> pb::ApprovalRequest {
    pb::ApprovalRequest {
        approval_id: r.approval_id.clone(),
        session_id: r.session_id.clone(),
        server_name: r.server_name.clone(),
        tool_name: r.tool_name.clone(),
        content: r.content.clone(),
        reason: r.reason.clone(),
        user: r.user.clone(),
        timeout_secs: r.timeout_secs,
        arguments_sha256: r.arguments_sha256.clone(),
        client_name: r.client_name.clone(),
        approvers: r.approvers.clone(),
        remember: r.remember.clone(),
        expires_unix_ms: r.expires_ms,
        hostname: r.hostname.clone(),
        agent_id: r.agent_id.clone(),
        requested_unix_ms: r.requested_ms,
        pin: None,
    }
}

/// The decision (None while pending; a withdrawn or expired request has none).
pub(super) fn decision(r: &ApprovalRecord) -> Option<pb::ApprovalDecision> {
    let approved = match r.state.as_str() {
        "approved" => true,
        "denied" => false,
        _ => return None,
    };
    Some(pb::ApprovalDecision {
        approval_id: r.approval_id.clone(),
        approved,
        decided_by: r.decided_by.clone(),
        reason: r.decision_reason.clone(),
        channel: "admin".into(),
        remember: r.decision_remember.clone(),
        timed_out: false,
    })
}

/// The request, its state and decision.
pub(super) fn info(r: &ApprovalRecord) -> pb::ApprovalInfo {
    pb::ApprovalInfo {
        request: Some(request(r)),
        state: r.state.clone(),
        decision: decision(r),
        decided_unix_ms: r.decided_ms,
    }
}

/// The Approvals service.
pub struct ApprovalsService(pub Arc<Controller>);

#[tonic::async_trait]
impl approvals_server::Approvals for ApprovalsService {
    async fn submit(
        &self,
        req: Request<pb::ApprovalRequest>,
    ) -> Result<Response<pb::ApprovalSubmitted>, Status> {
        let ctl = &self.0;
        let agent = agent_caller(ctl, &req).await?;
        let r = req.into_inner();
        let rec = ApprovalService(ctl)
            .submit(
                &agent,
                NewApproval {
                    approval_id: r.approval_id,
                    session_id: r.session_id,
                    server_name: r.server_name,
                    tool_name: r.tool_name,
                    content: r.content,
                    reason: r.reason,
                    user: r.user,
                    timeout_secs: r.timeout_secs,
                    arguments_sha256: r.arguments_sha256,
                    client_name: r.client_name,
                    approvers: r.approvers,
                    remember: r.remember,
                    expires_unix_ms: r.expires_unix_ms,
                },
            )
            .await?;
        Ok(Response::new(pb::ApprovalSubmitted {
            approval_id: rec.approval_id,
        }))
    }

    async fn withdraw(
        &self,
        req: Request<pb::ApprovalWithdraw>,
    ) -> Result<Response<pb::ApprovalSubmitted>, Status> {
        let ctl = &self.0;
        let agent = agent_caller(ctl, &req).await?;
        let r = req.into_inner();
        ApprovalService(ctl)
            .withdraw(&agent, &r.approval_id)
            .await?;
        Ok(Response::new(pb::ApprovalSubmitted {
            approval_id: r.approval_id,
        }))
    }
}
