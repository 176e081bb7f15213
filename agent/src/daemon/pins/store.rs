//! One OS user's pinned tool definitions, as kept on disk (`pins/<uid>.json`, 0600, written
//! atomically) and in memory: per server identity (`thoth_proto::pins::server_key`, computed
//! by the agent), the server's name, client and command line, and per tool the definition in
//! force with where it came from, plus the newer definition seen, waiting for a decision.
//!
//! Bounded: [`MAX_SERVERS`] servers per user (the least recently seen evicted, those holding an
//! admin-accepted pin last), [`MAX_TOOLS`] tools per server (pinned and added together),
//! [`MAX_SERVER_BYTES`] of names, digests and descriptions per server (see
//! [`ServerEntry::bytes`]: past it a server's further tools are not pinned and its further
//! changes not kept, so one server cannot crowd out the others), [`MAX_FILE_BYTES`] per file
//! (over it, only servers holding no admin-accepted pin are evicted, see
//! [`UserStore::encode`]).
//!
//! An evicted server leaves a tombstone (its key; at most [`MAX_TOMBSTONES`] per user, the
//! oldest dropped): seen again, it is known, so its tools come back "added", never pinned by
//! first use again (eviction must not reset pinning). Descriptions count as written in the
//! file (JSON-escaped, [`json_len`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thoth_proto::pins::ToolDigest;

/// Most servers kept per user; past it the least recently seen is evicted.
pub const MAX_SERVERS: usize = 256;
/// Most tools kept per server (pinned and added together).
pub const MAX_TOOLS: usize = 4096;
/// Longest session id kept ([`ServerEntry::first_session`]).
pub const MAX_SESSION: usize = 256;
/// Largest store file.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Most bytes of names, digests and descriptions kept per server ([`ServerEntry::bytes`]).
pub const MAX_SERVER_BYTES: usize = 512 << 10;
/// Longest description kept (of a definition awaiting a decision), as written ([`json_len`]).
pub const MAX_DESCRIPTION: usize = 2 << 10;
/// Most evicted server keys remembered per user ([`UserStore::tombstones`]).
pub const MAX_TOMBSTONES: usize = 4096;
/// What one tombstone counts for in the file (a 64-digit key, quoted, a comma).
const TOMBSTONE_BYTES: usize = 64 + 3;
/// What ends a description that was cut.
pub const CUT_MARKER: &str = "…[cut]";
/// What one definition's digests count for ([`ServerEntry::bytes`]): the digest and its parts'.
pub const DEFINITION_BYTES: usize = 4 * 64;

/// Where the definition in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Pinned the first time the server's list was seen.
    FirstUse,
    /// Accepted by an admin (`thothctl pins accept`: a `PolicyUpdate.pin` decision).
    Admin,
    /// Let through by an approval (the user's or an admin's) of a call held because the
    /// definition changed: usable by that user, never accepted (nobody reviewed it).
    UserApproval,
}

impl Source {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::FirstUse => "first_use",
            Source::Admin => "admin",
            Source::UserApproval => "user_approval",
        }
    }
}

/// The digests of one definition's parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parts {
    /// `description`.
    pub description: String,
    /// `inputSchema` and `outputSchema`.
    pub schema: String,
    /// `annotations`.
    pub annotations: String,
}

impl Parts {
    /// As a [`ToolDigest`] (for [`thoth_proto::pins::changes`]).
    pub fn digest(&self, name: &str, digest: &str) -> ToolDigest {
        ToolDigest {
            name: name.to_owned(),
            digest: digest.to_owned(),
            description: self.description.clone(),
            schema: self.schema.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// A definition seen that is not the one in force: a change, or a tool the server did not offer
/// when it was pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Its digest.
    pub digest: String,
    /// Its parts' digests.
    pub parts: Parts,
    /// What differs from the definition in force ("description", "schema", "annotations"), or
    /// "added".
    pub changes: Vec<String>,
    /// When it was first seen (Unix ms).
    pub seen_ms: i64,
    /// An admin rejected exactly this definition.
    #[serde(default)]
    pub rejected: bool,
    /// Its description as the proxy sent it (at most [`MAX_DESCRIPTION`] bytes as written in
    /// the file, ending in [`CUT_MARKER`] when cut, see [`cut_description`]; raw, escaped when
    /// reported), for admins to read before they decide; kept only while it waits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Pending {
    /// What it counts for beyond its tool's name ([`ServerEntry::bytes`]).
    pub fn bytes(&self) -> usize {
        DEFINITION_BYTES + json_len(&self.description)
    }
}

/// The bytes `c` takes in a JSON string as written (serde_json's escapes).
fn json_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The bytes `s` takes in a JSON string as written (without the quotes).
pub fn json_len(s: &str) -> usize {
    s.chars().map(json_char_len).sum()
}

/// `s` as kept: whole when it takes at most `max` bytes as written ([`json_len`]), else cut on
/// a character boundary and ended with [`CUT_MARKER`], the whole within `max`.
pub fn cut_description(s: &str, max: usize) -> String {
    if json_len(s) <= max {
        return s.to_owned();
    }
    let room = max.saturating_sub(json_len(CUT_MARKER));
    let mut n = 0;
    let mut out = String::new();
    for c in s.chars() {
        n += json_char_len(c);
        if n > room {
            break;
        }
        out.push(c);
    }
    if json_len(CUT_MARKER) <= max {
        out.push_str(CUT_MARKER);
    }
    out
}

/// A pinned tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPin {
    /// The digest in force.
    pub digest: String,
    /// Its parts' digests.
    pub parts: Parts,
    /// Where it came from.
    pub source: Source,
    /// An admin accepted it (its annotations may be trusted).
    pub accepted: bool,
    /// When it was first pinned (Unix ms).
    pub first_seen_ms: i64,
    /// A newer definition seen, waiting for a decision.
    #[serde(default)]
    pub pending: Option<Pending>,
}

/// One server of one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEntry {
    /// The server's name (`--server`).
    pub name: String,
    /// The MCP client id (may be empty).
    pub client: String,
    /// Its original command line, program first.
    pub command: Vec<String>,
    /// When a list of it was last checked (Unix ms).
    pub last_seen_ms: i64,
    /// The pinned tools, by name.
    pub tools: BTreeMap<String, ToolPin>,
    /// Tools it offers that were not pinned (offered after its first list), by name.
    #[serde(default)]
    pub added: BTreeMap<String, Pending>,
    /// The session (`ToolListCheck.session_id`) whose list first created it, while no complete
    /// list of it was seen: that session's further pages are still its first list (their tools
    /// "new", pinned by first use). `None` once a complete list was seen, for a server known
    /// before (a tombstone), or when the session had no id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_session: Option<String>,
}

impl ServerEntry {
    /// Tools kept (pinned and added).
    pub fn len(&self) -> usize {
        self.tools.len() + self.added.len()
    }

    /// Whether it keeps no tool.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What it keeps, as counted against [`MAX_SERVER_BYTES`]: per tool its name and
    /// [`DEFINITION_BYTES`], per definition awaiting a decision [`DEFINITION_BYTES`] and its
    /// description.
    pub fn bytes(&self) -> usize {
        let pinned: usize = self
            .tools
            .iter()
            .map(|(n, t)| {
                json_len(n) + DEFINITION_BYTES + t.pending.as_ref().map_or(0, Pending::bytes)
            })
            .sum();
        let added: usize = self
            .added
            .iter()
            .map(|(n, p)| json_len(n) + p.bytes())
            .sum();
        pinned + added
    }

    /// Whether an admin accepted one of its pins (such a server is never evicted to make room).
    pub fn holds_accepted(&self) -> bool {
        self.tools.values().any(|t| t.accepted)
    }

    /// Drops what waits for a decision: descriptions only (`all` false), or everything.
    /// Whether anything was dropped.
    fn shed(&mut self, all: bool) -> bool {
        let mut any = false;
        let pending = self.tools.values_mut().filter_map(|t| t.pending.as_mut());
        for p in pending.chain(self.added.values_mut()) {
            any |= !p.description.is_empty();
            p.description.clear();
        }
        if all {
            any |= !self.added.is_empty() || self.tools.values().any(|t| t.pending.is_some());
            self.added.clear();
            self.tools.values_mut().for_each(|t| t.pending = None);
        }
        any
    }
}

/// One user's store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStore {
    /// Format version.
    #[serde(default)]
    pub version: u32,
    /// Servers by server key.
    pub servers: BTreeMap<String, ServerEntry>,
    /// Servers evicted over the bounds, in all.
    #[serde(default)]
    pub evicted: u64,
    /// The keys of servers evicted (not seen since), oldest first, at most [`MAX_TOMBSTONES`]:
    /// such a server is known when seen again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tombstones: Vec<String>,
}

impl UserStore {
    /// Whether `key` is a server evicted and not seen since.
    pub fn is_tombstoned(&self, key: &str) -> bool {
        self.tombstones.iter().any(|k| k == key)
    }

    /// Forgets `key`'s tombstone (the server is kept again).
    pub fn revive(&mut self, key: &str) {
        self.tombstones.retain(|k| k != key);
    }

    /// Removes server `key`, leaving a tombstone (the oldest dropped past [`MAX_TOMBSTONES`]).
    fn evict(&mut self, key: &str) -> bool {
        if self.servers.remove(key).is_none() {
            return false;
        }
        self.evicted = self.evicted.saturating_add(1);
        self.revive(key);
        self.tombstones.push(key.to_owned());
        let over = self.tombstones.len().saturating_sub(MAX_TOMBSTONES);
        self.tombstones.drain(..over);
        true
    }

    /// Evicts the least recently seen servers (never `keep`; those holding an admin-accepted
    /// pin only when no other is left: their accepted definitions come back from the admins'
    /// decisions) until at most [`MAX_SERVERS`] remain. The number evicted.
    pub fn evict_over_count(&mut self, keep: &str) -> usize {
        let mut n = 0;
        while self.servers.len() > MAX_SERVERS
            && (self.evict_one(keep, false) || self.evict_one(keep, true))
        {
            n += 1;
        }
        n
    }

    /// Evicts the least recently seen server other than `keep` that holds no admin-accepted pin
    /// (or any, with `accepted_too`); false when there is none.
    pub fn evict_one(&mut self, keep: &str, accepted_too: bool) -> bool {
        let oldest = self
            .servers
            .iter()
            .filter(|(k, e)| k.as_str() != keep && (accepted_too || !e.holds_accepted()))
            .min_by_key(|(k, e)| (e.last_seen_ms, (*k).clone()))
            .map(|(k, _)| k.clone());
        oldest.is_some_and(|k| self.evict(&k))
    }

    /// The file's bytes, within [`MAX_FILE_BYTES`]: the least recently seen servers holding no
    /// admin-accepted pin (never `keep`) are evicted until it fits; then the descriptions of
    /// definitions awaiting a decision are dropped, then those definitions (seen again, they
    /// are reported again). A server holding an admin-accepted pin is never evicted here: when
    /// nothing else is left to drop, the bytes are empty (the file is not written). With the
    /// number of servers evicted.
    pub fn encode(&mut self, keep: &str) -> (Vec<u8>, usize) {
        let mut evicted = 0;
        // Each server's size, once: the oldest evictable go until the sum fits (then checked
        // whole).
        let sizes: Vec<(i64, String, usize, bool)> = self
            .servers
            .iter()
            .map(|(k, e)| {
                let n = serde_json::to_vec(e).map_or(0, |b| b.len()) + k.len() + 8;
                let evictable = k.as_str() != keep && !e.holds_accepted();
                (e.last_seen_ms, k.clone(), n, evictable)
            })
            .collect();
        let tombstones = self.tombstones.len() * TOMBSTONE_BYTES;
        let mut total: usize = sizes.iter().map(|s| s.2).sum::<usize>() + tombstones + 64;
        if total > MAX_FILE_BYTES {
            let mut sizes: Vec<_> = sizes.into_iter().filter(|s| s.3).collect();
            sizes.sort();
            for (_, k, n, _) in sizes {
                if total <= MAX_FILE_BYTES {
                    break;
                }
                if self.evict(&k) {
                    evicted += 1;
                    total = total.saturating_sub(n) + TOMBSTONE_BYTES;
                }
            }
        }
        loop {
            let bytes = serde_json::to_vec(self).unwrap_or_default();
            if bytes.len() <= MAX_FILE_BYTES {
                return (bytes, evicted);
            }
            if self.evict_one(keep, false) {
                evicted += 1;
                continue;
            }
            let shed = |s: &mut Self, all: bool| {
                s.servers
                    .values_mut()
                    .fold(false, |any, e| e.shed(all) | any)
            };
            if shed(self, false) || shed(self, true) {
                continue;
            }
            return (Vec::new(), evicted);
        }
    }
}

/// Loads a store file: `Ok(None)` when there is none, `Err` (why) when it is unreadable,
/// too large or not a store (the caller starts that user empty).
pub fn load(path: &Path) -> Result<Option<UserStore>, String> {
    use std::io::Read as _;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(format!("over {MAX_FILE_BYTES} bytes"));
    }
    let mut store: UserStore = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    // What a hand-edited or damaged file may hold beyond the bounds is dropped.
    store
        .tombstones
        .retain(|k| thoth_proto::pins::is_digest(k) && !store.servers.contains_key(k));
    let over = store.tombstones.len().saturating_sub(MAX_TOMBSTONES);
    store.tombstones.drain(..over);
    store.evict_over_count("");
    for e in store.servers.values_mut() {
        for p in e.tools.values_mut().filter_map(|t| t.pending.as_mut()) {
            p.description = cut_description(&p.description, MAX_DESCRIPTION);
        }
        for p in e.added.values_mut() {
            p.description = cut_description(&p.description, MAX_DESCRIPTION);
        }
        if e.first_session
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SESSION)
        {
            e.first_session = None;
        }
        while e.len() > MAX_TOOLS {
            if e.added.pop_last().is_none() {
                e.tools.pop_last();
            }
        }
    }
    Ok(Some(store))
}

/// Writes a store file atomically, 0600.
pub fn save(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    thoth_endpoint::state::write_atomic(path, bytes, 0o600)
}
