//! `type = "log"`: one structured log record per event.

use crate::handler::types::{Delivery, Handler, HandlerError};
use crate::limit::{MAX_TEXT, text};
use crate::secret::redact_url;
use async_trait::async_trait;

pub struct LogHandler;

#[async_trait]
impl Handler for LogHandler {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = &d.notification.event;
        // An unknown type or status and the URL are the message's own text:
        // bounded like any outside text.
        let bounded = |t: &str| text(t, MAX_TEXT).into_owned();
        tracing::info!(
            target: "cvnotify::event",
            event_type = bounded(e.wire_type()),
            project_id = e.project_id().map(|u| u.to_string()),
            iteration_id = e.iteration_id().map(|u| u.to_string()),
            status = e.status().map(bounded),
            message_id = %d.message_id,
            dequeue_count = d.dequeue_count,
            // The SAS query is a credential: only the blob's address is logged.
            model_uri = e.model_uri().map(|u| bounded(&redact_url(u))),
            "Custom Vision event"
        );
        Ok(())
    }
}
