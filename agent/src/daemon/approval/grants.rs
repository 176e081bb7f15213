//! What an approval leaves behind: a grant that lets the identical call through again, in memory
//! and bounded per user. A grant is bound to the OS user (uid), server, tool and arguments
//! digest; `once` and `session` grants also to the MCP session.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// The longest an approval may be remembered.
pub const MAX_REMEMBER: Duration = Duration::from_secs(24 * 3600);
/// The least a `once` grant stays usable (a late approval waits for the retry).
pub const ONCE_AT_LEAST: Duration = Duration::from_secs(5 * 60);
/// Grants kept per user; past it the one expiring first is dropped.
pub const MAX_GRANTS_PER_USER: usize = 64;

/// How long an approval covers the identical call again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remember {
    /// One use, in the same MCP session.
    Once,
    /// Every identical call in the same MCP session (at most [`MAX_REMEMBER`]).
    Session,
    /// Every identical call of the user, in any session, for this long (at most 24 h).
    For(Duration),
}

impl Remember {
    /// Parses `once`, `session` or a duration (`30s`, `15m`, `2h`); `None` for anything else,
    /// a zero duration or one over [`MAX_REMEMBER`].
    pub fn parse(text: &str) -> Option<Remember> {
        match text.trim() {
            "once" => Some(Remember::Once),
            "session" => Some(Remember::Session),
            t if !t.is_empty() && t.len() <= 32 && t.chars().all(|c| c.is_ascii_alphanumeric()) => {
                humantime::parse_duration(t)
                    .ok()
                    .filter(|d| !d.is_zero() && *d <= MAX_REMEMBER)
                    .map(Remember::For)
            }
            _ => None,
        }
    }

    /// The wire form (`once`, `session`, or a duration as humantime writes it).
    pub fn as_text(self) -> String {
        match self {
            Remember::Once => "once".into(),
            Remember::Session => "session".into(),
            Remember::For(d) => humantime::format_duration(d).to_string(),
        }
    }
}

/// What a call is: the key a grant matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallKey {
    /// The caller's uid (peer credentials).
    pub uid: u32,
    /// The proxy's MCP session.
    pub session: String,
    /// The server entry.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// Hex SHA-256 of the canonical arguments.
    pub args_sha256: String,
}

/// One grant.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The call it covers.
    pub key: CallKey,
    /// Its scope.
    pub remember: Remember,
    /// Usable until then.
    pub until: Instant,
    /// The approval that made it.
    pub approval_id: String,
    /// Who approved.
    pub decided_by: String,
    /// The channel that approved ("user" or "admin").
    pub channel: String,
}

impl Grant {
    fn covers(&self, key: &CallKey, now: Instant) -> bool {
        now < self.until
            && self.key.uid == key.uid
            && self.key.server == key.server
            && self.key.tool == key.tool
            && self.key.args_sha256 == key.args_sha256
            && match self.remember {
                Remember::Once | Remember::Session => self.key.session == key.session,
                Remember::For(_) => true,
            }
    }
}

/// The approval a grant comes from.
#[derive(Debug, Clone, Copy)]
pub struct From<'a> {
    /// Its id.
    pub approval_id: &'a str,
    /// Who approved.
    pub decided_by: &'a str,
    /// The channel that approved.
    pub channel: &'a str,
}

/// Every user's grants.
#[derive(Debug, Default)]
pub struct Grants {
    by_user: HashMap<u32, Vec<Grant>>,
}

impl Grants {
    /// Records a grant for `key` approved at `now` (`at_least`: how long a `once` grant stays,
    /// at least [`ONCE_AT_LEAST`]).
    pub fn add(
        &mut self,
        key: CallKey,
        remember: Remember,
        now: Instant,
        at_least: Duration,
        from: From<'_>,
    ) {
        let life = match remember {
            Remember::Once => at_least.max(ONCE_AT_LEAST).min(MAX_REMEMBER),
            Remember::Session => MAX_REMEMBER,
            Remember::For(d) => d.min(MAX_REMEMBER),
        };
        let list = self.by_user.entry(key.uid).or_default();
        list.retain(|g| g.until > now);
        // The same call and scope again: the newer grant replaces the older.
        list.retain(|g| !(g.key == key && g.remember == remember));
        if list.len() >= MAX_GRANTS_PER_USER
            && let Some((i, _)) = list.iter().enumerate().min_by_key(|(_, g)| g.until)
        {
            list.remove(i);
        }
        list.push(Grant {
            key,
            remember,
            until: now + life,
            approval_id: from.approval_id.to_owned(),
            decided_by: from.decided_by.to_owned(),
            channel: from.channel.to_owned(),
        });
    }

    /// The grant covering `key` at `now`, if any. A `session` or duration grant is used first
    /// and stays; a `once` grant is taken (used up) only when nothing wider covers the call.
    pub fn take(&mut self, key: &CallKey, now: Instant) -> Option<Grant> {
        let list = self.by_user.get_mut(&key.uid)?;
        list.retain(|g| g.until > now);
        let wide = list
            .iter()
            .find(|g| g.remember != Remember::Once && g.covers(key, now));
        if let Some(g) = wide {
            return Some(g.clone());
        }
        let i = list.iter().position(|g| g.covers(key, now))?;
        Some(list.remove(i))
    }

    /// Drops every grant of every user; the number dropped.
    pub fn clear(&mut self) -> usize {
        let n = self.by_user.values().map(Vec::len).sum();
        self.by_user.clear();
        n
    }

    /// Grants held for `uid` (expired ones included until the next change).
    pub fn count(&self, uid: u32) -> usize {
        self.by_user.get(&uid).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: u32, session: &str, sha: &str) -> CallKey {
        CallKey {
            uid,
            session: session.into(),
            server: "fs".into(),
            tool: "write_file".into(),
            args_sha256: sha.into(),
        }
    }

    #[test]
    fn remember_parses_the_three_forms_and_refuses_the_rest() {
        assert_eq!(Remember::parse("once"), Some(Remember::Once));
        assert_eq!(Remember::parse("session"), Some(Remember::Session));
        assert_eq!(
            Remember::parse("15m"),
            Some(Remember::For(Duration::from_secs(900)))
        );
        assert_eq!(
            Remember::parse("24h"),
            Some(Remember::For(Duration::from_secs(86400)))
        );
        for bad in [
            "",
            "25h",
            "0s",
            "forever",
            "-5m",
            "15 m",
            "1y",
            "once ",
            "\u{202e}5m",
            "99999999999h",
        ] {
            if bad == "once " {
                // Surrounding blanks are trimmed.
                assert_eq!(Remember::parse(bad), Some(Remember::Once));
                continue;
            }
            assert_eq!(Remember::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Remember::For(Duration::from_secs(900)).as_text(), "15m");
    }

    #[tokio::test(start_paused = true)]
    async fn once_is_used_once_session_stays_in_its_session_duration_spans_sessions() {
        let mut g = Grants::default();
        let now = Instant::now();
        g.add(
            key(1, "s1", "a"),
            Remember::Once,
            now,
            Duration::ZERO,
            From {
                approval_id: "id1",
                decided_by: "alice",
                channel: "user",
            },
        );
        assert!(g.take(&key(1, "s2", "a"), now).is_none(), "other session");
        assert!(g.take(&key(2, "s1", "a"), now).is_none(), "other user");
        assert!(g.take(&key(1, "s1", "b"), now).is_none(), "other args");
        assert_eq!(g.take(&key(1, "s1", "a"), now).unwrap().approval_id, "id1");
        assert!(g.take(&key(1, "s1", "a"), now).is_none(), "used up");

        g.add(
            key(1, "s1", "a"),
            Remember::Session,
            now,
            Duration::ZERO,
            From {
                approval_id: "id2",
                decided_by: "root",
                channel: "admin",
            },
        );
        for _ in 0..3 {
            assert!(g.take(&key(1, "s1", "a"), now).is_some());
        }
        assert!(g.take(&key(1, "s2", "a"), now).is_none());
        assert!(g.take(&key(1, "s1", "a"), now + MAX_REMEMBER).is_none());

        g.add(
            key(1, "s1", "a"),
            Remember::For(Duration::from_secs(60)),
            now,
            Duration::ZERO,
            From {
                approval_id: "id3",
                decided_by: "root",
                channel: "admin",
            },
        );
        assert!(g.take(&key(1, "s9", "a"), now).is_some());
        assert!(
            g.take(&key(1, "s9", "a"), now + Duration::from_secs(59))
                .is_some()
        );
        assert!(
            g.take(&key(1, "s9", "a"), now + Duration::from_secs(60))
                .is_none()
        );
        assert!(g.take(&key(3, "s9", "a"), now).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn once_lasts_at_least_five_minutes_and_grants_are_bounded_per_user() {
        let mut g = Grants::default();
        let now = Instant::now();
        g.add(
            key(1, "s", "a"),
            Remember::Once,
            now,
            Duration::from_secs(1),
            From {
                approval_id: "id",
                decided_by: "u",
                channel: "user",
            },
        );
        assert!(
            g.take(
                &key(1, "s", "a"),
                now + ONCE_AT_LEAST - Duration::from_secs(1)
            )
            .is_some()
        );
        for i in 0..1000 {
            g.add(
                key(1, "s", &format!("{i}")),
                Remember::Session,
                now,
                Duration::ZERO,
                From {
                    approval_id: "id",
                    decided_by: "u",
                    channel: "user",
                },
            );
        }
        assert_eq!(g.count(1), MAX_GRANTS_PER_USER);
        assert!(
            g.take(&key(1, "s", "999"), now).is_some(),
            "the newest kept"
        );
        assert_eq!(g.count(2), 0);
    }
}
