//! The effective tool-integrity and DLP settings of one server: the entry's, else `defaults`'
//! (DLP field by field). Apart from `integrity.rs`, which only defines the types, so that the
//! document can name them without depending on the evaluator.

use crate::document::{Policy, ServerRule};
use crate::eval::ServerView;
use crate::integrity::{DEFAULT_DLP_DETECTORS, Dlp, DlpArguments, DlpResults, Integrity};

impl Policy {
    /// The tool-integrity settings for this server: the entry's, else `defaults`'.
    pub fn integrity(&self, server: &ServerView) -> Integrity<'_> {
        let entry = self.integrity_rule(server);
        Integrity {
            on_tool_change: entry
                .and_then(|r| r.on_tool_change)
                .unwrap_or(self.defaults.on_tool_change),
            on_suspicious_tool: entry
                .and_then(|r| r.on_suspicious_tool)
                .unwrap_or(self.defaults.on_suspicious_tool),
            pins: entry.and_then(|r| r.pins.as_ref()),
            annotations: entry.and_then(|r| r.annotations).unwrap_or_default(),
        }
    }

    /// The DLP settings for this server, field by field: the entry's, `defaults.dlp`, built-in.
    pub fn dlp(&self, server: &ServerView) -> Dlp {
        let entry = self.integrity_rule(server).and_then(|r| r.dlp.as_ref());
        let d = &self.defaults.dlp;
        Dlp {
            arguments: entry
                .and_then(|e| e.arguments)
                .or(d.arguments)
                .unwrap_or(DlpArguments::Warn),
            results: entry
                .and_then(|e| e.results)
                .or(d.results)
                .unwrap_or(DlpResults::Warn),
            detectors: entry
                .and_then(|e| e.detectors.clone())
                .or_else(|| d.detectors.clone())
                .unwrap_or_else(|| DEFAULT_DLP_DETECTORS.map(str::to_owned).to_vec()),
            allow_patterns: entry
                .and_then(|e| e.allow_patterns.clone())
                .or_else(|| d.allow_patterns.clone())
                .unwrap_or_default(),
        }
    }

    fn integrity_rule(&self, server: &ServerView) -> Option<&ServerRule> {
        server.entry.and_then(|i| self.servers.get(i))
    }
}
