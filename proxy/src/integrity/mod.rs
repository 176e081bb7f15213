//! Tool integrity in the proxy: tool definitions pinned and compared, poisoned definitions
//! flagged, and the DLP scanners of a session.

pub mod book;
pub(crate) mod check;
pub mod poison;
pub mod scanners;
pub mod verdict;
