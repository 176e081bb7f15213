//! An approval of a call held because its tool changed names the definition (`pin`): the
//! broker keeps it only when well formed and for the very tool called, and on approval hands it
//! to its evidence outlet (the agent accepts it for the caller, see `PinBook::approved`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use thoth_proto::EventType;
use thoth_proto::fleet as pb;

use crate::daemon::approval::{
    Broker, Caller, CancelToken, Evidence, NoAdminChannel, Prompt, UserAnswer, UserChannel,
};

#[derive(Default)]
struct Seen(Mutex<Vec<(u32, pb::PinRef, String)>>);

impl Evidence for Arc<Seen> {
    fn record(&self, _: EventType, _: &pb::ApprovalRequest, _: Value) {}
    fn pin_approved(&self, uid: u32, server_name: &str, pin: &pb::PinRef, channel: &str) {
        self.0
            .lock()
            .unwrap()
            .push((uid, pin.clone(), format!("{server_name}/{channel}")));
    }
}

struct Answer(bool);

impl UserChannel for Answer {
    fn ask(&self, uid: u32, _: &Prompt, _: Instant, _: CancelToken) -> UserAnswer {
        if self.0 {
            UserAnswer::Allowed {
                by: format!("uid-{uid}"),
            }
        } else {
            UserAnswer::Denied {
                by: format!("uid-{uid}"),
            }
        }
    }
}

fn request(args: &str, pin: Option<pb::PinRef>) -> pb::ApprovalRequest {
    use sha2::Digest as _;
    pb::ApprovalRequest {
        session_id: "s1".into(),
        server_name: "fs".into(),
        tool_name: "read_file".into(),
        content: args.into(),
        reason: "the tool's definition changed".into(),
        timeout_secs: 20,
        arguments_sha256: hex::encode(sha2::Sha256::digest(args.as_bytes())),
        approvers: vec!["user".into()],
        remember: "once".into(),
        pin,
        ..pb::ApprovalRequest::default()
    }
}

fn pin(tool: &str) -> pb::PinRef {
    pb::PinRef {
        server_key: "a".repeat(64),
        tool: tool.into(),
        digest: "b".repeat(64),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_accepts_the_definition_it_names_for_its_caller_only() {
    let seen = Arc::new(Seen::default());
    let broker = Broker::new(Arc::new(NoAdminChannel), Arc::new(Arc::clone(&seen)));
    broker.set_user_channel(Arc::new(Answer(true)));
    let caller = Caller {
        uid: 1001,
        name: "ann".into(),
    };
    let d = broker
        .request(caller.clone(), request("{\"a\":1}", Some(pin("read_file"))))
        .await;
    assert!(d.approved, "{d:?}");
    assert_eq!(
        seen.0.lock().unwrap().clone(),
        vec![(1001, pin("read_file"), "fs/user".to_owned())]
    );
    // A pin naming another tool, or not a digest, is dropped: nothing is accepted.
    let d = broker
        .request(
            caller.clone(),
            request("{\"a\":2}", Some(pin("write_file"))),
        )
        .await;
    assert!(d.approved);
    let mut bad = pin("read_file");
    bad.digest = "B".repeat(64);
    let d = broker
        .request(caller.clone(), request("{\"a\":3}", Some(bad)))
        .await;
    assert!(d.approved);
    // A server name the broker would have to clean: the agent could not check the key is that
    // server's, so the pin is dropped.
    let mut odd = request("{\"a\":6}", Some(pin("read_file")));
    odd.server_name = "fs\u{202E}".into();
    let d = broker.request(caller.clone(), odd).await;
    assert!(d.approved);
    // No pin: nothing to accept.
    broker
        .request(caller.clone(), request("{\"a\":4}", None))
        .await;
    assert_eq!(seen.0.lock().unwrap().len(), 1);
    // A denied call accepts nothing.
    broker.set_user_channel(Arc::new(Answer(false)));
    let d = broker
        .request(caller, request("{\"a\":5}", Some(pin("read_file"))))
        .await;
    assert!(!d.approved);
    assert_eq!(seen.0.lock().unwrap().len(), 1);
}
