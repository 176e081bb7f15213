//! Tool integrity in the proxy: tool definitions pinned and compared, poisoned definitions
//! flagged.

pub mod poison;
