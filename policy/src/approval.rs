//! Who may approve a `step_up` call (`approvers`) and how long an approval covers the identical
//! call again (`approval_remember`), as policy documents write them and the wire carries them
//! (`ApprovalRequest.approvers`, `.remember`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who may answer an approval request. Where both may, the first decisive answer wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approver {
    /// The OS user who runs the MCP client, in a dialog on their desktop.
    User,
    /// An admin (role `approver` or higher), in the controller's approval queue.
    Admin,
}

impl Approver {
    /// The name used in policies and on the wire (`user`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Approver::User => "user",
            Approver::Admin => "admin",
        }
    }
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Approver {
    type Err = ApprovalFieldError;
    fn from_str(s: &str) -> Result<Self, ApprovalFieldError> {
        match s {
            "user" => Ok(Approver::User),
            "admin" => Ok(Approver::Admin),
            _ => Err(ApprovalFieldError(format!(
                "unknown approver {:?}: expected \"user\" or \"admin\"",
                Shown(s)
            ))),
        }
    }
}

/// The approvers used where a policy names none: both.
pub const DEFAULT_APPROVERS: [Approver; 2] = [Approver::User, Approver::Admin];

/// Checks an `approvers` list: not empty, no approver twice.
pub(crate) fn check_approvers(list: &[Approver]) -> Result<(), String> {
    if list.is_empty() {
        return Err(
            "approvers is empty: nobody could approve; give [user], [admin] or [user, admin]"
                .into(),
        );
    }
    for (i, a) in list.iter().enumerate() {
        if list[..i].contains(a) {
            return Err(format!("approvers names {a} twice"));
        }
    }
    Ok(())
}

/// Longest `approval_remember` duration.
pub const MAX_REMEMBER: Duration = Duration::from_secs(24 * 3600);

/// How long an approval covers the identical call (same agent, OS user, server, tool and
/// arguments) again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Remember {
    /// One use (valid at least 5 minutes, so that a retry after a late approval goes through).
    #[default]
    Once,
    /// Every identical call in the same MCP session, until it ends (at most 24 h).
    Session,
    /// Every identical call of that user, in any session, for this long (1 s to 24 h, whole
    /// seconds).
    For(Duration),
}

impl Remember {
    /// The wire string: `once`, `session`, or the duration in its largest whole unit (`15m`,
    /// `2h`, `90s`).
    pub fn as_wire(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Remember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remember::Once => f.write_str("once"),
            Remember::Session => f.write_str("session"),
            Remember::For(d) => {
                let s = d.as_secs();
                if s > 0 && s % 3600 == 0 {
                    write!(f, "{}h", s / 3600)
                } else if s > 0 && s % 60 == 0 {
                    write!(f, "{}m", s / 60)
                } else {
                    write!(f, "{s}s")
                }
            }
        }
    }
}

/// Why an `approvers` entry or an `approval_remember` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApprovalFieldError(String);

impl FromStr for Remember {
    type Err = ApprovalFieldError;
    /// `once`, `session`, or `<n>s`, `<n>m`, `<n>h` (ASCII digits, 1 s to 24 h).
    fn from_str(s: &str) -> Result<Self, ApprovalFieldError> {
        match s {
            "once" => return Ok(Remember::Once),
            "session" => return Ok(Remember::Session),
            _ => {}
        }
        let bad = || {
            ApprovalFieldError(format!(
                "approval_remember {:?} is not once, session or a duration like 30s, 15m, 2h \
                 (at most 24h)",
                Shown(s)
            ))
        };
        let Some((last, _)) = s.char_indices().next_back() else {
            return Err(bad());
        };
        let (digits, unit) = s.split_at(last);
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(bad()),
        };
        if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let secs = n * scale;
        if secs == 0 || secs > MAX_REMEMBER.as_secs() {
            return Err(ApprovalFieldError(format!(
                "approval_remember {s} must be between 1s and 24h"
            )));
        }
        Ok(Remember::For(Duration::from_secs(secs)))
    }
}

impl Serialize for Remember {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Remember {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Remember;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("once, session or a duration like 15m")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Remember, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A value quoted in an error: at most 64 characters, control and bidi characters escaped (the
/// `{:?}` of the result), so an error cannot reshape the terminal it is printed on.
struct Shown<'a>(&'a str);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for (i, c) in self.0.chars().enumerate() {
            if i == 64 {
                out.push('…');
                break;
            }
            if c.is_control() || is_bidi(c) {
                out.extend(c.escape_unicode());
            } else {
                out.push(c);
            }
        }
        write!(f, "\"{out}\"")
    }
}

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remember_parses_and_prints_the_wire_strings() {
        for (text, want, shown) in [
            ("once", Remember::Once, "once"),
            ("session", Remember::Session, "session"),
            ("30s", Remember::For(Duration::from_secs(30)), "30s"),
            ("15m", Remember::For(Duration::from_secs(900)), "15m"),
            ("2h", Remember::For(Duration::from_secs(7200)), "2h"),
            ("24h", Remember::For(MAX_REMEMBER), "24h"),
            ("90s", Remember::For(Duration::from_secs(90)), "90s"),
            ("120m", Remember::For(Duration::from_secs(7200)), "2h"),
            ("86400s", Remember::For(MAX_REMEMBER), "24h"),
            ("007m", Remember::For(Duration::from_secs(420)), "7m"),
        ] {
            let got: Remember = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), shown, "{text}");
            assert_eq!(
                shown.parse::<Remember>().unwrap(),
                got,
                "{shown} round-trips"
            );
        }
    }

    #[test]
    fn remember_refuses_everything_else() {
        for text in [
            "",
            "s",
            "0s",
            "0h",
            "25h",
            "1441m",
            "86401s",
            "-5m",
            "+5m",
            " 5m",
            "5m ",
            "5 m",
            "5M",
            "5d",
            "1h30m",
            "1.5h",
            "５m",
            "Once",
            "SESSION",
            "forever",
            "999999999999999999999h",
            "4294967296s",
            "١m",
            "m５",
            "é",
            "5é",
            "\u{0}",
            "5\u{0}m",
        ] {
            assert!(text.parse::<Remember>().is_err(), "{text:?} was accepted");
        }
        let e = "\u{202e}evil\u{1b}[2J".parse::<Remember>().unwrap_err();
        let shown = e.to_string();
        assert!(
            !shown.contains('\u{202e}') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert!(shown.contains("\\u{202e}"), "{shown}");
        let long = "x".repeat(10_000);
        assert!(long.parse::<Remember>().unwrap_err().to_string().len() < 300);
    }

    #[test]
    fn approvers_are_checked() {
        assert!(check_approvers(&DEFAULT_APPROVERS).is_ok());
        assert!(check_approvers(&[Approver::Admin]).is_ok());
        assert!(check_approvers(&[]).unwrap_err().contains("empty"));
        let e = check_approvers(&[Approver::User, Approver::Admin, Approver::User]).unwrap_err();
        assert!(e.contains("user twice"), "{e}");
        assert_eq!("admin".parse::<Approver>().unwrap(), Approver::Admin);
        assert_eq!(Approver::User.to_string(), "user");
        assert!("Admin".parse::<Approver>().is_err());
    }
}
