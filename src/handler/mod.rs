//! Handlers and routing.
//!
//! A handler is configured as one `[[handlers]]` table, tagged by `type`
//! ([`HandlerConfig`]); each type has its own module with its config struct,
//! a pure `validate` and a `build` that may do I/O. [`Router`] holds the
//! built handlers with their event filters and picks the ones an event goes
//! to. This module must not know about queues: a message counts as handled
//! when every handler it was routed to returned `Ok`, and that decision is
//! the poll loop's.

pub mod download;
pub mod filter;
pub mod log;
pub mod shell;
pub mod webhook;

use crate::config::{Issues, as_table, deserialize_collecting};
use crate::event::Notification;
use async_trait::async_trait;
pub use filter::EventFilter;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use time::OffsetDateTime;

/// One received event, as handed to handlers.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    /// 1 on the first delivery.
    pub dequeue_count: u32,
    pub inserted_at: Option<OffsetDateTime>,
    pub received_at: OffsetDateTime,
    pub notification: Notification,
}

impl Delivery {
    /// The stable JSON document handed to hooks (and webhooks): snake_case
    /// fields plus the original Custom Vision payload under `raw`. The model
    /// URI is complete here, SAS included, since the receiver must be able to
    /// download; it is never logged.
    pub fn payload(&self) -> serde_json::Value {
        let e = &self.notification.event;
        let rfc3339 = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        json!({
            "type": e.wire_type(),
            "project_id": e.project_id().map(|u| u.to_string()),
            "iteration_id": e.iteration_id().map(|u| u.to_string()),
            "status": e.status(),
            "model_uri": e.model_uri(),
            "message_id": self.message_id,
            "dequeue_count": self.dequeue_count,
            "received_at": rfc3339(self.received_at),
            "raw": self.notification.raw,
        })
    }
}

/// Why a handler failed; the message is retried (and in the end poisoned).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// Something done with each event routed to it.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Handles one delivery. Must be idempotent: delivery is at-least-once.
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError>;
}

/// A `[[handlers]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HandlerConfig {
    Log(log::LogConfig),
    Shell(shell::ShellConfig),
    Webhook(webhook::WebhookConfig),
    Download(download::DownloadConfig),
}

/// What building a handler may need from the rest of the daemon.
#[derive(Clone)]
pub struct BuildContext {
    /// Blob access with the daemon's credentials (download handler).
    pub blobs: crate::queue::azure::BlobAccess,
    /// `tls.ca_file`, for handlers without a `ca_file` of their own.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for BuildContext {
    fn default() -> Self {
        Self {
            blobs: crate::queue::azure::BlobAccess::anonymous(),
            ca_file: None,
        }
    }
}

impl HandlerConfig {
    /// The default when no handler is configured.
    pub fn default_log() -> Self {
        HandlerConfig::Log(log::LogConfig::default())
    }

    fn type_name(&self) -> &'static str {
        match self {
            HandlerConfig::Log(_) => "log",
            HandlerConfig::Shell(_) => "shell",
            HandlerConfig::Webhook(_) => "webhook",
            HandlerConfig::Download(_) => "download",
        }
    }

    fn common(&self) -> (&Option<String>, &Vec<String>) {
        match self {
            HandlerConfig::Log(c) => (&c.name, &c.events),
            HandlerConfig::Shell(c) => (&c.name, &c.events),
            HandlerConfig::Webhook(c) => (&c.name, &c.events),
            HandlerConfig::Download(c) => (&c.name, &c.events),
        }
    }

    /// Parses one table, recording problems with paths under `path`.
    ///
    /// The tag is read here and the variant's struct deserialized on its own
    /// (instead of through serde's internally tagged enum, which buffers the
    /// table and loses the path of an error inside it).
    pub(crate) fn parse(value: config::Value, path: &str, issues: &mut Issues) -> Option<Self> {
        let mut table = as_table(value, path, issues)?;
        let ty = match table.remove("type").map(|v| v.into_string()) {
            Some(Ok(t)) => t,
            Some(Err(_)) => {
                issues.push(format!("{path}.type"), "expected a string");
                return None;
            }
            None => {
                issues.push(
                    format!("{path}.type"),
                    "missing; allowed: `log`, `shell`, `webhook`, `download`",
                );
                return None;
            }
        };
        let config = match ty.as_str() {
            "log" => HandlerConfig::Log(deserialize_collecting(table, path, issues)?),
            "shell" => HandlerConfig::Shell(deserialize_collecting(table, path, issues)?),
            "webhook" => HandlerConfig::Webhook(deserialize_collecting(table, path, issues)?),
            "download" => HandlerConfig::Download(deserialize_collecting(table, path, issues)?),
            other => {
                issues.push(
                    format!("{path}.type"),
                    format!("unknown handler type `{other}`; allowed: `log`, `shell`, `webhook`, `download`"),
                );
                return None;
            }
        };
        let (_, events) = config.common();
        if let Err(e) = EventFilter::parse(events) {
            issues.push(format!("{path}.events"), e);
        }
        match &config {
            HandlerConfig::Log(c) => c.validate(path, issues),
            HandlerConfig::Shell(c) => c.validate(path, issues),
            HandlerConfig::Webhook(c) => c.validate(path, issues),
            HandlerConfig::Download(c) => c.validate(path, issues),
        }
        Some(config)
    }

    /// Builds the handler (may touch the file system or network).
    pub fn build(&self, ctx: &BuildContext) -> anyhow::Result<Arc<dyn Handler>> {
        Ok(match self {
            HandlerConfig::Log(c) => Arc::new(log::LogHandler::new(c)),
            HandlerConfig::Shell(c) => Arc::new(shell::ShellHandler::new(c)?),
            HandlerConfig::Webhook(c) => {
                Arc::new(webhook::WebhookHandler::new(c, ctx.ca_file.as_deref())?)
            }
            HandlerConfig::Download(c) => {
                Arc::new(download::DownloadHandler::new(c, ctx.blobs.clone())?)
            }
        })
    }
}

/// A built handler with its name and filter.
pub struct Route {
    pub name: String,
    pub filter: EventFilter,
    pub handler: Arc<dyn Handler>,
}

/// The handlers and which events go to each.
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn build(configs: &[HandlerConfig], ctx: &BuildContext) -> anyhow::Result<Self> {
        let mut routes = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let (name, events) = c.common();
            let name = name
                .clone()
                .unwrap_or_else(|| format!("{}#{i}", c.type_name()));
            let filter = EventFilter::parse(events)
                .map_err(|e| anyhow::anyhow!("handlers[{i}].events: {e}"))?;
            let handler = c.build(ctx).map_err(|e| {
                e.context(format!("Failed to set up handler `{name}` (handlers[{i}])"))
            })?;
            routes.push(Route {
                name,
                filter,
                handler,
            });
        }
        Ok(Self { routes })
    }

    /// A router over already built handlers (tests, embedding).
    pub fn from_routes(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The routes whose filter matches the event, in configuration order.
    pub fn route<'a>(&'a self, n: &Notification) -> Vec<&'a Route> {
        self.routes
            .iter()
            .filter(|r| r.filter.matches(&n.event))
            .collect()
    }
}
