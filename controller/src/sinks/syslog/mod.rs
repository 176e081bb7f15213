//! `syslog`: RFC 5424 messages over TCP with octet-counting framing (RFC 6587), or over TLS.

mod config;
mod deliver;
mod encode;
#[cfg(test)]
mod tests;

pub use config::SyslogConfig;
pub(super) use deliver::SyslogSink;
