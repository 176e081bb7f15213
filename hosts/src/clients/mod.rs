//! One file per MCP client: where its files are, their format, and its habits (see
//! [`crate::host::Host`]).

pub mod claude_code;
pub mod claude_desktop;
pub mod claude_extension;
pub mod codex;
pub mod cursor;
pub mod vscode;
pub mod windsurf;
