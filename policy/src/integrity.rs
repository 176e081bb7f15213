//! Tool integrity settings: what a tool definition that changed, or looks poisoned, does
//! (`on_tool_change`, `on_suspicious_tool`), definitions admins pin ahead of time (`pins`),
//! annotations a policy may trust once a definition is pinned and accepted (`annotations`), and
//! secrets kept out of arguments and results (`dlp`). In `defaults` and per server entry; an
//! entry's value wins field by field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pattern::Pattern;

/// What a tool whose definition differs from the pinned one does (and a tool added to a
/// server whose list was pinned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnToolChange {
    /// Nothing but the `TOOL_DEFINITION_CHANGED` event.
    Allow,
    /// The event, and the tool stays usable (the default).
    #[default]
    Warn,
    /// The tool is hidden from `tools/list` and calls to it are denied until an admin accepts
    /// the new definition (`thothctl pins accept`, or a policy pin).
    Block,
    /// Calls to the tool need human approval; an approval accepts the definition for that user.
    StepUp,
}

/// What a tool whose definition looks poisoned (instructions aimed at the model) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSuspiciousTool {
    /// Nothing but the `TOOL_DEFINITION_SUSPICIOUS` event.
    Allow,
    /// The event, and the tool stays usable (the default).
    #[default]
    Warn,
    /// Hidden and denied, unless an admin accepted exactly this definition.
    Block,
}

/// DLP on a call's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpArguments {
    /// Not scanned.
    Allow,
    /// Scanned; a finding is recorded on the call's events (never the secret).
    Warn,
    /// A call carrying a secret is denied, saying which argument and detector.
    Block,
}

/// DLP on a call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpResults {
    /// Not scanned.
    Allow,
    /// Scanned; a finding is recorded on the call's events (never the secret).
    Warn,
    /// The matched text is replaced (`[REDACTED:<detector>]`) in the result's strings.
    Redact,
    /// The result is replaced with an `isError` result saying why.
    Block,
}

/// The DLP detectors a policy may name in `dlp.detectors` (the proxy's detectors have exactly
/// these ids; a test there keeps them equal).
pub const DLP_DETECTORS: [&str; 15] = [
    "aws_access_key",
    "aws_secret_key",
    "gcp_service_account",
    "azure_storage_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "stripe_key",
    "private_key",
    "jwt",
    "connection_string",
    "generic_secret",
    "openai_key",
    "card_number",
    "iban",
];

/// The detectors used when a policy names none: every secret detector; personal data
/// (`card_number`, `iban`) only when named.
pub const DEFAULT_DLP_DETECTORS: [&str; 13] = [
    "aws_access_key",
    "aws_secret_key",
    "gcp_service_account",
    "azure_storage_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "stripe_key",
    "private_key",
    "jwt",
    "connection_string",
    "generic_secret",
    "openai_key",
];

/// `dlp:` in `defaults` or a server entry; absent fields come from `defaults.dlp`, then the
/// built-in defaults (`arguments: warn`, `results: warn`, every secret detector, no allow
/// pattern).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpSettings {
    /// What a secret in a call's arguments does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<DlpArguments>,
    /// What a secret in a call's result does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<DlpResults>,
    /// The detectors to run (ids from [`DLP_DETECTORS`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_detectors"
    )]
    pub detectors: Option<Vec<String>>,
    /// Matches to let through: a finding whose matched text matches one of these regexes (in
    /// full) is ignored (e.g. the documented example keys of a vendor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_patterns: Option<Vec<Pattern>>,
}

fn de_detectors<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for id in &list {
        if !DLP_DETECTORS.contains(&id.as_str()) {
            return Err(serde::de::Error::custom(format!(
                "unknown DLP detector {id:?} (known: {})",
                DLP_DETECTORS.join(", ")
            )));
        }
    }
    Ok(Some(list))
}

/// What a policy may do with a tool's annotations once its definition is pinned and accepted
/// (`servers[].annotations`). Unpinned, unaccepted or changed definitions are never trusted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationRules {
    /// `approve`: a tool whose accepted definition says `readOnlyHint: true` is treated as in
    /// the approved scope (the deny list and constraints still apply).
    #[serde(default)]
    pub read_only: ReadOnlyUse,
    /// `step_up` or `deny`: a tool whose accepted definition is destructive (`readOnlyHint`
    /// not true and `destructiveHint` not false, as MCP defines) needs approval, or is denied,
    /// even when in the approved scope.
    #[serde(default)]
    pub destructive: DestructiveUse,
}

/// [`AnnotationRules::read_only`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadOnlyUse {
    /// Annotations change nothing (the default).
    #[default]
    Ignore,
    /// Accepted read-only tools are approved.
    Approve,
}

/// [`AnnotationRules::destructive`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestructiveUse {
    /// Annotations change nothing (the default).
    #[default]
    Ignore,
    /// Accepted destructive tools need approval.
    StepUp,
    /// Accepted destructive tools are denied.
    Deny,
}

/// Annotations of a tool whose definition is pinned and accepted (the proxy passes `None` for
/// any other tool): the only annotations [`crate::evaluate_with`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedHints {
    /// `readOnlyHint: true`.
    pub read_only: bool,
    /// Not read-only and `destructiveHint` not `false`.
    pub destructive: bool,
}

impl TrustedHints {
    /// The hints of a tool definition's `annotations` object, read as MCP defines them:
    /// read-only when `readOnlyHint` is `true`; destructive when not read-only and
    /// `destructiveHint` is not `false` (absent or not a boolean counts as destructive, MCP's
    /// default). Give it only the annotations of a pinned and accepted definition.
    pub fn from_annotations(annotations: Option<&serde_json::Value>) -> TrustedHints {
        let hint = |name: &str| {
            annotations
                .and_then(|a| a.get(name))
                .and_then(|v| v.as_bool())
        };
        let read_only = hint("readOnlyHint") == Some(true);
        TrustedHints {
            read_only,
            destructive: !read_only && hint("destructiveHint") != Some(false),
        }
    }
}

/// Most pins one server entry may hold.
pub const MAX_PINS: usize = 1000;

/// Longest tool name a pin may name, in bytes.
pub const MAX_PIN_TOOL_NAME: usize = 256;

/// Reads `pins:`, refusing more than [`MAX_PINS`] entries (without reading past the first one
/// too many) and empty or over-long tool names.
pub(crate) fn de_pins<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Pins>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Pins;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of tool name to digest (\"sha256:<64 hex digits>\")")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Pins, A::Error> {
            use serde::de::Error;
            let mut pins = Pins::new();
            while let Some(tool) = map.next_key::<String>()? {
                if pins.len() == MAX_PINS {
                    return Err(A::Error::custom(format!(
                        "at most {MAX_PINS} pins per server entry"
                    )));
                }
                if tool.is_empty() || tool.len() > MAX_PIN_TOOL_NAME {
                    let shown: String = tool.chars().take(40).collect();
                    return Err(A::Error::custom(format!(
                        "pinned tool name {shown:?}{} must have 1 to {MAX_PIN_TOOL_NAME} bytes \
                         (it has {})",
                        if shown.len() < tool.len() { "…" } else { "" },
                        tool.len()
                    )));
                }
                let digest: PinDigest = map.next_value()?;
                if pins.insert(tool.clone(), digest).is_some() {
                    return Err(A::Error::custom(format!("tool {tool:?} is pinned twice")));
                }
            }
            Ok(pins)
        }
    }
    d.deserialize_map(V).map(Some)
}

/// Tool definitions an admin pinned ahead of time: tool name → digest (64 hex digits, see
/// `thoth_proto::pins`). A pinned definition is accepted; any other definition of that tool
/// is a change.
pub type Pins = BTreeMap<String, PinDigest>;

/// A pinned digest: 64 lowercase hex digits, optionally written `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PinDigest(String);

impl PinDigest {
    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PinDigest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let hex = s.strip_prefix("sha256:").unwrap_or(&s);
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(PinDigest(hex.to_owned()))
        } else {
            Err(format!(
                "pin {s:?} is not a tool digest (64 lowercase hex digits, optionally after \
                 \"sha256:\"; `thothctl pins list --json` shows them)"
            ))
        }
    }
}

impl From<PinDigest> for String {
    fn from(d: PinDigest) -> String {
        d.0
    }
}

/// The effective DLP settings of one server.
#[derive(Debug, Clone)]
pub struct Dlp {
    /// What a secret in arguments does.
    pub arguments: DlpArguments,
    /// What a secret in results does.
    pub results: DlpResults,
    /// Detector ids to run.
    pub detectors: Vec<String>,
    /// Matches to let through.
    pub allow_patterns: Vec<Pattern>,
}

/// The effective tool-integrity settings of one server.
#[derive(Debug, Clone, Copy)]
pub struct Integrity<'p> {
    /// `on_tool_change`.
    pub on_tool_change: OnToolChange,
    /// `on_suspicious_tool`.
    pub on_suspicious_tool: OnSuspiciousTool,
    /// The entry's `pins` (empty for an unknown server).
    pub pins: Option<&'p Pins>,
    /// The entry's `annotations`.
    pub annotations: AnnotationRules,
}
