//! The details of the broker's evidence: what an APPROVAL_REQUESTED or APPROVAL_DECIDED event
//! says about a request (its id, user, server, tool, arguments' hash, channels and outcome).

use serde_json::{Value, json};
use thoth_proto::fleet as pb;

use super::grants::Grant;

/// A new request, asked on `channels`.
pub(super) fn requested(req: &pb::ApprovalRequest, uid: u32, channels: &[&'static str]) -> Value {
    json!({
        "approvalId": req.approval_id,
        "user": req.user,
        "uid": uid,
        "sessionId": req.session_id,
        "server": req.server_name,
        "tool": req.tool_name,
        "argumentsSha256": req.arguments_sha256,
        "channels": channels,
        "remember": req.remember,
        "timeoutSecs": req.timeout_secs,
        "expiresUnixMs": req.expires_unix_ms,
        "reason": req.reason,
    })
}

/// A call let through at once by the grant `g` an earlier approval left.
pub(super) fn remembered(req: &pb::ApprovalRequest, g: &Grant) -> Value {
    json!({
        "approvalId": g.approval_id,
        "user": req.user,
        "server": req.server_name,
        "tool": req.tool_name,
        "argumentsSha256": req.arguments_sha256,
        "channel": "remembered",
        "grantedBy": g.channel,
        "decidedBy": g.decided_by,
        "decision": "approved",
        "remember": g.remember.as_text(),
        "latencyMs": 0,
    })
}

/// A held call denied because another identical call used the `once` approval of `id`.
pub(super) fn once_used(
    id: &str,
    req: &pb::ApprovalRequest,
    channel: &str,
    by: &str,
    remember: &str,
    reason: &str,
    latency_ms: u64,
) -> Value {
    json!({
        "approvalId": id,
        "user": req.user,
        "server": req.server_name,
        "tool": req.tool_name,
        "argumentsSha256": req.arguments_sha256,
        "channel": channel,
        "decidedBy": by,
        "decision": "denied",
        "remember": remember,
        "reason": reason,
        "latencyMs": latency_ms,
    })
}

/// The end of request `req` (or of a held call on it: `timed_out`), asked on `channels`.
pub(super) fn decided(
    req: &pb::ApprovalRequest,
    channels: &[&'static str],
    channel: &str,
    by: &str,
    decision: &str,
    remember: &str,
    latency_ms: u64,
) -> Value {
    json!({
        "approvalId": req.approval_id,
        "user": req.user,
        "server": req.server_name,
        "tool": req.tool_name,
        "argumentsSha256": req.arguments_sha256,
        "channels": channels,
        "channel": channel,
        "decidedBy": by,
        "decision": decision,
        "remember": remember,
        "latencyMs": latency_ms,
    })
}
