//! Signs that a tool definition carries instructions aimed at the model (tool poisoning).
//!
//! CONTRACT STUB (issue 17): filled in by the heuristics work.

use serde_json::Value;

/// One reason a definition looks poisoned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspicion {
    /// `hidden_instruction_tag`, `ignore_instructions`, `credential_request`,
    /// `cross_tool_instruction`, `concealment`, `invisible_unicode`, `bidi_unicode`,
    /// `long_description`, …
    pub kind: &'static str,
    /// A short, escaped excerpt of what matched (at most 120 characters), for the event.
    pub excerpt: String,
}

/// The reasons a tool definition (one element of a `tools/list` result) looks poisoned, in a
/// fixed order; empty when none.
pub fn suspicious(_tool: &Value) -> Vec<Suspicion> {
    Vec::new()
}
