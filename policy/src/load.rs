//! Parsing policy text (YAML or JSON) into a validated [`Policy`], with errors that name the file,
//! the line and column, and the field.

use std::fmt;

use crate::document::Policy;

/// Largest policy document accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 4 << 20;

/// The text format of a policy document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (what admins keep in git).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// Chooses by file name (`.json` is JSON) and, failing that, by the first non-blank
    /// character (`{` is JSON). Everything else is YAML.
    pub fn detect(file_name: &str, text: &str) -> Format {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            return Format::Json;
        }
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            return Format::Yaml;
        }
        if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The source the text came from (a file path, or a label such as `<bundle v3>`).
    pub source_name: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Dotted path of the offending field (`servers[1].enforcement`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source_name)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Parses and validates a policy document.
///
/// `source_name` is only used in error messages.
pub fn parse_policy(text: &str, source_name: &str, format: Format) -> Result<Policy, PolicyError> {
    let err = |line, column, field: Option<String>, message: String| PolicyError {
        source_name: source_name.to_owned(),
        line,
        column,
        field,
        message,
    };
    if text.len() > MAX_POLICY_BYTES {
        return Err(err(
            None,
            None,
            None,
            format!(
                "document is {} bytes; the limit is {MAX_POLICY_BYTES}",
                text.len()
            ),
        ));
    }
    if text.trim().is_empty() {
        return Err(err(None, None, None, "document is empty".into()));
    }
    match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let result: Result<Policy, _> = serde_path_to_error::deserialize(&mut de);
            let policy = result.map_err(|e| {
                let field = field_of(e.path());
                let inner = e.into_inner();
                let message = strip_position(&inner.to_string());
                err(Some(inner.line()), Some(inner.column()), field, message)
            })?;
            de.end().map_err(|e| {
                err(
                    Some(e.line()),
                    Some(e.column()),
                    None,
                    strip_position(&e.to_string()),
                )
            })?;
            Ok(policy)
        }
        Format::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            let result: Result<Policy, _> = serde_path_to_error::deserialize(de);
            result.map_err(|e| {
                let field = field_of(e.path());
                let inner = e.into_inner();
                let (line, column) = match inner.location() {
                    Some(l) => {
                        let (line, col) = refine_yaml_location(text, l.line(), l.column(), &field);
                        (Some(line), Some(col))
                    }
                    None => (None, None),
                };
                let message = strip_yaml_path(&strip_position(&inner.to_string()));
                err(line, column, field, message)
            })
        }
    }
}

/// serde_yaml_ng reports an error in a mapping's value at the start of the mapping. When the
/// field path ends in a key, move the position forward to where that key is written (block or
/// flow style), so that the line printed is the one to fix.
fn refine_yaml_location(
    text: &str,
    line: usize,
    column: usize,
    field: &Option<String>,
) -> (usize, usize) {
    let Some(field) = field else {
        return (line, column);
    };
    let last = field.rsplit('.').next().unwrap_or(field);
    if last.ends_with(']') || last.is_empty() {
        return (line, column);
    }
    for (i, l) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        let from = if i + 1 == line {
            column.saturating_sub(1).min(l.len())
        } else {
            0
        };
        let Some(rest) = l.get(from..) else { continue };
        let mut search = 0;
        while let Some(pos) = rest[search..].find(last) {
            let at = search + pos;
            let before = rest[..at].chars().next_back();
            let after = rest[at + last.len()..].trim_start();
            let starts_key =
                before.is_none_or(|c| c.is_whitespace() || c == '{' || c == ',' || c == '-');
            if starts_key && after.starts_with(':') {
                return (i + 1, from + at + 1);
            }
            search = at + last.len();
        }
    }
    (line, column)
}

/// serde_yaml_ng starts some messages with its own (coarser) path, `servers[0]: ...`; the field is
/// reported separately.
fn strip_yaml_path(msg: &str) -> String {
    if let Some((head, rest)) = msg.split_once(": ") {
        let is_path = !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_[].".contains(c));
        if is_path {
            return rest.to_owned();
        }
    }
    msg.to_owned()
}

fn field_of(path: &serde_path_to_error::Path) -> Option<String> {
    let s = path.to_string();
    (s != "." && !s.is_empty()).then_some(s)
}

/// Both serde_json and serde_yaml_ng append "at line X column Y" to their messages; the position
/// is reported separately, so it is removed from the text.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{Approver, Remember};

    fn yaml(text: &str) -> Result<Policy, PolicyError> {
        parse_policy(text, "p.yaml", Format::Yaml)
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let e = yaml("servers:\n  - name: fs\n    enforcment: block\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("unknown field `enforcment`"), "{e}");
        assert!(e.to_string().starts_with("p.yaml:3:"), "{e}");
    }

    #[test]
    fn bad_glob_and_regex_are_located() {
        let e = yaml("servers:\n  - name: fs\n    approved_scope: [ok, \"[\"]\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(
            e.field.as_deref(),
            Some("servers[0].approved_scope[1]"),
            "{e}"
        );
        let e = yaml(
            "servers:\n  - name: fs\n    constraints:\n      - tool: x\n        arg: a\n        regex: \"(\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("invalid regex"), "{e}");
    }

    #[test]
    fn semantic_errors() {
        let e = yaml("defaults:\n  progressive: {warn: 5, block_after: 2}\n").unwrap_err();
        assert!(
            e.message.contains("block_after (2) must be at least"),
            "{e}"
        );
        assert_eq!(e.field.as_deref(), Some("defaults.progressive"));
        let e = yaml("servers:\n  - enforcement: block\n").unwrap_err();
        assert!(e.message.contains("needs `name`"), "{e}");
        let e = yaml("defaults:\n  approval_timeout_secs: 0\n").unwrap_err();
        assert!(e.message.contains("between 1 and 600"), "{e}");
        let e = yaml("servers:\n  - name: x\n    enforcement: allow\n").unwrap_err();
        assert!(e.message.contains("unknown variant `allow`"), "{e}");
        let e = yaml("servers:\n  - name: x\n    constraints: [{arg: p}]\n").unwrap_err();
        assert!(e.message.contains("has no check"), "{e}");
    }

    #[test]
    fn approval_fields_are_validated_and_located() {
        let e = yaml("defaults:\n  enforcement: step_up\n  approvers: []\n").unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(3), Some("defaults.approvers")),
            "{e}"
        );
        assert!(e.message.contains("approvers is empty"), "{e}");
        assert!(e.to_string().starts_with("p.yaml:3:"), "{e}");
        let e = yaml("servers:\n  - name: fs\n    approvers: [user, admin, user]\n").unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(3), Some("servers[0].approvers")),
            "{e}"
        );
        assert!(e.message.contains("names user twice"), "{e}");
        let e = yaml("servers:\n  - name: fs\n    approvers:\n      - user\n      - root\n")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("servers[0].approvers[1]"), "{e}");
        assert!(e.message.contains("unknown variant `root`"), "{e}");
        let e = yaml("servers:\n  - name: fs\n    approvers: user\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("servers[0].approvers"), "{e}");
        let e = yaml("servers:\n  - name: fs\n\n    approval_remember: 25h\n").unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(4), Some("servers[0].approval_remember")),
            "{e}"
        );
        assert!(e.message.contains("between 1s and 24h"), "{e}");
        for bad in [
            "forever", "1d", "\"15 m\"", "0s", "15", "[once]", "-1h", "1h30m",
        ] {
            let e = yaml(&format!("defaults:\n  approval_remember: {bad}\n")).unwrap_err();
            assert_eq!(
                e.field.as_deref(),
                Some("defaults.approval_remember"),
                "{bad}: {e}"
            );
            assert_eq!(e.line, Some(2), "{bad}: {e}");
        }
        let e = parse_policy(
            "{\"servers\": [{\"name\": \"x\",\n \"approval_remember\": \"2 h\"}]}",
            "p.json",
            Format::Json,
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(
            e.field.as_deref(),
            Some("servers[0].approval_remember"),
            "{e}"
        );
        assert!(e.message.contains("\"2 h\" is not once, session"), "{e}");

        let p = yaml(
            "defaults:\n  approvers: [admin]\n  approval_remember: 15m\nservers:\n  - name: a\n    approvers: [admin, user]\n    approval_remember: session\n  - name: b\n",
        )
        .unwrap();
        assert_eq!(p.defaults.approvers, [Approver::Admin]);
        assert_eq!(p.defaults.approval_remember.to_string(), "15m");
        assert_eq!(
            p.servers[0].approvers.as_deref(),
            Some(&[Approver::Admin, Approver::User][..])
        );
        assert_eq!(p.servers[0].approval_remember, Some(Remember::Session));
        assert_eq!(p.servers[1].approvers, None);
        let d = yaml("servers: []\n").unwrap().defaults;
        assert_eq!(d.approvers, [Approver::User, Approver::Admin]);
        assert_eq!(d.approval_remember, Remember::Once);
        // Written out as the wire strings (what bundles and `--json` show).
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["defaults"]["approval_remember"], "15m");
        assert_eq!(v["defaults"]["approvers"], serde_json::json!(["admin"]));
        assert_eq!(
            v["servers"][0]["approvers"],
            serde_json::json!(["admin", "user"])
        );
        assert_eq!(v["servers"][0]["approval_remember"], "session");
        assert!(v["servers"][1].get("approvers").is_none(), "{v}");
    }

    #[test]
    fn managed_clients_are_known_ids() {
        let p = yaml("managed_clients: [cursor, claude-code]\n").unwrap();
        let ids: Vec<&str> = p
            .managed_clients
            .as_deref()
            .unwrap()
            .iter()
            .map(|c| c.as_str())
            .collect();
        assert_eq!(ids, ["cursor", "claude-code"]);
        assert!(yaml("servers: []\n").unwrap().managed_clients.is_none());
        let e = yaml("managed_clients:\n  - cursor\n  - zed\n").unwrap_err();
        assert!(e.message.contains("unknown MCP client \"zed\""), "{e}");
        assert!(
            e.message.contains("claude-desktop, claude-extension"),
            "{e}"
        );
        assert_eq!(e.field.as_deref(), Some("managed_clients[1]"), "{e}");
        let e =
            parse_policy("{\"managed_clients\": \"cursor\"}", "p.json", Format::Json).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("managed_clients"), "{e}");
    }

    #[test]
    fn json_errors_are_located() {
        let e = parse_policy(
            "{\n \"servers\": [\n {\"nme\": 1}]}",
            "p.json",
            Format::Json,
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("unknown field `nme`"), "{e}");
        let e = parse_policy("{\"servers\": []} trailing", "p.json", Format::Json).unwrap_err();
        assert!(e.message.contains("trailing"), "{e}");
    }

    #[test]
    fn empty_and_huge_documents_are_refused() {
        assert!(yaml("  \n").unwrap_err().message.contains("empty"));
        let big = "#".repeat(MAX_POLICY_BYTES + 1);
        assert!(yaml(&big).unwrap_err().message.contains("limit"));
    }

    #[test]
    fn yaml_and_json_give_the_same_policy() {
        let y = yaml("version: 7\nservers:\n  - name: fs\n    approved_scope: [read_*]\n").unwrap();
        let j = parse_policy(
            r#"{"version": 7, "servers": [{"name": "fs", "approved_scope": ["read_*"]}]}"#,
            "p",
            Format::detect("p", "{"),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&y).unwrap(),
            serde_json::to_string(&j).unwrap()
        );
    }
}
