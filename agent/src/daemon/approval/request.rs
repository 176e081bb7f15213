//! An approval request as the broker keeps it: the limits, the caller, and the cleaning of
//! every string a proxy sent (cut, control and direction characters replaced).

use std::time::{Duration, SystemTime};

use thoth_proto::fleet as pb;

use super::grants::Remember;

/// Pending requests per OS user; more are denied.
pub const MAX_PENDING_PER_USER: usize = 16;
/// Pending requests of all users together; more are denied.
pub const MAX_PENDING_TOTAL: usize = 1024;
/// How long a request stays answerable at least (a late decision still becomes a grant).
pub const MIN_PENDING: Duration = Duration::from_secs(10 * 60);
/// The proxy's hold when it names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45);
/// The longest hold a proxy may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest server, tool, session, client and approver names kept.
pub const MAX_NAME: usize = 256;
/// Longest argument preview kept.
pub const MAX_CONTENT: usize = 4 << 10;
/// Longest reason kept.
pub const MAX_REASON: usize = 1 << 10;

/// Who calls: from the local socket's peer credentials, never from the request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The OS uid.
    pub uid: u32,
    /// Its login name.
    pub name: String,
}

pub(super) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether `c` may not be shown as it is: control characters (but newline and tab where
/// `lines`), and the invisible direction marks and overrides that reorder what is shown.
pub(super) fn unsafe_char(c: char, lines: bool) -> bool {
    (c.is_control() && !(lines && (c == '\n' || c == '\t')))
        || matches!(c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` cut to at most `max` bytes (on a character boundary, marked with `…`), with every
/// unsafe character replaced by U+FFFD.
pub fn clean(s: &str, max: usize, lines: bool) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut cut = false;
    for c in s.chars() {
        let c = if unsafe_char(c, lines) { '\u{FFFD}' } else { c };
        if out.len() + c.len_utf8() > max {
            cut = true;
            break;
        }
        out.push(c);
    }
    if cut && max >= '…'.len_utf8() {
        while out.len() + '…'.len_utf8() > max {
            out.pop();
        }
        out.push('…');
    }
    out
}

/// Who may approve, from the request: "user" and/or "admin"; none named (or only unknown
/// names) means both.
pub(super) fn channels_of(approvers: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for a in approvers.iter().take(8) {
        let ch = match a.trim() {
            "user" => "user",
            "admin" => "admin",
            _ => continue,
        };
        if !out.contains(&ch) {
            out.push(ch);
        }
    }
    if out.is_empty() {
        out = vec!["user", "admin"];
    }
    out
}

/// The request as the agent keeps it: every proxy string cut and cleaned, the agent's fields
/// (id, user, times) set, hostname and agent id cleared (the controller sets them). `Err` says
/// why it cannot be asked at all.
pub(super) fn sanitize(
    req: pb::ApprovalRequest,
    caller: &Caller,
    now: SystemTime,
) -> Result<(pb::ApprovalRequest, Duration), String> {
    let sha = req.arguments_sha256.trim().to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("invalid approval request: arguments_sha256 is not a hex SHA-256".into());
    }
    if req.server_name.trim().is_empty() || req.tool_name.trim().is_empty() {
        return Err("invalid approval request: no server or tool named".into());
    }
    let timeout = match req.timeout_secs {
        0 => DEFAULT_TIMEOUT,
        s => Duration::from_secs(u64::from(s)).min(MAX_TIMEOUT),
    };
    let remember = Remember::parse(&req.remember).unwrap_or(Remember::Once);
    let approvers = channels_of(&req.approvers);
    let requested = unix_ms(now);
    let pin = clean_pin(req.pin.as_ref(), &req.server_name, &req.tool_name);
    let out = pb::ApprovalRequest {
        approval_id: uuid::Uuid::now_v7().to_string(),
        session_id: clean(&req.session_id, MAX_NAME, false),
        server_name: clean(&req.server_name, MAX_NAME, false),
        tool_name: clean(&req.tool_name, MAX_NAME, false),
        content: clean(&req.content, MAX_CONTENT, true),
        reason: clean(&req.reason, MAX_REASON, true),
        user: clean(&caller.name, MAX_NAME, false),
        timeout_secs: u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX),
        arguments_sha256: sha,
        client_name: clean(&req.client_name, MAX_NAME, false),
        approvers: approvers.iter().map(|s| (*s).to_owned()).collect(),
        remember: remember.as_text(),
        expires_unix_ms: requested
            .saturating_add(i64::try_from(timeout.max(MIN_PENDING).as_millis()).unwrap_or(0)),
        hostname: String::new(),
        agent_id: String::new(),
        requested_unix_ms: requested,
        pin,
    };
    Ok((out, timeout))
}

/// The definition a request names (held because its tool changed), kept only when it is well
/// formed: hex SHA-256 server key and digest, the very tool called, and tool and server names
/// unchanged by cleaning (at most [`MAX_NAME`] bytes), so that on approval the agent can check
/// the key is the request's server's (`PinBook::approved`).
fn clean_pin(pin: Option<&pb::PinRef>, server: &str, tool: &str) -> Option<pb::PinRef> {
    let p = pin?;
    let ok = thoth_proto::pins::is_digest(&p.server_key)
        && thoth_proto::pins::is_digest(&p.digest)
        && p.tool == tool
        && clean(&p.tool, MAX_NAME, false) == p.tool
        && clean(server, MAX_NAME, false) == server;
    ok.then(|| p.clone())
}

pub(super) fn denial(id: &str, reason: impl Into<String>) -> pb::ApprovalDecision {
    pb::ApprovalDecision {
        approval_id: id.to_owned(),
        approved: false,
        reason: reason.into(),
        ..pb::ApprovalDecision::default()
    }
}
