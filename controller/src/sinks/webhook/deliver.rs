use super::WebhookConfig;
use super::encode::{body, hmac_header};
use crate::sinks::error::SinkError;
use crate::sinks::http::HttpTarget;
use crate::store::StoredEventRecord;

/// Posts each batch, signed.
pub(in crate::sinks) struct WebhookSink {
    target: HttpTarget,
    secret: String,
}

impl WebhookSink {
    pub(in crate::sinks) fn new(cfg: &WebhookConfig) -> Result<WebhookSink, SinkError> {
        Ok(WebhookSink {
            target: HttpTarget::new(&cfg.url, cfg.ca_file.as_deref())?,
            secret: cfg.secret.clone(),
        })
    }

    pub(in crate::sinks) async fn deliver(
        &mut self,
        events: &[StoredEventRecord],
    ) -> Result<(), SinkError> {
        let body = body(events);
        let sig = hmac_header(&self.secret, &body);
        self.target
            .post(body, vec![("x-thoth-signature", sig)])
            .await
    }
}
