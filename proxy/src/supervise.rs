//! The supervisor of `thoth run`: starts the MCP server, runs the relay threads, and shuts
//! down in order.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use thoth_proto::{ContentLimits, Identity};

use crate::events::{EventSink, SessionInfo};
use crate::framing::{Frame, read_frame};
use crate::join::join_within;
use crate::policy::{PolicyHandle, PolicyState};
use crate::relay::{ClientOut, Relay, ToServer};
use crate::{message, respond};

/// How long the server gets to exit after its stdin is closed, and again after SIGTERM.
const GRACE: Duration = Duration::from_secs(5);
/// Read buffer per direction.
const READ_BUFFER: usize = 64 * 1024;

/// Everything `thoth run` needs.
pub struct RunConfig {
    /// The server's name (policy matching, messages, events).
    pub server_name: String,
    /// The server's command line, program first.
    pub argv: Vec<String>,
    /// The policy in force (a watcher may replace it while the proxy runs).
    pub policy: PolicyHandle,
    /// Where events go (JSON lines), if anywhere.
    pub events: Option<PathBuf>,
    /// Largest message accepted from either side.
    pub max_message_bytes: usize,
    /// Event content limits.
    pub content: ContentLimits,
    /// Send events to the agent at this socket too.
    pub agent_events: Option<PathBuf>,
    /// Deny every tool call for this reason, whatever the policy (e.g. loader variables in the
    /// environment).
    pub refusal: Option<String>,
    /// The MCP client (`--client`), named in every event; else the `initialize` request's
    /// `clientInfo.name`.
    pub client: Option<String>,
    /// Environment variables added to the server's (e.g. `ELECTRON_RUN_AS_NODE`).
    pub env: Vec<(String, String)>,
    /// The server's command line as configured, when `argv` was changed to run it (its
    /// identity for tool pins); `None`: `argv`.
    pub original_argv: Option<Vec<String>>,
}

enum Supervise {
    ClientEof,
    ServerEof,
    ChildExited(std::io::Result<ExitStatus>),
    #[cfg_attr(not(unix), allow(dead_code))]
    Signal(i32),
}

/// Runs the proxy until the server exits; returns the exit code to exit with.
pub fn run(cfg: RunConfig) -> anyhow::Result<i32> {
    let session_id = uuid::Uuid::now_v7().to_string();
    let info = SessionInfo {
        identity: Identity {
            tenant_id: "local".into(),
            agent_id: format!("standalone-{session_id}"),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            user: current_user(),
        },
        session_id: session_id.clone(),
        server_name: cfg.server_name.clone(),
    };
    let events = match &cfg.events {
        Some(path) => EventSink::to_file(path, info, cfg.content, cfg.agent_events.clone())
            .map_err(|e| anyhow::anyhow!("cannot open the events file {}: {e}", path.display()))?,
        None => match &cfg.agent_events {
            Some(socket) => EventSink::to_agent(socket.clone(), info, cfg.content)
                .map_err(|e| anyhow::anyhow!("cannot start the event forwarder: {e}"))?,
            None => EventSink::disabled(),
        },
    };
    if let Some(c) = &cfg.client {
        events.set_client(c);
    }
    match &cfg.policy.get() {
        PolicyState::Loaded(p) => tracing::info!(
            server = %cfg.server_name,
            policy.version = %p.version,
            policy.entry = ?p.server.entry,
            "governing MCP server"
        ),
        PolicyState::Missing { why } => tracing::warn!(
            server = %cfg.server_name,
            "no policy: every tool call will be denied ({why})"
        ),
    }

    let mut child = match spawn(&cfg.argv, &cfg.env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "thoth run: cannot start the MCP server {:?}: {e}",
                cfg.argv[0]
            );
            return Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let pid = child.id();
    let child_in = child.stdin.take().expect("stdin is piped");
    let child_out = child.stdout.take().expect("stdout is piped");

    let relay = Arc::new(Relay::new(
        ClientOut::new(client_output()?),
        events.clone(),
        cfg.policy,
        cfg.server_name.clone(),
        &session_id,
    ));
    if let Some(why) = cfg.refusal {
        relay.refuse_all(why);
    }
    // The server's stdin, shared with the relay: a call the agent approves is released from
    // the thread that waited for the agent, not from the client's.
    let child_in = Arc::new(std::sync::Mutex::new(Some(child_in)));
    let writer = || -> crate::relay::ServerWriter {
        let server = child_in.clone();
        Box::new(move |bytes: &[u8]| {
            let mut server = server.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(w) = server.as_mut()
                && let Err(e) = write_line(w, bytes)
            {
                tracing::warn!(error = %e, "cannot write to the MCP server");
            }
        })
    };
    let identity = cfg
        .original_argv
        .clone()
        .unwrap_or_else(|| cfg.argv.clone());
    match &cfg.agent_events {
        Some(socket) => {
            relay.set_server(identity, None);
            relay.use_agent(socket.clone(), writer());
        }
        None => relay.set_server(identity, Some(writer())),
    }
    let (tx, rx) = mpsc::channel::<Supervise>();

    {
        let relay = relay.clone();
        let tx = tx.clone();
        let max = cfg.max_message_bytes;
        thread::Builder::new()
            .name("thoth-client".into())
            .spawn(move || {
                client_loop(&relay, child_in, max);
                let _ = tx.send(Supervise::ClientEof);
            })?;
    }
    let server_thread =
        {
            let relay = relay.clone();
            let tx = tx.clone();
            let max = cfg.max_message_bytes;
            thread::Builder::new().name("thoth-server".into()).spawn(move || {
            let mut reader = BufReader::with_capacity(READ_BUFFER, child_out);
            let mut buf = Vec::with_capacity(READ_BUFFER);
            loop {
                match read_frame(&mut reader, &mut buf, max) {
                    Ok(Frame::Line) => relay.from_server(std::mem::take(&mut buf)),
                    Ok(Frame::TooLong(n)) => tracing::error!(
                        "the MCP server sent a message of {n} bytes, over the {max} byte limit \
                         (--max-message-bytes); dropped"
                    ),
                    Ok(Frame::Eof) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading from the MCP server failed");
                        break;
                    }
                }
            }
            let _ = tx.send(Supervise::ServerEof);
        })?
        };
    {
        let tx = tx.clone();
        thread::Builder::new()
            .name("thoth-wait".into())
            .spawn(move || {
                let _ = tx.send(Supervise::ChildExited(child.wait()));
            })?;
    }
    #[cfg(unix)]
    spawn_signal_thread(tx.clone())?;
    drop(tx);

    // When to send which signal if the server has not exited by then.
    let mut deadline: Option<(Instant, Signal)> = None;
    let status = loop {
        let msg = match deadline {
            Some((at, _)) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(Supervise::ChildExited(status)) => break status,
            Ok(Supervise::ClientEof) => {
                tracing::debug!("the client closed its side; waiting for the server to exit");
                deadline.get_or_insert((Instant::now() + GRACE, SIGTERM));
            }
            Ok(Supervise::ServerEof) => {
                deadline.get_or_insert((Instant::now() + GRACE, SIGTERM));
            }
            Ok(Supervise::Signal(sig)) => {
                tracing::info!(signal = sig, "stopping the MCP server");
                kill(pid, SIGTERM);
                deadline = Some((Instant::now() + GRACE, SIGKILL));
            }
            Err(RecvTimeoutError::Timeout) => {
                let (_, sig) = deadline
                    .take()
                    .expect("timeouts only happen with a deadline");
                tracing::warn!(
                    signal = sig.as_raw(),
                    "the MCP server did not exit in time; signalling it"
                );
                kill(pid, sig);
                if sig != SIGKILL {
                    deadline = Some((Instant::now() + GRACE, SIGKILL));
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("internal error: the supervisor lost every thread")
            }
        }
    };
    // Let the server reader forward what the server wrote before it exited.
    join_within(server_thread, Duration::from_secs(2));
    let (code, described) = match status {
        Ok(s) => exit_code(s),
        Err(e) => (1, format!("unknown status: {e}")),
    };
    relay.server_gone(&described);
    let refused = relay.untracked();
    if refused > 0 {
        tracing::warn!(
            refused,
            "requests were refused, not forwarded, because too many were pending"
        );
    }
    events.shutdown(Duration::from_secs(3));
    Ok(code)
}

fn client_loop(
    relay: &Arc<Relay>,
    child_in: Arc<std::sync::Mutex<Option<ChildStdin>>>,
    max: usize,
) {
    let server = child_in;
    let mut reader = BufReader::with_capacity(READ_BUFFER, client_input());
    let mut buf = Vec::with_capacity(READ_BUFFER);
    let mut server_open = true;
    loop {
        match read_frame(&mut reader, &mut buf, max) {
            Ok(Frame::Line) => {
                let released;
                let bytes: &[u8] = match relay.from_client(&buf) {
                    ToServer::Nothing => continue,
                    ToServer::Original => &buf,
                    ToServer::Forward(b) => {
                        released = b;
                        &released
                    }
                };
                let mut w = server.lock().unwrap_or_else(|p| p.into_inner());
                if server_open
                    && let Some(w) = w.as_mut()
                    && let Err(e) = write_line(w, bytes)
                {
                    tracing::warn!(error = %e, "cannot write to the MCP server");
                    server_open = false;
                }
            }
            Ok(Frame::TooLong(n)) => {
                let msg = format!(
                    "message of {n} bytes refused: the limit is {max} bytes (thoth run \
                     --max-message-bytes)"
                );
                tracing::warn!("{msg}");
                relay
                    .client
                    .send(&respond::error(None, message::code::INVALID_REQUEST, &msg))
                    .ok();
            }
            Ok(Frame::Eof) => break,
            Err(e) => {
                tracing::warn!(error = %e, "reading from the client failed");
                break;
            }
        }
    }
    // Dropping the pipe closes the server's stdin: the MCP way of saying "shut down".
    server.lock().unwrap_or_else(|p| p.into_inner()).take();
}

fn write_line(w: &mut ChildStdin, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes)?;
    if bytes.last() != Some(&b'\n') {
        w.write_all(b"\n")?;
    }
    w.flush()
}

fn spawn(argv: &[String], env: &[(String, String)]) -> std::io::Result<Child> {
    Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Unbuffered handles on the process's own stdin/stdout (the std handles add a second buffer
/// and a line-buffering policy that the relay does not want).
#[cfg(unix)]
fn client_input() -> Box<dyn std::io::Read + Send> {
    use std::os::fd::AsFd;
    match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::stdin()),
    }
}

#[cfg(not(unix))]
fn client_input() -> Box<dyn std::io::Read + Send> {
    Box::new(std::io::stdin())
}

#[cfg(unix)]
fn client_output() -> std::io::Result<Box<dyn Write + Send>> {
    use std::os::fd::AsFd;
    Ok(Box::new(std::fs::File::from(
        std::io::stdout().as_fd().try_clone_to_owned()?,
    )))
}

#[cfg(not(unix))]
fn client_output() -> std::io::Result<Box<dyn Write + Send>> {
    Ok(Box::new(std::io::stdout()))
}

#[cfg(unix)]
use rustix::process::Signal;
#[cfg(unix)]
const SIGTERM: Signal = Signal::TERM;
#[cfg(unix)]
const SIGKILL: Signal = Signal::KILL;

/// The two signals the supervisor sends (not sent on this platform).
#[cfg(not(unix))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Term,
    Kill,
}
#[cfg(not(unix))]
impl Signal {
    /// Its POSIX number, for logs.
    fn as_raw(self) -> i32 {
        match self {
            Signal::Term => 15,
            Signal::Kill => 9,
        }
    }
}
#[cfg(not(unix))]
const SIGTERM: Signal = Signal::Term;
#[cfg(not(unix))]
const SIGKILL: Signal = Signal::Kill;

#[cfg(unix)]
fn kill(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // A stale pid is at worst ESRCH.
        let _ = rustix::process::kill_process(pid, sig);
    }
}

#[cfg(not(unix))]
fn kill(_pid: u32, _sig: Signal) {
    tracing::warn!("stopping the MCP server by signal is not supported on this platform");
}

#[cfg(unix)]
fn spawn_signal_thread(tx: mpsc::Sender<Supervise>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    thread::Builder::new()
        .name("thoth-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(Supervise::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// The exit code to pass on, and the status in words.
fn exit_code(status: ExitStatus) -> (i32, String) {
    if let Some(code) = status.code() {
        return (code, format!("exit status {code}"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return (128 + sig, format!("killed by signal {sig}"));
        }
    }
    (1, status.to_string())
}

fn current_user() -> String {
    for var in ["USER", "LOGNAME", "USERNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return v;
        }
    }
    #[cfg(unix)]
    {
        let uid = rustix::process::getuid().as_raw();
        return format!("uid:{uid}");
    }
    #[allow(unreachable_code)]
    "unknown".into()
}
