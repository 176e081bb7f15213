//! Tool integrity in the proxy: tool definitions pinned and compared, poisoned definitions
//! flagged, and the DLP scanners of a session.

pub mod book;
pub(crate) mod check;
pub mod poison;
pub mod scanners;
pub mod verdict;

/// Which `tools/list` answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// Shown to the client, asked without a cursor: it may relax a tool's treatment.
    ShownFirstPage,
    /// Shown to the client, a later page (or an answer after a cancellation): only stricter.
    ShownLaterPage,
    /// The proxy's own (after `list_changed`), never shown: only stricter.
    Own,
}
