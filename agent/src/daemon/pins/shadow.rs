//! Tool-name shadowing: per OS user and MCP client, the latest tool names of each server; a
//! name also offered by another server of the same user and client is reported once per
//! (user, client, tool, server pair) per agent run. Memory is bounded: [`MAX_GROUPS`] (user,
//! client) groups, [`MAX_GROUP_SERVERS`] servers each, [`MAX_NAMES`] names in all, and
//! [`MAX_REPORTED`] pairs remembered as reported.

use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Most (user, client) groups remembered; past it the least recently used is forgotten.
pub const MAX_GROUPS: usize = 256;
/// Most servers remembered per group; past it the least recently seen is forgotten.
pub const MAX_GROUP_SERVERS: usize = 64;
/// Most tool names remembered in all.
pub const MAX_NAMES: usize = 65_536;
/// Most reported (user, client, tool, server pair) remembered; past it they are forgotten
/// (and may be reported again).
pub const MAX_REPORTED: usize = 16_384;
/// Most findings from one list.
pub const MAX_FINDINGS: usize = 64;

/// A tool name offered by two servers of one user and client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// The OS uid.
    pub uid: u32,
    /// The MCP client id.
    pub client: String,
    /// The tool name.
    pub tool: String,
    /// The server whose list revealed it.
    pub server: String,
    /// The server that offered the name before.
    pub other: String,
}

#[derive(Default)]
struct Group {
    used: u64,
    /// Server name → (last seen, its tool names).
    servers: BTreeMap<String, (u64, BTreeSet<String>)>,
}

/// What the agent remembers for shadowing.
#[derive(Default)]
pub struct Shadows {
    groups: BTreeMap<(u32, String), Group>,
    reported: HashSet<(u32, String, String, String, String)>,
    names: usize,
    clock: u64,
}

impl Shadows {
    /// Notes that `server` of `uid` and `client` offers `tools` now; the names another server
    /// of theirs offers too, not reported before.
    pub fn observe(
        &mut self,
        uid: u32,
        client: &str,
        server: &str,
        tools: &[&str],
    ) -> Vec<Shadowed> {
        self.clock += 1;
        let now = self.clock;
        let gkey = (uid, client.to_owned());
        if !self.groups.contains_key(&gkey) && self.groups.len() >= MAX_GROUPS {
            let oldest = self
                .groups
                .iter()
                .min_by_key(|(_, g)| g.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest
                && let Some(g) = self.groups.remove(&k)
            {
                self.names -= g.servers.values().map(|(_, s)| s.len()).sum::<usize>();
            }
        }
        let group = self.groups.entry(gkey).or_default();
        group.used = now;
        let mut found = Vec::new();
        for (other, (_, names)) in &group.servers {
            if other == server {
                continue;
            }
            for t in tools {
                if !names.contains(*t) || found.len() >= MAX_FINDINGS {
                    continue;
                }
                let (a, b) = if server < other.as_str() {
                    (server, other.as_str())
                } else {
                    (other.as_str(), server)
                };
                let key = (
                    uid,
                    client.to_owned(),
                    (*t).to_owned(),
                    a.to_owned(),
                    b.to_owned(),
                );
                if self.reported.contains(&key) {
                    continue;
                }
                if self.reported.len() >= MAX_REPORTED {
                    self.reported.clear();
                }
                self.reported.insert(key);
                found.push(Shadowed {
                    uid,
                    client: client.to_owned(),
                    tool: (*t).to_owned(),
                    server: server.to_owned(),
                    other: other.clone(),
                });
            }
        }
        // Remember this server's names (within the bounds).
        if let Some((_, old)) = group.servers.remove(server) {
            self.names -= old.len();
        }
        while group.servers.len() >= MAX_GROUP_SERVERS {
            let oldest = group
                .servers
                .iter()
                .min_by_key(|(_, (seen, _))| *seen)
                .map(|(k, _)| k.clone());
            match oldest.and_then(|k| group.servers.remove(&k)) {
                Some((_, s)) => self.names -= s.len(),
                None => break,
            }
        }
        let room = MAX_NAMES.saturating_sub(self.names);
        let names: BTreeSet<String> = tools.iter().take(room).map(|t| (*t).to_owned()).collect();
        self.names += names.len();
        group.servers.insert(server.to_owned(), (now, names));
        found
    }

    /// Tool names remembered in all.
    pub fn names(&self) -> usize {
        self.names
    }
}
