//! What a check of a proxy process concludes, and which call it guards.

/// What a check found wrong, by kind (events are limited per user and kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The process is not the installed `thoth`.
    NotInstalledThoth,
    /// Loader variables in its original environment.
    LoaderVariable,
    /// Code mapped from a file or directory a non-root user can write.
    Library,
    /// The process could not be examined.
    Unverifiable,
}

impl Kind {
    /// A short stable name (in event details).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NotInstalledThoth => "not_installed_thoth",
            Kind::LoaderVariable => "loader_variable",
            Kind::Library => "library",
            Kind::Unverifiable => "unverifiable",
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The installed `thoth`, untampered as far as can be seen from outside.
    Verified,
    /// Not checked on this system.
    Unchecked,
    /// Refused: the first kind found, and everything found.
    Refused(Kind, String),
}

/// Which call a process makes: policy and approvals are served to a verified proxy only;
/// events are taken from anyone (they are evidence of what a process did), and a tampered
/// `thoth` is reported either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `GetPolicy` or `WatchPolicy`.
    Policy,
    /// `RequestApproval`: only a verified proxy may put a request before a human.
    Approval,
    /// `EmitEvents`.
    Events,
}
