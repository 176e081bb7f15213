//! Tool-call approvals on the agent: the broker that answers `LocalAgent.RequestApproval`, the
//! grants an approval leaves behind, the admin channel (the controller's queue) and the user
//! channel (a dialog on the user's desktop, implemented in `dialog`).
//!
//! The user channel is a blocking call made on a blocking thread: [`UserChannel::ask`] shows one
//! prompt to the OS user `uid` and returns when the user answers, the deadline passes or the
//! broker cancels it (another channel won, the proxy went away, the request expired).
//!
//! The user channel is as strong as the user's desktop session, no stronger: any process
//! running as that user can answer the dialog (it can drive the user's display, e.g. send the
//! click), so a compromised user account, or a tool the model runs as the user, can approve its
//! own call. Rules for high-risk tools should name `approvers: [admin]`, which only an admin of
//! the tenant (the controller's queue, over mTLS) can answer.

pub mod admin;
pub mod broker;
pub mod channels;
mod detail;
pub mod dialog;
pub mod grants;
pub mod request;
pub mod types;

use std::sync::{Arc, Weak};

use serde_json::Value;
use thoth_proto::EventType;
use thoth_proto::fleet as pb;

pub use broker::{AdminChannel, Broker, Caller, Evidence, NoAdminChannel, NoEvidence};
pub use types::{CancelToken, Daemon, NoUserChannel, Prompt, UserAnswer, UserChannel};

/// The broker of an agent: the user channel a native dialog on the caller's desktop, the admin
/// channel on its controller connection, its evidence in its event spool.
pub(super) fn broker_for(sh: Weak<dyn Daemon>) -> Arc<Broker> {
    let broker = Broker::new(
        Arc::new(admin::ControllerAdmin(sh.clone())),
        Arc::new(DaemonEvidence(sh)),
    );
    broker.set_user_channel(Arc::new(dialog::DesktopDialog::new()));
    broker
}

/// Approval evidence as agent events: logged, held for upload, noted in the status.
struct DaemonEvidence(Weak<dyn Daemon>);

impl Evidence for DaemonEvidence {
    fn record(&self, event_type: EventType, req: &pb::ApprovalRequest, detail: Value) {
        if let Some(sh) = self.0.upgrade() {
            sh.record_approval(event_type, req, detail);
        }
    }

    fn pin_approved(&self, uid: u32, server_name: &str, pin: &pb::PinRef, _channel: &str) {
        if let Some(sh) = self.0.upgrade() {
            sh.accept_pin(uid, server_name, pin);
        }
    }
}
