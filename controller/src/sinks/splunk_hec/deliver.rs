use super::SplunkHecConfig;
use super::encode::{authorization, body};
use crate::sinks::error::SinkError;
use crate::sinks::http::HttpTarget;
use crate::store::StoredEventRecord;

/// Posts each batch to the collector.
pub(in crate::sinks) struct SplunkHecSink {
    target: HttpTarget,
    token: String,
}

impl SplunkHecSink {
    pub(in crate::sinks) fn new(cfg: &SplunkHecConfig) -> Result<SplunkHecSink, SinkError> {
        Ok(SplunkHecSink {
            target: HttpTarget::new(&cfg.url, cfg.ca_file.as_deref())?,
            token: cfg.token.clone(),
        })
    }

    pub(in crate::sinks) async fn deliver(
        &mut self,
        events: &[StoredEventRecord],
    ) -> Result<(), SinkError> {
        self.target
            .post(body(events), vec![authorization(&self.token)])
            .await
    }
}
