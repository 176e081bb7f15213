//! Event uploads over the real gRPC service: a revoked agent's open upload stream ends, and
//! every batch re-checks revocation.

mod common;

use std::time::Duration;

use common::TestController;
use rcgen::SigningKey as _;
use thoth_client::{self as client, Enrolled};
use thoth_controller::ingest::head_message;
use thoth_controller::store::EventFilter;
use thoth_proto::chain::Chain;
use thoth_proto::fleet::{self as pb, event_upload_client::EventUploadClient};
use tokio::sync::mpsc;
use tonic::Code;

/// A batch of `n` chained events, its head signed with the agent's key.
fn batch(agent: &Enrolled, chain: &mut Chain, n: usize) -> pb::EventBatch {
    let key = rcgen::KeyPair::from_pem(agent.credentials.key_pem.as_deref().unwrap()).unwrap();
    let events: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let mut m = serde_json::Map::new();
            m.insert("eventId".into(), uuid::Uuid::now_v7().to_string().into());
            m.insert("eventType".into(), "TOOL_CALL_PRE".into());
            m.insert("timestamp".into(), "2026-11-30T10:00:00Z".into());
            chain.seal_value(&mut m)
        })
        .collect();
    let (seq, hash) = (chain.seq(), chain.head_hex());
    pb::EventBatch {
        events,
        head: Some(pb::ChainHead {
            signature: key
                .sign(&head_message(&agent.agent_id, seq, &hash))
                .unwrap(),
            seq,
            hash,
        }),
    }
}

struct Upload {
    tx: mpsc::Sender<pb::EventBatch>,
    acks: tonic::Streaming<pb::EventAck>,
}

async fn open(c: &TestController, agent: &Enrolled) -> Upload {
    let ch = client::connect(&c.url, &agent.credentials, None)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    let acks = EventUploadClient::new(ch)
        .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Upload { tx, acks }
}

impl Upload {
    /// The next answer on the stream, within 10 s.
    async fn next(&mut self) -> Result<Option<pb::EventAck>, tonic::Status> {
        tokio::time::timeout(Duration::from_secs(10), self.acks.message())
            .await
            .expect("no answer on the upload stream within 10 s")
    }
}

fn stored(c: &TestController, agent_id: &str) -> usize {
    c.running()
        .controller
        .store
        .query_events(&EventFilter {
            agent_id: Some(agent_id.into()),
            event_types: vec!["TOOL_CALL_PRE".into()],
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_agent_ends_its_open_upload_stream() {
    let c = TestController::start().await;
    let agent = c.enroll("acme").await;
    let mut up = open(&c, &agent).await;
    let mut chain = Chain::new();
    up.tx.send(batch(&agent, &mut chain, 3)).await.unwrap();
    assert_eq!(up.next().await.unwrap().unwrap().acked_seq, 3);
    c.admin()
        .await
        .revoke_agent(pb::RevokeAgentRequest {
            agent_id: agent.agent_id.clone(),
            reason: "laptop lost".into(),
        })
        .await
        .unwrap();
    // Without sending anything more, the idle stream is closed by the controller.
    let closed = up.next().await.unwrap_err();
    assert_eq!(closed.code(), Code::PermissionDenied, "{closed:?}");
    assert!(closed.message().contains("revoked"), "{closed:?}");
    // A batch sent anyway is not stored.
    let _ = up.tx.send(batch(&agent, &mut chain, 2)).await;
    assert_eq!(stored(&c, &agent.agent_id), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_rechecks_revocation() {
    let c = TestController::start().await;
    let agent = c.enroll("acme").await;
    let mut up = open(&c, &agent).await;
    let mut chain = Chain::new();
    up.tx.send(batch(&agent, &mut chain, 2)).await.unwrap();
    assert_eq!(up.next().await.unwrap().unwrap().acked_seq, 2);
    // Revoked in the store only (as another replica would): no notification reaches the stream.
    c.running()
        .controller
        .store
        .revoke_agent(
            &thoth_controller::store::AgentId::trusted(agent.agent_id.as_str()),
            1,
        )
        .unwrap();
    up.tx.send(batch(&agent, &mut chain, 2)).await.unwrap();
    let refused = up.next().await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        stored(&c, &agent.agent_id),
        2,
        "a revoked agent's batch was stored"
    );
}
