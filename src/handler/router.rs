//! [`Router`]: the built handlers with their event filters, the choice of
//! the ones an event goes to, and the order they run in ([`run_routes`]).

use super::customvision::CustomVisionHandler;
use super::download::DownloadHandler;
use super::log::LogHandler;
use super::shell::ShellHandler;
use super::types::{BuildContext, Delivery, Handler, HandlerError};
use super::webhook::WebhookHandler;
use crate::config::HandlerConfig;
use crate::error::BoxError;
use crate::event::Notification;
use crate::filter::EventFilter;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, info_span};

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

/// One handler's result: its name, the result, how long it took.
pub type Finished<'a> = (&'a str, Result<(), HandlerError>, Duration);

/// Runs the routes of one event. Handlers that store the event's model
/// (`download`) run first, all at once; the others run only if all of those
/// succeeded, then all at once, with the first stored model (in
/// configuration order) as `delivery.model`. Returns the results of the
/// handlers that ran (those that did not run are not reported: the message
/// failed with the reason of the ones that did).
pub async fn run_routes<'a>(routes: &[&'a Route], delivery: &Delivery) -> Vec<Finished<'a>> {
    let (first, then): (Vec<&Route>, Vec<&Route>) =
        routes.iter().partition(|r| r.handler.stores_models());
    let mut results = Vec::with_capacity(routes.len());
    let mut delivery = delivery.clone();
    if !first.is_empty() {
        let d = &delivery;
        let stored = futures_util::future::join_all(first.iter().map(|r| {
            async move {
                let t = Instant::now();
                let res = r.handler.store_model(d).await;
                (r.name.as_str(), res, t.elapsed())
            }
            .instrument(info_span!(
                "handler",
                handler = %r.name,
                "otel.name" = %format_args!("handler {}", r.name),
            ))
        }))
        .await;
        let mut model = None;
        let mut all_ok = true;
        for (name, res, took) in stored {
            let res = res.map(|m| {
                model = model.take().or(m);
            });
            all_ok &= res.is_ok();
            results.push((name, res, took));
        }
        if !all_ok {
            return results;
        }
        delivery.model = model;
    }
    let delivery = &delivery;
    results.extend(
        futures_util::future::join_all(then.iter().map(|r| {
            async move {
                let t = Instant::now();
                let res = r.handler.handle(delivery).await;
                (r.name.as_str(), res, t.elapsed())
            }
            .instrument(info_span!(
                "handler",
                handler = %r.name,
                "otel.name" = %format_args!("handler {}", r.name),
            ))
        }))
        .await,
    );
    results
}
