//! What the dialog shows: its title and buttons, and the prompt as plain text, cleaned (no
//! control, bidi or invisible format characters) and cut to a readable length.

#[cfg(unix)]
use std::time::Instant;

use super::super::types::Prompt;

/// The dialog's window title (tests find the window by it).
pub const TITLE: &str = "Thoth: approval needed";
/// The button that lets the call through.
pub const ALLOW: &str = "Allow";
/// The button that refuses it (the default button: Return or Escape deny).
pub const DENY: &str = "Deny";
/// The most characters of the argument preview shown.
pub const PREVIEW_CHARS: usize = 800;
/// The most characters of a name (client, server, tool) shown.
const NAME_CHARS: usize = 120;
/// The most characters of the policy's reason shown.
const REASON_CHARS: usize = 300;
/// The most lines of the argument preview shown.
const PREVIEW_LINES: usize = 20;

/// Whether `c` is never shown: control characters (C0, DEL, C1), bidi controls, and invisible
/// format characters that could hide or reorder what the user reads.
pub(super) fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c as u32,
            0x00AD
                | 0x034F
                | 0x061C
                | 0x115F
                | 0x1160
                | 0x17B4
                | 0x17B5
                | 0x180B..=0x180F
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x206F
                | 0x3164
                | 0xFE00..=0xFE0F
                | 0xFEFF
                | 0xFFA0
                | 0xFFF0..=0xFFFB
                | 0xE0000..=0xE0FFF
        )
}

/// `s` on one line, hidden characters dropped (tabs and line breaks become spaces), cut to
/// `max` characters with an ellipsis.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        let c = match c {
            '\t' | '\n' | '\r' | '\u{2028}' | '\u{2029}' => ' ',
            c if hidden(c) => continue,
            c => c,
        };
        if n == max {
            out.push('…');
            break;
        }
        out.push(c);
        n += 1;
    }
    out
}

/// The argument preview as shown: hidden characters dropped (line breaks kept, at most
/// [`PREVIEW_LINES`] lines), cut to `max` characters with an ellipsis.
pub fn preview(s: &str, max: usize) -> String {
    let mut out = String::new();
    let (mut n, mut lines) = (0, 1);
    for c in s.chars() {
        let c = match c {
            '\r' => continue,
            '\n' | '\u{2028}' | '\u{2029}' => '\n',
            '\t' => ' ',
            c if hidden(c) => continue,
            c => c,
        };
        if c == '\n' {
            lines += 1;
        }
        if n == max || lines > PREVIEW_LINES {
            out.push('…');
            break;
        }
        out.push(c);
        n += 1;
    }
    out
}

/// The most characters of one argument's line.
pub(super) const ARG_LINE_CHARS: usize = 120;
/// The most characters of the line naming the arguments that did not fit.
const AND_CHARS: usize = 240;
/// The proxy's preview key naming the keys it could not fit (its note is shown last).
const PROXY_MORE_KEY: &str = "…keys not shown";

/// The arguments as shown: for a JSON object, one line per top-level key (`key: value`), the
/// shortest values first, each line cut to [`ARG_LINE_CHARS`]; the keys that do not fit in
/// [`PREVIEW_LINES`] lines or [`PREVIEW_CHARS`] characters are named on a last line
/// ("and: path, mode"), never dropped silently. Anything else as [`preview`] shows it.
pub fn arguments(content: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(content) else {
        return preview(content, PREVIEW_CHARS);
    };
    let mut note = None;
    let mut items: Vec<(String, String, usize)> = Vec::new();
    for (k, v) in &map {
        let val = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if k == PROXY_MORE_KEY {
            note = Some(one_line(&val, AND_CHARS));
            continue;
        }
        let n = val.chars().count();
        items.push((one_line(k, 60), val, n));
    }
    items.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    let mut lines: Vec<String> = Vec::new();
    let mut used = 0;
    let mut left: Vec<&str> = Vec::new();
    for (k, v, _) in &items {
        let line = one_line(&format!("{k}: {v}"), ARG_LINE_CHARS);
        let n = line.chars().count() + 1;
        if left.is_empty() && lines.len() + 2 < PREVIEW_LINES && used + n <= PREVIEW_CHARS {
            used += n;
            lines.push(line);
        } else {
            left.push(k);
        }
    }
    if !left.is_empty() {
        let mut and = String::from("and: ");
        for (i, k) in left.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            if and.chars().count() + sep.len() + k.chars().count() > AND_CHARS {
                and.push_str(&format!("{sep}… ({} more keys)", left.len() - i));
                break;
            }
            and.push_str(sep);
            and.push_str(k);
        }
        lines.push(and);
    }
    if let Some(n) = note {
        lines.push(format!("not shown by the proxy: {n}"));
    }
    lines.join("\n")
}

/// What an approval covers, in words.
fn covers(remember: &str) -> String {
    match remember {
        "" | "once" => "Allow lets this exact call run once.".into(),
        "session" => "Allow lets this exact call run again for the rest of this session.".into(),
        d => format!(
            "Allow lets this exact call run again for {}.",
            one_line(d, 16)
        ),
    }
}

/// The dialog's text (plain; the helper is told not to read markup).
pub fn text(req: &Prompt, seconds_left: u64) -> String {
    let client = one_line(&req.client_name, NAME_CHARS);
    let who = if client.trim().is_empty() {
        "An AI assistant".to_owned()
    } else {
        format!("The AI assistant \"{client}\"")
    };
    let mut t = format!(
        "{who} wants to call a tool that needs your approval.\n\n\
         Server: {}\nTool: {}\n",
        one_line(&req.server, NAME_CHARS),
        one_line(&req.tool, NAME_CHARS),
    );
    let reason = one_line(&req.reason, REASON_CHARS);
    if !reason.trim().is_empty() {
        t.push_str(&format!("Why: {reason}\n"));
    }
    let args = arguments(&req.content);
    t.push_str("Arguments:\n");
    t.push_str(if args.trim().is_empty() {
        "(none)"
    } else {
        &args
    });
    t.push_str(&format!(
        "\n\n{}\nNo answer within {seconds_left} s denies it.\nApproval {}",
        covers(&req.remember),
        one_line(&req.approval_id, 64),
    ));
    t
}

/// Seconds from now to `deadline`, rounded to the nearest (at least 1): what the dialog's own
/// timeout is set to.
#[cfg(unix)]
pub(super) fn seconds_left(deadline: Instant) -> u64 {
    let ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    u64::try_from(ms.saturating_add(500) / 1000)
        .unwrap_or(u64::MAX)
        .max(1)
}
