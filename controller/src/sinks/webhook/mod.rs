//! `webhook`: each batch POSTed as a JSON array, signed `X-Thoth-Signature: sha256=<HMAC>`.

mod config;
mod deliver;
mod encode;
#[cfg(test)]
mod tests;

pub use config::WebhookConfig;
pub(super) use deliver::WebhookSink;
