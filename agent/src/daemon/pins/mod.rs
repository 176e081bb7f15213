//! Tool integrity on the agent: each OS user's pinned tool definitions (per server identity),
//! `LocalAgent.CheckTools` against them, the admins' decisions (`PolicyUpdate.pin`), tool-name
//! shadowing between a user's servers, and the pins as the heartbeat reports them.

pub mod book;
pub mod check;
pub mod decisions;
pub mod events;
pub mod report;
pub mod shadow;
pub mod store;

pub use book::PinBook;

#[cfg(test)]
mod added_tests;
#[cfg(test)]
mod approval_tests;
#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod known_tests;
#[cfg(test)]
mod tests;
