//! How thothctl shows things: aligned tables, times with their age, JSON documents.

use std::time::{Duration, SystemTime};

use thoth_proto::fleet as pb;

pub(crate) fn when(unix: i64) -> String {
    if unix <= 0 {
        return "never".into();
    }
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64);
    let stamp = humantime::format_rfc3339_seconds(t).to_string();
    let now = SystemTime::now();
    let rel = match now.duration_since(t) {
        Ok(d) => format!("{} ago", short(d)),
        Err(e) => format!("in {}", short(e.duration())),
    };
    format!("{stamp} ({rel})")
}

pub(crate) fn short(d: Duration) -> String {
    let s = d.as_secs();
    // Rounded to the nearest unit, so "expires in 7d" right after signing a 7-day bundle.
    match s {
        0..=59 => format!("{s}s"),
        60..=3569 => format!("{}m", (s + 30) / 60),
        3570..=84_599 => format!("{}h", (s + 1800) / 3600),
        _ => format!("{}d", (s + 43_200) / 86_400),
    }
}

pub(crate) fn iso(unix: i64) -> serde_json::Value {
    if unix <= 0 {
        return serde_json::Value::Null;
    }
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64))
        .to_string()
        .into()
}

/// `s` made safe for a terminal: control characters (C0, DEL, C1: ANSI escapes start with
/// one) and the bidirectional overrides that reorder what a reader sees, written as `\u{…}`.
/// Everything an agent reports passes through here before it is printed.
pub(crate) fn safe(s: &str) -> String {
    let bidi = |c: char| matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(|c| c.is_control() || bidi(c)) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() || bidi(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `s` made safe and cut to at most `max` characters (an ellipsis marks the cut).
pub(crate) fn clip(s: &str, max: usize) -> String {
    let s = safe(s);
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Rows as the lines of an aligned table, every cell made [`safe`].
pub(crate) fn table_lines(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| safe(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    )];
    out.extend(rows.iter().map(|r| line(r)));
    out
}

/// Prints rows as an aligned table.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    for l in table_lines(header, rows) {
        println!("{l}");
    }
}

pub(crate) fn version_json(v: &pb::PolicyVersion) -> serde_json::Value {
    serde_json::json!({
        "tenant": v.tenant,
        "version": v.version,
        "issuedAt": iso(v.issued_at_unix),
        "expiresAt": iso(v.expires_at_unix),
        "sha256": v.sha256,
        "pushedBy": v.pushed_by,
        "comment": v.comment,
        "rollbackOf": (v.rollback_of != 0).then_some(v.rollback_of),
        "keyId": v.key_id,
        "agentsApplied": v.agents_applied,
    })
}

pub(crate) fn token_json(t: &pb::TokenInfo) -> serde_json::Value {
    serde_json::json!({
        "id": t.id, "tenant": t.tenant, "createdAt": iso(t.created_at_unix),
        "expiresAt": iso(t.expires_at_unix), "maxUses": t.max_uses, "uses": t.uses,
        "labels": t.labels.iter().collect::<std::collections::BTreeMap<_, _>>(), "revoked": t.revoked, "createdBy": t.created_by,
        "comment": t.comment,
    })
}

pub(crate) fn agent_json(a: &pb::AgentInfo) -> serde_json::Value {
    let inv = a.inventory.as_ref().map(|i| {
        serde_json::json!({
            "hostname": i.hostname, "osName": i.os_name, "osVersion": i.os_version, "arch": i.arch,
            "cpus": i.cpus, "memoryBytes": i.memory_bytes, "uptimeSecs": i.uptime_secs,
            "configDirs": i.config_dirs, "governedServers": i.governed_servers,
            "governedConfigs": i.governed_configs,
            "mcpServers": i.mcp_servers.iter().map(mcp_server_json).collect::<Vec<_>>(),
            "mcpFiles": i.mcp_files.iter().map(mcp_file_json).collect::<Vec<_>>(),
        })
    });
    serde_json::json!({
        "agentId": a.agent_id, "tenant": a.tenant, "hostname": a.hostname,
        "labels": a.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "enrolledAt": iso(a.enrolled_at_unix), "lastSeen": iso(a.last_seen_unix),
        "appliedVersion": a.applied_version, "stale": a.stale, "lastError": a.last_error,
        "revoked": a.revoked, "certNotAfter": iso(a.cert_not_after_unix),
        "connected": a.connected, "agentVersion": a.agent_version, "inventory": inv,
    })
}

pub(crate) fn mcp_server_json(s: &pb::McpServer) -> serde_json::Value {
    serde_json::json!({
        "user": s.user, "client": s.client, "file": s.file, "name": s.name,
        "transport": s.transport, "target": s.target, "governed": s.governed,
        "reason": s.reason, "enabled": s.enabled, "scope": s.scope,
    })
}

pub(crate) fn mcp_file_json(f: &pb::McpFile) -> serde_json::Value {
    serde_json::json!({"user": f.user, "client": f.client, "path": f.path, "error": f.error})
}

pub(crate) fn labels_text(labels: &std::collections::HashMap<String, String>) -> String {
    let sorted: std::collections::BTreeMap<_, _> = labels.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
