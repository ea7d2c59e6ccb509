//! `type = "log"`: one structured log record per event.

use super::types::{Delivery, Handler, HandlerError};
use crate::secret::redact_url;
use async_trait::async_trait;

pub struct LogHandler;

#[async_trait]
impl Handler for LogHandler {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = &d.notification.event;
        tracing::info!(
            target: "cvnotify::event",
            event_type = e.wire_type(),
            project_id = e.project_id().map(|u| u.to_string()),
            iteration_id = e.iteration_id().map(|u| u.to_string()),
            status = e.status(),
            message_id = %d.message_id,
            dequeue_count = d.dequeue_count,
            // The SAS query is a credential: only the blob's address is logged.
            model_uri = e.model_uri().map(redact_url),
            "Custom Vision event"
        );
        Ok(())
    }
}
