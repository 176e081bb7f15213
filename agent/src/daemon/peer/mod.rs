//! Checking a proxy from outside. A proxy's own refusal of loader variables (`thoth run`) runs
//! inside the process it protects, so a preloaded library that `unsetenv`s itself, or a loader
//! variable set for the whole session, gets past it. Before the agent serves policy (or takes
//! events), it looks at the calling process itself (Linux: `/proc/<pid>`):
//!
//! - the process is the one that connected: its pid comes from the socket's credentials
//!   (`SO_PEERPIDFD` when the kernel has it), and its start time, read when the connection was
//!   accepted, must still match, so a pid reused after the connecting process exited is not
//!   mistaken for it;
//! - its executable is the installed `thoth` (the agent's `thoth_path`, same device and inode; a
//!   root-owned binary replaced by an upgrade while the proxy runs also counts);
//! - its original environment block (`/proc/<pid>/environ`, which still shows a variable the
//!   process removed from its own environment later) names no `LD_PRELOAD`, `LD_AUDIT` or
//!   `DYLD_*`;
//! - no executable mapping (`/proc/<pid>/maps`) comes from a file a non-root user owns or can
//!   write, or from a directory a non-root user can write (this also covers `LD_LIBRARY_PATH`,
//!   and a library that also wiped its name from the environment block), or from an anonymous
//!   file (`memfd`), and no executable memory is anonymous (a `thoth` has none).
//!
//! - it shares the agent's user namespace, and the agent's or pid 1's mount namespace (inside a
//!   user namespace of their own, `unshare -Urm`, a user can bind any binary over a path; what
//!   the agent sees of paths would say nothing).
//!
//! A connection is checked when it first calls and again only after [`RECHECK`] (an open
//! `WatchPolicy` stream on that timer too); between checks a call only confirms that the
//! process that connected still runs. Checks are bounded: [`MAX_CHECKS`] at once, one per owner
//! (a login user with their sub-uids), the memory map and environment read up to a size, and a
//! reason names a few findings and counts the rest.
//!
//! This is a tripwire for naive or accidental preloads, not a boundary against a process of the
//! same user. Not covered: code injected after the check (ptrace, which the kernel allows
//! between processes of one user unless Yama forbids it), caught only if still visible at the
//! next check; a library that scrubs its traces (overwrites its `LD_PRELOAD=` bytes in the
//! environment block, then writes its code into a private, copy-on-write mapping of a
//! root-owned file and unmaps its own: the map shows only root's file); a process that connects and hands the socket on (a tampered parent makes the socket,
//! its child connects and then execs the installed thoth with a clean environment: the peer
//! credentials name the child, which passes, while the parent speaks on the socket; the agent
//! cannot tell which process writes to a shared socket); a library an administrator installed
//! in a root-owned directory; and other systems than Linux, where no check is made ([`verify`]
//! answers `Unchecked`).

mod checks;
mod inspect;
mod process;
mod raised;
mod verdict;

pub(crate) use checks::Running;
pub use checks::{Checks, MAX_CHECKS, RECHECK};
pub use inspect::{MAX_CODE_MAPPINGS, MAX_ENVIRON_BYTES, MAX_MAPS_BYTES, verify};
#[cfg(target_os = "linux")]
pub(crate) use process::start_time;
pub use process::{ConnInfo, Process};
pub use raised::{EVENT_PERIOD, MAX_RAISED, Raised};
pub use verdict::{Call, Kind, Verdict};

#[cfg(test)]
mod tests;
