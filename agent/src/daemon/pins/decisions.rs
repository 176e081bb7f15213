//! Admins' decisions on tool definitions (`PolicyUpdate.pin`), for every user of the machine:
//! kept (the newest [`MAX_DECISIONS`]) in `pins/decisions.json`, consulted on every check, and
//! applied to every user's store when they arrive. Applying one twice changes nothing.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thoth_proto::fleet as pb;
use thoth_proto::pins::is_digest;

use super::store::{MAX_FILE_BYTES, Pending, Source, ToolPin, UserStore};

/// Most decisions kept; past it the oldest are forgotten.
pub const MAX_DECISIONS: usize = 4096;
/// Longest tool name.
pub const MAX_TOOL_NAME: usize = 256;

/// One decision as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Accepted (else rejected).
    pub accepted: bool,
    /// When it was made (Unix ms, the controller's).
    pub decided_ms: i64,
    /// When this agent learned it (order of arrival, for the bound).
    pub seq: u64,
}

/// The decisions, by (server key, tool, digest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    map: BTreeMap<(String, String, String), Decision>,
    seq: u64,
}

#[derive(Serialize, Deserialize)]
struct Row {
    server_key: String,
    tool: String,
    digest: String,
    accepted: bool,
    decided_ms: i64,
}

/// A decision from the controller, checked: `Err` says why it is ignored.
pub fn checked(d: &pb::PinDecision) -> Result<(), String> {
    if !is_digest(&d.server_key) || !is_digest(&d.digest) {
        return Err("its server key or digest is not a hex SHA-256".into());
    }
    if d.tool.len() > MAX_TOOL_NAME {
        return Err(format!("its tool name is over {MAX_TOOL_NAME} bytes"));
    }
    Ok(())
}

impl Decisions {
    /// What was decided for exactly this definition: `Some(true)` accepted, `Some(false)`
    /// rejected.
    pub fn get(&self, server_key: &str, tool: &str, digest: &str) -> Option<bool> {
        self.map
            .get(&(server_key.to_owned(), tool.to_owned(), digest.to_owned()))
            .map(|d| d.accepted)
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records `d` (already [`checked`]); a newer decision on the same definition replaces an
    /// older one. Whether anything changed.
    pub fn record(&mut self, d: &pb::PinDecision) -> bool {
        let key = (d.server_key.clone(), d.tool.clone(), d.digest.clone());
        if let Some(old) = self.map.get(&key)
            && (old.decided_ms > d.decided_unix_ms
                || (old.decided_ms == d.decided_unix_ms && old.accepted == d.accepted))
        {
            return false;
        }
        self.seq += 1;
        self.map.insert(
            key,
            Decision {
                accepted: d.accepted,
                decided_ms: d.decided_unix_ms,
                seq: self.seq,
            },
        );
        while self.map.len() > MAX_DECISIONS {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, d)| (d.decided_ms, d.seq))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.map.remove(&k),
                None => break,
            };
        }
        true
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let rows: Vec<Row> = self
            .map
            .iter()
            .map(|((k, t, g), d)| Row {
                server_key: k.clone(),
                tool: t.clone(),
                digest: g.clone(),
                accepted: d.accepted,
                decided_ms: d.decided_ms,
            })
            .collect();
        serde_json::to_vec(&rows).unwrap_or_default()
    }

    /// Loads the file: empty when there is none; `Err` when it cannot be used.
    pub fn load(path: &Path) -> Result<Decisions, String> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Decisions::default()),
            Err(e) => return Err(e.to_string()),
        };
        if bytes.len() > MAX_FILE_BYTES {
            return Err(format!("over {MAX_FILE_BYTES} bytes"));
        }
        let rows: Vec<Row> = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let mut out = Decisions::default();
        for r in rows {
            let d = pb::PinDecision {
                server_key: r.server_key,
                tool: r.tool,
                digest: r.digest,
                accepted: r.accepted,
                decided_unix_ms: r.decided_ms,
                ..pb::PinDecision::default()
            };
            if checked(&d).is_ok() {
                out.record(&d);
            }
        }
        Ok(out)
    }
}

/// Applies `d` to one user's store: accepted → the definition becomes the pin (accepted, by an
/// admin) where it is the pending or pinned one of that tool; rejected → marked rejected where
/// it is pending (or pinned). Whether the store changed.
pub fn apply(store: &mut UserStore, d: &pb::PinDecision, now_ms: i64) -> bool {
    let Some(entry) = store.servers.get_mut(&d.server_key) else {
        return false;
    };
    if d.accepted {
        if let Some(pin) = entry.tools.get_mut(&d.tool) {
            if pin.digest == d.digest {
                let changed = !pin.accepted || pin.source != Source::Admin;
                pin.accepted = true;
                pin.source = Source::Admin;
                if pin.pending.as_ref().is_some_and(|p| p.digest == d.digest) {
                    pin.pending = None;
                }
                return changed;
            }
            if let Some(p) = pin.pending.take_if(|p| p.digest == d.digest) {
                pin.digest = p.digest;
                pin.parts = p.parts;
                pin.source = Source::Admin;
                pin.accepted = true;
                return true;
            }
            return false;
        }
        if entry
            .added
            .get(&d.tool)
            .is_some_and(|p| p.digest == d.digest)
            && let Some(p) = entry.added.remove(&d.tool)
        {
            entry.tools.insert(
                d.tool.clone(),
                ToolPin {
                    digest: p.digest,
                    parts: p.parts,
                    source: Source::Admin,
                    accepted: true,
                    first_seen_ms: now_ms,
                    pending: None,
                },
            );
            return true;
        }
        return false;
    }
    let reject = |p: &mut Pending| {
        let was = p.rejected;
        p.rejected = true;
        !was
    };
    if let Some(p) = entry.added.get_mut(&d.tool)
        && p.digest == d.digest
    {
        return reject(p);
    }
    let Some(pin) = entry.tools.get_mut(&d.tool) else {
        return false;
    };
    if let Some(p) = pin.pending.as_mut().filter(|p| p.digest == d.digest) {
        return reject(p);
    }
    if pin.digest == d.digest {
        // The pinned definition itself was rejected: it is held back from now on.
        let changed = pin.accepted || pin.pending.as_ref().is_none_or(|p| p.digest != d.digest);
        pin.accepted = false;
        pin.pending = Some(Pending {
            digest: pin.digest.clone(),
            parts: pin.parts.clone(),
            changes: Vec::new(),
            seen_ms: now_ms,
            rejected: true,
            description: String::new(),
        });
        return changed;
    }
    false
}
