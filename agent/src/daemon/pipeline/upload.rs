//! The uploader: streams durable events to the controller with signed chain heads, capped by
//! count and bytes, and keeps a record the controller refuses again and again from holding back
//! the rest (isolated, then quarantined).

use thoth_proto::fleet::{self as pb, event_upload_client::EventUploadClient};

use super::spooler::*;

/// Why an upload stream ended; its text is the uploader's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The agent's key does not parse.
    #[error("agent key: {0}")]
    Key(rcgen::Error),
    /// The controller refused to open the stream.
    #[error("event upload refused: {}", .0.message())]
    Refused(Box<tonic::Status>),
    /// The spool could not be read.
    #[error("{0}")]
    Read(std::io::Error),
    /// The chain head could not be signed.
    #[error("signing the chain head: {0}")]
    Sign(rcgen::Error),
    /// The outgoing stream closed.
    #[error("the upload stream closed")]
    StreamClosed,
    /// The controller ended the stream.
    #[error("the controller closed the upload stream")]
    ControllerClosed,
    /// The controller failed the stream.
    #[error("event upload: {}", .0.message())]
    Stream(Box<tonic::Status>),
    /// The spool thread is gone.
    #[error("the spool stopped")]
    SpoolStopped,
}

/// Whether a status from the controller refuses the batch's content (as opposed to a broken
/// connection or a server fault): the same batch would be refused again.
fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::ResourceExhausted
            | tonic::Code::OutOfRange
            | tonic::Code::FailedPrecondition
    )
}

/// Streams durable events to the controller over `channel` until the stream fails. Progress,
/// failures and the search for a record the controller keeps refusing are kept in
/// `spool.upload` across calls: after [`ISOLATE_AFTER`] refusals without progress, records go one
/// per batch; a single record refused [`QUARANTINE_AFTER`] times is quarantined (kept aside in
/// the spool's `quarantine` directory, reported as `EVENT_QUARANTINED`, never sent again), so one
/// bad record cannot hold back every later one.
pub async fn upload(
    spool: &SpoolHandle,
    channel: tonic::transport::Channel,
    agent_id: &str,
    key_pem: &str,
) -> Result<(), UploadError> {
    let r = upload_inner(spool, channel, agent_id, key_pem).await;
    if let Err(e) = &r {
        let mut u = lock(&spool.upload);
        u.failures = u.failures.saturating_add(1);
        u.last_error = Some(e.to_string());
    }
    r
}

async fn upload_inner(
    spool: &SpoolHandle,
    channel: tonic::transport::Channel,
    agent_id: &str,
    key_pem: &str,
) -> Result<(), UploadError> {
    use rcgen::SigningKey as _;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(UploadError::Key)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::EventBatch>(4);
    let mut acks = EventUploadClient::new(channel)
        .max_encoding_message_size(64 << 20)
        .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| UploadError::Refused(Box::new(s)))?
        .into_inner();
    let mut acked = lock(&spool.stats).acked;
    let mut sent = acked;
    let mut durable = spool.durable.clone();
    let mut empty_reads = 0u32;
    loop {
        let have = *durable.borrow_and_update();
        let (isolate, skip) = {
            let mut u = lock(&spool.upload);
            u.skip.retain(|s| *s > acked);
            (acked < u.isolate_until, u.skip.clone())
        };
        while skip.contains(&(sent + 1)) && sent < have {
            sent += 1;
        }
        // Quarantined records are never acknowledged by themselves: not in flight.
        let in_flight = if sent > acked {
            sent - acked - skip.range(acked + 1..=sent).count() as u64
        } else {
            0
        };
        let window = if isolate { 1 } else { IN_FLIGHT };
        if have > sent && in_flight < window {
            let max = if isolate { 1 } else { BATCH };
            let mut events = spool
                .read(sent, max, BATCH_BYTES)
                .await
                .map_err(UploadError::Read)?;
            if let Some((first, _)) = events.first()
                && *first != sent + 1
            {
                tracing::warn!(
                    expected = sent + 1,
                    got = first,
                    "the spool skipped records (corrupt); the controller will report the gap"
                );
            }
            let last_read = events.last().map(|(s, _)| *s);
            events.retain(|(s, _)| !skip.contains(s));
            if let Some((last_seq, last)) = events.last() {
                empty_reads = 0;
                let hash = record_hash(last);
                let signature = key
                    .sign(&head_message(agent_id, *last_seq, &hash))
                    .map_err(UploadError::Sign)?;
                let batch = pb::EventBatch {
                    events: events.iter().map(|(_, e)| e.clone()).collect(),
                    head: Some(pb::ChainHead {
                        seq: *last_seq,
                        hash,
                        signature,
                    }),
                };
                sent = *last_seq;
                tx.send(batch)
                    .await
                    .map_err(|_| UploadError::StreamClosed)?;
                continue;
            }
            if let Some(l) = last_read {
                // Only quarantined records: nothing to send.
                sent = l;
                continue;
            }
            // Nothing readable although durable: corrupt records (reported at recovery). Make
            // sure before moving on, so that a transient empty read can never skip events.
            empty_reads += 1;
            if empty_reads < 3 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            tracing::warn!(
                from = sent + 1,
                to = have,
                "unreadable spool records skipped"
            );
            empty_reads = 0;
            sent = have;
            continue;
        }
        tokio::select! {
            ack = acks.message() => match ack {
                Ok(Some(a)) => {
                    if a.acked_seq > acked {
                        acked = a.acked_seq;
                        spool.ack(acked);
                        lock(&spool.upload).progressed();
                    }
                }
                Ok(None) => return Err(UploadError::ControllerClosed),
                Err(s) => {
                    let refusal = is_refusal(s.code());
                    let e = UploadError::Stream(Box::new(s));
                    if refusal {
                        refused(spool, acked, sent, isolate, &e.to_string());
                    }
                    return Err(e);
                }
            },
            r = durable.changed() => if r.is_err() { return Err(UploadError::SpoolStopped) },
        }
    }
}

/// The controller refused what was sent after `acked` (up to `sent`): after repeated refusals
/// without progress, isolate the record it refuses; quarantine a single record refused again.
fn refused(spool: &SpoolHandle, acked: u64, sent: u64, isolating: bool, why: &str) {
    let mut u = lock(&spool.upload);
    if u.refusals == 0 || acked > u.stuck_at {
        u.stuck_at = acked;
        u.refusals = 0;
    }
    u.refusals += 1;
    let single = sent > acked && (acked + 1..sent).all(|s| u.skip.contains(&s));
    if isolating && single {
        let strikes = {
            let n = u.strikes.entry(sent).or_default();
            *n += 1;
            *n
        };
        if strikes >= QUARANTINE_AFTER {
            u.strikes.remove(&sent);
            u.skip.insert(sent);
            u.quarantined += 1;
            u.refusals = 0;
            drop(u);
            tracing::error!(
                seq = sent,
                "the controller refuses event {sent} again and again: quarantined, the upload goes on without it ({why})"
            );
            let _ = spool.tx.send(Cmd::Quarantine {
                seq: sent,
                reason: why.chars().take(1024).collect(),
            });
        }
    } else if u.refusals >= ISOLATE_AFTER {
        tracing::warn!(
            from = acked + 1,
            to = sent,
            "the controller keeps refusing a batch: sending its records one at a time to find the bad one"
        );
        u.isolate_until = u.isolate_until.max(sent);
    }
}

/// The `hash` of a stored record (hex, as the signed head carries it; empty when unreadable),
/// read without building the rest of the record.
fn record_hash(record: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Hashed {
        #[serde(default)]
        hash: String,
    }
    serde_json::from_slice::<Hashed>(record)
        .map(|h| h.hash)
        .unwrap_or_default()
}
