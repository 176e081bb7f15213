//! Each sink's gauges and counters, rendered for Prometheus. The controller holds a [`SinkLag`]
//! and renders it with its own metrics; the sinks fill it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One sink's gauges and counters, for metrics.
#[derive(Default)]
pub struct SinkStats {
    /// Events stored after the sink's cursor (not yet delivered or passed).
    pub lag: AtomicU64,
    /// Store reads or cursor writes that failed (the sink backs off, nothing is skipped).
    pub store_errors: AtomicU64,
    /// Deliveries that failed (retried with backoff).
    pub delivery_failures: AtomicU64,
    /// Events delivered.
    pub delivered: AtomicU64,
}

/// Stats per sink, for metrics.
#[derive(Default)]
pub struct SinkLag(pub Mutex<HashMap<String, Arc<SinkStats>>>);

impl SinkLag {
    /// Prometheus lines.
    pub fn render(&self) -> String {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<_> = m.keys().collect();
        names.sort();
        let mut out = String::new();
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&SinkStats) -> &AtomicU64,
        );
        let families: [Family; 4] = [
            (
                "thoth_sink_lag_events",
                "Events stored but not yet delivered by a sink.",
                "gauge",
                |s| &s.lag,
            ),
            (
                "thoth_sink_store_errors_total",
                "Store reads or cursor writes of a sink that failed (it backs off and retries).",
                "counter",
                |s| &s.store_errors,
            ),
            (
                "thoth_sink_delivery_failures_total",
                "Deliveries of a sink that failed (retried with backoff).",
                "counter",
                |s| &s.delivery_failures,
            ),
            (
                "thoth_sink_delivered_events_total",
                "Events a sink delivered.",
                "counter",
                |s| &s.delivered,
            ),
        ];
        for (metric, help, kind, get) in families {
            out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} {kind}\n"));
            for n in &names {
                out.push_str(&format!(
                    "{metric}{{sink=\"{n}\"}} {}\n",
                    get(&m[*n]).load(Ordering::Relaxed)
                ));
            }
        }
        out
    }

    /// Registers a sink's stats under its name.
    pub(super) fn register(&self, name: &str, stats: Arc<SinkStats>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), stats);
    }
}
