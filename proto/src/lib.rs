//! Types that cross a process or machine boundary: the behavioral event record (the SIEM-facing
//! JSON), its canonical form, the tamper-evident hash chain over it, and signed policy bundles.

pub mod bundle;
pub mod canonical;
pub mod chain;
pub mod content;
pub mod event;

pub use chain::{Chain, ChainBreak, ChainReport, verify_lines};
pub use content::{ContentLimits, RenderedContent, render_content};
pub use event::{Event, EventDecision, EventType, Identity};
