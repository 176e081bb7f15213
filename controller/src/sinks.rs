//! SIEM sinks. Each sink reads the event store by its own cursor (kept in the store), delivers
//! at least once, retries with backoff, and exposes its lag; a dead sink never blocks ingest or
//! the other sinks. Field names are DESIGN's camelCase names: events are sent as stored.
//!
//! Kinds: `jsonl` (file, rotated), `syslog` (RFC 5424 over TCP with octet-counting framing, or
//! TLS), `splunk_hec` (HTTP Event Collector), `webhook` (HTTP POST with an HMAC-SHA256 header).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::controller::Controller;
use crate::store::{EventFilter, MAX_EVENTS_PER_QUERY, Store, StoreError, StoredEventRecord};

/// One sink's settings (`[[sinks]]` in controller.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name (its cursor is kept under it).
    pub name: String,
    /// `jsonl`, `syslog`, `splunk_hec` or `webhook`.
    pub kind: String,
    /// Only these tenants (empty: all).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Only these event types (empty: all).
    #[serde(default)]
    pub event_types: Vec<String>,
    /// jsonl: the file.
    pub path: Option<PathBuf>,
    /// jsonl: rotate past this size.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// jsonl: rotated files kept.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// syslog: `host:port`.
    pub address: Option<String>,
    /// syslog: use TLS (then `ca_file` is the CA to trust).
    #[serde(default)]
    pub tls: bool,
    /// syslog over TLS, or https URLs: the CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// syslog over TLS: the server name to check (default: the host of `address`).
    pub server_name: Option<String>,
    /// splunk_hec / webhook: the URL.
    pub url: Option<String>,
    /// splunk_hec: the HEC token.
    pub token: Option<String>,
    /// webhook: the HMAC secret.
    pub secret: Option<String>,
    /// Events per delivery.
    #[serde(default = "default_batch")]
    pub batch: u32,
}

fn default_max_bytes() -> u64 {
    100 << 20
}
fn default_keep() -> u32 {
    5
}
fn default_batch() -> u32 {
    500
}

impl SinkConfig {
    /// Checks the settings a kind needs.
    pub fn check(&self) -> Result<(), String> {
        let need = |v: bool, what: &str| {
            if v {
                Ok(())
            } else {
                Err(format!("sink {:?} ({}) needs {what}", self.name, self.kind))
            }
        };
        if self.name.is_empty() || self.name.len() > 64 {
            return Err("every sink needs a name of 1-64 characters".into());
        }
        match self.kind.as_str() {
            "jsonl" => need(self.path.is_some(), "path"),
            "syslog" => need(self.address.is_some(), "address (host:port)"),
            "splunk_hec" => need(self.url.is_some() && self.token.is_some(), "url and token"),
            "webhook" => need(
                self.url.is_some() && self.secret.is_some(),
                "url and secret",
            ),
            other => Err(format!(
                "sink {:?}: unknown kind {other:?} (jsonl, syslog, splunk_hec, webhook)",
                self.name
            )),
        }
    }
}

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
}

/// What a sink reads: the event store, by cursor. Calls may block (the sink runs them on the
/// blocking pool). Cursors must be given out in commit order (see [`crate::store::Store`]).
pub trait EventSource: Send + Sync + 'static {
    /// The sink's saved cursor (0: from the start).
    fn cursor(&self, sink: &str) -> Result<u64, StoreError>;
    /// Saves the sink's cursor.
    fn set_cursor(&self, sink: &str, id: u64) -> Result<(), StoreError>;
    /// The highest committed cursor.
    fn high_water(&self) -> Result<u64, StoreError>;
    /// Events matching the filter, oldest first.
    fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEventRecord>, StoreError>;
}

/// The controller's store as a sink's event source.
pub struct StoreSource(pub Arc<dyn Store>);

impl EventSource for StoreSource {
    fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        self.0.sink_cursor(sink)
    }
    fn set_cursor(&self, sink: &str, id: u64) -> Result<(), StoreError> {
        self.0.set_sink_cursor(sink, id)
    }
    fn high_water(&self) -> Result<u64, StoreError> {
        self.0.max_event_id()
    }
    fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEventRecord>, StoreError> {
        self.0.query_events(filter)
    }
}

/// Starts every configured sink.
pub fn start_all(ctl: &Arc<Controller>) -> Vec<tokio::task::JoinHandle<()>> {
    let source: Arc<dyn EventSource> = Arc::new(StoreSource(Arc::clone(&ctl.store)));
    ctl.config
        .sinks
        .iter()
        .cloned()
        .map(|cfg| {
            let stats = Arc::new(SinkStats::default());
            ctl.sink_lag
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(cfg.name.clone(), Arc::clone(&stats));
            tokio::spawn(run(
                Arc::clone(&source),
                ctl.events_tick.subscribe(),
                cfg,
                stats,
            ))
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
    tracing::info!(sink = cfg.name, kind = cfg.kind, "sink started");
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

enum Delivery {
    Jsonl(JsonlSink),
    Syslog(SyslogSink),
    Http(HttpSink),
}

impl Delivery {
    fn new(cfg: &SinkConfig) -> Result<Delivery, String> {
        cfg.check()?;
        Ok(match cfg.kind.as_str() {
            "jsonl" => Delivery::Jsonl(JsonlSink {
                path: cfg.path.clone().expect("checked"),
                max_bytes: cfg.max_bytes,
                keep: cfg.keep,
            }),
            "syslog" => Delivery::Syslog(SyslogSink {
                cfg: cfg.clone(),
                conn: None,
                tls: if cfg.tls {
                    Some(tls_connector(cfg.ca_file.as_ref())?)
                } else {
                    None
                },
            }),
            _ => Delivery::Http(HttpSink {
                cfg: cfg.clone(),
                tls: match &cfg.url {
                    Some(u) if u.starts_with("https://") => {
                        Some(tls_connector(cfg.ca_file.as_ref())?)
                    }
                    _ => None,
                },
            }),
        })
    }

    async fn deliver(&mut self, events: &[StoredEventRecord]) -> Result<(), String> {
        match self {
            Delivery::Jsonl(s) => {
                let s2 = JsonlSink {
                    path: s.path.clone(),
                    max_bytes: s.max_bytes,
                    keep: s.keep,
                };
                let lines: Vec<String> = events.iter().map(|e| e.json.clone()).collect();
                tokio::task::spawn_blocking(move || s2.write(&lines))
                    .await
                    .map_err(|e| e.to_string())?
            }
            Delivery::Syslog(s) => s.deliver(events).await,
            Delivery::Http(s) => s.deliver(events).await,
        }
    }
}

fn tls_connector(ca_file: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let ca = ca_file.ok_or("TLS needs ca_file (the CA certificate to trust, PEM)")?;
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::server::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

struct JsonlSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

impl JsonlSink {
    fn write(&self, lines: &[String]) -> Result<(), String> {
        let io = |e: std::io::Error| format!("{}: {e}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size > 0 && size >= self.max_bytes {
            for i in (1..self.keep.max(1)).rev() {
                let from = rotated(&self.path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, i + 1)).map_err(io)?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1)).map_err(io)?;
            let _ = std::fs::remove_file(rotated(&self.path, self.keep.max(1) + 1));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
        }
        f.write_all(&buf).map_err(io)?;
        f.sync_data().map_err(io)
    }
}

fn rotated(path: &std::path::Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// An RFC 5424 message for an event: `<PRI>1 TIMESTAMP HOST APP - MSGID [thoth@32473 …] JSON`.
pub fn rfc5424(event_json: &str, app: &str) -> String {
    let v: Value = serde_json::from_str(event_json).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let action = v
        .get("decision")
        .and_then(|d| d.get("action"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let event_type = s("eventType");
    // local0; warning for refusals and alerts, info otherwise.
    let severity = if matches!(action.as_str(), "deny" | "denied" | "block")
        || event_type.contains("ALERT")
        || event_type.contains("REJECTED")
        || event_type.contains("INVALID")
    {
        4
    } else {
        6
    };
    let pri = 16 * 8 + severity;
    let header_field = |x: String| {
        let x: String = x
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        if x.is_empty() { "-".to_owned() } else { x }
    };
    let esc = |x: &str| {
        x.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace(']', "\\]")
    };
    let mut sd = String::from("[thoth@32473");
    for (k, val) in [
        ("eventId", s("eventId")),
        ("eventType", event_type.clone()),
        ("tenantId", s("tenantId")),
        ("agentId", s("agentId")),
        ("user", s("user")),
        ("serverName", s("serverName")),
        ("toolName", s("toolName")),
        ("action", action),
        (
            "seq",
            v.get("seq").map(|x| x.to_string()).unwrap_or_default(),
        ),
    ] {
        if !val.is_empty() {
            sd.push_str(&format!(" {k}=\"{}\"", esc(&val)));
        }
    }
    sd.push(']');
    format!(
        "<{pri}>1 {} {} {} - {} {sd} {event_json}",
        header_field(s("timestamp")),
        header_field(s("hostname")),
        header_field(app.to_owned()),
        header_field(event_type.chars().take(32).collect()),
    )
}

trait Io: tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncWrite + Unpin + Send> Io for T {}

struct SyslogSink {
    cfg: SinkConfig,
    conn: Option<Box<dyn Io>>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl SyslogSink {
    async fn connect(&mut self) -> Result<(), String> {
        let addr = self.cfg.address.clone().expect("checked");
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        self.conn = Some(match &self.tls {
            Some(tls) => {
                let host = self.cfg.server_name.clone().unwrap_or_else(|| {
                    addr.rsplit_once(':')
                        .map_or(addr.clone(), |(h, _)| h.to_owned())
                });
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("server name {host:?}: {e}"))?;
                Box::new(
                    tls.connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS to {addr}: {e}"))?,
                )
            }
            None => Box::new(tcp),
        });
        Ok(())
    }

    async fn deliver(&mut self, events: &[StoredEventRecord]) -> Result<(), String> {
        if self.conn.is_none() {
            self.connect().await?;
        }
        let mut buf = Vec::new();
        for e in events {
            let msg = rfc5424(&e.json, "thoth");
            buf.extend_from_slice(format!("{} {msg}", msg.len()).as_bytes());
        }
        let conn = self.conn.as_mut().expect("connected");
        let r = async {
            conn.write_all(&buf).await?;
            conn.flush().await
        }
        .await;
        if let Err(e) = r {
            self.conn = None;
            return Err(format!("syslog write: {e}"));
        }
        Ok(())
    }
}

struct HttpSink {
    cfg: SinkConfig,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn hmac_header(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
    )
}

impl HttpSink {
    async fn deliver(&mut self, events: &[StoredEventRecord]) -> Result<(), String> {
        let url = self.cfg.url.clone().expect("checked");
        let uri: hyper::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
        let (body, headers): (Vec<u8>, Vec<(&str, String)>) = if self.cfg.kind == "splunk_hec" {
            let mut body = Vec::new();
            for e in events {
                let v: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
                let time = v
                    .get("timestamp")
                    .and_then(Value::as_str)
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64());
                let obj = serde_json::json!({
                    "time": time,
                    "host": v.get("hostname").cloned().unwrap_or(Value::Null),
                    "source": "thoth",
                    "sourcetype": "thoth:event",
                    "event": v,
                });
                body.extend_from_slice(obj.to_string().as_bytes());
                body.push(b'\n');
            }
            let token = self.cfg.token.clone().expect("checked");
            (body, vec![("authorization", format!("Splunk {token}"))])
        } else {
            let arr: Vec<Value> = events
                .iter()
                .map(|e| serde_json::from_str(&e.json).unwrap_or(Value::Null))
                .collect();
            let body = serde_json::to_vec(&arr).expect("values serialize");
            let sig = hmac_header(self.cfg.secret.as_deref().expect("checked"), &body);
            (body, vec![("x-thoth-signature", sig)])
        };
        let host = uri.host().ok_or("the url has no host")?.to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut req = hyper::Request::post(path)
            .header("host", format!("{host}:{port}"))
            .header("content-type", "application/json")
            .header("user-agent", "thoth-controller");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let status = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| e.to_string())?;
                let io = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(hyper_util::rt::TokioIo::new(io), req).await?
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), req).await?,
        };
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        Ok(())
    }
}

async fn send<T>(
    io: T,
    req: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> Result<hyper::StatusCode, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| "the request timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(resp.status())
}

#[cfg(test)]
#[path = "sinks_tests.rs"]
mod tests;
