//! How `thothctl approvals` shows approvals: the tables, `show`, the watch and decided lines,
//! the JSON, and the escaping of what a laptop sent (control and invisible characters).

use std::time::{Duration, SystemTime};

use thoth_proto::fleet as pb;

use crate::render::{safe, short, table_lines};

/// Characters of the argument preview in a table or a watch line.
pub(super) const PREVIEW_CHARS: usize = 48;

/// Characters of the argument preview `show` prints (the controller keeps at most 4 KiB).
pub(super) const SHOW_CHARS: usize = 16 * 1024;

/// Invisible characters that [`safe`] leaves alone but that can hide or disguise text: zero
/// width spaces and joiners, word joiner and invisible operators, line and paragraph
/// separators, the byte order mark, soft hyphen, interlinear annotation and tag characters.
pub(super) fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}' | '\u{180e}'
        | '\u{200b}'..='\u{200d}' | '\u{2028}' | '\u{2029}' | '\u{2060}'..='\u{2064}'
        | '\u{206a}'..='\u{206f}' | '\u{3164}' | '\u{feff}' | '\u{ffa0}' | '\u{fff9}'..='\u{fffb}'
        | '\u{e0000}'..='\u{e007f}')
}

/// `s` as it may reach a terminal: [`safe`] (control and bidi characters) and the
/// [`invisible`] ones written as `\u{…}`.
pub(crate) fn shown(s: &str) -> String {
    let s = safe(s);
    if !s.chars().any(invisible) {
        return s;
    }
    s.chars()
        .map(|c| {
            if invisible(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// [`shown`], cut to at most `max` characters (an ellipsis marks the cut).
pub(super) fn cut(s: &str, max: usize) -> String {
    let s = shown(s);
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// JSON text made safe for a terminal without changing what it parses to: every character
/// [`shown`] would escape (DEL, C1 controls, bidi, invisible; serde_json already escapes C0)
/// becomes a `\uXXXX` escape (a surrogate pair above U+FFFF). Outside strings JSON text is ASCII,
/// so this touches only string contents.
pub(super) fn json_text(v: &serde_json::Value, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .expect("JSON values serialize");
    let mut out = String::with_capacity(text.len());
    let mut units = [0u16; 2];
    for c in text.chars() {
        // A raw newline is pretty-printing's own (serde_json escapes every C0 in strings).
        let risky = c != '\n' && !(c.is_ascii_graphic() || c == ' ') && {
            let one = c.encode_utf8(&mut [0; 4]).to_owned();
            c.is_control() || shown(&one) != one
        };
        if risky {
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn print_json(v: &serde_json::Value) {
    println!("{}", json_text(v, true));
}

/// A time in unix ms, when it is set and one RFC 3339 can write (years up to 9999).
pub(super) fn time_of(ms: i64) -> Option<SystemTime> {
    (ms > 0 && ms < 253_402_300_800_000)
        .then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64))
}

pub(super) fn iso_ms(ms: i64) -> serde_json::Value {
    time_of(ms).map_or(serde_json::Value::Null, |t| {
        humantime::format_rfc3339_millis(t).to_string().into()
    })
}

/// The time relative to `now_ms`: `3m ago`, `in 7m`; `-` when unset.
pub(super) fn rel(ms: i64, now_ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let d = Duration::from_millis(now_ms.abs_diff(ms));
    if ms <= now_ms {
        format!("{} ago", short(d))
    } else {
        format!("in {}", short(d))
    }
}

/// An RFC 3339 time (seconds) with its relative age: `2026-11-30T20:31:05Z (3m ago)`.
pub(super) fn stamp(ms: i64, now_ms: i64) -> String {
    match time_of(ms) {
        Some(t) => format!(
            "{} ({})",
            humantime::format_rfc3339_seconds(t),
            rel(ms, now_ms)
        ),
        None => "-".into(),
    }
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The argument preview on one line: JSON printed compactly (the order kept), anything else
/// as it came; escaped and cut to `max` characters.
pub(super) fn preview(content: &str, max: usize) -> String {
    if content.is_empty() {
        return "-".into();
    }
    match serde_json::from_str::<serde_json::Value>(content) {
        Ok(v) => cut(&json_text(&v, false), max),
        Err(_) => cut(content, max),
    }
}

pub(super) fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// What a `remember` value covers, in words.
pub(super) fn covers(remember: &str, user: &str) -> String {
    match remember {
        "" | "once" => "this identical call once (the held call, or its retry)".into(),
        "session" => "every identical call in that MCP session".into(),
        d => format!("every identical call of {} for {}", shown(user), shown(d)),
    }
}

pub(super) fn request(info: &pb::ApprovalInfo) -> pb::ApprovalRequest {
    info.request.clone().unwrap_or_default()
}

/// `list`'s table, every cell escaped (by [`shown`], then again by `table_lines`).
pub(crate) fn list_lines(infos: &[pb::ApprovalInfo], now_ms: i64) -> Vec<String> {
    let rows: Vec<Vec<String>> = infos
        .iter()
        .map(|i| {
            let r = request(i);
            vec![
                cut(or_dash(&r.approval_id), 64),
                cut(or_dash(&r.agent_id), 64),
                cut(or_dash(&r.hostname), 40),
                cut(or_dash(&r.user), 32),
                cut(or_dash(&r.server_name), 32),
                cut(or_dash(&r.tool_name), 32),
                preview(&r.content, PREVIEW_CHARS),
                rel(r.requested_unix_ms, now_ms),
                rel(r.expires_unix_ms, now_ms),
                cut(or_dash(&i.state), 16),
            ]
        })
        .collect();
    table_lines(
        &[
            "ID",
            "AGENT",
            "HOST",
            "USER",
            "SERVER",
            "TOOL",
            "ARGUMENTS",
            "REQUESTED",
            "EXPIRES",
            "STATE",
        ],
        &rows,
    )
}

/// The decision in one phrase: `approved by bob (admin), remember session: "ticket 42"`.
pub(super) fn decision_text(i: &pb::ApprovalInfo) -> Option<String> {
    let d = i.decision.as_ref()?;
    let mut out = String::from(if d.timed_out && !d.approved {
        "no answer in time"
    } else if d.approved {
        "approved"
    } else {
        "denied"
    });
    if !d.decided_by.is_empty() {
        out.push_str(&format!(" by {}", cut(&d.decided_by, 128)));
    }
    if !d.channel.is_empty() {
        out.push_str(&format!(" ({})", cut(&d.channel, 16)));
    }
    if d.approved && !d.remember.is_empty() {
        out.push_str(&format!(", remember {}", cut(&d.remember, 16)));
    }
    if !d.reason.is_empty() {
        out.push_str(&format!(": \"{}\"", cut(&d.reason, 1024)));
    }
    Some(out)
}

/// `show`'s lines: one `label  value` line per field, then the argument preview, then how to
/// decide (pending only). Everything from the request escaped.
pub(crate) fn show_lines(i: &pb::ApprovalInfo, now_ms: i64) -> Vec<String> {
    let r = request(i);
    let mut out = Vec::new();
    let mut field = |label: &str, value: String| out.push(format!("{label:<12} {value}"));
    field("approval", shown(or_dash(&r.approval_id)));
    field("state", shown(or_dash(&i.state)));
    field(
        "agent",
        format!(
            "{} on {}",
            shown(or_dash(&r.agent_id)),
            shown(or_dash(&r.hostname))
        ),
    );
    field("user", shown(or_dash(&r.user)));
    field("client", shown(or_dash(&r.client_name)));
    field("session", shown(or_dash(&r.session_id)));
    field("server", shown(or_dash(&r.server_name)));
    field("tool", shown(or_dash(&r.tool_name)));
    field("why", shown(or_dash(&r.reason)));
    field(
        "approvers",
        if r.approvers.is_empty() {
            "-".into()
        } else {
            shown(&r.approvers.join(", "))
        },
    );
    field(
        "remember",
        format!(
            "{} (asked by the policy)",
            shown(if r.remember.is_empty() {
                "once"
            } else {
                &r.remember
            })
        ),
    );
    field("args sha256", shown(or_dash(&r.arguments_sha256)));
    field("requested", stamp(r.requested_unix_ms, now_ms));
    field(
        "held",
        if r.timeout_secs == 0 {
            "-".into()
        } else {
            format!("{}s by the proxy", r.timeout_secs)
        },
    );
    field("expires", stamp(r.expires_unix_ms, now_ms));
    if let Some(d) = decision_text(i) {
        field("decision", d);
        field("decided", stamp(i.decided_unix_ms, now_ms));
    }
    out.push("arguments (redacted preview):".into());
    let body = match serde_json::from_str::<serde_json::Value>(&r.content) {
        Ok(v) => json_text(&v, true),
        Err(_) if r.content.is_empty() => "(none)".into(),
        Err(_) => r.content.clone(),
    };
    let body = if body.chars().count() > SHOW_CHARS {
        let mut b: String = body.chars().take(SHOW_CHARS).collect();
        b.push_str("\n… (cut)");
        b
    } else {
        body
    };
    out.extend(body.lines().map(|l| format!("  {}", shown(l))));
    if i.state == "pending" {
        let id = shown(&r.approval_id);
        out.push(format!(
            "decide:      thothctl approvals approve {id} [--remember once|session|15m] [--comment C]"
        ));
        out.push(format!(
            "             thothctl approvals deny {id} [--reason R]"
        ));
    }
    out
}

/// One `watch` line: a new request, or what happened to one.
pub(crate) fn watch_line(i: &pb::ApprovalInfo, now_ms: i64) -> String {
    let r = request(i);
    let at = if i.state == "pending" || i.decided_unix_ms <= 0 {
        r.requested_unix_ms
    } else {
        i.decided_unix_ms
    };
    let when = time_of(at).map_or("-".into(), |t| {
        humantime::format_rfc3339_seconds(t).to_string()
    });
    let what = if i.state == "pending" {
        "requested"
    } else {
        &cut(or_dash(&i.state), 16)
    };
    let call = format!(
        "{} {}/{} for {} on {}",
        cut(or_dash(&r.approval_id), 64),
        cut(or_dash(&r.server_name), 64),
        cut(or_dash(&r.tool_name), 64),
        cut(or_dash(&r.user), 32),
        cut(or_dash(&r.hostname), 64),
    );
    if i.state == "pending" {
        format!(
            "{when}  {what:<9}  {call}  {}  expires {}",
            preview(&r.content, PREVIEW_CHARS),
            rel(r.expires_unix_ms, now_ms)
        )
    } else {
        let d = decision_text(i).map_or(String::new(), |d| format!("  {d}"));
        format!("{when}  {what:<9}  {call}{d}")
    }
}

/// What `approve`/`deny` print once the controller has recorded the decision.
pub(crate) fn decided_lines(i: &pb::ApprovalInfo) -> Vec<String> {
    let r = request(i);
    let call = format!(
        "{}/{} for {} on {}",
        shown(or_dash(&r.server_name)),
        shown(or_dash(&r.tool_name)),
        shown(or_dash(&r.user)),
        shown(or_dash(&r.hostname)),
    );
    let id = shown(or_dash(&r.approval_id));
    let d = i.decision.clone().unwrap_or_default();
    match i.state.as_str() {
        "approved" => vec![
            format!("approved {id}: {call}"),
            format!("  covers {}", covers(&d.remember, &r.user)),
            "  the agent releases the held call now, or lets the identical call through when it \
             is retried"
                .into(),
        ],
        "denied" => vec![format!(
            "denied {id}: {call}{}",
            if d.reason.is_empty() {
                String::new()
            } else {
                format!(": \"{}\"", shown(&d.reason))
            }
        )],
        other => vec![format!("{id} is {}: {call}", shown(or_dash(other)))],
    }
}

/// An approval as JSON (camelCase, times in RFC 3339). Printed through [`json_text`].
pub(crate) fn info_json(i: &pb::ApprovalInfo) -> serde_json::Value {
    let r = request(i);
    serde_json::json!({
        "approvalId": r.approval_id, "state": i.state, "agentId": r.agent_id,
        "hostname": r.hostname, "user": r.user, "clientName": r.client_name,
        "sessionId": r.session_id, "serverName": r.server_name, "toolName": r.tool_name,
        "content": r.content, "argumentsSha256": r.arguments_sha256, "reason": r.reason,
        "approvers": r.approvers, "remember": r.remember, "timeoutSecs": r.timeout_secs,
        "requestedAt": iso_ms(r.requested_unix_ms), "expiresAt": iso_ms(r.expires_unix_ms),
        "decision": i.decision.as_ref().map(|d| serde_json::json!({
            "approved": d.approved, "decidedBy": d.decided_by, "reason": d.reason,
            "channel": d.channel, "remember": d.remember, "timedOut": d.timed_out,
        })),
        "decidedAt": iso_ms(i.decided_unix_ms),
    })
}
