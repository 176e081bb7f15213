//! The broker's outlets: the controller's approval queue (the admin channel) and where its
//! evidence goes.

use futures_util::future::BoxFuture;
use serde_json::Value;
use thoth_proto::EventType;
use thoth_proto::fleet as pb;

/// The controller's approval queue, as the broker uses it.
pub trait AdminChannel: Send + Sync {
    /// Queues `req` for the tenant's approvers; `Err` says why it could not.
    fn submit(&self, req: pb::ApprovalRequest) -> BoxFuture<'static, Result<(), String>>;
    /// The request is no longer wanted.
    fn withdraw(&self, approval_id: String) -> BoxFuture<'static, ()>;
}

/// No controller: the admin channel cannot be reached.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAdminChannel;

impl AdminChannel for NoAdminChannel {
    fn submit(&self, _: pb::ApprovalRequest) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("the agent has no controller connection".to_owned()) })
    }
    fn withdraw(&self, _: String) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Where the broker's evidence goes (APPROVAL_REQUESTED, APPROVAL_DECIDED).
pub trait Evidence: Send + Sync {
    /// Records one event about `req` (its user, session, server, tool and client name).
    fn record(&self, event_type: EventType, req: &pb::ApprovalRequest, detail: Value);
    /// A request to `server_name` that names a tool definition (`pin`: held because the tool
    /// changed) was approved for `uid` on `channel` ("user", "admin"): that user may use that
    /// definition (`user_approval`; an approval never makes it admin-accepted).
    fn pin_approved(&self, _uid: u32, _server_name: &str, _pin: &pb::PinRef, _channel: &str) {}
}

/// Evidence dropped (tests, or before the agent's spool is open).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvidence;

impl Evidence for NoEvidence {
    fn record(&self, _: EventType, _: &pb::ApprovalRequest, _: Value) {}
}
