//! The policy document: what admins write, keep in git, and push. Every field is documented here;
//! `deny_unknown_fields` everywhere, so a typo is an error, never a silently ignored rule.

use serde::{Deserialize, Serialize};

use crate::approval::{Approver, DEFAULT_APPROVERS, Remember, check_approvers};
use crate::integrity::{AnnotationRules, DlpSettings, OnSuspiciousTool, OnToolChange, Pins};
use crate::pattern::{PathGlob, Pattern, PatternError, ToolGlob};

/// A whole policy document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Human name of the policy, shown in denials and events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Version label for standalone use (`thoth run --policy`). Signed bundles carry their own
    /// version, which takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionLabel>,
    /// Settings that apply wherever a server entry does not say otherwise.
    #[serde(default)]
    pub defaults: Defaults,
    /// Server entries, tried in order; the first whose `name` and `command` both match governs.
    #[serde(default)]
    pub servers: Vec<ServerRule>,
    /// The MCP clients ("hosts") whose configs the agents keep wrapped, by id (see
    /// [`KNOWN_CLIENTS`]); absent: every client (an agent's own `clients` setting may narrow
    /// it). A client left out is no longer managed: its files are left as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_clients: Option<Vec<ClientId>>,
}

/// The MCP client ids a policy may name in `managed_clients` (the agent's host registry,
/// `thoth_hosts::host::all()`, has exactly these; a test there keeps them equal).
pub const KNOWN_CLIENTS: [&str; 7] = [
    "claude-desktop",
    "claude-extension",
    "claude-code",
    "cursor",
    "vscode",
    "windsurf",
    "codex",
];

/// An MCP client id, one of [`KNOWN_CLIENTS`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    /// The id (`cursor`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientId {
    type Error = RuleError;
    fn try_from(id: String) -> Result<Self, RuleError> {
        if KNOWN_CLIENTS.contains(&id.as_str()) {
            Ok(ClientId(id))
        } else {
            Err(RuleError::UnknownClient(id))
        }
    }
}

impl From<ClientId> for String {
    fn from(id: ClientId) -> String {
        id.0
    }
}

/// A version label: YAML lets admins write `version: 3` or `version: "2026-11-23.1"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum VersionLabel {
    /// `version: 3`
    Number(u64),
    /// `version: "2026-11-23.1"`
    Text(String),
}

impl std::fmt::Display for VersionLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionLabel::Number(n) => write!(f, "{n}"),
            VersionLabel::Text(s) => f.write_str(s),
        }
    }
}

/// How calls outside a server's approved scope are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Allow everything; events record what would have been blocked.
    Observe,
    /// Warn, then require approval, then block, as out-of-scope calls accumulate in a session.
    Progressive,
    /// Out-of-scope calls need human approval.
    StepUp,
    /// Out-of-scope calls are denied.
    Block,
}

/// What happens to calls on a server that no entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownServers {
    /// Allow every call.
    Allow,
    /// Allow every call; events say `would_block`.
    Observe,
    /// Deny every call.
    Block,
}

/// Defaults for the whole document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Enforcement for entries that do not set `enforcement`. Default: `block`.
    #[serde(default = "Defaults::default_enforcement")]
    pub enforcement: Enforcement,
    /// Treatment of servers no entry matches. Default: `block` (fail closed).
    #[serde(default = "Defaults::default_unknown")]
    pub unknown_servers: UnknownServers,
    /// Thresholds of the `progressive` mode.
    #[serde(default)]
    pub progressive: Progressive,
    /// Seconds to wait for a human approval before denying. Default 45 (below Claude Desktop's
    /// ~60 s tool-call timeout). Between 1 and 600.
    #[serde(default = "Defaults::default_timeout", deserialize_with = "de_timeout")]
    pub approval_timeout_secs: u64,
    /// Who may approve a call that needs approval: `[user]` (a dialog on the user's desktop),
    /// `[admin]` (the controller's approval queue) or `[user, admin]` (both are asked; the first
    /// decisive answer wins). Not empty, no approver twice. Default `[user, admin]`.
    #[serde(
        default = "Defaults::default_approvers",
        deserialize_with = "de_approvers"
    )]
    pub approvers: Vec<Approver>,
    /// How long an approval covers the identical call (same user, server, tool and arguments)
    /// again: `once` (one use), `session` (the rest of that MCP session, at most 24 h) or a
    /// duration `<n>s`, `<n>m`, `<n>h` (any session of that user; at most `24h`). Default `once`.
    #[serde(default)]
    pub approval_remember: Remember,
    /// What behavioral events keep of call content.
    #[serde(default)]
    pub events: EventSettings,
    /// What a tool whose definition changed since it was pinned does: `allow`, `warn` (the
    /// default), `block` or `step_up`.
    #[serde(default)]
    pub on_tool_change: OnToolChange,
    /// What a tool whose definition looks poisoned does: `allow`, `warn` (the default), `block`.
    #[serde(default)]
    pub on_suspicious_tool: OnSuspiciousTool,
    /// Secrets in arguments and results.
    #[serde(default)]
    pub dlp: DlpSettings,
}

/// Privacy of event content: a size cap (the SHA-256 of the whole is kept when cut) and extra
/// key words whose values are masked, besides the built-in ones (`password`, `token`, `secret`,
/// `api_key`, `authorization`…).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Longest content kept, in bytes (64 to 1048576). Default: 16384, or `--content-max-bytes`.
    #[serde(default, deserialize_with = "de_content_max")]
    pub content_max_bytes: Option<usize>,
    /// More key words to mask (case, `_` and `-` ignored; a key containing one is masked).
    #[serde(default, deserialize_with = "de_redact_keys")]
    pub redact_keys: Vec<String>,
}

fn de_content_max<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let v = usize::deserialize(d)?;
    if !(64..=1 << 20).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "content_max_bytes must be between 64 and 1048576, not {v}"
        )));
    }
    Ok(Some(v))
}

fn de_redact_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if v.len() > 100 {
        return Err(serde::de::Error::custom("at most 100 redact_keys"));
    }
    for k in &v {
        let folded: String = k.chars().filter(|c| *c != '_' && *c != '-').collect();
        if folded.is_empty() || k.len() > 64 {
            return Err(serde::de::Error::custom(format!(
                "redact_keys entry {k:?} must have 1-64 characters besides '_' and '-'"
            )));
        }
    }
    Ok(v)
}

impl Defaults {
    fn default_enforcement() -> Enforcement {
        Enforcement::Block
    }
    fn default_unknown() -> UnknownServers {
        UnknownServers::Block
    }
    fn default_timeout() -> u64 {
        45
    }
    fn default_approvers() -> Vec<Approver> {
        DEFAULT_APPROVERS.to_vec()
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            enforcement: Self::default_enforcement(),
            unknown_servers: Self::default_unknown(),
            progressive: Progressive::default(),
            approval_timeout_secs: Self::default_timeout(),
            approvers: Self::default_approvers(),
            approval_remember: Remember::default(),
            events: EventSettings::default(),
            on_tool_change: OnToolChange::default(),
            on_suspicious_tool: OnSuspiciousTool::default(),
            dlp: DlpSettings::default(),
        }
    }
}

/// Thresholds of the `progressive` mode, counted per session over out-of-scope calls: calls
/// `1..=warn` are allowed with a warning, calls up to `block_after` need approval, later ones are
/// denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawProgressive")]
pub struct Progressive {
    /// Out-of-scope calls allowed with a warning. Default 2.
    pub warn: u32,
    /// Out-of-scope calls after which every further one is denied. Default 4. At least `warn`.
    pub block_after: u32,
}

impl Default for Progressive {
    fn default() -> Self {
        Self {
            warn: 2,
            block_after: 4,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgressive {
    #[serde(default)]
    warn: Option<u32>,
    #[serde(default)]
    block_after: Option<u32>,
}

/// Why an entry of a policy document is not valid (beyond its syntax).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// `progressive.block_after` below `progressive.warn`.
    #[error("progressive.block_after ({block_after}) must be at least progressive.warn ({warn})")]
    ProgressiveOrder {
        /// `warn` as given or defaulted.
        warn: u32,
        /// `block_after` as given or defaulted.
        block_after: u32,
    },
    /// A server entry without `name` or `command`.
    #[error(
        "a server entry needs `name` (a glob over the server name), `command` (a glob over its command line) or both"
    )]
    UnnamedServer,
    /// A constraint whose `arg` is not a (dotted) argument name.
    #[error("constraint arg {0:?} is not an argument name")]
    ConstraintArg(String),
    /// A constraint without any check.
    #[error("constraint on arg {0:?} has no check: give path_glob, regex or one_of")]
    NoCheck(String),
    /// An empty `path_glob` list.
    #[error("path_glob is empty: it would refuse every value")]
    EmptyPathGlob,
    /// An empty `one_of` list.
    #[error("one_of is empty: it would refuse every value")]
    EmptyOneOf,
    /// A pattern of the entry does not parse.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// `managed_clients` names a client Thoth does not know.
    #[error("unknown MCP client {0:?} (known: {known})", known = KNOWN_CLIENTS.join(", "))]
    UnknownClient(String),
}

impl TryFrom<RawProgressive> for Progressive {
    type Error = RuleError;
    fn try_from(raw: RawProgressive) -> Result<Self, RuleError> {
        let d = Progressive::default();
        let warn = raw.warn.unwrap_or(d.warn);
        let block_after = raw.block_after.unwrap_or(d.block_after.max(warn));
        if block_after < warn {
            return Err(RuleError::ProgressiveOrder { warn, block_after });
        }
        Ok(Progressive { warn, block_after })
    }
}

/// One server entry, validated: it names a server (by `name`, `command` or both).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ServerFields", into = "ServerFields")]
pub struct ServerRule(ServerFields);

impl std::ops::Deref for ServerRule {
    type Target = ServerFields;
    fn deref(&self) -> &ServerFields {
        &self.0
    }
}

impl From<ServerRule> for ServerFields {
    fn from(rule: ServerRule) -> Self {
        rule.0
    }
}

impl TryFrom<ServerFields> for ServerRule {
    type Error = RuleError;
    fn try_from(fields: ServerFields) -> Result<Self, RuleError> {
        if fields.name.is_none() && fields.command.is_none() {
            return Err(RuleError::UnnamedServer);
        }
        Ok(ServerRule(fields))
    }
}

/// The fields of a server entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFields {
    /// Glob over the server name (`thoth run --server NAME`, the key in `mcpServers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ToolGlob>,
    /// Glob over the server's command line: it matches when any one token (the program or an
    /// argument) matches, also with an npm `@version` suffix removed, so
    /// `"@modelcontextprotocol/server-filesystem"` matches `npx -y
    /// @modelcontextprotocol/server-filesystem@2026.8.31 /data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<ToolGlob>,
    /// Enforcement of this server; `defaults.enforcement` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Tools (globs) that are approved: allowed in every mode, subject to `constraints`.
    #[serde(default)]
    pub approved_scope: Vec<ToolGlob>,
    /// Tools (globs) that always need human approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_up: Vec<ToolGlob>,
    /// Tools (globs) that are always denied (only `observe` lets them through, flagged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<ToolGlob>,
    /// Hide tools that are neither approved nor step-up (and denied ones) from `tools/list`.
    #[serde(default)]
    pub hide_unapproved: bool,
    /// Conditions on arguments; a call that breaks one is treated as outside the approved scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Rules on the order of calls within a session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<SequenceRule>,
    /// Per-server progressive thresholds; `defaults.progressive` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressive: Option<Progressive>,
    /// Per-server approval timeout in seconds; `defaults.approval_timeout_secs` when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_timeout"
    )]
    pub approval_timeout_secs: Option<u64>,
    /// Per-server approvers; `defaults.approvers` when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_approvers"
    )]
    pub approvers: Option<Vec<Approver>>,
    /// Per-server remember scope; `defaults.approval_remember` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_remember: Option<Remember>,
    /// Per-server `on_tool_change`; `defaults.on_tool_change` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_tool_change: Option<OnToolChange>,
    /// Per-server `on_suspicious_tool`; `defaults.on_suspicious_tool` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_suspicious_tool: Option<OnSuspiciousTool>,
    /// Per-server DLP settings (field by field over `defaults.dlp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp: Option<DlpSettings>,
    /// Tool definitions pinned ahead of time: tool name → digest (`sha256:<hex>`). A pinned
    /// definition is accepted; any other definition of that tool is a change.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::integrity::de_pins"
    )]
    pub pins: Option<Pins>,
    /// What the annotations of accepted definitions may do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<AnnotationRules>,
}

/// A condition on one argument of the tools it names. Every check given must hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawConstraint")]
pub struct Constraint {
    /// Tools (glob) the constraint applies to.
    pub tool: ToolGlob,
    /// Argument name; a dotted path (`options.target`) reaches into objects.
    pub arg: String,
    /// The value (or, for an array, every element) must be a string matching one of these path
    /// globs after `.`/`..` are resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_glob: Option<Vec<PathGlob>>,
    /// The value (or every element) must be a string matching this regex in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<Pattern>,
    /// The value (or every element) must equal one of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Whether a call without the argument passes. Default `false`: absent means broken.
    #[serde(default)]
    pub allow_missing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConstraint {
    #[serde(default)]
    tool: Option<ToolGlob>,
    arg: String,
    #[serde(default)]
    path_glob: Option<Vec<PathGlob>>,
    #[serde(default)]
    regex: Option<Pattern>,
    #[serde(default)]
    one_of: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    allow_missing: bool,
}

impl TryFrom<RawConstraint> for Constraint {
    type Error = RuleError;
    fn try_from(raw: RawConstraint) -> Result<Self, RuleError> {
        if raw.arg.is_empty() || raw.arg.split('.').any(str::is_empty) {
            return Err(RuleError::ConstraintArg(raw.arg));
        }
        if raw.path_glob.is_none() && raw.regex.is_none() && raw.one_of.is_none() {
            return Err(RuleError::NoCheck(raw.arg));
        }
        if raw.path_glob.as_ref().is_some_and(Vec::is_empty) {
            return Err(RuleError::EmptyPathGlob);
        }
        if raw.one_of.as_ref().is_some_and(Vec::is_empty) {
            return Err(RuleError::EmptyOneOf);
        }
        let tool = match raw.tool {
            Some(t) => t,
            None => ToolGlob::new("*")?,
        };
        Ok(Constraint {
            tool,
            arg: raw.arg,
            path_glob: raw.path_glob,
            regex: raw.regex,
            one_of: raw.one_of,
            allow_missing: raw.allow_missing,
        })
    }
}

/// What a sequence rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeqAction {
    /// Allow, with a warning event.
    Warn,
    /// Require human approval.
    StepUp,
    /// Deny.
    Deny,
}

/// "A call to a tool matching `then` after a call to a tool matching `after` in the same session".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceRule {
    /// The earlier tool (glob).
    pub after: ToolGlob,
    /// The later tool (glob).
    pub then: ToolGlob,
    /// What happens to the later call.
    pub action: SeqAction,
    /// Only when the earlier call was at most this many seconds ago. Absent: any time in the
    /// session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_secs: Option<u64>,
    /// Why the rule exists, shown to the model and in events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Longest approval wait a policy may ask for.
pub const MAX_APPROVAL_TIMEOUT_SECS: u64 = 600;

fn de_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let secs = u64::deserialize(d)?;
    if !(1..=MAX_APPROVAL_TIMEOUT_SECS).contains(&secs) {
        return Err(serde::de::Error::custom(format!(
            "approval_timeout_secs must be between 1 and {MAX_APPROVAL_TIMEOUT_SECS}, got {secs}"
        )));
    }
    Ok(secs)
}

fn de_opt_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_timeout(d).map(Some)
}

fn de_approvers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Approver>, D::Error> {
    let list = Vec::<Approver>::deserialize(d)?;
    check_approvers(&list).map_err(serde::de::Error::custom)?;
    Ok(list)
}

fn de_opt_approvers<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Approver>>, D::Error> {
    de_approvers(d).map(Some)
}
