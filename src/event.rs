//! Typed events and the decoder that produces them from a queue message.
//!
//! A message body is JSON, plain or base64-encoded (a BOM and white space
//! around either are ignored), and holds, by its shape:
//! - a Custom Vision notification, the wire format described in the Custom
//!   Vision storage integration guide: a JSON object with a top-level
//!   `version`, a `type` and a `Content` object (capital C) whose fields are
//!   camelCase (decoded here);
//! - an Event Grid event, in the Event Grid schema (`eventType`) or the
//!   CloudEvents 1.0 schema (`specversion`): Azure Machine Learning's, Blob
//!   Storage's, or any other ([`grid`]);
//! - a JSON array of Event Grid events, each one event of the message.
//!
//! It knows nothing about queues or handlers; [`decode`] is a pure function
//! of the body. [`fields`](DecodeError) holds what the decoders share.
//!
//! The decoder is hand-written over `serde_json::Value` rather than derived
//! with serde because every error must name the field and the problem
//! ("`Content.iterationId`: not a GUID"), unknown statuses must be kept, and
//! unknown event types must be delivered instead of rejected. serde's derived
//! errors cannot do all three.

mod fields;
pub mod grid;

pub use fields::DecodeError;
use fields::{field_err, kind_of};

use crate::view::{self, View};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;
use uuid::Uuid;

/// A decoded notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Sent once when a project is connected to the queue.
    ConnectionTest { project_id: Uuid },
    /// A training run finished.
    Training {
        project_id: Uuid,
        iteration_id: Uuid,
        status: TrainingStatus,
    },
    /// A model export finished.
    Export {
        project_id: Uuid,
        iteration_id: Uuid,
        status: ExportStatus,
        /// Where the exported model is. Absent when the export failed.
        model_uri: Option<String>,
    },
    /// A `type` this version does not know. Delivered as is, because the
    /// service may add notification types before cvnotify learns them.
    Unknown {
        #[serde(rename = "event_type")]
        r#type: String,
        content: Value,
    },
    /// An Event Grid event (Azure Machine Learning, Blob Storage, or any
    /// other type), in either schema. Serialized as its own kind
    /// (`"type": "blob_created"`, ...), like the variants above.
    #[serde(untagged)]
    Grid(Box<grid::GridEvent>),
}

/// `trainingStatus`; values the service may add later are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainingStatus {
    Completed,
    Failed,
    Other(String),
}

/// `exportStatus`; values the service may add later are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportStatus {
    Completed,
    Failed,
    Other(String),
}

impl TrainingStatus {
    fn parse(s: &str) -> Self {
        match s {
            "TrainingCompleted" => Self::Completed,
            "TrainingFailed" => Self::Failed,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The value as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Completed => "TrainingCompleted",
            Self::Failed => "TrainingFailed",
            Self::Other(s) => s,
        }
    }
}

impl ExportStatus {
    fn parse(s: &str) -> Self {
        match s {
            "ExportCompleted" => Self::Completed,
            "ExportFailed" => Self::Failed,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The value as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Completed => "ExportCompleted",
            Self::Failed => "ExportFailed",
            Self::Other(s) => s,
        }
    }
}

impl Serialize for TrainingStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for ExportStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Event {
    /// The routing name of the event type: `connection_test`, `training`,
    /// `export`, or for an unknown Custom Vision type its `type` value in
    /// lower case; for an Event Grid event its kind (`blob_created`,
    /// `blob_deleted`, `run_completed`, `run_status_changed`,
    /// `model_registered`, `model_deployed`, `dataset_drift_detected`, or
    /// `unknown`).
    pub fn type_key(&self) -> String {
        match self {
            Event::Unknown { r#type, .. } => r#type.to_ascii_lowercase(),
            _ => self.kind().into(),
        }
    }

    /// Whether the type is one this version does not know (Custom Vision's
    /// or Event Grid's): what the `unknown` routing name matches.
    pub fn is_unknown(&self) -> bool {
        match self {
            Event::Unknown { .. } => true,
            Event::Grid(g) => matches!(g.data, grid::Data::Unknown { .. }),
            _ => false,
        }
    }

    /// The type as the sender wrote it: Custom Vision's `type`, Event
    /// Grid's `eventType` or CloudEvents' `type`.
    pub fn wire_type(&self) -> &str {
        match self {
            Event::ConnectionTest { .. } => "ConnectionTest",
            Event::Training { .. } => "Training",
            Event::Export { .. } => "Export",
            Event::Unknown { r#type, .. } => r#type,
            Event::Grid(g) => &g.envelope.event_type,
        }
    }

    /// The Event Grid event, for one that is.
    pub fn grid(&self) -> Option<&grid::GridEvent> {
        match self {
            Event::Grid(g) => Some(g),
            _ => None,
        }
    }

    /// The event's `subject` (`/blobServices/default/containers/c/blobs/m.onnx`,
    /// `models/name:3`); Event Grid events only, and only when sent.
    pub fn subject(&self) -> Option<&str> {
        self.grid()?.envelope.subject.as_deref()
    }

    /// The blob of a `blob_created` or `blob_deleted` event: its `url`,
    /// `container` and `blob` (the path inside the container).
    pub fn blob(&self) -> Option<&grid::Blob> {
        match &self.grid()?.data {
            grid::Data::BlobCreated(b) | grid::Data::BlobDeleted(b) => Some(b),
            _ => None,
        }
    }

    pub fn project_id(&self) -> Option<Uuid> {
        match self {
            Event::ConnectionTest { project_id }
            | Event::Training { project_id, .. }
            | Event::Export { project_id, .. } => Some(*project_id),
            Event::Unknown { .. } | Event::Grid(_) => None,
        }
    }

    pub fn iteration_id(&self) -> Option<Uuid> {
        match self {
            Event::Training { iteration_id, .. } | Event::Export { iteration_id, .. } => {
                Some(*iteration_id)
            }
            _ => None,
        }
    }

    /// The status as written on the wire (`TrainingFailed`, ...).
    pub fn status(&self) -> Option<&str> {
        match self {
            Event::Training { status, .. } => Some(status.as_str()),
            Event::Export { status, .. } => Some(status.as_str()),
            _ => None,
        }
    }

    /// The short routing name of the status: `completed`, `failed`, or an
    /// unknown status in lower case with its type prefix removed; for
    /// `run_status_changed` its `run_status` in lower case (`notstarted`).
    pub fn status_key(&self) -> Option<String> {
        let (prefix, status) = match self {
            Event::Training { status, .. } => ("training", status.as_str()),
            Event::Export { status, .. } => ("export", status.as_str()),
            Event::Grid(g) => {
                return match &g.data {
                    grid::Data::RunStatusChanged(r) => {
                        r.run_status.as_deref().map(str::to_ascii_lowercase)
                    }
                    _ => None,
                };
            }
            _ => return None,
        };
        let lower = status.to_ascii_lowercase();
        Some(
            lower
                .strip_prefix(prefix)
                .filter(|rest| !rest.is_empty())
                .map(str::to_owned)
                .unwrap_or(lower),
        )
    }

    pub fn model_uri(&self) -> Option<&str> {
        match self {
            Event::Export { model_uri, .. } => model_uri.as_deref(),
            _ => None,
        }
    }

    /// The kind: its view's `kind` and the `event_type` label of
    /// `cvnotify_events_received_total` (a fixed set; `unknown` for any
    /// type this version does not know). Cheap: no view is built.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ConnectionTest { .. } => "connection_test",
            Event::Training { .. } => "training",
            Event::Export { .. } => "export",
            Event::Unknown { .. } => "unknown",
            Event::Grid(g) => g.data.kind(),
        }
    }

    /// The event as hooks, webhooks, the `log` handler and the message
    /// span see it: its name and its fields, in the order they are shown.
    /// The one place that says which fields each kind has (see
    /// [`crate::view`] for how each view renders them, and how to add a
    /// kind or a field).
    pub fn view(&self) -> View<'_> {
        match self {
            Event::ConnectionTest { project_id } => CustomVision {
                project_id: Some(*project_id),
                ..CustomVision::default()
            }
            .view(self.kind(), "ConnectionTest"),
            Event::Training {
                project_id,
                iteration_id,
                status,
            } => CustomVision {
                project_id: Some(*project_id),
                iteration_id: Some(*iteration_id),
                status: Some(status.as_str()),
                ..CustomVision::default()
            }
            .view(self.kind(), "Training"),
            Event::Export {
                project_id,
                iteration_id,
                status,
                model_uri,
            } => CustomVision {
                project_id: Some(*project_id),
                iteration_id: Some(*iteration_id),
                status: Some(status.as_str()),
                model_uri: model_uri.as_deref(),
            }
            .view(self.kind(), "Export"),
            // Its content reaches hooks and webhooks under `raw`.
            Event::Unknown { r#type, .. } => CustomVision::default().view(self.kind(), r#type),
            // One arm per Event Grid kind, in `grid.rs`.
            Event::Grid(g) => g.view(),
        }
    }
}

/// The fields of a Custom Vision event's view. Every kind shows all of
/// them, absent where it has none (`null` in the payload, an empty
/// variable): hooks and webhooks have always been given the four.
#[derive(Default)]
struct CustomVision<'a> {
    project_id: Option<Uuid>,
    iteration_id: Option<Uuid>,
    /// As written on the wire (`TrainingFailed`).
    status: Option<&'a str>,
    /// Complete, SAS included.
    model_uri: Option<&'a str>,
}

impl<'a> CustomVision<'a> {
    fn view(self, kind: &'static str, name: &'a str) -> View<'a> {
        View::new("Custom Vision", kind, name)
            .field("project_id", self.project_id.map(view::Value::Id))
            .context()
            .field("iteration_id", self.iteration_id.map(view::Value::Id))
            .context()
            .field("status", self.status.map(view::Value::Text))
            .field("model_uri", self.model_uri.map(view::Value::Url))
    }
}

/// One decoded event of a message, plus the envelope fields around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Custom Vision's top-level `version` (`"1.0"` today), if present.
    pub version: Option<String>,
    pub event: Event,
    /// The event's whole JSON object (an array's element), for handlers
    /// that forward the original.
    pub raw: Value,
    /// Its place in the message's array; `None` when the message is this
    /// one event.
    pub index: Option<usize>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

fn strip(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.trim_ascii();
    bytes.strip_prefix(BOM).unwrap_or(bytes).trim_ascii()
}

/// Decodes a queue message body (plain JSON first, then base64-encoded
/// JSON) into its events: one, or one per element of an array, in order.
/// Any event that cannot be decoded fails the whole message.
pub fn decode(body: &[u8]) -> Result<Vec<Notification>, DecodeError> {
    match json(body)? {
        Value::Array(items) if items.is_empty() => Err(DecodeError::EmptyArray),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let at = grid::At(Some(i));
                let schema = match &raw {
                    Value::Object(o) => grid::Schema::of(o),
                    other => {
                        return Err(field_err(
                            format!("[{i}]"),
                            format!("expected an event object, found {}", kind_of(other)),
                        ));
                    }
                };
                match schema {
                    Some(schema) => grid_notification(raw, schema, at),
                    None => Err(field_err(
                        format!("[{i}]"),
                        "not an Event Grid event (no `eventType`) nor a CloudEvents event \
                         (no `specversion`); an array holds only those",
                    )),
                }
            })
            .collect(),
        raw => {
            let schema = match &raw {
                Value::Object(o) => grid::Schema::of(o),
                other => return Err(DecodeError::NotAnObject(kind_of(other))),
            };
            Ok(vec![match schema {
                Some(schema) => grid_notification(raw, schema, grid::At(None))?,
                None => from_value(raw)?,
            }])
        }
    }
}

fn grid_notification(
    raw: Value,
    schema: grid::Schema,
    at: grid::At,
) -> Result<Notification, DecodeError> {
    let obj = raw.as_object().expect("the caller matched an object");
    let event = Event::Grid(Box::new(grid::decode(obj, schema, at)?));
    Ok(Notification {
        version: None,
        event,
        raw,
        index: at.0,
    })
}

/// The body's JSON: as it is, or base64-decoded.
fn json(body: &[u8]) -> Result<Value, DecodeError> {
    let body = strip(body);
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let value = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(json_err) => {
            let looks_like_json = matches!(body[0], b'{' | b'[' | b'"');
            match base64::engine::general_purpose::STANDARD.decode(body) {
                Ok(decoded) => {
                    let decoded = strip(&decoded);
                    serde_json::from_slice::<Value>(decoded)
                        .map_err(|e| DecodeError::InvalidBase64Json(e.to_string()))?
                }
                Err(_) if looks_like_json => {
                    return Err(DecodeError::InvalidJson(json_err.to_string()));
                }
                Err(b64_err) => {
                    return Err(DecodeError::NotJsonOrBase64 {
                        json: json_err.to_string(),
                        base64: b64_err.to_string(),
                    });
                }
            }
        }
    };
    Ok(value)
}

fn from_value(raw: Value) -> Result<Notification, DecodeError> {
    let obj = match &raw {
        Value::Object(o) => o,
        other => return Err(DecodeError::NotAnObject(kind_of(other))),
    };
    let version = match obj.get("version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(field_err(
                "version",
                format!("expected a string, found {}", kind_of(other)),
            ));
        }
    };
    let ty = match obj.get("type") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(Value::String(_)) => return Err(field_err("type", "is empty")),
        None | Some(Value::Null) => return Err(field_err("type", "missing")),
        Some(other) => {
            return Err(field_err(
                "type",
                format!("expected a string, found {}", kind_of(other)),
            ));
        }
    };
    let content = obj.get("Content");
    let event = match ty {
        "ConnectionTest" => {
            let c = content_object(obj, content)?;
            Event::ConnectionTest {
                project_id: guid(c, "projectId")?,
            }
        }
        "Training" => {
            let c = content_object(obj, content)?;
            Event::Training {
                project_id: guid(c, "projectId")?,
                iteration_id: guid(c, "iterationId")?,
                status: TrainingStatus::parse(string(c, "trainingStatus")?),
            }
        }
        "Export" => {
            let c = content_object(obj, content)?;
            let status = ExportStatus::parse(string(c, "exportStatus")?);
            let model_uri = optional_uri(c, "modelUri")?;
            if status == ExportStatus::Completed && model_uri.is_none() {
                return Err(field_err(
                    "Content.modelUri",
                    "missing; it is required when exportStatus is ExportCompleted",
                ));
            }
            Event::Export {
                project_id: guid(c, "projectId")?,
                iteration_id: guid(c, "iterationId")?,
                status,
                model_uri,
            }
        }
        other => Event::Unknown {
            r#type: other.to_owned(),
            content: content.cloned().unwrap_or(Value::Null),
        },
    };
    Ok(Notification {
        version,
        event,
        raw,
        index: None,
    })
}

fn content_object<'a>(
    envelope: &Map<String, Value>,
    content: Option<&'a Value>,
) -> Result<&'a Map<String, Value>, DecodeError> {
    match content {
        Some(Value::Object(c)) => Ok(c),
        None | Some(Value::Null) => {
            let hint = if envelope.contains_key("content") {
                " (found `content`; the field is `Content` with a capital C)"
            } else {
                ""
            };
            Err(field_err("Content", format!("missing{hint}")))
        }
        Some(other) => Err(field_err(
            "Content",
            format!("expected an object, found {}", kind_of(other)),
        )),
    }
}

fn string<'a>(c: &'a Map<String, Value>, name: &str) -> Result<&'a str, DecodeError> {
    match c.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(field_err(format!("Content.{name}"), "is empty")),
        None | Some(Value::Null) => Err(field_err(format!("Content.{name}"), "missing")),
        Some(other) => Err(field_err(
            format!("Content.{name}"),
            format!("expected a string, found {}", kind_of(other)),
        )),
    }
}

fn guid(c: &Map<String, Value>, name: &str) -> Result<Uuid, DecodeError> {
    let s = string(c, name)?;
    // Only the canonical 8-4-4-4-12 form, in any case: the service writes
    // nothing else, and the braced or URN forms would only hide a bad producer.
    if s.len() != 36 {
        return Err(field_err(
            format!("Content.{name}"),
            format!(
                "not a GUID (expected 8-4-4-4-12 hex digits, found {} characters)",
                s.chars().count()
            ),
        ));
    }
    Uuid::try_parse(s)
        .map_err(|e| field_err(format!("Content.{name}"), format!("not a GUID ({e})")))
}

fn optional_uri(c: &Map<String, Value>, name: &str) -> Result<Option<String>, DecodeError> {
    let s = match c.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(field_err(
                format!("Content.{name}"),
                format!("expected a string, found {}", kind_of(other)),
            ));
        }
    };
    fields::http_url(&format!("Content.{name}"), s).map(|u| Some(u.to_string()))
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::ConnectionTest { project_id } => {
                write!(f, "ConnectionTest project={project_id}")
            }
            Event::Training {
                project_id,
                iteration_id,
                status,
            } => write!(
                f,
                "Training {} project={project_id} iteration={iteration_id}",
                status.as_str()
            ),
            Event::Export {
                project_id,
                iteration_id,
                status,
                ..
            } => write!(
                f,
                "Export {} project={project_id} iteration={iteration_id}",
                status.as_str()
            ),
            Event::Unknown { r#type, .. } => write!(f, "{type} (unknown type)"),
            Event::Grid(g) => match &g.envelope.subject {
                Some(subject) => write!(f, "{} subject={subject}", g.envelope.event_type),
                None => write!(f, "{} id={}", g.envelope.event_type, g.envelope.id),
            },
        }
    }
}

/// One event of each kind, for the tests that pin what the outside sees of
/// events (here and in the handlers): every Custom Vision kind, an export
/// with and without its model URI, an unknown status with a NUL in it
/// (which an environment variable cannot hold), and an unknown type.
#[cfg(test)]
pub(crate) fn samples() -> Vec<(&'static str, Event)> {
    // A new kind fails to compile here: give it a sample below.
    let _every_kind_has_a_sample = |e: &Event| match e {
        Event::ConnectionTest { .. }
        | Event::Training { .. }
        | Event::Export { .. }
        | Event::Unknown { .. } => (),
        Event::Grid(g) => match g.data {
            grid::Data::BlobCreated(_)
            | grid::Data::BlobDeleted(_)
            | grid::Data::RunCompleted(_)
            | grid::Data::RunStatusChanged(_)
            | grid::Data::ModelRegistered(_)
            | grid::Data::ModelDeployed(_)
            | grid::Data::DatasetDriftDetected(_)
            | grid::Data::Unknown { .. } => (),
        },
    };
    let p = uuid::uuid!("8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c");
    let i = uuid::uuid!("0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f");
    vec![
        ("connection_test", Event::ConnectionTest { project_id: p }),
        (
            "training",
            Event::Training {
                project_id: p,
                iteration_id: i,
                status: TrainingStatus::Failed,
            },
        ),
        (
            "training_unknown_status",
            Event::Training {
                project_id: p,
                iteration_id: i,
                status: TrainingStatus::Other("Training\0Paused".into()),
            },
        ),
        (
            "export_completed",
            Event::Export {
                project_id: p,
                iteration_id: i,
                status: ExportStatus::Completed,
                model_uri: Some(
                    "https://acct.blob.core.windows.net/models/p%20-%20i.ONNX?sv=1&sig=abc".into(),
                ),
            },
        ),
        (
            "export_failed",
            Event::Export {
                project_id: p,
                iteration_id: i,
                status: ExportStatus::Failed,
                model_uri: None,
            },
        ),
        (
            "unknown",
            Event::Unknown {
                r#type: "Deployment".into(),
                content: serde_json::json!({"x": 1}),
            },
        ),
    ]
    .into_iter()
    .chain(grid_samples())
    .collect()
}

/// One Event Grid event of each kind (see [`samples`]).
#[cfg(test)]
fn grid_samples() -> Vec<(&'static str, Event)> {
    use grid::{Blob, Data, Deployment, Drift, Envelope, GridEvent, Model, Run, Schema};
    let map = |v: Value| v.as_object().cloned();
    let storage =
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct";
    let ws = "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w";
    let event = |event_type: &str, source: &str, subject: &str, schema, data| {
        Event::Grid(Box::new(GridEvent {
            envelope: Envelope {
                event_type: event_type.into(),
                id: "831e1650-001e-001b-66ab-eeb76e069631".into(),
                source: Some(source.into()),
                subject: Some(subject.into()),
                time: Some("2026-11-21T06:01:11.737Z".into()),
                schema,
            },
            data,
        }))
    };
    let run = |run_status: Option<&str>| Run {
        workspace: Some(ws.into()),
        experiment_id: Some("0fa9dfaa-cba3-4fa7-b590-23e48548f5c1".into()),
        experiment_name: Some("automl-images".into()),
        run_id: Some("AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc".into()),
        run_type: None,
        run_status: run_status.map(Into::into),
        run_tags: map(serde_json::json!({"team": "vision"})),
        run_properties: map(serde_json::json!({})),
    };
    vec![
        (
            "blob_created",
            event(
                "Microsoft.Storage.BlobCreated",
                storage,
                "/blobServices/default/containers/models/blobs/automl/model 1.onnx",
                Schema::EventGrid,
                Data::BlobCreated(Blob {
                    url: "https://acct.blob.core.windows.net/models/automl/model%201.onnx?sv=1&sig=abc"
                        .into(),
                    container: "models".into(),
                    blob: "automl/model 1.onnx".into(),
                    api: Some("PutBlockList".into()),
                    content_type: Some("application/octet-stream".into()),
                    content_length: Some(524288),
                    etag: Some("0x8D4BCC2E4835CD0".into()),
                    blob_type: Some("BlockBlob".into()),
                    sequencer: Some("00000000000004420000000000028963".into()),
                }),
            ),
        ),
        (
            "blob_deleted",
            event(
                "Microsoft.Storage.BlobDeleted",
                storage,
                "/blobServices/default/containers/models/blobs/old.onnx",
                Schema::CloudEvents,
                Data::BlobDeleted(Blob {
                    url: "https://acct.blob.core.windows.net/models/old.onnx".into(),
                    container: "models".into(),
                    blob: "old.onnx".into(),
                    api: Some("DeleteBlob".into()),
                    content_type: None,
                    content_length: None,
                    etag: None,
                    blob_type: Some("BlockBlob".into()),
                    sequencer: None,
                }),
            ),
        ),
        (
            "run_completed",
            event(
                "Microsoft.MachineLearningServices.RunCompleted",
                ws,
                "experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc",
                Schema::EventGrid,
                Data::RunCompleted(run(None)),
            ),
        ),
        (
            "run_status_changed",
            event(
                "Microsoft.MachineLearningServices.RunStatusChanged",
                ws,
                "experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc",
                Schema::CloudEvents,
                Data::RunStatusChanged(run(Some("Failed"))),
            ),
        ),
        (
            "model_registered",
            event(
                "Microsoft.MachineLearningServices.ModelRegistered",
                ws,
                "models/sign-detector:3",
                Schema::CloudEvents,
                Data::ModelRegistered(Model {
                    model_name: Some("sign-detector".into()),
                    model_version: Some("3".into()),
                    model_tags: map(serde_json::json!({"stage": "candidate"})),
                    model_properties: map(serde_json::json!({"accuracy": "0.91"})),
                }),
            ),
        ),
        (
            "model_deployed",
            event(
                "Microsoft.MachineLearningServices.ModelDeployed",
                ws,
                "endpoints/sign-service",
                Schema::EventGrid,
                Data::ModelDeployed(Deployment {
                    service_name: Some("sign-service".into()),
                    service_compute_type: Some("ACI".into()),
                    model_ids: vec!["sign-detector:3".into(), "sign-ocr:1".into()],
                    service_tags: map(serde_json::json!({})),
                    service_properties: map(serde_json::json!({"region": "westeurope"})),
                }),
            ),
        ),
        (
            "dataset_drift_detected",
            event(
                "Microsoft.MachineLearningServices.DatasetDriftDetected",
                ws,
                "datadrifts/drift-1/runs/run-1",
                Schema::EventGrid,
                Data::DatasetDriftDetected(Drift {
                    data_drift_id: Some("drift-1".into()),
                    data_drift_name: Some("weekly".into()),
                    run_id: Some("run-1".into()),
                    base_dataset_id: Some("base-ds".into()),
                    target_dataset_id: Some("target-ds".into()),
                    drift_coefficient: Some(0.83),
                    start_time: Some("2026-11-14T00:00:00Z".into()),
                    end_time: Some("2026-11-21T00:00:00Z".into()),
                }),
            ),
        ),
        (
            "grid_unknown",
            event(
                "Microsoft.Resources.ResourceWriteSuccess",
                "/subscriptions/s",
                "/subscriptions/s/resourceGroups/g",
                Schema::EventGrid,
                Data::Unknown {
                    data: serde_json::json!({"x": 1}),
                },
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Written;

    const P: &str = "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c";
    const I: &str = "0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f";

    // The three payloads exactly as the reference guide prints them (the
    // guide's all-zero GUIDs, its odd indentation and the space before commas).
    const REF_CONNECTION_TEST: &str = r#"{
"version": "1.0" ,
"type": "ConnectionTest",
"Content":
    {
    "projectId": "00000000-0000-0000-0000-000000000000"
    }
}"#;
    const REF_TRAINING: &str = r#"{
"version": "1.0" ,
"type": "Training",
"Content":
    {
    "projectId": "00000000-0000-0000-0000-000000000000",
    "iterationId": "00000000-0000-0000-0000-000000000000",
    "trainingStatus": "TrainingCompleted"
    }
}"#;
    const REF_EXPORT: &str = r#"{
"version": "1.0" ,
"type": "Export",
"Content":
    {
    "projectId": "00000000-0000-0000-0000-000000000000",
    "iterationId": "00000000-0000-0000-0000-000000000000",
    "exportStatus": "ExportCompleted",
    "modelUri": "https://acct.blob.core.windows.net/models/00000000-0000-0000-0000-000000000000%20-%2000000000-0000-0000-0000-000000000000.ONNX?sv=2022-11-02&sig=abc"
    }
}"#;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// The body's one event (a message that is not an array).
    fn decode(body: &[u8]) -> Result<Notification, DecodeError> {
        super::decode(body).map(|mut events| {
            assert_eq!(events.len(), 1, "one event");
            events.remove(0)
        })
    }

    fn err(body: &str) -> String {
        decode(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn reference_connection_test() {
        let n = decode(REF_CONNECTION_TEST.as_bytes()).unwrap();
        assert_eq!(n.version.as_deref(), Some("1.0"));
        assert_eq!(
            n.event,
            Event::ConnectionTest {
                project_id: Uuid::nil()
            }
        );
    }

    #[test]
    fn reference_training() {
        let n = decode(REF_TRAINING.as_bytes()).unwrap();
        assert_eq!(
            n.event,
            Event::Training {
                project_id: Uuid::nil(),
                iteration_id: Uuid::nil(),
                status: TrainingStatus::Completed
            }
        );
    }

    #[test]
    fn reference_export() {
        let n = decode(REF_EXPORT.as_bytes()).unwrap();
        match n.event {
            Event::Export {
                status, model_uri, ..
            } => {
                assert_eq!(status, ExportStatus::Completed);
                assert!(model_uri.unwrap().contains("ONNX?sv="));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn training_failed_and_export_failed_without_uri() {
        let t = format!(
            r#"{{"version":"1.0","type":"Training","Content":{{"projectId":"{P}","iterationId":"{I}","trainingStatus":"TrainingFailed"}}}}"#
        );
        assert_eq!(
            decode(t.as_bytes()).unwrap().event.status_key().unwrap(),
            "failed"
        );
        let e = format!(
            r#"{{"version":"1.0","type":"Export","Content":{{"projectId":"{P}","iterationId":"{I}","exportStatus":"ExportFailed"}}}}"#
        );
        let n = decode(e.as_bytes()).unwrap();
        assert_eq!(n.event.model_uri(), None);
        assert_eq!(n.event.status(), Some("ExportFailed"));
    }

    #[test]
    fn base64_variants() {
        for body in [REF_CONNECTION_TEST, REF_TRAINING, REF_EXPORT] {
            let plain = decode(body.as_bytes()).unwrap();
            assert_eq!(decode(b64(body).as_bytes()).unwrap(), plain);
            // Whitespace and a BOM around the base64 text, and a BOM inside it.
            let padded = format!("\u{feff}  {}\n", b64(body));
            assert_eq!(decode(padded.as_bytes()).unwrap(), plain);
            let inner_bom = b64(&format!("\u{feff}{body}"));
            assert_eq!(decode(inner_bom.as_bytes()).unwrap(), plain);
        }
    }

    #[test]
    fn bom_and_whitespace_around_json() {
        let body = format!("\u{feff}\r\n\t {REF_TRAINING} \n\n");
        assert!(matches!(
            decode(body.as_bytes()).unwrap().event,
            Event::Training { .. }
        ));
    }

    #[test]
    fn guids_in_any_case() {
        let upper = P.to_ascii_uppercase();
        let body = format!(r#"{{"type":"ConnectionTest","Content":{{"projectId":"{upper}"}}}}"#);
        assert_eq!(
            decode(body.as_bytes())
                .unwrap()
                .event
                .project_id()
                .unwrap()
                .to_string(),
            P
        );
    }

    #[test]
    fn unknown_extra_fields_are_ignored() {
        let body = format!(
            r#"{{"version":"2.0","type":"ConnectionTest","traceId":7,"Content":{{"projectId":"{P}","extra":{{"a":[1]}}}}}}"#
        );
        assert!(decode(body.as_bytes()).is_ok());
    }

    #[test]
    fn unknown_status_is_kept() {
        let body = format!(
            r#"{{"type":"Training","Content":{{"projectId":"{P}","iterationId":"{I}","trainingStatus":"TrainingCancelled"}}}}"#
        );
        let n = decode(body.as_bytes()).unwrap();
        assert_eq!(n.event.status(), Some("TrainingCancelled"));
        assert_eq!(n.event.status_key().as_deref(), Some("cancelled"));
    }

    #[test]
    fn unknown_type_is_delivered() {
        let body = r#"{"version":"1.0","type":"Deployment","Content":{"x":1}}"#;
        let n = decode(body.as_bytes()).unwrap();
        assert_eq!(
            n.event,
            Event::Unknown {
                r#type: "Deployment".into(),
                content: serde_json::json!({"x": 1})
            }
        );
        assert_eq!(n.event.type_key(), "deployment");
    }

    #[test]
    fn not_json_nor_base64() {
        let e = err("hello world");
        assert!(
            e.contains("not valid JSON") && e.contains("not base64"),
            "{e}"
        );
    }

    #[test]
    fn broken_json_reports_json_error() {
        let e = err(r#"{"type": "Training", "Content": {"#);
        assert!(e.starts_with("the body is not valid JSON"), "{e}");
    }

    #[test]
    fn base64_of_non_json() {
        let e = err(&b64("just text"));
        assert!(
            e.contains("base64 but the decoded bytes are not valid JSON"),
            "{e}"
        );
    }

    #[test]
    fn base64_of_invalid_utf8() {
        let e = err(&base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, b'{', 0x80]));
        assert!(
            e.contains("base64 but the decoded bytes are not valid JSON"),
            "{e}"
        );
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let e = err(&format!("{REF_TRAINING} trailing"));
        assert!(
            e.contains("not valid JSON") && e.contains("trailing"),
            "{e}"
        );
    }

    #[test]
    fn not_an_object() {
        assert_eq!(
            err("[1,2]"),
            "`[0]`: expected an event object, found a number"
        );
        assert_eq!(
            err("42"),
            "the body is JSON but not an object or an array (found a number)"
        );
    }

    #[test]
    fn missing_type() {
        assert_eq!(err(r#"{"version":"1.0","Content":{}}"#), "`type`: missing");
        assert_eq!(
            err(r#"{"type":7}"#),
            "`type`: expected a string, found a number"
        );
    }

    #[test]
    fn missing_required_fields_are_named() {
        assert_eq!(
            err(
                r#"{"type":"Training","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","trainingStatus":"TrainingFailed"}}"#
            ),
            "`Content.iterationId`: missing"
        );
        assert_eq!(err(r#"{"type":"Training"}"#), "`Content`: missing");
        assert_eq!(
            err(r#"{"type":"Training","content":{}}"#),
            "`Content`: missing (found `content`; the field is `Content` with a capital C)"
        );
        assert_eq!(
            err(r#"{"type":"Export","Content":[]}"#),
            "`Content`: expected an object, found an array"
        );
    }

    #[test]
    fn export_completed_requires_model_uri() {
        let body = format!(
            r#"{{"type":"Export","Content":{{"projectId":"{P}","iterationId":"{I}","exportStatus":"ExportCompleted"}}}}"#
        );
        assert!(err(&body).starts_with("`Content.modelUri`: missing"));
    }

    #[test]
    fn bad_guid() {
        let body = r#"{"type":"ConnectionTest","Content":{"projectId":"not-a-guid"}}"#;
        assert!(
            err(body).starts_with("`Content.projectId`: not a GUID"),
            "{}",
            err(body)
        );
        let body = r#"{"type":"ConnectionTest","Content":{"projectId":"{8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c}"}}"#;
        assert!(err(body).starts_with("`Content.projectId`: not a GUID"));
        let body = r#"{"type":"ConnectionTest","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5bXX"}}"#;
        assert!(err(body).starts_with("`Content.projectId`: not a GUID"));
    }

    #[test]
    fn wrong_json_types() {
        let body = format!(
            r#"{{"type":"Training","Content":{{"projectId":"{P}","iterationId":"{I}","trainingStatus":1}}}}"#
        );
        assert_eq!(
            err(&body),
            "`Content.trainingStatus`: expected a string, found a number"
        );
        let body = r#"{"type":"ConnectionTest","Content":{"projectId":true}}"#;
        assert_eq!(
            err(body),
            "`Content.projectId`: expected a string, found a boolean"
        );
        let body = format!(
            r#"{{"type":"Export","Content":{{"projectId":"{P}","iterationId":"{I}","exportStatus":"ExportCompleted","modelUri":{{}}}}}}"#
        );
        assert_eq!(
            err(&body),
            "`Content.modelUri`: expected a string, found an object"
        );
        assert_eq!(
            err(r#"{"version":1,"type":"ConnectionTest"}"#),
            "`version`: expected a string, found a number"
        );
    }

    #[test]
    fn model_uri_must_be_http() {
        let body = format!(
            r#"{{"type":"Export","Content":{{"projectId":"{P}","iterationId":"{I}","exportStatus":"ExportCompleted","modelUri":"file:///etc/passwd"}}}}"#
        );
        assert_eq!(
            err(&body),
            "`Content.modelUri`: scheme `file` is not allowed; expected https"
        );
        let body = format!(
            r#"{{"type":"Export","Content":{{"projectId":"{P}","iterationId":"{I}","exportStatus":"ExportCompleted","modelUri":"no scheme"}}}}"#
        );
        assert!(err(&body).starts_with("`Content.modelUri`: not a URL"));
    }

    /// Regression (issue 11, finding 7): the URL parser drops a newline and
    /// tabs, so this decoded and the raw string, shell syntax included,
    /// reached CVNOTIFY_MODEL_URI, hook stdin and webhook bodies.
    #[test]
    fn model_uri_with_control_characters_or_inner_space_is_refused() {
        for raw in [
            "  https://a.blob.core.windows.net/c/m.onnx\n$(touch x) `id`\t",
            "https://a.blob.core.windows.net/c/m.onnx\t",
            "https://a.blob.core.windows.net/c/m\u{a0}.onnx",
            "https://a.blob.core.windows.net/c/m.onnx\r",
            "https://a.blob.core.windows.net/c/p - i\n.onnx",
        ] {
            let body = serde_json::json!({"type":"Export","Content":{"projectId":P,"iterationId":I,"exportStatus":"ExportCompleted","modelUri":raw}}).to_string();
            let e = err(&body);
            assert!(
                e.starts_with("`Content.modelUri`: not a URL: it contains"),
                "{raw:?}: {e}"
            );
        }
    }

    #[test]
    fn the_forwarded_model_uri_is_the_validated_normalized_one() {
        let body = serde_json::json!({"type":"Export","Content":{"projectId":P,"iterationId":I,"exportStatus":"ExportCompleted","modelUri":"  HTTPS://A.blob.core.windows.net/c/p%20-%20i.ONNX?sv=1&sig=a%2Bb  "}}).to_string();
        let n = decode(body.as_bytes()).unwrap();
        assert_eq!(
            n.event.model_uri(),
            Some("https://a.blob.core.windows.net/c/p%20-%20i.ONNX?sv=1&sig=a%2Bb")
        );
    }

    fn model_uri_of(raw: &str) -> Result<String, String> {
        let body = serde_json::json!({"type":"Export","Content":{"projectId":P,"iterationId":I,"exportStatus":"ExportCompleted","modelUri":raw}}).to_string();
        decode(body.as_bytes())
            .map(|n| n.event.model_uri().unwrap().to_owned())
            .map_err(|e| e.to_string())
    }

    /// Regression (issue 17, finding 10): a backup blob is named
    /// `{projectId} - {iterationId}.{platform}`, and a producer writing
    /// `Uri.OriginalString` sends the spaces as they are; that was a decode
    /// error, so every such export was poisoned. A space in the path is
    /// now encoded once; `%20` stays `%20`; the forwarded URL is the
    /// validated one either way.
    #[test]
    fn a_space_in_the_path_is_encoded_once() {
        let encoded = format!("https://a.blob.core.windows.net/models/{P}%20-%20{I}.ONNX");
        for raw in [
            format!("https://a.blob.core.windows.net/models/{P} - {I}.ONNX"),
            format!("https://a.blob.core.windows.net/models/{P}%20- {I}.ONNX"),
            encoded.clone(),
        ] {
            assert_eq!(model_uri_of(&raw).as_deref(), Ok(encoded.as_str()), "{raw}");
        }
        assert_eq!(
            model_uri_of(&format!(
                "https://a.blob.core.windows.net/models/{P} - {I}.ONNX?sv=1&sig=a%2Bb"
            ))
            .unwrap(),
            format!("{encoded}?sv=1&sig=a%2Bb")
        );
        // An encoded `%` stays what it is: `%2520` is not decoded.
        assert_eq!(
            model_uri_of("https://a.blob.core.windows.net/c/a%2520b c.ONNX").unwrap(),
            "https://a.blob.core.windows.net/c/a%2520b%20c.ONNX"
        );
    }

    /// A space anywhere but the path stays a decode error: in a SAS it can
    /// only be a `+` someone form-decoded, and encoding it would not give
    /// the signature back.
    #[test]
    fn a_space_outside_the_path_is_refused() {
        for (raw, why) in [
            (
                "https://a.blob.core.windows.net/c/m.ONNX?sv=1&sig=a b",
                "white space in its query",
            ),
            (
                "https://a.blob.core.windows.net/c/m.ONNX#a b",
                "white space in its query",
            ),
            (
                "https://a.blob.core.windows.net?x=/ y",
                "white space in its query",
            ),
            (
                "https://a b.blob.core.windows.net/c/m.ONNX",
                "before its path",
            ),
            (
                "https://u v@a.blob.core.windows.net/c/m.ONNX",
                "before its path",
            ),
            (
                "https://a.blob.core.windows.net c/m.ONNX",
                "before its path",
            ),
        ] {
            let e = model_uri_of(raw).unwrap_err();
            assert!(
                e.starts_with("`Content.modelUri`: not a URL: it contains") && e.contains(why),
                "{raw:?}: {e}"
            );
        }
    }

    #[test]
    fn empty_body() {
        assert_eq!(err("  \n"), "the body is empty");
        assert_eq!(err("\u{feff}"), "the body is empty");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let body = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(err(&body).contains("recursion limit"));
        let body = format!(
            r#"{{"type":"X","Content":{}{}}}"#,
            "{\"a\":".repeat(10_000),
            "}".repeat(10_000)
        );
        assert!(err(&body).contains("recursion limit"));
    }

    /// The README's table of event fields (in "The events") lists every
    /// field of every kind's view with its variable, value, log and span
    /// columns as the views render them: adding a field or a kind fails
    /// here until the README says so, and prints the rows to paste.
    #[test]
    fn the_readme_lists_every_field_of_every_event_kind() {
        let readme = include_str!("../README.md");
        let start = "<!-- event fields:";
        let end = "<!-- end of event fields -->";
        let table = &readme[readme.find(start).expect("the table's start marker")..];
        let table = &table[..table.find(end).expect("the table's end marker")];
        let documented: Vec<&str> = table.lines().filter(|l| l.starts_with("| `")).collect();
        let mut want = vec![
            "| `type` | `CVNOTIFY_EVENT_TYPE` | text | `event_type` | `event_type` |".to_owned(),
        ];
        for (_, event) in samples() {
            for f in event.view().fields {
                let var = f
                    .env_name
                    .map_or_else(|| f.name.to_ascii_uppercase(), str::to_owned);
                let (value, log) = match &f.value {
                    None => continue,
                    Some(view::Value::Text(_)) => ("text", "yes"),
                    Some(view::Value::Id(_)) => ("GUID", "yes"),
                    Some(view::Value::Url(_)) => ("URL", "without its query"),
                    Some(view::Value::Int(_) | view::Value::UInt(_) | view::Value::Float(_)) => {
                        ("number", "yes")
                    }
                    Some(view::Value::Bool(_)) => ("boolean", "yes"),
                    Some(view::Value::List(_)) => ("list", "JSON text"),
                    Some(view::Value::Map(_)) => ("object", "JSON text"),
                    Some(view::Value::Json(_)) => ("JSON", "JSON text"),
                };
                let span = if f.context { "yes" } else { "no" };
                let row = format!(
                    "| `{}` | `CVNOTIFY_{var}` | {value} | {log} | {span} |",
                    f.name
                );
                if !want.contains(&row) {
                    want.push(row);
                }
            }
        }
        let missing: Vec<&String> = want
            .iter()
            .filter(|row| !documented.iter().any(|d| d.starts_with(row.as_str())))
            .collect();
        assert!(
            missing.is_empty() && documented.len() == want.len(),
            "README.md's event fields table is not what src/event.rs shows; its rows should start:\n{}\n(documented: {} rows)",
            want.join("\n"),
            documented.len()
        );
    }

    /// A line logged inside a span declared as the message's (its event
    /// fields) after
    /// [`View::record_context`], in text or JSON.
    fn context(event: &Event, json: bool) -> String {
        let out = Written::default();
        let fmt = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .with_writer(out.clone());
        let log = || {
            let span = tracing::info_span!(
                "message",
                event_type = tracing::field::Empty,
                project_id = tracing::field::Empty,
                iteration_id = tracing::field::Empty,
            );
            event.view().record_context(&span);
            span.in_scope(|| tracing::info!("Inside"));
        };
        if json {
            tracing::subscriber::with_default(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true)
                    .finish(),
                log,
            );
        } else {
            tracing::subscriber::with_default(fmt.finish(), log);
        }
        out.text()
    }

    /// The message span's event fields for each event kind, in text and in
    /// JSON. Pinned (in worker/lifecycle.rs) before they were recorded from
    /// the event's view, and unchanged since.
    #[test]
    fn the_span_fields_of_each_event_kind_are_pinned() {
        let (p, i) = (Uuid::parse_str(P).unwrap(), Uuid::parse_str(I).unwrap());
        let cases = [
            (
                Event::ConnectionTest { project_id: p },
                format!(r#"INFO message{{event_type="ConnectionTest" project_id={p}}}: Inside"#),
                format!(
                    r#"{{"level":"INFO","message":"Inside","spans":[{{"event_type":"ConnectionTest","project_id":"{p}","name":"message"}}]}}"#
                ),
            ),
            (
                Event::Training {
                    project_id: p,
                    iteration_id: i,
                    status: TrainingStatus::Completed,
                },
                format!(
                    r#"INFO message{{event_type="Training" project_id={p} iteration_id={i}}}: Inside"#
                ),
                format!(
                    r#"{{"level":"INFO","message":"Inside","spans":[{{"event_type":"Training","iteration_id":"{i}","project_id":"{p}","name":"message"}}]}}"#
                ),
            ),
            (
                Event::Export {
                    project_id: p,
                    iteration_id: i,
                    status: ExportStatus::Completed,
                    model_uri: Some("https://a.blob.core.windows.net/c/m?sig=secret".into()),
                },
                format!(
                    r#"INFO message{{event_type="Export" project_id={p} iteration_id={i}}}: Inside"#
                ),
                format!(
                    r#"{{"level":"INFO","message":"Inside","spans":[{{"event_type":"Export","iteration_id":"{i}","project_id":"{p}","name":"message"}}]}}"#
                ),
            ),
            (
                Event::Unknown {
                    r#type: "Deployment".into(),
                    content: serde_json::json!({"x": 1}),
                },
                r#"INFO message{event_type="Deployment"}: Inside"#.to_owned(),
                r#"{"level":"INFO","message":"Inside","spans":[{"event_type":"Deployment","name":"message"}]}"#
                    .to_owned(),
            ),
        ];
        for (event, text, json) in &cases {
            assert_eq!(context(event, false), *text, "text context of {event:?}");
            assert_eq!(context(event, true), *json, "JSON context of {event:?}");
        }
    }

    /// What each view makes of each sample: the payload's event part (keys
    /// sorted, as serde_json writes them), the hook's event variables, the
    /// log record's event fields (short ones, then long ones). The handler
    /// tests pin how each is put together with the delivery's own fields;
    /// both were pinned, unchanged, before and after the views existed.
    #[test]
    fn the_view_of_each_event_kind_is_pinned() {
        let (p, i) = (P, I);
        let mut want: Vec<(&str, String, String, String)> = vec![
            (
                "connection_test",
                format!(r#"{{"iteration_id":null,"model_uri":null,"project_id":"{p}","status":null,"type":"ConnectionTest"}}"#),
                format!(r#"CVNOTIFY_EVENT_TYPE=ConnectionTest CVNOTIFY_PROJECT_ID={p} CVNOTIFY_ITERATION_ID= CVNOTIFY_STATUS= CVNOTIFY_MODEL_URI="#),
                format!(r#"event_type="ConnectionTest" project_id="{p}" iteration_id status model_uri |"#),
            ),
            (
                "training",
                format!(r#"{{"iteration_id":"{i}","model_uri":null,"project_id":"{p}","status":"TrainingFailed","type":"Training"}}"#),
                format!(r#"CVNOTIFY_EVENT_TYPE=Training CVNOTIFY_PROJECT_ID={p} CVNOTIFY_ITERATION_ID={i} CVNOTIFY_STATUS=TrainingFailed CVNOTIFY_MODEL_URI="#),
                format!(r#"event_type="Training" project_id="{p}" iteration_id="{i}" status="TrainingFailed" model_uri |"#),
            ),
            (
                "training_unknown_status",
                format!(r#"{{"iteration_id":"{i}","model_uri":null,"project_id":"{p}","status":"Training\u0000Paused","type":"Training"}}"#),
                format!(
                    "CVNOTIFY_EVENT_TYPE=Training CVNOTIFY_PROJECT_ID={p} CVNOTIFY_ITERATION_ID={i} CVNOTIFY_STATUS=Training\u{fffd}Paused CVNOTIFY_MODEL_URI="
                ),
                format!(r#"event_type="Training" project_id="{p}" iteration_id="{i}" status="Training\0Paused" model_uri |"#),
            ),
            (
                "export_completed",
                format!(r#"{{"iteration_id":"{i}","model_uri":"https://acct.blob.core.windows.net/models/p%20-%20i.ONNX?sv=1&sig=abc","project_id":"{p}","status":"ExportCompleted","type":"Export"}}"#),
                format!(r#"CVNOTIFY_EVENT_TYPE=Export CVNOTIFY_PROJECT_ID={p} CVNOTIFY_ITERATION_ID={i} CVNOTIFY_STATUS=ExportCompleted CVNOTIFY_MODEL_URI=https://acct.blob.core.windows.net/models/p%20-%20i.ONNX?sv=1&sig=abc"#),
                format!(r#"event_type="Export" project_id="{p}" iteration_id="{i}" status="ExportCompleted" | model_uri="https://acct.blob.core.windows.net/models/p%20-%20i.ONNX?REDACTED""#),
            ),
            (
                "export_failed",
                format!(r#"{{"iteration_id":"{i}","model_uri":null,"project_id":"{p}","status":"ExportFailed","type":"Export"}}"#),
                format!(r#"CVNOTIFY_EVENT_TYPE=Export CVNOTIFY_PROJECT_ID={p} CVNOTIFY_ITERATION_ID={i} CVNOTIFY_STATUS=ExportFailed CVNOTIFY_MODEL_URI="#),
                format!(r#"event_type="Export" project_id="{p}" iteration_id="{i}" status="ExportFailed" model_uri |"#),
            ),
            (
                "unknown",
                r#"{"iteration_id":null,"model_uri":null,"project_id":null,"status":null,"type":"Deployment"}"#.to_owned(),
                r#"CVNOTIFY_EVENT_TYPE=Deployment CVNOTIFY_PROJECT_ID= CVNOTIFY_ITERATION_ID= CVNOTIFY_STATUS= CVNOTIFY_MODEL_URI="#.to_owned(),
                r#"event_type="Deployment" project_id iteration_id status model_uri |"#.to_owned(),
            ),
        ];
        want.extend(
            GRID_VIEWS
                .iter()
                .map(|[k, p, e, l]| (*k, (*p).to_owned(), (*e).to_owned(), (*l).to_owned())),
        );
        let got = samples();
        let dump = std::env::var_os("DUMP_VIEWS").is_some();
        if !dump {
            assert_eq!(got.len(), want.len(), "one expectation per sample");
        }
        let none = ("", String::new(), String::new(), String::new());
        for (i, (kind, event)) in got.iter().enumerate() {
            let (want_kind, payload, env, log) = want.get(i).unwrap_or(&none);
            if !dump {
                assert_eq!(kind, want_kind);
            }
            let view = event.view();
            let json = serde_json::to_string(&view.payload()).unwrap();
            let vars: Vec<String> = view.env().map(|(k, v)| format!("{k}={v}")).collect();
            let (short, long) = view.log_fields();
            // `name` alone: listed in the record's field set, no value.
            let fields = |fs: Vec<crate::view::LogField>| -> Vec<String> {
                fs.into_iter()
                    .map(|(name, v)| match v {
                        None => name.to_owned(),
                        Some(crate::view::LogValue::Str(s)) => format!("{name}={s:?}"),
                        Some(other) => format!("{name}={other:?}"),
                    })
                    .collect()
            };
            let log_fields = format!("{} | {}", fields(short).join(" "), fields(long).join(" "));
            let log_fields = log_fields.trim_end();
            // `DUMP_VIEWS=1` prints each sample's views as GRID_VIEWS
            // writes them, to review and paste for a new kind.
            if dump {
                eprintln!(
                    "    [\n        {kind:?},\n        r#\"{json}\"#,\n        r#\"{}\"#,\n        r#\"{log_fields}\"#,\n    ],",
                    vars.join(" ")
                );
                continue;
            }
            assert_eq!(json, *payload, "payload of {kind}");
            assert_eq!(vars.join(" "), *env, "variables of {kind}");
            assert_eq!(log_fields, *log, "log fields of {kind}");
        }
    }

    /// The Event Grid samples' views (as in the test above: payload,
    /// variables, log fields).
    const GRID_VIEWS: &[[&str; 4]] = &[
        [
            "blob_created",
            r#"{"api":"PutBlockList","blob":"automl/model 1.onnx","blob_type":"BlockBlob","container":"models","content_length":524288,"content_type":"application/octet-stream","etag":"0x8D4BCC2E4835CD0","id":"831e1650-001e-001b-66ab-eeb76e069631","schema":"eventgrid","sequencer":"00000000000004420000000000028963","source":"/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct","subject":"/blobServices/default/containers/models/blobs/automl/model 1.onnx","time":"2026-11-21T06:01:11.737Z","type":"blob_created","url":"https://acct.blob.core.windows.net/models/automl/model%201.onnx?sv=1&sig=abc"}"#,
            r#"CVNOTIFY_EVENT_TYPE=blob_created CVNOTIFY_EVENT_ID=831e1650-001e-001b-66ab-eeb76e069631 CVNOTIFY_SOURCE=/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct CVNOTIFY_SUBJECT=/blobServices/default/containers/models/blobs/automl/model 1.onnx CVNOTIFY_EVENT_TIME=2026-11-21T06:01:11.737Z CVNOTIFY_SCHEMA=eventgrid CVNOTIFY_BLOB_URL=https://acct.blob.core.windows.net/models/automl/model%201.onnx?sv=1&sig=abc CVNOTIFY_CONTAINER=models CVNOTIFY_BLOB=automl/model 1.onnx CVNOTIFY_BLOB_API=PutBlockList CVNOTIFY_CONTENT_TYPE=application/octet-stream CVNOTIFY_CONTENT_LENGTH=524288 CVNOTIFY_ETAG=0x8D4BCC2E4835CD0 CVNOTIFY_BLOB_TYPE=BlockBlob CVNOTIFY_SEQUENCER=00000000000004420000000000028963"#,
            r#"event_type="blob_created" id="831e1650-001e-001b-66ab-eeb76e069631" source="/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct" subject="/blobServices/default/containers/models/blobs/automl/model 1.onnx" time="2026-11-21T06:01:11.737Z" schema="eventgrid" container="models" blob="automl/model 1.onnx" api="PutBlockList" content_type="application/octet-stream" content_length=U64(524288) etag="0x8D4BCC2E4835CD0" blob_type="BlockBlob" sequencer="00000000000004420000000000028963" | url="https://acct.blob.core.windows.net/models/automl/model%201.onnx?REDACTED""#,
        ],
        [
            "blob_deleted",
            r#"{"api":"DeleteBlob","blob":"old.onnx","blob_type":"BlockBlob","container":"models","content_length":null,"content_type":null,"etag":null,"id":"831e1650-001e-001b-66ab-eeb76e069631","schema":"cloudevents","sequencer":null,"source":"/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct","subject":"/blobServices/default/containers/models/blobs/old.onnx","time":"2026-11-21T06:01:11.737Z","type":"blob_deleted","url":"https://acct.blob.core.windows.net/models/old.onnx"}"#,
            r#"CVNOTIFY_EVENT_TYPE=blob_deleted CVNOTIFY_EVENT_ID=831e1650-001e-001b-66ab-eeb76e069631 CVNOTIFY_SOURCE=/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct CVNOTIFY_SUBJECT=/blobServices/default/containers/models/blobs/old.onnx CVNOTIFY_EVENT_TIME=2026-11-21T06:01:11.737Z CVNOTIFY_SCHEMA=cloudevents CVNOTIFY_BLOB_URL=https://acct.blob.core.windows.net/models/old.onnx CVNOTIFY_CONTAINER=models CVNOTIFY_BLOB=old.onnx CVNOTIFY_BLOB_API=DeleteBlob CVNOTIFY_CONTENT_TYPE= CVNOTIFY_CONTENT_LENGTH= CVNOTIFY_ETAG= CVNOTIFY_BLOB_TYPE=BlockBlob CVNOTIFY_SEQUENCER="#,
            r#"event_type="blob_deleted" id="831e1650-001e-001b-66ab-eeb76e069631" source="/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct" subject="/blobServices/default/containers/models/blobs/old.onnx" time="2026-11-21T06:01:11.737Z" schema="cloudevents" container="models" blob="old.onnx" api="DeleteBlob" content_type content_length etag blob_type="BlockBlob" sequencer | url="https://acct.blob.core.windows.net/models/old.onnx""#,
        ],
        [
            "run_completed",
            r#"{"experiment_id":"0fa9dfaa-cba3-4fa7-b590-23e48548f5c1","experiment_name":"automl-images","id":"831e1650-001e-001b-66ab-eeb76e069631","run_id":"AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc","run_properties":{},"run_tags":{"team":"vision"},"run_type":null,"schema":"eventgrid","source":"/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w","subject":"experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc","time":"2026-11-21T06:01:11.737Z","type":"run_completed","workspace":"/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w"}"#,
            r#"CVNOTIFY_EVENT_TYPE=run_completed CVNOTIFY_EVENT_ID=831e1650-001e-001b-66ab-eeb76e069631 CVNOTIFY_SOURCE=/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w CVNOTIFY_SUBJECT=experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc CVNOTIFY_EVENT_TIME=2026-11-21T06:01:11.737Z CVNOTIFY_SCHEMA=eventgrid CVNOTIFY_WORKSPACE=/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w CVNOTIFY_EXPERIMENT_ID=0fa9dfaa-cba3-4fa7-b590-23e48548f5c1 CVNOTIFY_EXPERIMENT_NAME=automl-images CVNOTIFY_RUN_ID=AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc CVNOTIFY_RUN_TYPE= CVNOTIFY_RUN_TAGS={"team":"vision"} CVNOTIFY_RUN_PROPERTIES={}"#,
            r#"event_type="run_completed" id="831e1650-001e-001b-66ab-eeb76e069631" source="/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w" subject="experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc" time="2026-11-21T06:01:11.737Z" schema="eventgrid" workspace="/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w" experiment_id="0fa9dfaa-cba3-4fa7-b590-23e48548f5c1" experiment_name="automl-images" run_id="AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc" run_type | run_tags="{\"team\":\"vision\"}" run_properties="{}""#,
        ],
        [
            "run_status_changed",
            r#"{"experiment_id":"0fa9dfaa-cba3-4fa7-b590-23e48548f5c1","experiment_name":"automl-images","id":"831e1650-001e-001b-66ab-eeb76e069631","run_id":"AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc","run_properties":{},"run_status":"Failed","run_tags":{"team":"vision"},"run_type":null,"schema":"cloudevents","source":"/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w","subject":"experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc","time":"2026-11-21T06:01:11.737Z","type":"run_status_changed","workspace":"/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w"}"#,
            r#"CVNOTIFY_EVENT_TYPE=run_status_changed CVNOTIFY_EVENT_ID=831e1650-001e-001b-66ab-eeb76e069631 CVNOTIFY_SOURCE=/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w CVNOTIFY_SUBJECT=experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc CVNOTIFY_EVENT_TIME=2026-11-21T06:01:11.737Z CVNOTIFY_SCHEMA=cloudevents CVNOTIFY_WORKSPACE=/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w CVNOTIFY_EXPERIMENT_ID=0fa9dfaa-cba3-4fa7-b590-23e48548f5c1 CVNOTIFY_EXPERIMENT_NAME=automl-images CVNOTIFY_RUN_ID=AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc CVNOTIFY_RUN_TYPE= CVNOTIFY_RUN_STATUS=Failed CVNOTIFY_RUN_TAGS={"team":"vision"} CVNOTIFY_RUN_PROPERTIES={}"#,
            r#"event_type="run_status_changed" id="831e1650-001e-001b-66ab-eeb76e069631" source="/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w" subject="experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc" time="2026-11-21T06:01:11.737Z" schema="cloudevents" workspace="/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w" experiment_id="0fa9dfaa-cba3-4fa7-b590-23e48548f5c1" experiment_name="automl-images" run_id="AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc" run_type run_status="Failed" | run_tags="{\"team\":\"vision\"}" run_properties="{}""#,
        ],
        [
            "model_registered",
            r#"{"id":"831e1650-001e-001b-66ab-eeb76e069631","model_name":"sign-detector","model_properties":{"accuracy":"0.91"},"model_tags":{"stage":"candidate"},"model_version":"3","schema":"cloudevents","source":"/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w","subject":"models/sign-detector:3","time":"2026-11-21T06:01:11.737Z","type":"model_registered"}"#,
            r#"CVNOTIFY_EVENT_TYPE=model_registered CVNOTIFY_EVENT_ID=831e1650-001e-001b-66ab-eeb76e069631 CVNOTIFY_SOURCE=/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w CVNOTIFY_SUBJECT=models/sign-detector:3 CVNOTIFY_EVENT_TIME=2026-11-21T06:01:11.737Z CVNOTIFY_SCHEMA=cloudevents CVNOTIFY_MODEL_NAME=sign-detector CVNOTIFY_MODEL_VERSION=3 CVNOTIFY_MODEL_TAGS={"stage":"candidate"} CVNOTIFY_MODEL_PROPERTIES={"accuracy":"0.91"}"#,
            r#"event_type="model_registered" id="831e1650-001e-001b-66ab-eeb76e069631" source="/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w" subject="models/sign-detector:3" time="2026-11-21T06:01:11.737Z" schema="cloudevents" model_name="sign-detector" model_version="3" | model_tags="{\"stage\":\"candidate\"}" model_properties="{\"accuracy\":\"0.91\"}""#,
        ],
        [
            "model_deployed",
            r#"{"id":"831e1650-001e-001b-66ab-eeb76e069631","model_ids":["sign-detector:3","sign-ocr:1"],"schema":"eventgrid","service_compute_type":"ACI","service_name":"sign-service","service_properties":{"region":"westeurope"},"service_tags":{},"source":"/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w","subject":"endpoints/sign-service","time":"2026-11-21T06:01:11.737Z","type":"model_deployed"}"#,
            r#"CVNOTIFY_EVENT_TYPE=model_deployed CVNOTIFY_EVENT_ID=831e1650-001e-001b-66ab-eeb76e069631 CVNOTIFY_SOURCE=/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w CVNOTIFY_SUBJECT=endpoints/sign-service CVNOTIFY_EVENT_TIME=2026-11-21T06:01:11.737Z CVNOTIFY_SCHEMA=eventgrid CVNOTIFY_SERVICE_NAME=sign-service CVNOTIFY_SERVICE_COMPUTE_TYPE=ACI CVNOTIFY_MODEL_IDS=["sign-detector:3","sign-ocr:1"] CVNOTIFY_SERVICE_TAGS={} CVNOTIFY_SERVICE_PROPERTIES={"region":"westeurope"}"#,
            r#"event_type="model_deployed" id="831e1650-001e-001b-66ab-eeb76e069631" source="/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w" subject="endpoints/sign-service" time="2026-11-21T06:01:11.737Z" schema="eventgrid" service_name="sign-service" service_compute_type="ACI" | model_ids="[\"sign-detector:3\",\"sign-ocr:1\"]" service_tags="{}" service_properties="{\"region\":\"westeurope\"}""#,
        ],
        [
            "dataset_drift_detected",
            r#"{"base_dataset_id":"base-ds","data_drift_id":"drift-1","data_drift_name":"weekly","drift_coefficient":0.83,"end_time":"2026-11-21T00:00:00Z","id":"831e1650-001e-001b-66ab-eeb76e069631","run_id":"run-1","schema":"eventgrid","source":"/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w","start_time":"2026-11-14T00:00:00Z","subject":"datadrifts/drift-1/runs/run-1","target_dataset_id":"target-ds","time":"2026-11-21T06:01:11.737Z","type":"dataset_drift_detected"}"#,
            r#"CVNOTIFY_EVENT_TYPE=dataset_drift_detected CVNOTIFY_EVENT_ID=831e1650-001e-001b-66ab-eeb76e069631 CVNOTIFY_SOURCE=/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w CVNOTIFY_SUBJECT=datadrifts/drift-1/runs/run-1 CVNOTIFY_EVENT_TIME=2026-11-21T06:01:11.737Z CVNOTIFY_SCHEMA=eventgrid CVNOTIFY_DATA_DRIFT_ID=drift-1 CVNOTIFY_DATA_DRIFT_NAME=weekly CVNOTIFY_RUN_ID=run-1 CVNOTIFY_BASE_DATASET_ID=base-ds CVNOTIFY_TARGET_DATASET_ID=target-ds CVNOTIFY_DRIFT_COEFFICIENT=0.83 CVNOTIFY_START_TIME=2026-11-14T00:00:00Z CVNOTIFY_END_TIME=2026-11-21T00:00:00Z"#,
            r#"event_type="dataset_drift_detected" id="831e1650-001e-001b-66ab-eeb76e069631" source="/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w" subject="datadrifts/drift-1/runs/run-1" time="2026-11-21T06:01:11.737Z" schema="eventgrid" data_drift_id="drift-1" data_drift_name="weekly" run_id="run-1" base_dataset_id="base-ds" target_dataset_id="target-ds" drift_coefficient=F64(0.83) start_time="2026-11-14T00:00:00Z" end_time="2026-11-21T00:00:00Z" |"#,
        ],
        [
            "grid_unknown",
            r#"{"data":{"x":1},"id":"831e1650-001e-001b-66ab-eeb76e069631","schema":"eventgrid","source":"/subscriptions/s","subject":"/subscriptions/s/resourceGroups/g","time":"2026-11-21T06:01:11.737Z","type":"Microsoft.Resources.ResourceWriteSuccess"}"#,
            r#"CVNOTIFY_EVENT_TYPE=Microsoft.Resources.ResourceWriteSuccess CVNOTIFY_EVENT_ID=831e1650-001e-001b-66ab-eeb76e069631 CVNOTIFY_SOURCE=/subscriptions/s CVNOTIFY_SUBJECT=/subscriptions/s/resourceGroups/g CVNOTIFY_EVENT_TIME=2026-11-21T06:01:11.737Z CVNOTIFY_SCHEMA=eventgrid CVNOTIFY_DATA={"x":1}"#,
            r#"event_type="Microsoft.Resources.ResourceWriteSuccess" id="831e1650-001e-001b-66ab-eeb76e069631" source="/subscriptions/s" subject="/subscriptions/s/resourceGroups/g" time="2026-11-21T06:01:11.737Z" schema="eventgrid" | data="{\"x\":1}""#,
        ],
    ];
}
