//! Typed Custom Vision notifications and the decoder that produces them.
//!
//! This module owns the wire format described in the Custom Vision storage
//! integration guide: a JSON object with a top-level `version`, a `type` and a
//! `Content` object (capital C) whose fields are camelCase. It knows nothing
//! about queues or handlers; [`decode`] is a pure function of the body.
//!
//! The decoder is hand-written over `serde_json::Value` rather than derived
//! with serde because every error must name the field and the problem
//! ("`Content.iterationId`: not a GUID"), unknown statuses must be kept, and
//! unknown event types must be delivered instead of rejected. serde's derived
//! errors cannot do all three.

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
    /// `export`, or for an unknown type its `type` value in lower case.
    pub fn type_key(&self) -> String {
        match self {
            Event::ConnectionTest { .. } => "connection_test".into(),
            Event::Training { .. } => "training".into(),
            Event::Export { .. } => "export".into(),
            Event::Unknown { r#type, .. } => r#type.to_ascii_lowercase(),
        }
    }

    /// The `type` value as Custom Vision writes it.
    pub fn wire_type(&self) -> &str {
        match self {
            Event::ConnectionTest { .. } => "ConnectionTest",
            Event::Training { .. } => "Training",
            Event::Export { .. } => "Export",
            Event::Unknown { r#type, .. } => r#type,
        }
    }

    pub fn project_id(&self) -> Option<Uuid> {
        match self {
            Event::ConnectionTest { project_id }
            | Event::Training { project_id, .. }
            | Event::Export { project_id, .. } => Some(*project_id),
            Event::Unknown { .. } => None,
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
    /// unknown status in lower case with its type prefix removed.
    pub fn status_key(&self) -> Option<String> {
        let (prefix, status) = match self {
            Event::Training { status, .. } => ("training", status.as_str()),
            Event::Export { status, .. } => ("export", status.as_str()),
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
            .view("connection_test", "ConnectionTest"),
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
            .view("training", "Training"),
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
            .view("export", "Export"),
            // Its content reaches hooks and webhooks under `raw`.
            Event::Unknown { r#type, .. } => CustomVision::default().view("unknown", r#type),
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

/// A decoded message: the event plus the envelope fields around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The top-level `version` (`"1.0"` today), if present.
    pub version: Option<String>,
    pub event: Event,
    /// The whole JSON document, for handlers that forward the original.
    pub raw: Value,
}

/// Why a body could not be decoded. The message names the field and the
/// problem; retrying cannot fix any of these, so such messages are poisoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is empty")]
    Empty,
    #[error("the body is not valid JSON ({json}) and not base64-encoded JSON ({base64})")]
    NotJsonOrBase64 { json: String, base64: String },
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body is base64 but the decoded bytes are not valid JSON: {0}")]
    InvalidBase64Json(String),
    #[error("the body is JSON but not an object (found {0})")]
    NotAnObject(&'static str),
    #[error("`{field}`: {problem}")]
    Field { field: String, problem: String },
}

fn field_err(field: impl Into<String>, problem: impl Into<String>) -> DecodeError {
    DecodeError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

fn strip(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.trim_ascii();
    bytes.strip_prefix(BOM).unwrap_or(bytes).trim_ascii()
}

/// Decodes a queue message body: plain JSON first, then base64-encoded JSON.
pub fn decode(body: &[u8]) -> Result<Notification, DecodeError> {
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
    from_value(value)
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
    // The URL parser would silently drop tabs and newlines and trim control
    // characters, so a string that reached hooks and webhooks as is could
    // differ from the URL validated here: refuse them, and forward the
    // parsed, normalized form.
    let s = s.trim_matches(' ');
    if let Some((at, c)) = s
        .char_indices()
        .find(|&(at, c)| (c.is_control() || c.is_whitespace()) && !space_in_path(s, at, c))
    {
        return Err(field_err(
            format!("Content.{name}"),
            format!(
                "not a URL: it contains {}",
                if c == ' ' {
                    // A SAS never holds a space: one there is a `+` that was
                    // form-decoded, and encoding it would not give the
                    // signature back.
                    if s[..at].contains(['?', '#']) {
                        "white space in its query (a SAS never has any: was a `+` decoded to a space?)"
                            .to_owned()
                    } else {
                        "white space before its path".to_owned()
                    }
                } else if c.is_whitespace() && !c.is_control() {
                    "white space".to_owned()
                } else {
                    format!("the control character U+{:04X}", c as u32)
                }
            ),
        ));
    }
    // The parser percent-encodes a space in the path (and leaves an `%20`
    // as it is), so the literal and the encoded forms give the same URL.
    let url = url::Url::parse(s)
        .map_err(|e| field_err(format!("Content.{name}"), format!("not a URL ({e})")))?;
    // A model lives in blob storage; anything but http(s) (file://, ftp://, data:)
    // is not a model location and must never reach a handler as one.
    if !matches!(url.scheme(), "https" | "http") {
        return Err(field_err(
            format!("Content.{name}"),
            format!("scheme `{}` is not allowed; expected https", url.scheme()),
        ));
    }
    Ok(Some(url.to_string()))
}

/// Whether `c` at byte `at` of `s` is a plain space inside the URL's path:
/// after the authority (`scheme://host/`) and before any `?` or `#`. Blob
/// names hold spaces (a backup is `{projectId} - {iterationId}.{platform}`),
/// and a producer writing `Uri.OriginalString` sends them unencoded; the
/// parser encodes them once. Anywhere else a space is refused.
fn space_in_path(s: &str, at: usize, c: char) -> bool {
    if c != ' ' {
        return false;
    }
    let Some(authority) = s.find("://").map(|i| i + 3) else {
        return false;
    };
    let Some(path) = s[authority..].find('/').map(|i| authority + i) else {
        return false;
    };
    let end = s.find(['?', '#']).unwrap_or(s.len());
    path < at && at < end
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
            "the body is JSON but not an object (found an array)"
        );
        assert_eq!(
            err("42"),
            "the body is JSON but not an object (found a number)"
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
        let want: [(&str, String, String, String); 6] = [
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
        let got = samples();
        assert_eq!(got.len(), want.len(), "one expectation per sample");
        for ((kind, event), (want_kind, payload, env, log)) in got.iter().zip(&want) {
            assert_eq!(kind, want_kind);
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
            assert_eq!(json, *payload, "payload of {kind}");
            assert_eq!(vars.join(" "), *env, "variables of {kind}");
            assert_eq!(log_fields, *log, "log fields of {kind}");
        }
    }
}
