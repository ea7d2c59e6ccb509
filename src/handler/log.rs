//! `type = "log"`: one structured log record per event.

use super::{Delivery, Handler, HandlerError};
use crate::config::Issues;
use crate::redact::redact_url;
use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Name used in logs; default `log#<index>`.
    pub name: Option<String>,
    /// Which events this handler gets (see the routing grammar).
    pub events: Vec<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            name: None,
            events: vec!["*".into()],
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self, _path: &str, _issues: &mut Issues) {}
}

pub struct LogHandler;

impl LogHandler {
    pub fn new(_config: &LogConfig) -> Self {
        LogHandler
    }
}

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
