//! What every format's rewrite takes and gives: the operation, the context, the report, the
//! errors and the entries found (re-exported by `format`).

pub use crate::wrapper::Op;
use crate::wrapper::{Entry, Left};

/// Who the rewrite is for: the host's id (written as `--client`), and, for formats whose server
/// name is not the table key (an extension: its directory's id), the name to write as
/// `--server`.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The host's id (`claude-desktop`, `cursor`…).
    pub client: &'a str,
    /// The server name to use instead of the entry's key.
    pub server: Option<&'a str>,
}

impl Ctx<'_> {
    /// The `--server` name of the entry whose key is `key`.
    pub fn server_name(&self, key: &str) -> String {
        self.server.unwrap_or(key).to_owned()
    }
}

/// Why a file cannot be rewritten. Nothing is written in any of these cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Does not parse.
    #[error("does not parse at line {line}, column {column}: {message}")]
    Invalid {
        /// 1-based.
        line: usize,
        /// 1-based.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// Parses, but has the wrong shape.
    #[error("{0}")]
    Shape(String),
}

/// What happened to each server entry (named by its label: the key, with its scope when the
/// table sits under a wildcard, e.g. `files [/home/ann/project]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Wrapped now.
    pub wrapped: Vec<String>,
    /// Already running through this thoth.
    pub already: Vec<String>,
    /// Wrapper pointing at another thoth path, updated.
    pub updated: Vec<String>,
    /// Wrapper whose arguments before `--` were not the canonical form: rewritten to it (the
    /// command after `--` kept), with what differed.
    pub rewrapped: Vec<(String, String)>,
    /// Unwrapped now.
    pub unwrapped: Vec<String>,
    /// Remote (a URL, HTTP or SSE): left untouched.
    pub remote: Vec<String>,
    /// Left untouched for the reason given.
    pub skipped: Vec<(String, String)>,
}

impl Report {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        !(self.wrapped.is_empty()
            && self.updated.is_empty()
            && self.rewrapped.is_empty()
            && self.unwrapped.is_empty())
    }

    /// Records an entry the rewrite leaves as it is (see [`crate::wrapper::decide`]).
    pub(crate) fn leave(&mut self, label: String, left: Left) {
        match left {
            Left::Skipped(why) => self.skipped.push((label, why)),
            Left::Remote => self.remote.push(label),
            Left::Already => self.already.push(label),
            Left::Unchanged => {}
        }
    }
}

/// The result of a rewrite.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The new text (identical to the input when nothing changed).
    pub text: String,
    /// Per entry.
    pub report: Report,
}

/// One server entry of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where: the table's dotted path (`mcpServers`, `projects./home/ann/p.mcpServers`,
    /// `mcp_servers`, `server.mcp_config`, `server.mcp_config.platform_overrides.win32`).
    pub table: String,
    /// The wildcard key the table sits under (a Claude Code project), if any.
    pub scope: Option<String>,
    /// The entry's key.
    pub name: String,
    /// Its content.
    pub entry: Entry,
}

impl Found {
    /// The entry's label in reports.
    pub fn label(&self) -> String {
        label(&self.name, self.scope.as_deref())
    }
}

/// An entry's label: its key, with its scope if any.
pub fn label(name: &str, scope: Option<&str>) -> String {
    match scope {
        Some(s) => format!("{name} [{s}]"),
        None => name.to_owned(),
    }
}
