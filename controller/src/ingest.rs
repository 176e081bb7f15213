//! Event ingest: the EventUpload service. For each batch from an agent, the chain is checked
//! against what the controller already holds for that agent (a gap or a break becomes a
//! CHAIN_ALERT event, and the events are still kept, marked), the signed chain head is verified
//! with the agent's certificate key, events are de-duplicated by `eventId` and committed, and
//! only then is the batch acknowledged.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use serde_json::Value;
use thoth_proto::chain::{GENESIS, check_link};
use thoth_proto::fleet::{self as pb, event_upload_server};
use tonic::{Request, Response, Status, Streaming};

use crate::controller::Controller;
use crate::metrics::Metrics;
use crate::store::StoredEventRecord;

/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 5_000;
/// Largest single event.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// The message a chain head signature covers (the agent signs the same bytes).
pub fn head_message(agent_id: &str, seq: u64, hash: &str) -> Vec<u8> {
    format!("thoth-chain-head:v1:{agent_id}:{seq}:{hash}").into_bytes()
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// What a checked batch yields: records (alerts included), the new chain state, the seq to ack.
pub type Checked = (Vec<StoredEventRecord>, Option<(u64, String)>, u64);

/// Checks a batch and turns it into records (alerts included). Pure: no IO.
pub fn check_batch(
    tenant: &str,
    agent_id: &str,
    state: Option<(u64, String)>,
    batch: &pb::EventBatch,
    public_key: &[u8],
) -> Result<Checked, Status> {
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(Status::invalid_argument(format!(
            "{} events in one batch, over the limit of {MAX_BATCH_EVENTS}",
            batch.events.len()
        )));
    }
    let head = batch
        .head
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("the batch has no signed chain head"))?;
    let (mut last_seq, mut last_hash) = state.clone().unwrap_or((0, GENESIS.to_owned()));
    let mut out = Vec::with_capacity(batch.events.len());
    let mut alerts = 0;
    let mut batch_last: Option<(u64, String)> = None;
    let alert = |detail: String, seq: u64| StoredEventRecord {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_owned(),
        agent_id: agent_id.to_owned(),
        seq: 0,
        event_type: "CHAIN_ALERT".into(),
        timestamp: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        chain_ok: false,
        json: serde_json::json!({
            "eventId": uuid::Uuid::now_v7().to_string(),
            "eventType": "CHAIN_ALERT",
            "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "tenantId": tenant,
            "agentId": agent_id,
            "sourceType": "controller",
            "seq": seq,
            "detail": detail,
        })
        .to_string(),
        ..StoredEventRecord::default()
    };
    for line in &batch.events {
        if line.len() > MAX_EVENT_BYTES {
            return Err(Status::invalid_argument("an event is over 1 MiB"));
        }
        let v: Value = serde_json::from_slice(line)
            .map_err(|e| Status::invalid_argument(format!("an event is not JSON: {e}")))?;
        let seq = v
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| Status::invalid_argument("an event has no seq"))?;
        let event_id = text(&v, "eventId");
        if event_id.is_empty() || event_id.len() > 64 {
            return Err(Status::invalid_argument("an event has no usable eventId"));
        }
        let hash = text(&v, "hash");
        if let Some((prev_seq, _)) = &batch_last
            && seq <= *prev_seq
        {
            return Err(Status::invalid_argument(
                "events in a batch must be in sequence order",
            ));
        }
        batch_last = Some((seq, hash.clone()));
        if seq <= last_seq {
            // Already held (a re-send after a lost acknowledgement): de-duplicated by eventId.
            continue;
        }
        let mut ok = true;
        if seq != last_seq + 1 {
            ok = false;
            alerts += 1;
            out.push(alert(
                format!(
                    "gap in the chain of {agent_id}: events {} to {} are missing",
                    last_seq + 1,
                    seq - 1
                ),
                seq,
            ));
            if let Err(e) = check_link(line, &text(&v, "prevHash")) {
                out.push(alert(
                    format!("event {seq} of {agent_id} does not hash correctly: {e}"),
                    seq,
                ));
            }
        } else if let Err(e) = check_link(line, &last_hash) {
            ok = false;
            alerts += 1;
            out.push(alert(
                format!("chain break at {agent_id} seq {seq}: {e}"),
                seq,
            ));
        }
        last_seq = seq;
        last_hash = hash;
        out.push(StoredEventRecord {
            id: 0,
            event_id,
            tenant: tenant.to_owned(),
            agent_id: agent_id.to_owned(),
            seq,
            event_type: text(&v, "eventType"),
            session_id: text(&v, "sessionId"),
            tool_name: text(&v, "toolName"),
            timestamp: text(&v, "timestamp"),
            chain_ok: ok,
            json: String::from_utf8_lossy(line).into_owned(),
        });
    }
    // The signed head must name the batch's last event, and verify with the agent's key.
    let Some((bseq, bhash)) = batch_last else {
        return Ok((out, state, 0));
    };
    if head.seq != bseq || head.hash != bhash {
        return Err(Status::invalid_argument(
            "the chain head does not match the batch's last event",
        ));
    }
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        public_key,
    );
    key.verify(
        &head_message(agent_id, head.seq, &head.hash),
        &head.signature,
    )
    .map_err(|_| {
        Status::permission_denied("the chain head signature does not verify with this agent's key")
    })?;
    let _ = alerts;
    Ok((out, Some((last_seq, last_hash)), bseq))
}

/// The EventUpload service.
pub struct UploadService(pub Arc<Controller>);

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::EventAck, Status>> + Send>>;

fn peer_public_key<T>(req: &Request<T>) -> Option<Vec<u8>> {
    let certs = req.peer_certs()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

fn peer_cert_der<T>(req: &Request<T>) -> Option<Vec<u8>> {
    Some(req.peer_certs()?.first()?.to_vec())
}

/// After a batch that stores new events, the signed head it came with (verified by
/// [`check_batch`]) is stored too, as a `CHAIN_HEAD` controller record carrying the signature and
/// the agent's certificate, in the same commit and after the batch's events: sinks export it like
/// any event, and `thoth events verify` / `thothctl events verify` check the chain against it
/// with nothing but the CA (the chain alone is unkeyed: it can be re-hashed after an edit).
fn push_chain_head(
    records: &mut Vec<StoredEventRecord>,
    tenant: &str,
    agent_id: &str,
    head: Option<&pb::ChainHead>,
    cert_der: &[u8],
) {
    let Some(head) = head else { return };
    if !records
        .iter()
        .any(|r| r.agent_id == agent_id && r.seq > 0 && r.event_type != "CHAIN_ALERT")
    {
        return;
    }
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    let event_id = uuid::Uuid::now_v7().to_string();
    let signed = thoth_proto::evidence::SignedHead {
        tenant_id: tenant.to_owned(),
        agent_id: agent_id.to_owned(),
        seq: head.seq,
        hash: head.hash.clone(),
        signature: head.signature.clone(),
        certificate: cert_der.to_vec(),
        timestamp: now.clone(),
    };
    records.push(StoredEventRecord {
        event_id: event_id.clone(),
        tenant: tenant.to_owned(),
        agent_id: agent_id.to_owned(),
        seq: 0,
        event_type: thoth_proto::evidence::CHAIN_HEAD.into(),
        timestamp: now,
        chain_ok: true,
        json: String::from_utf8(thoth_proto::canonical::to_canonical(
            &signed.to_record(&event_id),
        ))
        .expect("canonical JSON is UTF-8"),
        ..StoredEventRecord::default()
    });
}

#[tonic::async_trait]
impl event_upload_server::EventUpload for UploadService {
    type UploadStream = AckStream;

    async fn upload(
        &self,
        req: Request<Streaming<pb::EventBatch>>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        let ctl = Arc::clone(&self.0);
        let agent = crate::grpc::agent_caller_pub(&ctl, &req).await?;
        let public_key = peer_public_key(&req)
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let cert_der =
            peer_cert_der(&req).ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let mut input = req.into_inner();
        // The loop reads batches in order and answers each after its commit.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::EventAck, Status>>(16);
        let ctl = Arc::clone(&self.0);
        tokio::spawn(async move {
            loop {
                let batch = match input.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(s) => {
                        tracing::debug!(agent = agent.agent_id, "upload stream ended: {s}");
                        return;
                    }
                };
                let result = ingest(
                    &ctl,
                    &agent.tenant,
                    &agent.agent_id,
                    batch,
                    &public_key,
                    &cert_der,
                )
                .await;
                let failed = result.is_err();
                if tx.send(result).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

async fn ingest(
    ctl: &Arc<Controller>,
    tenant: &str,
    agent_id: &str,
    batch: pb::EventBatch,
    key: &[u8],
    cert_der: &[u8],
) -> Result<pb::EventAck, Status> {
    let id = agent_id.to_owned();
    let state = ctl
        .db(move |s| s.chain_state(&id))
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    let head = batch.head.clone();
    // Parsing and hashing a batch is CPU work: off the async workers.
    let (t, a, b, k) = (tenant.to_owned(), agent_id.to_owned(), batch, key.to_vec());
    let (mut records, new_state, acked) =
        tokio::task::spawn_blocking(move || check_batch(&t, &a, state, &b, &k))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
    let alerts = records
        .iter()
        .filter(|r| r.event_type == "CHAIN_ALERT")
        .count() as u64;
    let n = records.len() as u64 - alerts;
    push_chain_head(&mut records, tenant, agent_id, head.as_ref(), cert_der);
    let id = agent_id.to_owned();
    ctl.db(move |s| s.commit_events(&id, &records, new_state))
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    ctl.metrics
        .events_ingested
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    if alerts > 0 {
        ctl.metrics
            .chain_alerts
            .fetch_add(alerts, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(agent_id, alerts, "chain alerts recorded");
    }
    ctl.events_committed();
    Metrics::inc(&ctl.metrics.event_batches);
    Ok(pb::EventAck { acked_seq: acked })
}
