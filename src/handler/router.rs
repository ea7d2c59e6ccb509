//! [`Router`]: the built handlers with their event filters, the choice of
//! the ones an event goes to (its `events` and its subject filter, checked
//! here once for every handler type), and the order they run in
//! ([`run_routes`]).

use super::customvision::CustomVisionHandler;
use super::download::DownloadHandler;
use super::log::LogHandler;
use super::shell::ShellHandler;
use super::types::{BuildContext, Delivery, Handler, HandlerError};
use super::webhook::WebhookHandler;
use crate::config::HandlerConfig;
use crate::error::BoxError;
use crate::event::Notification;
use crate::filter::{EventFilter, SubjectFilter};
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

/// A built handler with its name and filters.
pub struct Route {
    pub name: String,
    /// The table's `events`.
    pub filter: EventFilter,
    /// The table's `subject_begins_with` / `subject_ends_with`.
    pub subject: SubjectFilter,
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
                subject: c.table().subject(),
                handler,
            });
        }
        Ok(Self { routes })
    }

    /// A router over already built handlers (tests, embedding).
    pub fn from_routes(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The routes whose filters match the event, in configuration order:
    /// its type and status are in `events`, and its subject (none for
    /// Custom Vision's) passes the subject filter.
    pub fn route<'a>(&'a self, n: &Notification) -> Vec<&'a Route> {
        self.routes
            .iter()
            .filter(|r| r.filter.matches(&n.event) && r.subject.matches(n.event.subject()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::decode;

    /// One event decoded from `body` as the worker would.
    fn notification(body: &str) -> Notification {
        let mut all = decode(body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn grid(event_type: &str, subject: &str, data: &str) -> Notification {
        notification(&format!(
            r#"{{"id":"e1","topic":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct","subject":"{subject}","eventType":"{event_type}","eventTime":"2026-12-02T12:00:00Z","data":{data},"dataVersion":"","metadataVersion":"1"}}"#
        ))
    }

    fn blob_created(path: &str) -> Notification {
        grid(
            "Microsoft.Storage.BlobCreated",
            &format!("/blobServices/default/containers/models/blobs/{path}"),
            &format!(
                r#"{{"api":"PutBlob","url":"https://acct.blob.core.windows.net/models/{path}","contentLength":3,"blobType":"BlockBlob"}}"#
            ),
        )
    }

    fn run_status(status: &str) -> Notification {
        grid(
            "Microsoft.MachineLearningServices.RunStatusChanged",
            "experiments/e/runs/AutoML_1",
            &format!(r#"{{"experimentId":"e","runId":"AutoML_1","runStatus":"{status}"}}"#),
        )
    }

    fn training(status: &str) -> Notification {
        notification(&format!(
            r#"{{"version":"1.0","type":"Training","Content":{{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","trainingStatus":"{status}"}}}}"#
        ))
    }

    /// A router built from `[[handlers]]` tables, as the daemon builds it.
    fn router(handlers: &str) -> Router {
        let c = Config::from_toml(&format!(
            "[queue]\nname = \"q-x\"\naccount = \"a\"\n{handlers}"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let ctx = BuildContext {
            blobs: Arc::new(crate::azure::AzureBlobs::anonymous()),
            ca_file: None,
            secret_env: Vec::new(),
            customvision: None,
            expected_exports: Default::default(),
        };
        Router::build(&c.handlers, &ctx).unwrap_or_else(|e| panic!("{e}"))
    }

    fn names(r: &Router, n: &Notification) -> Vec<String> {
        r.route(n).iter().map(|r| r.name.clone()).collect()
    }

    #[test]
    fn the_subject_filter_picks_blobs_by_path_and_name() {
        let r = router(
            r#"
            [[handlers]]
            type = "log"
            name = "all"
            [[handlers]]
            type = "log"
            name = "onnx"
            events = ["blob_created"]
            subject_ends_with = ".onnx"
            [[handlers]]
            type = "log"
            name = "birds"
            subject_begins_with = "/blobServices/default/containers/models/blobs/birds/"
            [[handlers]]
            type = "log"
            name = "birds-onnx"
            subject_begins_with = "/blobServices/default/containers/models/blobs/birds/"
            subject_ends_with = ".onnx"
            [[handlers]]
            type = "log"
            name = "exact-case"
            subject_ends_with = ".ONNX"
            subject_case_sensitive = true
            "#,
        );
        assert_eq!(
            names(&r, &blob_created("birds/v3/model.onnx")),
            ["all", "onnx", "birds", "birds-onnx"]
        );
        assert_eq!(
            names(&r, &blob_created("birds/v3/labels.txt")),
            ["all", "birds"]
        );
        assert_eq!(names(&r, &blob_created("cats/model.onnx")), ["all", "onnx"]);
        // Case is ignored unless asked for, as in Event Grid.
        assert_eq!(
            names(&r, &blob_created("BIRDS/v3/MODEL.ONNX")),
            ["all", "onnx", "birds", "birds-onnx", "exact-case"]
        );
        assert_eq!(
            names(&r, &blob_created("birds/v3/model.Onnx")),
            ["all", "onnx", "birds", "birds-onnx"]
        );
        // A Custom Vision event has no subject: only the handler without a
        // subject filter gets it.
        assert_eq!(names(&r, &training("TrainingCompleted")), ["all"]);
        // An Azure ML subject is a subject like any other.
        assert_eq!(names(&r, &run_status("Failed")), ["all"]);
    }

    #[test]
    fn run_statuses_route_without_regard_to_case() {
        let r = router(
            r#"
            [[handlers]]
            type = "log"
            name = "run-failed"
            events = ["run_status_changed.failed"]
            [[handlers]]
            type = "log"
            name = "any-failure"
            events = ["*.failed"]
            [[handlers]]
            type = "log"
            name = "queued"
            events = ["run_status_changed.Queued"]
            [[handlers]]
            type = "log"
            name = "runs"
            events = ["run_status_changed"]
            [[handlers]]
            type = "log"
            name = "training-failed"
            events = ["training.failed"]
            "#,
        );
        for failed in ["failed", "Failed", "FAILED"] {
            assert_eq!(
                names(&r, &run_status(failed)),
                ["run-failed", "any-failure", "runs"],
                "{failed}"
            );
        }
        assert_eq!(names(&r, &run_status("queued")), ["queued", "runs"]);
        assert_eq!(names(&r, &run_status("Completed")), ["runs"]);
        // A status this version does not list still reaches every status.
        assert_eq!(names(&r, &run_status("Hibernating")), ["runs"]);
        // `*.failed` keeps Custom Vision's failures, beside Azure ML's.
        assert_eq!(
            names(&r, &training("TrainingFailed")),
            ["any-failure", "training-failed"]
        );
        assert!(names(&r, &training("TrainingCompleted")).is_empty());
    }
}
