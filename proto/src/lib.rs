//! Types that cross a process or machine boundary: the behavioral event record (the SIEM-facing
//! JSON), its canonical form, and the tamper-evident hash chain over it.

pub mod canonical;
pub mod chain;
pub mod content;
pub mod event;

pub use chain::{Chain, ChainBreak, ChainReport, verify_lines};
pub use content::{ContentLimits, RenderedContent, render_content};
pub use event::{Event, EventDecision, EventType, Identity};
