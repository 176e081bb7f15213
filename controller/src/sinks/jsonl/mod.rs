//! `jsonl`: events as JSON lines in a file, rotated past `max_bytes`, `keep` files kept.

mod config;
mod deliver;
mod encode;
#[cfg(test)]
mod tests;

pub use config::JsonlConfig;
pub(super) use deliver::JsonlSink;
