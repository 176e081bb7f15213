//! EventUpload over gRPC: the agent's certificate → the batch stream, each batch checked and
//! committed by [`crate::ingest`] (parsing and hashing on the blocking pool, outside the store's
//! lock), revocation ending the stream; translation and transport only.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::Stream;
use thoth_proto::fleet::{self as pb, event_upload_server};
use tonic::{Request, Response, Status, Streaming};

use crate::controller::Controller;
use crate::ids::AgentId;
use crate::ingest::{IngestError, commit, prepare};
use crate::metrics::Metrics;
use crate::service::ServiceError;

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

#[tonic::async_trait]
impl event_upload_server::EventUpload for UploadService {
    type UploadStream = AckStream;

    async fn upload(
        &self,
        req: Request<Streaming<pb::EventBatch>>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        let ctl = Arc::clone(&self.0);
        let agent = super::conn::agent_caller(&ctl, &req).await?;
        let public_key = peer_public_key(&req)
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let cert_der =
            peer_cert_der(&req).ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let mut input = req.into_inner();
        // The loop reads batches in order and answers each after its commit. A revocation ends
        // the stream at once (even an idle one), and each batch re-checks it.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::EventAck, Status>>(16);
        let ctl = Arc::clone(&self.0);
        let mut revocations = ctl.hub.revocations();
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    m = input.message() => match m {
                        Ok(Some(b)) => b,
                        Ok(None) => return,
                        Err(s) => {
                            tracing::debug!(agent = agent.agent_id, "upload stream ended: {s}");
                            return;
                        }
                    },
                    changed = revocations.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if let Err(s) = still_enrolled(&ctl, &agent.agent_id).await {
                            tracing::info!(agent_id = agent.agent_id, "upload stream closed: {}", s.message());
                            let _ = tx.send(Err(s)).await;
                            return;
                        }
                        continue;
                    }
                };
                let result = match still_enrolled(&ctl, &agent.agent_id).await {
                    Ok(()) => {
                        ingest(
                            &ctl,
                            &agent.tenant,
                            &agent.agent_id,
                            batch,
                            &public_key,
                            &cert_der,
                        )
                        .await
                    }
                    Err(s) => Err(s),
                };
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

/// Refuses an agent revoked since its stream opened.
async fn still_enrolled(ctl: &Arc<Controller>, agent_id: &str) -> Result<(), Status> {
    let id = AgentId::trusted(agent_id);
    let agent = ctl
        .db(move |s| s.agent(&id))
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    match agent {
        Some(a) if a.revoked_at.is_none() => Ok(()),
        Some(_) => {
            Metrics::inc(&ctl.metrics.auth_refused);
            Err(Status::permission_denied(format!(
                "agent {agent_id} was revoked; it must be enrolled again with a new token"
            )))
        }
        None => Err(Status::permission_denied(format!(
            "agent {agent_id} is not enrolled with this controller"
        ))),
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
    // Parsing and hashing a batch is CPU work: off the async workers, outside the store's lock.
    let (a, k) = (agent_id.to_owned(), key.to_vec());
    let prepared = tokio::task::spawn_blocking(move || prepare(&a, &batch, &k))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(ServiceError::from)?;
    let (t, a, c) = (tenant.to_owned(), agent_id.to_owned(), cert_der.to_vec());
    let store = Arc::clone(&ctl.store);
    let done = tokio::task::spawn_blocking(move || {
        commit(store.as_ref(), &t, &a, &prepared, &c, SystemTime::now())
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(|e| match e {
        // As before: a storage failure is reported with its own words.
        IngestError::Store(e) => Status::internal(e.to_string()),
        e => ServiceError::from(e).into(),
    })?;
    ctl.metrics
        .events_ingested
        .fetch_add(done.stored, std::sync::atomic::Ordering::Relaxed);
    if done.alerts > 0 {
        ctl.metrics
            .chain_alerts
            .fetch_add(done.alerts, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(agent_id, alerts = done.alerts, "chain alerts recorded");
    }
    ctl.events_committed();
    Metrics::inc(&ctl.metrics.event_batches);
    Ok(pb::EventAck {
        acked_seq: done.acked,
    })
}
