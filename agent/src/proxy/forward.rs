//! Sends a proxy's events to the agent over its local socket, off the hot path: a bounded
//! in-memory queue (overflow counted and sent as `EVENTS_DROPPED`) drained by a thread that
//! retries with backoff while the agent is unreachable. Tool calls never wait for it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most events waiting for the agent.
pub const MAX_EVENTS: usize = 20_000;
/// Most bytes waiting for the agent.
pub const MAX_BYTES: usize = 32 << 20;
const BATCH: usize = 500;

struct Shared {
    queue: Mutex<(VecDeque<Vec<u8>>, usize)>,
    dropped: AtomicU64,
    stop: AtomicBool,
}

/// The forwarder.
pub struct Forwarder {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Forwarder {
    /// Starts forwarding to the agent at `socket`.
    pub fn start(socket: PathBuf) -> std::io::Result<Forwarder> {
        let shared = Arc::new(Shared {
            queue: Mutex::new((VecDeque::new(), 0)),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("thoth-forward".into())
            .spawn(move || run(socket, s))?;
        Ok(Forwarder {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues one event line (a JSON object); counts it dropped when the queue is full.
    pub fn push(&self, line: Vec<u8>) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.0.len() >= MAX_EVENTS || q.1 + line.len() > MAX_BYTES {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.1 += line.len();
        q.0.push_back(line);
    }

    /// Tries to deliver what is queued within `deadline`, then stops.
    pub fn shutdown(&self, deadline: Duration) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.thread().unpark();
            if !super::join_within(t, deadline) {
                let left = self.shared.queue.lock().map(|q| q.0.len()).unwrap_or(0);
                tracing::warn!(left, "events not delivered to the agent before exit");
            }
        }
    }
}

fn run(socket: PathBuf, s: Arc<Shared>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut client: Option<
        thoth_proto::fleet::local_agent_client::LocalAgentClient<tonic::transport::Channel>,
    > = None;
    let mut failures = 0u32;
    let mut retry_at = Instant::now();
    loop {
        let stopping = s.stop.load(Ordering::SeqCst);
        let mut batch: Vec<Vec<u8>> = {
            let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
            let n = q.0.len().min(BATCH);
            let b: Vec<Vec<u8>> = q.0.drain(..n).collect();
            q.1 -= b.iter().map(Vec::len).sum::<usize>();
            b
        };
        let dropped = s.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let ev = serde_json::json!({
                "eventId": uuid::Uuid::now_v7().to_string(),
                "eventType": "EVENTS_DROPPED",
                "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                "sourceType": "proxy",
                "detail": {"dropped": dropped, "reason": "the proxy's queue for the agent was full"},
            });
            batch.insert(0, ev.to_string().into_bytes());
        }
        if batch.is_empty() {
            if stopping {
                return;
            }
            std::thread::park_timeout(Duration::from_millis(50));
            continue;
        }
        if Instant::now() < retry_at && !stopping {
            requeue(&s, batch);
            std::thread::park_timeout(Duration::from_millis(50));
            continue;
        }
        let sent = rt.block_on(async {
            if client.is_none() {
                let ch = crate::daemon::tls::local_channel(&socket)?;
                client = Some(thoth_proto::fleet::local_agent_client::LocalAgentClient::new(ch));
            }
            let c = client.as_mut().expect("set above");
            tokio::time::timeout(
                Duration::from_secs(5),
                c.emit_events(thoth_proto::fleet::LocalEvents {
                    events: batch.clone(),
                }),
            )
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|s| s.message().to_owned())
        });
        match sent {
            Ok(r) => {
                failures = 0;
                let dropped = r.into_inner().dropped;
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "the agent could not keep some events (counted there)"
                    );
                }
            }
            Err(e) => {
                if stopping {
                    tracing::warn!(
                        lost = batch.len(),
                        "events not delivered to the agent at exit: {e}"
                    );
                    return;
                }
                client = None;
                failures = failures.saturating_add(1);
                let wait = crate::daemon::backoff(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                );
                tracing::debug!("agent unreachable for events ({e}); retrying in {wait:?}");
                retry_at = Instant::now() + wait;
                requeue(&s, batch);
            }
        }
    }
}

fn requeue(s: &Shared, batch: Vec<Vec<u8>>) {
    let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
    for line in batch.into_iter().rev() {
        if q.0.len() >= MAX_EVENTS || q.1 + line.len() > MAX_BYTES {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        q.1 += line.len();
        q.0.push_front(line);
    }
}
