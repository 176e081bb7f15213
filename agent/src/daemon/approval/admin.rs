//! The admin channel: requests queued with the controller (`Approvals.Submit` and `Withdraw`
//! over the agent's mTLS connection); admins' decisions come back on the Subscribe stream
//! (`PolicyUpdate.approval`, see `connection.rs`) to [`super::Broker::admin_decision`].

use std::sync::Weak;
use std::time::Duration;

use futures_util::future::BoxFuture;
use thoth_proto::fleet::{self as pb, approvals_client::ApprovalsClient};

use super::broker::AdminChannel;
use super::types::Daemon;
use crate::daemon::sys::describe;

/// How long a Submit or Withdraw may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The controller's queue, reached on the agent's current connection.
pub struct ControllerAdmin(pub(in super::super) Weak<dyn Daemon>);

impl ControllerAdmin {
    fn client(&self) -> Result<ApprovalsClient<tonic::transport::Channel>, String> {
        let sh = self.0.upgrade().ok_or("the agent is stopping")?;
        let ch = sh
            .controller_channel()
            .ok_or("the agent is not connected to the controller now")?;
        Ok(ApprovalsClient::new(ch))
    }
}

impl AdminChannel for ControllerAdmin {
    fn submit(&self, req: pb::ApprovalRequest) -> BoxFuture<'static, Result<(), String>> {
        let client = self.client();
        Box::pin(async move {
            let mut client = client?;
            match tokio::time::timeout(CALL_TIMEOUT, client.submit(req)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(s)) => Err(format!("the controller refused it: {}", describe(&s))),
                Err(_) => Err("the controller did not answer in time".into()),
            }
        })
    }

    fn withdraw(&self, approval_id: String) -> BoxFuture<'static, ()> {
        let client = self.client();
        Box::pin(async move {
            let Ok(mut client) = client else { return };
            let call = client.withdraw(pb::ApprovalWithdraw {
                approval_id: approval_id.clone(),
            });
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(_)) => {}
                Ok(Err(s)) => tracing::warn!(
                    approval = approval_id,
                    "withdrawing the approval request failed: {}",
                    describe(&s)
                ),
                Err(_) => tracing::warn!(
                    approval = approval_id,
                    "withdrawing the approval request timed out"
                ),
            }
        })
    }
}
