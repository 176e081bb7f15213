//! The Thoth agent daemon on a laptop (`thoth-agent run`): identity and policy from the
//! controller, the local socket proxies use, the event pipeline, the config guardian and the
//! machine inventory.

pub mod daemon;
pub mod watch;
