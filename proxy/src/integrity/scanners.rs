//! A session's DLP: the salt of its findings' digests, and the scanner of the policy in force
//! (compiled once per policy version).

use std::sync::{Arc, Mutex};

use thoth_policy::Dlp;

use crate::dlp::{Salt, Scanner};

/// The scanner of one policy version, with the settings it was built from.
pub struct Compiled {
    pub version: String,
    pub dlp: Dlp,
    pub scanner: Scanner,
}

/// DLP state of one session.
pub struct SessionDlp {
    pub salt: Salt,
    cached: Mutex<Option<Arc<Compiled>>>,
}

impl Default for SessionDlp {
    fn default() -> Self {
        Self {
            salt: Salt::random(),
            cached: Mutex::new(None),
        }
    }
}

impl SessionDlp {
    /// The scanner for policy `version` (built by `dlp` the first time this version is seen).
    pub fn scanner(&self, version: &str, dlp: impl FnOnce() -> Dlp) -> Arc<Compiled> {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = c.as_ref()
            && c.version == version
        {
            return c.clone();
        }
        let dlp = dlp();
        // Nothing is scanned under `allow` on both sides: no detector is compiled.
        let off = dlp.arguments == thoth_policy::DlpArguments::Allow
            && dlp.results == thoth_policy::DlpResults::Allow;
        let scanner = if off {
            Scanner::new(&Dlp {
                detectors: Vec::new(),
                ..dlp.clone()
            })
        } else {
            Scanner::new(&dlp)
        };
        let compiled = Arc::new(Compiled {
            version: version.to_owned(),
            scanner,
            dlp,
        });
        *c = Some(compiled.clone());
        compiled
    }
}

/// What DLP found in a call's arguments.
pub struct ArgScan {
    /// Why the call is denied (`arguments: block`), naming the detector and location.
    pub blocked: Option<String>,
    /// The arguments with every match replaced, for the event.
    pub content: String,
    /// The event's `detail` (`{"dlp": [...]}`).
    pub detail: serde_json::Value,
}
