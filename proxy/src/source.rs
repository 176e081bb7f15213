//! Where a proxy's policy comes from, in order: the agent on its local socket (signed bytes,
//! verified here), the agent's last-known-good bundle on disk (verified here), `--policy FILE`;
//! with none, every call is denied. A watcher thread follows the agent, so a proxy that is
//! already running enforces a new version from its next call on, and picks the agent up when it
//! starts later.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use thoth_proto::bundle::verify_bundle_keeping_expired;

use crate::policy::{LoadedPolicy, PolicyHandle, PolicyState, load_for_server};
use thoth_endpoint::config::parse_root_key;
use thoth_endpoint::state::{StateDir, StateError, Trust, root_owned};

/// Default agent socket: `$THOTH_AGENT_SOCKET` is read by clap; this is the fallback.
pub const DEFAULT_AGENT_SOCKET: &str = thoth_endpoint::config::DEFAULT_SOCKET;
/// Default agent state directory.
pub const DEFAULT_STATE_DIR: &str = thoth_endpoint::config::DEFAULT_STATE_DIR;

/// What `thoth run` was told.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The agent's socket.
    pub agent_socket: PathBuf,
    /// The agent's state directory (trust.json, last-known-good bundle).
    pub state_dir: PathBuf,
    /// `--policy FILE`.
    pub policy_file: Option<PathBuf>,
    /// The server's name.
    pub server: String,
    /// The server's command line.
    pub argv: Vec<String>,
}

/// The installed agent's settings file, per OS.
pub const INSTALLED_CONFIG: &str = if cfg!(target_os = "macos") {
    "/Library/Application Support/Thoth/agent.toml"
} else if cfg!(windows) {
    "C:\\ProgramData\\Thoth\\agent.toml"
} else {
    "/etc/thoth/agent.toml"
};

/// Test seam: names an `agent.toml` to treat as the installed one when the machine has none.
/// It can only turn managed mode on (a machine with an installed agent ignores it), so it
/// gives a user nothing they could not do on an unmanaged machine anyway.
pub const TEST_MANAGED_CONFIG_ENV: &str = "THOTH_TEST_MANAGED_CONFIG";

/// A machine with an installed agent: where the proxy must get its policy, whatever its
/// arguments or environment say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// What made this machine managed (the root-owned file).
    pub evidence: PathBuf,
    /// The agent's socket.
    pub socket: PathBuf,
    /// The agent's state directory.
    pub state_dir: PathBuf,
}

/// The part of `agent.toml` a proxy needs (read leniently: any other setting is the agent's).
#[derive(serde::Deserialize)]
struct InstalledPaths {
    #[serde(default = "default_state_dir_path")]
    state_dir: PathBuf,
    #[serde(default = "default_socket_path")]
    socket_path: PathBuf,
}

fn default_state_dir_path() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_socket_path() -> PathBuf {
    PathBuf::from(DEFAULT_AGENT_SOCKET)
}

fn managed_from(config: &Path) -> Option<Managed> {
    let text = std::fs::read_to_string(config).ok()?;
    let (socket, state_dir) = match toml::from_str::<InstalledPaths>(&text) {
        Ok(p) => (p.socket_path, p.state_dir),
        // The agent is installed, whatever else is wrong with its file.
        Err(_) => (default_socket_path(), default_state_dir_path()),
    };
    Some(Managed {
        evidence: config.to_path_buf(),
        socket,
        state_dir,
    })
}

/// Managed mode, from root-owned files only: the installed `agent.toml`, else the default state
/// directory holding a root-owned trust file. Never from arguments; the environment can only
/// name a test config when neither exists.
pub fn managed() -> Option<Managed> {
    let config = Path::new(INSTALLED_CONFIG);
    if root_owned(config)
        && let Some(m) = managed_from(config)
    {
        return Some(m);
    }
    let trust = Path::new(DEFAULT_STATE_DIR).join("trust.json");
    if root_owned(&trust) {
        return Some(Managed {
            evidence: trust,
            socket: default_socket_path(),
            state_dir: default_state_dir_path(),
        });
    }
    let seam = std::env::var_os(TEST_MANAGED_CONFIG_ENV)?;
    managed_from(Path::new(&seam))
}

/// Why the agent's policy is not used, or its stream is not followed.
#[derive(Debug, thiserror::Error)]
enum PolicySourceError {
    /// The trust file's root key does not parse.
    #[error(transparent)]
    RootKey(#[from] thoth_endpoint::config::ConfigError),
    /// The bundle does not verify.
    #[error(transparent)]
    Bundle(#[from] thoth_proto::bundle::BundleError),
    /// The bundle's policy is not valid.
    #[error(transparent)]
    Policy(#[from] thoth_policy::PolicyError),
    /// The trust file, to verify the agent's first answer with, cannot be read.
    #[error("cannot verify it: {0}")]
    Unverifiable(#[source] StateError),
    /// The trust file cannot be read.
    #[error(transparent)]
    Trust(StateError),
    /// There is no agent socket.
    #[error("no agent socket")]
    NoSocket,
    /// The agent's socket cannot be connected to.
    #[error(transparent)]
    Channel(#[from] thoth_endpoint::tls::TlsError),
    /// The agent answers with an error status.
    #[error("{}", .0.message())]
    Agent(tonic::Status),
    /// The agent ended the stream.
    #[error("the agent closed the policy stream")]
    Closed,
}

/// A verified bundle, resolved for this server.
fn loaded_from_bundle(
    bytes: &[u8],
    trust: &Trust,
    applied: Option<u64>,
    src: &Sources,
) -> Result<(PolicyState, u64), PolicySourceError> {
    let root = parse_root_key(&trust.root_public_key)?;
    let (v, expired) =
        verify_bundle_keeping_expired(bytes, &root, &trust.tenant, applied, SystemTime::now())?;
    let source = format!("<policy bundle v{}>", v.payload.version);
    let policy = thoth_policy::parse_policy(
        &v.payload.policy,
        &source,
        thoth_policy::Format::detect(&source, &v.payload.policy),
    )?;
    let server = policy.resolve(&src.server, &src.argv);
    let mut version = format!("v{}", v.payload.version);
    if expired.is_some() {
        version.push_str(" (stale)");
    }
    Ok((
        PolicyState::Loaded(Arc::new(LoadedPolicy {
            policy,
            server,
            version,
        })),
        v.payload.version,
    ))
}

/// What the agent answered at start.
enum AgentAnswer {
    /// A bundle (its bytes).
    Bundle(Vec<u8>),
    /// A bundle, verified and resolved by the watcher (so it is parsed once).
    Loaded(PolicyState, u64),
    /// A bundle that does not verify.
    Refused(PolicySourceError),
    /// Reachable, but it has no policy yet.
    Empty,
    /// Not reachable.
    Unreachable(String),
    /// The agent refuses to serve this process (it failed the agent's check of the proxy, e.g.
    /// a preloaded library): no other source may stand in, every call is denied.
    Denied(String),
}

async fn ask_agent(socket: &Path, server: &str) -> AgentAnswer {
    if !socket.exists() {
        return AgentAnswer::Unreachable(format!("no agent socket at {}", socket.display()));
    }
    let ch = match thoth_endpoint::tls::local_channel(socket) {
        Ok(c) => c,
        Err(e) => return AgentAnswer::Unreachable(e.to_string()),
    };
    let mut client = thoth_proto::fleet::local_agent_client::LocalAgentClient::new(ch);
    let req = thoth_proto::fleet::LocalPolicyRequest {
        server_name: server.to_owned(),
    };
    match tokio::time::timeout(Duration::from_secs(1), client.get_policy(req)).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            if r.bundle.is_empty() {
                AgentAnswer::Empty
            } else {
                AgentAnswer::Bundle(r.bundle.to_vec())
            }
        }
        Ok(Err(s)) if s.code() == tonic::Code::PermissionDenied => {
            AgentAnswer::Denied(s.message().to_owned())
        }
        Ok(Err(s)) => AgentAnswer::Unreachable(format!("the agent refused: {}", s.message())),
        Err(_) => AgentAnswer::Unreachable("the agent did not answer within 1 s".into()),
    }
}

/// Decides the starting policy and starts the watcher. Returns the handle the relay reads.
pub fn start(src: Sources) -> PolicyHandle {
    let (tx, rx) = mpsc::sync_channel::<AgentAnswer>(1);
    let handle = PolicyHandle::new(PolicyState::Missing {
        why: "starting".into(),
    });
    let watcher_handle = handle.clone();
    let watcher_src = src.clone();
    let spawned = std::thread::Builder::new()
        .name("thoth-policy-watch".into())
        .spawn(move || watch(watcher_src, watcher_handle, tx));
    let answer = match spawned {
        Ok(_) => rx
            .recv_timeout(Duration::from_millis(1500))
            .unwrap_or(AgentAnswer::Unreachable(
                "the agent did not answer in time".into(),
            )),
        Err(e) => AgentAnswer::Unreachable(format!("cannot start the policy watcher: {e}")),
    };
    let state_dir = StateDir::new(src.state_dir.clone());
    let trust = state_dir.read_trust();
    let mut reasons = Vec::new();
    match answer {
        AgentAnswer::Loaded(state, version) => {
            tracing::info!(version, "policy from the agent");
            handle.set_if_missing(state);
            return handle;
        }
        AgentAnswer::Bundle(_) => reasons.push("the agent's policy could not be checked".into()),
        AgentAnswer::Refused(e) => reasons.push(format!("the agent's policy is refused: {e}")),
        AgentAnswer::Empty => reasons.push("the agent has no policy yet".into()),
        AgentAnswer::Unreachable(why) => reasons.push(why),
        AgentAnswer::Denied(why) => {
            tracing::error!("{why}");
            handle.set_if_missing(PolicyState::Missing { why });
            return handle;
        }
    }
    match &trust {
        Ok(trust) => match state_dir.load_lkg(trust, SystemTime::now()) {
            Ok(Some(lkg)) => match loaded_from_bundle(&lkg.bytes, trust, None, &src) {
                Ok((state, version)) => {
                    tracing::info!(version, "policy from the agent's last-known-good bundle");
                    handle.set_if_missing(state);
                    return handle;
                }
                Err(e) => reasons.push(format!("the last-known-good bundle is refused: {e}")),
            },
            Ok(None) => reasons.push(format!(
                "no last-known-good bundle at {}",
                state_dir.lkg_path().display()
            )),
            Err(e) => reasons.push(e.to_string()),
        },
        Err(e) => reasons.push(format!("no agent trust file ({e})")),
    }
    if let Some(file) = &src.policy_file {
        handle.set_if_missing(load_for_server(Some(file), &src.server, &src.argv));
        return handle;
    }
    reasons.push("no --policy file".into());
    handle.set_if_missing(PolicyState::Missing {
        why: reasons.join("; "),
    });
    handle
}

/// The watcher: answers the first question, then follows the agent for as long as the proxy runs.
fn watch(src: Sources, handle: PolicyHandle, first: mpsc::SyncSender<AgentAnswer>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = first.send(AgentAnswer::Unreachable(e.to_string()));
            return;
        }
    };
    rt.block_on(async move {
        let mut applied: Option<(u64, Vec<u8>)> = None;
        let answer = match ask_agent(&src.agent_socket, &src.server).await {
            AgentAnswer::Bundle(bytes) => {
                match StateDir::new(src.state_dir.clone())
                    .read_trust()
                    .map_err(PolicySourceError::Unverifiable)
                    .and_then(|trust| loaded_from_bundle(&bytes, &trust, None, &src))
                {
                    Ok((state, version)) => {
                        applied = Some((version, bytes));
                        AgentAnswer::Loaded(state, version)
                    }
                    Err(e) => AgentAnswer::Refused(e),
                }
            }
            other => other,
        };
        let _ = first.send(answer);
        let mut attempt = 0u32;
        loop {
            if let Err(why) = follow(&src, &handle, &mut applied, &mut attempt).await {
                tracing::debug!("policy watch: {why}");
            }
            let wait = thoth_endpoint::backoff::backoff(
                attempt,
                Duration::from_millis(500),
                Duration::from_secs(10),
            );
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(wait).await;
        }
    });
}

async fn follow(
    src: &Sources,
    handle: &PolicyHandle,
    applied: &mut Option<(u64, Vec<u8>)>,
    attempt: &mut u32,
) -> Result<(), PolicySourceError> {
    if !src.agent_socket.exists() {
        return Err(PolicySourceError::NoSocket);
    }
    let ch = thoth_endpoint::tls::local_channel(&src.agent_socket)?;
    let mut client = thoth_proto::fleet::local_agent_client::LocalAgentClient::new(ch);
    let mut stream = match client
        .watch_policy(thoth_proto::fleet::LocalPolicyRequest {
            server_name: src.server.clone(),
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == tonic::Code::PermissionDenied => {
            // The agent refuses this process: whatever policy it had, it now has none.
            let why = s.message().to_owned();
            handle.set(PolicyState::Missing { why });
            *applied = None;
            return Err(PolicySourceError::Agent(s));
        }
        Err(s) => return Err(PolicySourceError::Agent(s)),
    };
    *attempt = 0;
    while let Some(update) = stream.message().await.map_err(PolicySourceError::Agent)? {
        if update.bundle.is_empty()
            || applied
                .as_ref()
                .is_some_and(|(_, b)| b[..] == update.bundle[..])
        {
            continue;
        }
        let trust = StateDir::new(src.state_dir.clone())
            .read_trust()
            .map_err(PolicySourceError::Trust)?;
        let floor = applied.as_ref().map(|(v, _)| *v);
        match loaded_from_bundle(&update.bundle, &trust, floor, src) {
            Ok((state, version)) => {
                let label = |s: &PolicyState| match s {
                    PolicyState::Loaded(p) => p.version.clone(),
                    PolicyState::Missing { .. } => String::new(),
                };
                let changed = label(&handle.get()) != label(&state);
                handle.set(state);
                *applied = Some((version, update.bundle.to_vec()));
                if changed {
                    tracing::info!(
                        version,
                        "new policy version from the agent; it applies from the next call"
                    );
                }
            }
            Err(e) => tracing::warn!("policy from the agent refused, keeping the current one: {e}"),
        }
    }
    Err(PolicySourceError::Closed)
}
