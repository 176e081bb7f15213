//! `splunk_hec`: events posted to Splunk's HTTP Event Collector, one JSON object a line.

mod config;
mod deliver;
mod encode;
#[cfg(test)]
mod tests;

pub use config::SplunkHecConfig;
pub(super) use deliver::SplunkHecSink;
