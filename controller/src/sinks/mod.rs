//! SIEM sinks. Each sink reads the event store by its own cursor (kept in the store), delivers
//! at least once, retries with backoff, and exposes its lag; a dead sink never blocks ingest or
//! the other sinks. Field names are DESIGN's camelCase names: events are sent as stored.
//!
//! This module is the runner all kinds share (cursor loop, filters, backoff, lag). Each kind is a
//! folder with the same roles: `config.rs` (its settings, unknown fields refused), `encode.rs`
//! (events to bytes), `deliver.rs` (the transport) and `tests.rs`. Kinds: `jsonl` (file,
//! rotated), `syslog` (RFC 5424 over TCP with octet-counting framing, or TLS), `splunk_hec` (HTTP
//! Event Collector), `webhook` (HTTP POST with an HMAC-SHA256 header). Sinks read through an
//! [`EventSource`] and know nothing of the controller.

mod config;
mod error;
pub(crate) mod http;
mod jsonl;
mod lag;
mod source;
mod splunk_hec;
mod syslog;
mod tls;
mod webhook;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::store::{EventFilter, MAX_EVENTS_PER_QUERY, StoreError, StoredEventRecord};

pub use config::{SinkConfig, SinkKind};
pub use error::SinkError;
pub use jsonl::JsonlConfig;
pub use lag::{SinkLag, SinkStats};
pub use source::{EventSource, StoreSource};
pub use splunk_hec::SplunkHecConfig;
pub use syslog::SyslogConfig;
pub use webhook::WebhookConfig;

/// Starts every configured sink on `source`; each registers its stats in `lag` and wakes on
/// `tick` (bumped after each event commit).
pub fn start_all(
    source: Arc<dyn EventSource>,
    configs: &[SinkConfig],
    tick: &tokio::sync::watch::Sender<u64>,
    lag: &SinkLag,
) -> Vec<tokio::task::JoinHandle<()>> {
    configs
        .iter()
        .cloned()
        .map(|cfg| {
            let stats = Arc::new(SinkStats::default());
            lag.register(&cfg.name, Arc::clone(&stats));
            tokio::spawn(run(Arc::clone(&source), tick.subscribe(), cfg, stats))
        })
        .collect()
}

async fn on_source<R: Send + 'static>(
    source: &Arc<dyn EventSource>,
    f: impl FnOnce(&dyn EventSource) -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    let source = Arc::clone(source);
    tokio::task::spawn_blocking(move || f(source.as_ref()))
        .await
        .map_err(|e| StoreError::backend(format!("storage task failed: {e}")))?
}

/// Runs one sink until the task is dropped: reads events after its cursor, delivers them, and
/// moves the cursor only past what it delivered (or what it read and did not need), in commit
/// order. `tick` changes after each commit.
///
/// The high-water mark is read BEFORE the query, and the query is bounded by it: every event at
/// or below it was committed before it was read (cursors are given out in commit order), so the
/// query sees all of them, and passing the mark after an empty (or short) read skips nothing.
/// Reading it after the query (as before) could pass a batch committed in between. Store errors
/// move nothing: they are logged, counted, and retried with backoff.
pub async fn run(
    source: Arc<dyn EventSource>,
    mut tick: tokio::sync::watch::Receiver<u64>,
    cfg: SinkConfig,
    stats: Arc<SinkStats>,
) {
    let mut sink = match Delivery::new(&cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(sink = cfg.name, "sink disabled: {e}");
            return;
        }
    };
    tracing::info!(sink = cfg.name, kind = cfg.kind.name(), "sink started");
    let mut attempt = 0u32;
    let mut store_attempt = 0u32;
    let store_failed = |what: &str, e: StoreError, attempt: &mut u32| {
        stats.store_errors.fetch_add(1, Ordering::Relaxed);
        let wait = backoff(*attempt);
        *attempt = attempt.saturating_add(1);
        tracing::warn!(sink = cfg.name, "{what} failed ({e}); retrying in {wait:?}");
        wait
    };
    // The cursor as saved, and as reached (they differ only while saving fails).
    let mut saved = loop {
        let name = cfg.name.clone();
        match on_source(&source, move |s| s.cursor(&name)).await {
            Ok(c) => break c,
            Err(e) => {
                let wait = store_failed("reading the sink cursor", e, &mut store_attempt);
                tokio::time::sleep(wait).await;
            }
        }
    };
    let mut cursor = saved;
    loop {
        if saved != cursor {
            let (name, c) = (cfg.name.clone(), cursor);
            match on_source(&source, move |s| s.set_cursor(&name, c)).await {
                Ok(()) => saved = cursor,
                Err(e) => {
                    let wait = store_failed("saving the sink cursor", e, &mut store_attempt);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
        }
        // Mark the commits seen so far before reading: a commit after this wakes the wait below.
        tick.borrow_and_update();
        // As the store will cut it: a read as long as the limit may have been cut.
        let limit = cfg.batch.clamp(1, MAX_EVENTS_PER_QUERY);
        let filter = EventFilter {
            after_id: cursor,
            limit,
            tenants: cfg.tenants.clone(),
            event_types: cfg.event_types.clone(),
            ..Default::default()
        };
        let read = on_source(&source, move |s| {
            let high = s.high_water()?;
            if high <= filter.after_id {
                return Ok((high, Vec::new()));
            }
            let events = s.events(&EventFilter {
                upto_id: high,
                ..filter
            })?;
            Ok((high, events))
        })
        .await;
        let (high, events) = match read {
            Ok(r) => {
                store_attempt = 0;
                r
            }
            Err(e) => {
                let wait = store_failed("reading events", e, &mut store_attempt);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        stats
            .lag
            .store(high.saturating_sub(cursor), Ordering::Relaxed);
        if high <= cursor {
            let _ = tokio::time::timeout(Duration::from_secs(2), tick.changed()).await;
            continue;
        }
        // Past the last delivered event; past the mark when the read was not cut by the limit.
        let reached = if events.len() < limit as usize {
            high
        } else {
            events.last().map_or(high, |e| e.id)
        };
        if !events.is_empty() {
            if let Err(e) = sink.deliver(&events).await {
                stats.delivery_failures.fetch_add(1, Ordering::Relaxed);
                let wait = backoff(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(
                    sink = cfg.name,
                    "delivery failed ({e}); retrying in {wait:?}"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            attempt = 0;
            stats
                .delivered
                .fetch_add(events.len() as u64, Ordering::Relaxed);
        }
        cursor = reached;
        stats
            .lag
            .store(high.saturating_sub(cursor), Ordering::Relaxed);
    }
}

/// 0.5 s doubling to 60 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1 << attempt.min(7))
        .min(Duration::from_secs(60))
}

/// A sink's transport, by kind.
enum Delivery {
    Jsonl(jsonl::JsonlSink),
    Syslog(syslog::SyslogSink),
    SplunkHec(splunk_hec::SplunkHecSink),
    Webhook(webhook::WebhookSink),
}

impl Delivery {
    fn new(cfg: &SinkConfig) -> Result<Delivery, SinkError> {
        cfg.check()?;
        Ok(match &cfg.kind {
            SinkKind::Jsonl(c) => Delivery::Jsonl(jsonl::JsonlSink::new(c)),
            SinkKind::Syslog(c) => Delivery::Syslog(syslog::SyslogSink::new(c)?),
            SinkKind::SplunkHec(c) => Delivery::SplunkHec(splunk_hec::SplunkHecSink::new(c)?),
            SinkKind::Webhook(c) => Delivery::Webhook(webhook::WebhookSink::new(c)?),
        })
    }

    async fn deliver(&mut self, events: &[StoredEventRecord]) -> Result<(), SinkError> {
        match self {
            Delivery::Jsonl(s) => s.deliver(events).await,
            Delivery::Syslog(s) => s.deliver(events).await,
            Delivery::SplunkHec(s) => s.deliver(events).await,
            Delivery::Webhook(s) => s.deliver(events).await,
        }
    }
}

#[cfg(test)]
mod tests;
