//! The policy a proxy enforces, and where it came from.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use thoth_policy::{Format, Policy, PolicyError, ServerView};

/// A policy resolved for one server.
#[derive(Debug)]
pub struct LoadedPolicy {
    /// The document.
    pub policy: Policy,
    /// Which entry governs this server.
    pub server: ServerView,
    /// The version shown in denials and events: the document's `version` (prefixed by its
    /// `name`), or a digest of the file when it has none.
    pub version: String,
}

/// The policy in force, or why there is none (then every call is denied: fail closed).
#[derive(Debug, Clone)]
pub enum PolicyState {
    /// A valid policy.
    Loaded(Arc<LoadedPolicy>),
    /// None: the reason is shown to the model in every denial.
    Missing {
        /// Why there is no policy.
        why: String,
    },
}

impl PolicyState {
    /// Whether `tools/list` results must be filtered.
    pub fn filters_tools(&self) -> bool {
        match self {
            PolicyState::Loaded(p) => p.policy.filters_tools(&p.server),
            PolicyState::Missing { .. } => false,
        }
    }

    /// How long to wait for a human.
    pub fn approval_timeout(&self) -> Duration {
        match self {
            PolicyState::Loaded(p) => p.policy.approval_timeout(&p.server),
            PolicyState::Missing { .. } => Duration::from_secs(45),
        }
    }
}

/// The policy in force, shared by both directions and replaceable while the proxy runs (a new
/// version from the agent applies from the next call on).
#[derive(Debug, Clone)]
pub struct PolicyHandle(Arc<RwLock<PolicyState>>);

impl PolicyHandle {
    /// A handle holding `state`.
    pub fn new(state: PolicyState) -> PolicyHandle {
        PolicyHandle(Arc::new(RwLock::new(state)))
    }

    /// The policy in force now (cheap: an `Arc` clone).
    pub fn get(&self) -> PolicyState {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the policy in force.
    pub fn set(&self, state: PolicyState) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Sets the starting policy unless the watcher already installed a newer one from the agent.
    pub fn set_if_missing(&self, state: PolicyState) {
        let mut cur = self.0.write().unwrap_or_else(|p| p.into_inner());
        if matches!(&*cur, PolicyState::Missing { why } if why == "starting") {
            *cur = state;
        }
    }
}

impl From<PolicyState> for PolicyHandle {
    fn from(state: PolicyState) -> Self {
        PolicyHandle::new(state)
    }
}

/// Why a policy file is unusable ([`read_policy_file`]).
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The policy file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is over [`thoth_policy::MAX_POLICY_BYTES`].
    #[error("{} is larger than the {} byte limit", path.display(), thoth_policy::MAX_POLICY_BYTES)]
    TooLarge {
        /// The policy file.
        path: PathBuf,
    },
    /// The file is not a valid policy.
    #[error(transparent)]
    Parse(#[from] PolicyError),
}

/// Reads and validates a policy file.
pub fn read_policy_file(path: &Path) -> Result<(Policy, String), PolicyFileError> {
    let read = |source| PolicyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if meta.len() > thoth_policy::MAX_POLICY_BYTES as u64 {
        return Err(PolicyFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let name = path.display().to_string();
    let policy = thoth_policy::parse_policy(&text, &name, Format::detect(&name, &text))?;
    let version = match (&policy.name, &policy.version) {
        (Some(n), Some(v)) => format!("{n}@{v}"),
        (None, Some(v)) => v.to_string(),
        (_, None) => {
            let digest = hex::encode(Sha256::digest(text.as_bytes()));
            format!(
                "{}sha256:{}",
                policy
                    .name
                    .as_ref()
                    .map(|n| format!("{n}@"))
                    .unwrap_or_default(),
                &digest[..12]
            )
        }
    };
    Ok((policy, version))
}

/// The policy for one server from `--policy FILE`, or the fail-closed state with the reason.
pub fn load_for_server(path: Option<&Path>, server: &str, argv: &[String]) -> PolicyState {
    let Some(path) = path else {
        return PolicyState::Missing {
            why: "thoth run was started without --policy, and no agent is available".into(),
        };
    };
    match read_policy_file(path) {
        Ok((policy, version)) => {
            let server = policy.resolve(server, argv);
            PolicyState::Loaded(Arc::new(LoadedPolicy {
                policy,
                server,
                version,
            }))
        }
        Err(why) => PolicyState::Missing {
            why: format!("the policy file is unusable: {why}"),
        },
    }
}
