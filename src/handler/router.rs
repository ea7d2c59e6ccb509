//! [`Router`]: the built handlers with their event filters, and the choice
//! of the ones an event goes to.

use super::customvision::CustomVisionHandler;
use super::download::DownloadHandler;
use super::log::LogHandler;
use super::shell::ShellHandler;
use super::types::{BuildContext, Handler};
use super::webhook::WebhookHandler;
use crate::config::HandlerConfig;
use crate::error::BoxError;
use crate::event::Notification;
use crate::filter::EventFilter;
use std::sync::Arc;

/// A handler that could not be built.
#[derive(Debug, thiserror::Error)]
#[error("Failed to set up handler `{name}` (handlers[{index}])")]
pub struct BuildError {
    name: String,
    index: usize,
    #[source]
    source: BoxError,
}

/// Building the handler a `[[handlers]]` table describes. A trait because
/// the table's type lives in the config layer, below handlers.
pub trait BuildHandler {
    /// Builds the handler (may touch the file system or network).
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Handler>, BoxError>;
}

impl BuildHandler for HandlerConfig {
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Handler>, BoxError> {
        Ok(match self {
            HandlerConfig::Log(_) => Arc::new(LogHandler),
            HandlerConfig::Shell(c) => Arc::new(ShellHandler::new(c, &ctx.secret_env)?),
            HandlerConfig::Webhook(c) => Arc::new(WebhookHandler::new(c, ctx.ca_file.as_deref())?),
            HandlerConfig::Download(c) => Arc::new(DownloadHandler::new(c, ctx.blobs.clone())?),
            HandlerConfig::CustomVision(c) => Arc::new(CustomVisionHandler::new(c, ctx)?),
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
    pub fn build(configs: &[HandlerConfig], ctx: &BuildContext) -> Result<Self, BuildError> {
        let mut routes = Vec::with_capacity(configs.len());
        for (index, c) in configs.iter().enumerate() {
            let name = c.display_name(index);
            let handler = c.build(ctx).map_err(|source| BuildError {
                name: name.clone(),
                index,
                source,
            })?;
            routes.push(Route {
                name,
                filter: c.table().events().clone(),
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
