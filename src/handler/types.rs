//! What every handler shares: the [`Delivery`] it is given, the [`Handler`]
//! trait, [`HandlerError`], and the [`BuildContext`] handlers are built with.
//!
//! A message counts as handled when every handler it was routed to returned
//! `Ok`; that decision, and everything about queues, is the worker's.

use crate::blob::BlobSource;
use crate::customvision::TrainingClient;
use crate::error::BoxError;
use crate::event::Notification;
use crate::notice::ExpectedExports;
use async_trait::async_trait;
use serde_json::json;
use std::fmt;
use std::path::PathBuf;
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
    /// The message's trace, when traces are on.
    pub trace_id: Option<String>,
    /// The model a `download` handler stored for this event, for the
    /// handlers that run after it (see [`super::router::run_routes`]).
    pub model: Option<StoredModel>,
}

/// A model stored by a `download` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredModel {
    /// The stored file, absolute.
    pub path: PathBuf,
    /// Its SHA-256, hex.
    pub sha256: String,
}

impl Delivery {
    /// The delivery's id, for receivers that deduplicate (a webhook's
    /// `webhook-id`): the message's id for a message that is one event;
    /// `{message_id}.{i}` for the i-th event (from 0) of an array, whose
    /// events share the message.
    pub fn id(&self) -> std::borrow::Cow<'_, str> {
        match self.notification.index {
            None => self.message_id.as_str().into(),
            Some(i) => format!("{}.{i}", self.message_id).into(),
        }
    }

    /// The stable JSON document handed to hooks (and webhooks): snake_case
    /// fields plus the original Custom Vision payload under `raw`. The model
    /// URI is complete here, SAS included, since the receiver must be able to
    /// download; it is never logged.
    pub fn payload(&self) -> serde_json::Value {
        let rfc3339 = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        // The event's own fields (`type` first), then the delivery's.
        let mut payload = self.notification.event.view().payload();
        payload.extend([
            ("message_id".into(), json!(self.message_id)),
            ("dequeue_count".into(), json!(self.dequeue_count)),
            ("received_at".into(), json!(rfc3339(self.received_at))),
            ("trace_id".into(), json!(self.trace_id)),
            (
                "model_path".into(),
                json!(self.model.as_ref().map(|m| m.path.to_string_lossy())),
            ),
            (
                "model_sha256".into(),
                json!(self.model.as_ref().map(|m| &m.sha256)),
            ),
            ("raw".into(), self.notification.raw.clone()),
        ]);
        serde_json::Value::Object(payload)
    }
}

/// Why a handler failed: the message is retried (and in the end poisoned),
/// or, for a permanent failure, poisoned at once.
///
/// Each handler has its own error enum; this erases the type at the
/// boundary the worker sees, and nothing more: `Display` is that error's
/// own message and `source()` its cause, so the worker prints the chain
/// once (`crate::error::error_chain`) as the failure's reason.
#[derive(Debug)]
pub struct HandlerError {
    source: BoxError,
    /// Retrying cannot help (a webhook's 410, a hook's listed exit code).
    permanent: bool,
}

impl HandlerError {
    /// A failure that a later delivery may not meet.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
            permanent: false,
        }
    }

    /// A failure retrying cannot fix: the message is poisoned at once.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
            permanent: true,
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// Something done with each event routed to it.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Handles one delivery. Must be idempotent: delivery is at-least-once.
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError>;

    /// Whether this handler stores the event's model: such handlers run
    /// before the others of the event, through [`Handler::store_model`].
    fn stores_models(&self) -> bool {
        false
    }

    /// [`Handler::handle`] for a handler that stores models: the model it
    /// stored, if the event had one.
    async fn store_model(&self, delivery: &Delivery) -> Result<Option<StoredModel>, HandlerError> {
        self.handle(delivery).await.map(|()| None)
    }
}

/// What building a handler may need from the rest of the daemon.
#[derive(Clone)]
pub struct BuildContext {
    /// Blob access, with the daemon's credentials where the download
    /// handler asks for them.
    pub blobs: Arc<dyn BlobSource>,
    /// `tls.ca_file`, for handlers without a `ca_file` of their own.
    pub ca_file: Option<std::path::PathBuf>,
    /// Environment variables that hold the daemon's secrets (every
    /// handler's `secret_env`): hooks never inherit them.
    pub secret_env: Vec<String>,
    /// The Training API client of `[customvision]`, when configured
    /// (customvision handler).
    pub customvision: Option<Arc<TrainingClient>>,
    /// Exports requested whose notification the poll loop waits for
    /// (customvision handler; shared with the worker).
    pub expected_exports: Arc<ExpectedExports>,
}

/// A delivery of each sample event ([`crate::event::samples`]): the
/// export that completed has a stored model and a trace.
#[cfg(test)]
pub(crate) fn sample_deliveries() -> Vec<(&'static str, Delivery)> {
    use crate::event::{Notification, samples};
    samples()
        .into_iter()
        .map(|(kind, event)| {
            let completed = kind == "export_completed";
            let delivery = Delivery {
                message_id: "5714088e-e971-4dcd-9daa-d98cd5335c83".into(),
                dequeue_count: 2,
                inserted_at: None,
                received_at: time::macros::datetime!(2026-11-21 06:01:11.737 UTC),
                notification: Notification {
                    version: Some("1.0".into()),
                    raw: json!({"type": event.wire_type()}),
                    event,
                    index: None,
                },
                trace_id: completed.then(|| "4bf92f3577b34da6a3ce929d0e0e4736".into()),
                model: completed.then(|| StoredModel {
                    path: "/var/lib/cvnotify/models/p - i.ONNX.zip".into(),
                    sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                        .into(),
                }),
            };
            (kind, delivery)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("request to http://receiver failed")]
    struct Request(#[source] std::io::Error);

    /// Issue 18: the handler's error is shown as its own message, and its
    /// cause is the source, so the worker's chain has each part once.
    #[test]
    fn a_handler_error_is_its_errors_message_with_that_errors_cause() {
        let e = HandlerError::new(Request(std::io::Error::other("connection reset")));
        assert_eq!(e.to_string(), "request to http://receiver failed");
        let source = std::error::Error::source(&e).expect("the cause");
        assert_eq!(source.to_string(), "connection reset");
        assert_eq!(
            crate::error::error_chain(&e),
            "request to http://receiver failed: connection reset"
        );
    }

    /// A message that is one event keeps its id as the delivery's; the
    /// events of an array, which share the message, get `{id}.{i}`.
    #[test]
    fn the_delivery_id_is_the_message_id_with_the_index_in_an_array() {
        let (_, mut d) = sample_deliveries().remove(0);
        assert_eq!(d.id(), "5714088e-e971-4dcd-9daa-d98cd5335c83");
        d.notification.index = Some(0);
        assert_eq!(d.id(), "5714088e-e971-4dcd-9daa-d98cd5335c83.0");
        d.notification.index = Some(2);
        assert_eq!(d.id(), "5714088e-e971-4dcd-9daa-d98cd5335c83.2");
    }

    /// The hook's stdin and the webhook body, byte for byte: the event's
    /// part as its view gives it (pinned per kind in `event.rs`), and the
    /// delivery's fields, pinned here (serde_json writes the keys sorted).
    /// Before the view existed this pinned every kind's whole document;
    /// the change kept each byte.
    #[test]
    fn the_payload_is_the_events_view_and_the_deliverys_fields() {
        for (kind, d) in sample_deliveries() {
            let (trace, path, sha) = if kind == "export_completed" {
                (
                    r#""4bf92f3577b34da6a3ce929d0e0e4736""#,
                    r#""/var/lib/cvnotify/models/p - i.ONNX.zip""#,
                    r#""9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08""#,
                )
            } else {
                ("null", "null", "null")
            };
            let delivery: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&format!(
                r#"{{"dequeue_count":2,"message_id":"5714088e-e971-4dcd-9daa-d98cd5335c83","model_path":{path},"model_sha256":{sha},"raw":{{"type":"{}"}},"received_at":"2026-11-21T06:01:11.737Z","trace_id":{trace}}}"#,
                d.notification.event.wire_type()
            ))
            .unwrap();
            let mut want = d.notification.event.view().payload();
            for (k, v) in delivery {
                assert!(
                    want.insert(k.clone(), v).is_none(),
                    "{kind}: the event has a field `{k}`, which the delivery's would hide"
                );
            }
            let got = serde_json::to_string(&d.payload()).unwrap();
            assert_eq!(
                got,
                serde_json::to_string(&want).unwrap(),
                "payload of {kind}"
            );
        }
    }
}
