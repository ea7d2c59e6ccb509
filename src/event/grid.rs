//! Event Grid events: Azure Machine Learning's and Blob Storage's, and any
//! other, in the Event Grid schema or the CloudEvents 1.0 schema (structured
//! JSON), as Event Grid delivers them to a Storage queue.
//!
//! [`decode`] reads one event object; finding the body's events (base64 or
//! not, one object or an array) and telling this shape from Custom Vision's
//! is [`super::decode`]'s. Hand-written for the reasons `event.rs` gives,
//! and one more: the public sources disagree (`data` fields in PascalCase or
//! camelCase, `modelVersion` a number or a string, `specversion` or
//! `specVersion`), and every form they show is accepted.
//!
//! Errors name the field as the sender wrote it, prefixed with the event's
//! place in an array (`[1].data.url`).

use super::fields::{DecodeError, field_err, http_url, kind_of};
use crate::view::{self, View};
use serde::Serialize;
use serde_json::{Map, Value};

/// Which schema an event came in (a subscription's `eventDeliverySchema`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    /// `EventGridSchema`: `eventType`, `topic`, `eventTime`.
    EventGrid,
    /// `CloudEventSchemaV1_0`: `type`, `source`, `time`, `specversion`.
    CloudEvents,
}

impl Schema {
    /// `eventgrid` or `cloudevents`, as the payload and `--schema` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Schema::EventGrid => "eventgrid",
            Schema::CloudEvents => "cloudevents",
        }
    }

    /// The schema of an object by its shape: CloudEvents when it has a
    /// `specversion`, Event Grid when it has any field only that schema
    /// has, otherwise none (Custom Vision's own shape, or nothing).
    pub fn of(obj: &Map<String, Value>) -> Option<Schema> {
        if obj.contains_key("specversion") || obj.contains_key("specVersion") {
            Some(Schema::CloudEvents)
        } else if [
            "eventType",
            "eventTime",
            "dataVersion",
            "metadataVersion",
            "topic",
        ]
        .iter()
        .any(|k| obj.contains_key(*k))
        {
            Some(Schema::EventGrid)
        } else {
            None
        }
    }
}

/// One Event Grid event: the envelope every kind has, and its kind's data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    #[serde(flatten)]
    pub data: Data,
}

/// What every event has, in either schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    /// The type as sent (`Microsoft.Storage.BlobCreated`).
    pub event_type: String,
    pub id: String,
    /// Event Grid's `topic`, CloudEvents' `source`: the resource id of the
    /// storage account or the workspace.
    pub source: Option<String>,
    pub subject: Option<String>,
    /// `eventTime` or `time`, as sent (RFC 3339).
    pub time: Option<String>,
    pub schema: Schema,
}

/// The event's kind and its `data`, in snake_case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Data {
    BlobCreated(Blob),
    BlobDeleted(Blob),
    RunCompleted(Run),
    RunStatusChanged(Run),
    ModelRegistered(Model),
    ModelDeployed(Deployment),
    DatasetDriftDetected(Drift),
    /// A type this version does not know: `data` as sent (`null` when
    /// absent; CloudEvents' `data_base64` when that is what it has).
    Unknown {
        data: Value,
    },
}

/// `Microsoft.Storage.BlobCreated` / `BlobDeleted`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blob {
    /// Validated and normalized (http or https).
    pub url: String,
    pub container: String,
    /// The blob's path inside its container, decoded (`a b/m.onnx`).
    pub blob: String,
    pub api: Option<String>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// Without the quotes some senders put around it.
    pub etag: Option<String>,
    pub blob_type: Option<String>,
    /// Compared as strings to order the events of one blob.
    pub sequencer: Option<String>,
}

/// `RunCompleted` / `RunStatusChanged`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// The workspace's resource id (the event's `topic` / `source`).
    pub workspace: Option<String>,
    pub experiment_id: Option<String>,
    pub experiment_name: Option<String>,
    pub run_id: Option<String>,
    pub run_type: Option<String>,
    /// `RunStatusChanged` only; as sent (`Failed`, `failed`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_status: Option<String>,
    pub run_tags: Option<Map<String, Value>>,
    pub run_properties: Option<Map<String, Value>>,
}

/// `ModelRegistered`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    pub model_name: Option<String>,
    /// Text whether the sender wrote a number or a string.
    pub model_version: Option<String>,
    pub model_tags: Option<Map<String, Value>>,
    pub model_properties: Option<Map<String, Value>>,
}

/// `ModelDeployed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deployment {
    pub service_name: Option<String>,
    pub service_compute_type: Option<String>,
    /// Split from the comma-separated `modelIds` (`name:version`).
    pub model_ids: Vec<String>,
    pub service_tags: Option<Map<String, Value>>,
    pub service_properties: Option<Map<String, Value>>,
}

/// `DatasetDriftDetected`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub data_drift_id: Option<String>,
    pub data_drift_name: Option<String>,
    pub run_id: Option<String>,
    pub base_dataset_id: Option<String>,
    pub target_dataset_id: Option<String>,
    pub drift_coefficient: Option<f64>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
}

impl Data {
    /// The kind's routing name (`blob_created`, `unknown`).
    pub fn kind(&self) -> &'static str {
        match self {
            Data::BlobCreated(_) => "blob_created",
            Data::BlobDeleted(_) => "blob_deleted",
            Data::RunCompleted(_) => "run_completed",
            Data::RunStatusChanged(_) => "run_status_changed",
            Data::ModelRegistered(_) => "model_registered",
            Data::ModelDeployed(_) => "model_deployed",
            Data::DatasetDriftDetected(_) => "dataset_drift_detected",
            Data::Unknown { .. } => "unknown",
        }
    }
}

/// Where an event sits in its message: `[1].` inside an array, nothing for
/// a lone event. Every field named in an error starts with it.
#[derive(Debug, Clone, Copy)]
pub(super) struct At(pub Option<usize>);

impl At {
    fn field(self, name: &str) -> String {
        match self.0 {
            Some(i) => format!("[{i}].{name}"),
            None => name.to_owned(),
        }
    }
}

/// Decodes one event object of `schema` (see [`Schema::of`]).
pub(super) fn decode(
    obj: &Map<String, Value>,
    schema: Schema,
    at: At,
) -> Result<GridEvent, DecodeError> {
    let top = Fields { obj, at, path: "" };
    let (type_key, source_key, time_key) = match schema {
        Schema::EventGrid => ("eventType", "topic", "eventTime"),
        Schema::CloudEvents => {
            let (key, v) = ["specversion", "specVersion"]
                .iter()
                .find_map(|k| obj.get(*k).map(|v| (*k, v)))
                .expect("Schema::of saw it");
            if v.as_str() != Some("1.0") {
                return Err(field_err(
                    at.field(key),
                    format!("unsupported CloudEvents version {v}; expected \"1.0\""),
                ));
            }
            ("type", "source", "time")
        }
    };
    let envelope = Envelope {
        event_type: top.required(type_key)?,
        id: top.required("id")?,
        source: top.text(source_key)?,
        subject: top.text("subject")?,
        time: top.text(time_key)?,
        schema,
    };
    let raw_data = match obj.get("data") {
        None | Some(Value::Null) if schema == Schema::CloudEvents => obj.get("data_base64"),
        d => d,
    };
    let known = |name: &str| envelope.event_type.strip_prefix(name);
    let kind = known("Microsoft.Storage.")
        .or_else(|| known("Microsoft.MachineLearningServices."))
        .unwrap_or("");
    let data = match kind {
        "BlobCreated"
        | "BlobDeleted"
        | "RunCompleted"
        | "RunStatusChanged"
        | "ModelRegistered"
        | "ModelDeployed"
        | "DatasetDriftDetected" => {
            let d = match raw_data {
                Some(Value::Object(d)) => d,
                None | Some(Value::Null) => return Err(field_err(at.field("data"), "missing")),
                Some(other) => {
                    return Err(field_err(
                        at.field("data"),
                        format!("expected an object, found {}", kind_of(other)),
                    ));
                }
            };
            let d = Fields {
                obj: d,
                at,
                path: "data.",
            };
            match kind {
                "BlobCreated" => Data::BlobCreated(d.blob(envelope.subject.as_deref())?),
                "BlobDeleted" => Data::BlobDeleted(d.blob(envelope.subject.as_deref())?),
                "RunCompleted" => Data::RunCompleted(d.run(&envelope, false)?),
                "RunStatusChanged" => Data::RunStatusChanged(d.run(&envelope, true)?),
                "ModelRegistered" => Data::ModelRegistered(Model {
                    model_name: d.text("modelName")?,
                    model_version: d.version("modelVersion")?,
                    model_tags: d.map("modelTags")?,
                    model_properties: d.map("modelProperties")?,
                }),
                "ModelDeployed" => Data::ModelDeployed(Deployment {
                    service_name: d.text("serviceName")?,
                    service_compute_type: d.text("serviceComputeType")?,
                    model_ids: d.list("modelIds")?,
                    service_tags: d.map("serviceTags")?,
                    service_properties: d.map("serviceProperties")?,
                }),
                _ => Data::DatasetDriftDetected(Drift {
                    data_drift_id: d.text("dataDriftId")?,
                    data_drift_name: d.text("dataDriftName")?,
                    run_id: d.text("runId")?,
                    base_dataset_id: d.text("baseDatasetId")?,
                    target_dataset_id: d.text("targetDatasetId")?,
                    drift_coefficient: d.number("driftCoefficient")?,
                    start_time: d.text("startTime")?,
                    end_time: d.text("endTime")?,
                }),
            }
        }
        _ => Data::Unknown {
            data: raw_data.cloned().unwrap_or(Value::Null),
        },
    };
    Ok(GridEvent { envelope, data })
}

/// An object's fields, read by camelCase name or its PascalCase spelling
/// (`modelName`, `ModelName`), named in errors as `{at}{path}{name}`.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: At,
    /// `data.` for the event's data, empty for the envelope.
    path: &'static str,
}

impl<'a> Fields<'a> {
    /// The value and the name the sender used; `None` when absent or null.
    fn get(&self, name: &str) -> Option<(&'a Value, String)> {
        let mut pascal = name.to_owned();
        pascal[..1].make_ascii_uppercase();
        [name, pascal.as_str()]
            .into_iter()
            .find_map(|n| match self.obj.get(n) {
                None | Some(Value::Null) => None,
                Some(v) => Some((v, self.at.field(&format!("{}{n}", self.path)))),
            })
    }

    fn wrong(field: String, want: &str, v: &Value) -> DecodeError {
        field_err(field, format!("expected {want}, found {}", kind_of(v)))
    }

    /// Text; absent, null or empty is `None`.
    fn text(&self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some((Value::String(s), _)) => Ok((!s.is_empty()).then(|| s.clone())),
            Some((v, field)) => Err(Self::wrong(field, "a string", v)),
        }
    }

    fn required(&self, name: &str) -> Result<String, DecodeError> {
        let field = || self.at.field(&format!("{}{name}", self.path));
        match self.text(name)? {
            Some(s) => Ok(s),
            None if self.get(name).is_some() => Err(field_err(field(), "is empty")),
            None => Err(field_err(field(), "missing")),
        }
    }

    /// A version: text, or a number written as text (`3`).
    fn version(&self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.get(name) {
            Some((Value::Number(n), _)) => Ok(Some(n.to_string())),
            _ => self.text(name),
        }
    }

    fn map(&self, name: &str) -> Result<Option<Map<String, Value>>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some((Value::Object(m), _)) => Ok(Some(m.clone())),
            Some((v, field)) => Err(Self::wrong(field, "an object", v)),
        }
    }

    fn number(&self, name: &str) -> Result<Option<f64>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some((Value::Number(n), _)) => Ok(n.as_f64()),
            Some((v, field)) => Err(Self::wrong(field, "a number", v)),
        }
    }

    /// A size: a whole number, not negative.
    fn size(&self, name: &str) -> Result<Option<u64>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some((Value::Number(n), field)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| field_err(field, format!("expected a size in bytes, found {n}"))),
            Some((v, field)) => Err(Self::wrong(field, "a number", v)),
        }
    }

    /// A comma-separated list (`m1:1,m2:3`), or a JSON list of strings.
    fn list(&self, name: &str) -> Result<Vec<String>, DecodeError> {
        let split = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match self.get(name) {
            None => Ok(Vec::new()),
            Some((Value::String(s), _)) => Ok(split(s)),
            Some((Value::Array(items), field)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.trim().to_owned()),
                    v => Err(Self::wrong(format!("{field}[{i}]"), "a string", v)),
                })
                .collect(),
            Some((v, field)) => Err(Self::wrong(field, "a comma-separated string", v)),
        }
    }

    fn run(&self, envelope: &Envelope, with_status: bool) -> Result<Run, DecodeError> {
        Ok(Run {
            workspace: envelope.source.clone(),
            experiment_id: self.text("experimentId")?,
            experiment_name: self.text("experimentName")?,
            run_id: self.text("runId")?,
            run_type: self.text("runType")?,
            run_status: if with_status {
                self.text("runStatus")?
            } else {
                None
            },
            run_tags: self.map("runTags")?,
            run_properties: self.map("runProperties")?,
        })
    }

    fn blob(&self, subject: Option<&str>) -> Result<Blob, DecodeError> {
        let field = self.at.field("data.url");
        let raw = self.required("url")?;
        let url = http_url(&field, &raw)?;
        let (container, blob) = match subject.and_then(blob_of_subject) {
            Some((c, b)) => (c.to_owned(), b.to_owned()),
            None => blob_of_url(&url).ok_or_else(|| {
                field_err(
                    field,
                    "names no blob (expected https://{account}.blob.core.windows.net/{container}/{blob}, \
                     or a path-style http://{host}:{port}/{account}/{container}/{blob})",
                )
            })?,
        };
        Ok(Blob {
            url: url.to_string(),
            container,
            blob,
            api: self.text("api")?,
            content_type: self.text("contentType")?,
            content_length: self.size("contentLength")?,
            // The docs' example quotes it, real messages do not.
            etag: self
                .text("eTag")?
                .map(|e| e.trim_matches('"').to_owned())
                .filter(|e| !e.is_empty()),
            blob_type: self.text("blobType")?,
            sequencer: self.text("sequencer")?,
        })
    }
}

/// The container and blob a blob event's subject names:
/// `/blobServices/default/containers/{container}/blobs/{path}`.
pub fn blob_of_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("/blobServices/default/containers/")?;
    let (container, blob) = rest.split_once("/blobs/")?;
    (!container.is_empty() && !container.contains('/') && !blob.is_empty())
        .then_some((container, blob))
}

/// The container and blob (decoded) of a blob's URL: the first path
/// segments after the account, which is the host's first label
/// (`{account}.blob.core.windows.net`, `.dfs.` for Data Lake) or, for a
/// path-style URL (an IP address or `localhost`, as Azurite's), the first
/// segment (`http://127.0.0.1:10000/devstoreaccount1/c/p`): the rule of
/// the Azure SDKs' `BlobUriBuilder`.
pub fn blob_of_url(url: &url::Url) -> Option<(String, String)> {
    let path_style = match url.host()? {
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => true,
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    };
    let mut path = url.path().strip_prefix('/')?;
    if path_style {
        path = path.split_once('/')?.1;
    }
    let (container, blob) = path.split_once('/')?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    };
    let (container, blob) = (decode(container)?, decode(blob)?);
    (!container.is_empty() && !blob.is_empty() && !blob.ends_with('/')).then_some((container, blob))
}

/// An optional text field's view value.
fn text(s: &Option<String>) -> Option<view::Value<'_>> {
    s.as_deref().map(view::Value::Text)
}

impl GridEvent {
    /// The event's view (see [`super::Event::view`]): the envelope's
    /// fields, then its kind's, one arm per kind.
    pub fn view(&self) -> View<'_> {
        use view::Value::{Float, Json, List, Map, Text, UInt, Url};
        let e = &self.envelope;
        let (origin, name) = match &self.data {
            Data::Unknown { .. } => ("Event Grid", e.event_type.as_str()),
            Data::BlobCreated(_) | Data::BlobDeleted(_) => ("Blob Storage", self.data.kind()),
            _ => ("Azure Machine Learning", self.data.kind()),
        };
        let v = View::new(origin, self.data.kind(), name)
            .field("id", Some(Text(&e.id)))
            .env_name("EVENT_ID")
            .field("source", text(&e.source))
            .field("subject", text(&e.subject))
            .context()
            .field("time", text(&e.time))
            .env_name("EVENT_TIME")
            .field("schema", Some(Text(e.schema.as_str())));
        match &self.data {
            Data::BlobCreated(b) | Data::BlobDeleted(b) => v
                .field("url", Some(Url(&b.url)))
                .env_name("BLOB_URL")
                .field("container", Some(Text(&b.container)))
                .field("blob", Some(Text(&b.blob)))
                .field("api", text(&b.api))
                .env_name("BLOB_API")
                .field("content_type", text(&b.content_type))
                .field("content_length", b.content_length.map(UInt))
                .field("etag", text(&b.etag))
                .field("blob_type", text(&b.blob_type))
                .field("sequencer", text(&b.sequencer)),
            Data::RunCompleted(r) | Data::RunStatusChanged(r) => {
                let v = v
                    .field("workspace", text(&r.workspace))
                    .field("experiment_id", text(&r.experiment_id))
                    .field("experiment_name", text(&r.experiment_name))
                    .field("run_id", text(&r.run_id))
                    .field("run_type", text(&r.run_type));
                let v = if matches!(self.data, Data::RunStatusChanged(_)) {
                    v.field("run_status", text(&r.run_status))
                } else {
                    v
                };
                v.field("run_tags", r.run_tags.as_ref().map(Map))
                    .field("run_properties", r.run_properties.as_ref().map(Map))
            }
            Data::ModelRegistered(m) => v
                .field("model_name", text(&m.model_name))
                .field("model_version", text(&m.model_version))
                .field("model_tags", m.model_tags.as_ref().map(Map))
                .field("model_properties", m.model_properties.as_ref().map(Map)),
            Data::ModelDeployed(d) => v
                .field("service_name", text(&d.service_name))
                .field("service_compute_type", text(&d.service_compute_type))
                .field("model_ids", Some(List(&d.model_ids)))
                .field("service_tags", d.service_tags.as_ref().map(Map))
                .field("service_properties", d.service_properties.as_ref().map(Map)),
            Data::DatasetDriftDetected(d) => v
                .field("data_drift_id", text(&d.data_drift_id))
                .field("data_drift_name", text(&d.data_drift_name))
                .field("run_id", text(&d.run_id))
                .field("base_dataset_id", text(&d.base_dataset_id))
                .field("target_dataset_id", text(&d.target_dataset_id))
                .field("drift_coefficient", d.drift_coefficient.map(Float))
                .field("start_time", text(&d.start_time))
                .field("end_time", text(&d.end_time)),
            // Its whole event reaches hooks and webhooks under `raw` too.
            Data::Unknown { data } => v.field("data", (!data.is_null()).then_some(Json(data))),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures written from the Event Grid schema documentation
    //! (Microsoft.Storage and Microsoft.MachineLearningServices events),
    //! in the forms the sources disagree on.

    use super::*;
    use crate::event::{DecodeError, Event, Notification};
    use base64::Engine as _;
    use serde_json::json;

    const STORAGE: &str = "/subscriptions/s/resourceGroups/Storage/providers/Microsoft.Storage/storageAccounts/my-storage-account";
    const WS: &str = "/subscriptions/s/resourceGroups/ml/providers/Microsoft.MachineLearningServices/workspaces/ws";

    /// The docs' BlobCreated data (its URL names `testcontainer`, its
    /// subject `test-container`: the subject wins).
    fn blob_data() -> Value {
        json!({
            "api": "PutBlockList",
            "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
            "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
            "eTag": "\"0x8D4BCC2E4835CD0\"",
            "contentType": "text/plain",
            "contentLength": 524288,
            "blobType": "BlockBlob",
            "url": "https://my-storage-account.blob.core.windows.net/testcontainer/new-file.txt",
            "sequencer": "00000000000004420000000000028963",
            "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"}
        })
    }

    /// Every type the issue lists: (eventType, topic, subject, data).
    fn every_type() -> Vec<(&'static str, &'static str, &'static str, Value)> {
        vec![
            (
                "Microsoft.Storage.BlobCreated",
                STORAGE,
                "/blobServices/default/containers/test-container/blobs/new-file.txt",
                blob_data(),
            ),
            (
                "Microsoft.Storage.BlobDeleted",
                STORAGE,
                "/blobServices/default/containers/test-container/blobs/new-file.txt",
                json!({"api": "DeleteBlob", "contentType": "text/plain", "blobType": "BlockBlob",
                       "url": "https://my-storage-account.blob.core.windows.net/testcontainer/new-file.txt",
                       "sequencer": "0000000000000281000000000002F5CA"}),
            ),
            (
                "Microsoft.MachineLearningServices.RunCompleted",
                WS,
                "experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d",
                json!({"experimentId": "0fa9dfaa-cba3-4fa7-b590-23e48548f5c1",
                       "experimentName": "automl-local-regression", "runId": "AutoML_ad912b2d",
                       "runType": "automl", "runTags": {}, "runProperties": {"runTemplate": "automl_child"}}),
            ),
            (
                "Microsoft.MachineLearningServices.RunStatusChanged",
                WS,
                "experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/AutoML_ad912b2d",
                json!({"experimentId": "0fa9dfaa-cba3-4fa7-b590-23e48548f5c1",
                       "experimentName": "automl-local-regression", "runId": "AutoML_ad912b2d",
                       "runType": null, "runTags": {}, "runProperties": {}, "runStatus": "failed"}),
            ),
            (
                "Microsoft.MachineLearningServices.ModelRegistered",
                WS,
                "models/sklearn_regression_model:3",
                json!({"ModelName": "sklearn_regression_model", "ModelVersion": "3",
                       "ModelTags": {"area": "diabetes", "type": "regression"},
                       "ModelProperties": {"area": "test"}}),
            ),
            (
                "Microsoft.MachineLearningServices.ModelDeployed",
                WS,
                "endpoints/aciservice1",
                json!({"ServiceName": "aciservice1", "ServiceComputeType": "ACI",
                       "ModelIds": "sklearn_regression_model:1,sklearn_regression_model:2",
                       "ServiceTags": {"mytag": "test tag"}, "ServiceProperties": {"myprop": "test property"}}),
            ),
            (
                "Microsoft.MachineLearningServices.DatasetDriftDetected",
                WS,
                "datadrifts/01d29aa4-e6a4-470a-9ef3-66660d21f8ef/runs/01d29aa4_1562616936",
                json!({"DataDriftId": "01d29aa4-e6a4-470a-9ef3-66660d21f8ef",
                       "DataDriftName": "copetersDriftMonitor3", "RunId": "01d29aa4_1562616936",
                       "BaseDatasetId": "3c56d136-0f5b-4ab3-bb1a-1b5a2a3a8c5e",
                       "TargetDatasetId": "d7e74d2e-c972-4266-b5fb-6c9c182d2a74",
                       "DriftCoefficient": 0.8350349068479208,
                       "StartTime": "2019-07-04T00:00:00+00:00", "EndTime": "2019-07-05T00:00:00+00:00"}),
            ),
        ]
    }

    fn event_grid(ty: &str, topic: &str, subject: &str, data: Value) -> Value {
        json!({"topic": topic, "subject": subject, "eventType": ty,
               "eventTime": "2017-06-26T18:41:00.9584103Z",
               "id": "831e1650-001e-001b-66ab-eeb76e069631",
               "data": data, "dataVersion": "", "metadataVersion": "1"})
    }

    fn cloud_event(ty: &str, source: &str, subject: &str, data: Value) -> Value {
        json!({"specversion": "1.0", "source": source, "subject": subject, "type": ty,
               "time": "2017-06-26T18:41:00.9584103Z",
               "id": "831e1650-001e-001b-66ab-eeb76e069631",
               "data": data, "datacontenttype": "application/json"})
    }

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::STANDARD.encode(v.to_string())
    }

    fn decode(body: &str) -> Result<Vec<Notification>, DecodeError> {
        crate::event::decode(body.as_bytes())
    }

    fn one(v: &Value) -> GridEvent {
        let mut events = decode(&v.to_string()).unwrap();
        assert_eq!(events.len(), 1);
        let n = events.remove(0);
        assert_eq!(n.index, None);
        assert_eq!(&n.raw, v, "raw is the event object");
        match n.event {
            Event::Grid(g) => *g,
            other => panic!("not an Event Grid event: {other:?}"),
        }
    }

    fn err(v: &Value) -> String {
        decode(&v.to_string()).unwrap_err().to_string()
    }

    #[test]
    fn every_type_in_both_schemas_plain_and_base64() {
        let kinds = [
            "blob_created",
            "blob_deleted",
            "run_completed",
            "run_status_changed",
            "model_registered",
            "model_deployed",
            "dataset_drift_detected",
        ];
        for ((ty, topic, subject, data), kind) in every_type().into_iter().zip(kinds) {
            for (schema, v) in [
                (
                    Schema::EventGrid,
                    event_grid(ty, topic, subject, data.clone()),
                ),
                (
                    Schema::CloudEvents,
                    cloud_event(ty, topic, subject, data.clone()),
                ),
            ] {
                let g = one(&v);
                assert_eq!(g.data.kind(), kind, "{ty}");
                assert_eq!(
                    g.envelope,
                    Envelope {
                        event_type: ty.into(),
                        id: "831e1650-001e-001b-66ab-eeb76e069631".into(),
                        source: Some(topic.into()),
                        subject: Some(subject.into()),
                        time: Some("2017-06-26T18:41:00.9584103Z".into()),
                        schema,
                    }
                );
                let plain = decode(&v.to_string()).unwrap();
                assert_eq!(decode(&b64(&v)).unwrap(), plain, "{ty} in base64");
                let padded = format!("\u{feff} {}\n", b64(&v));
                assert_eq!(decode(&padded).unwrap(), plain, "{ty} with a BOM");
                let event = &plain[0].event;
                assert_eq!(event.type_key(), kind);
                assert_eq!(event.wire_type(), ty);
                assert_eq!(event.subject(), Some(subject));
                assert!(!event.is_unknown());
                assert_eq!(event.project_id(), None);
                // `cvnotify decode` shows the kind as its `type`.
                let json = serde_json::to_value(event).unwrap();
                assert_eq!(json["type"], kind, "{json}");
                assert_eq!(json["schema"], schema.as_str(), "{json}");
            }
        }
    }

    #[test]
    fn the_fields_of_each_type() {
        let all: Vec<Data> = every_type()
            .into_iter()
            .map(|(ty, topic, subject, data)| one(&event_grid(ty, topic, subject, data)).data)
            .collect();
        assert_eq!(
            all[0],
            Data::BlobCreated(Blob {
                url: "https://my-storage-account.blob.core.windows.net/testcontainer/new-file.txt"
                    .into(),
                container: "test-container".into(),
                blob: "new-file.txt".into(),
                api: Some("PutBlockList".into()),
                content_type: Some("text/plain".into()),
                content_length: Some(524288),
                etag: Some("0x8D4BCC2E4835CD0".into()),
                blob_type: Some("BlockBlob".into()),
                sequencer: Some("00000000000004420000000000028963".into()),
            })
        );
        let Data::BlobDeleted(b) = &all[1] else {
            panic!("{:?}", all[1])
        };
        assert_eq!((b.etag.as_deref(), b.content_length), (None, None));
        let Data::RunCompleted(r) = &all[2] else {
            panic!("{:?}", all[2])
        };
        assert_eq!(r.workspace.as_deref(), Some(WS));
        assert_eq!(r.run_type.as_deref(), Some("automl"));
        assert_eq!(r.run_status, None);
        assert_eq!(
            r.run_properties.as_ref().unwrap()["runTemplate"],
            "automl_child"
        );
        let Data::RunStatusChanged(r) = &all[3] else {
            panic!("{:?}", all[3])
        };
        assert_eq!(
            (r.run_type.as_deref(), r.run_status.as_deref()),
            (None, Some("failed"))
        );
        assert_eq!(
            all[4],
            Data::ModelRegistered(Model {
                model_name: Some("sklearn_regression_model".into()),
                model_version: Some("3".into()),
                model_tags: json!({"area": "diabetes", "type": "regression"})
                    .as_object()
                    .cloned(),
                model_properties: json!({"area": "test"}).as_object().cloned(),
            })
        );
        let Data::ModelDeployed(d) = &all[5] else {
            panic!("{:?}", all[5])
        };
        assert_eq!(
            d.model_ids,
            ["sklearn_regression_model:1", "sklearn_regression_model:2"]
        );
        assert_eq!(d.service_compute_type.as_deref(), Some("ACI"));
        assert_eq!(
            all[6],
            Data::DatasetDriftDetected(Drift {
                data_drift_id: Some("01d29aa4-e6a4-470a-9ef3-66660d21f8ef".into()),
                data_drift_name: Some("copetersDriftMonitor3".into()),
                run_id: Some("01d29aa4_1562616936".into()),
                base_dataset_id: Some("3c56d136-0f5b-4ab3-bb1a-1b5a2a3a8c5e".into()),
                target_dataset_id: Some("d7e74d2e-c972-4266-b5fb-6c9c182d2a74".into()),
                drift_coefficient: Some(0.8350349068479208),
                start_time: Some("2019-07-04T00:00:00+00:00".into()),
                end_time: Some("2019-07-05T00:00:00+00:00".into()),
            })
        );
    }

    /// The docs' examples use PascalCase, the published specs camelCase
    /// with a number for `modelVersion`: both give the same event.
    #[test]
    fn pascal_or_camel_case_and_model_version_number_or_string() {
        let ty = "Microsoft.MachineLearningServices.ModelRegistered";
        let model = |data: Value| one(&cloud_event(ty, WS, "models/m:3", data)).data;
        let want = model(json!({"ModelName": "m", "ModelVersion": "3", "ModelTags": {"a": "b"}}));
        for data in [
            json!({"modelName": "m", "modelVersion": 3, "modelTags": {"a": "b"}}),
            json!({"modelName": "m", "modelVersion": "3", "modelTags": {"a": "b"}, "modelProperties": null}),
            json!({"ModelName": "m", "ModelVersion": 3, "ModelTags": {"a": "b"}}),
        ] {
            assert_eq!(model(data.clone()), want, "{data}");
        }
        let drift = |data: Value| {
            one(&event_grid(
                "Microsoft.MachineLearningServices.DatasetDriftDetected",
                WS,
                "d",
                data,
            ))
            .data
        };
        assert_eq!(
            drift(json!({"dataDriftId": "d", "driftCoefficient": 0.5, "startTime": "t"})),
            drift(json!({"DataDriftId": "d", "DriftCoefficient": 0.5, "StartTime": "t"}))
        );
        // Absent and null are the same: no value.
        let run = |data: Value| {
            one(&event_grid(
                "Microsoft.MachineLearningServices.RunCompleted",
                WS,
                "r",
                data,
            ))
            .data
        };
        assert_eq!(
            run(json!({"runType": null, "runTags": null})),
            run(json!({}))
        );
    }

    #[test]
    fn run_status_routes_in_lower_case_as_sent_otherwise() {
        for status in ["failed", "NotStarted", "Completed"] {
            let v = event_grid(
                "Microsoft.MachineLearningServices.RunStatusChanged",
                WS,
                "experiments/e/runs/r",
                json!({"runStatus": status}),
            );
            let n = decode(&v.to_string()).unwrap().remove(0);
            assert_eq!(n.event.status_key(), Some(status.to_ascii_lowercase()));
            let view = n.event.view();
            let got = view.fields.iter().find(|f| f.name == "run_status").unwrap();
            assert_eq!(got.value, Some(view::Value::Text(status)));
        }
        let completed = event_grid(
            "Microsoft.MachineLearningServices.RunCompleted",
            WS,
            "r",
            json!({}),
        );
        assert_eq!(
            decode(&completed.to_string()).unwrap()[0]
                .event
                .status_key(),
            None
        );
    }

    #[test]
    fn an_array_is_one_event_per_element_in_order() {
        let items: Vec<Value> = every_type()
            .into_iter()
            .take(3)
            .enumerate()
            .map(|(i, (ty, topic, subject, data))| {
                if i == 1 {
                    cloud_event(ty, topic, subject, data)
                } else {
                    event_grid(ty, topic, subject, data)
                }
            })
            .collect();
        let array = Value::Array(items.clone());
        for body in [array.to_string(), b64(&array)] {
            let events = decode(&body).unwrap();
            let kinds: Vec<String> = events.iter().map(|n| n.event.type_key()).collect();
            assert_eq!(kinds, ["blob_created", "blob_deleted", "run_completed"]);
            for (i, n) in events.iter().enumerate() {
                assert_eq!(n.index, Some(i));
                assert_eq!(n.raw, items[i], "raw is the element");
            }
        }
        // An array of one is still an array: its event has an index.
        let single = Value::Array(vec![items[0].clone()]);
        assert_eq!(decode(&single.to_string()).unwrap()[0].index, Some(0));
    }

    #[test]
    fn specversion_in_camel_case_and_data_base64() {
        let mut v = cloud_event(
            "Contoso.Items.ItemReceived",
            "/contoso/items",
            "i",
            json!(null),
        );
        let o = v.as_object_mut().unwrap();
        let version = o.remove("specversion").unwrap();
        o.insert("specVersion".into(), version);
        o.remove("data");
        o.insert("data_base64".into(), json!("AAEC"));
        let g = one(&v);
        assert_eq!(g.envelope.schema, Schema::CloudEvents);
        assert_eq!(
            g.data,
            Data::Unknown {
                data: json!("AAEC")
            }
        );
    }

    /// Any other type is `unknown`: its type as sent, `data` passed
    /// through, routed by the name `unknown`.
    #[test]
    fn another_type_is_unknown_with_its_data() {
        let v = event_grid(
            "Microsoft.Resources.ResourceWriteSuccess",
            "/subscriptions/s",
            "/subscriptions/s/resourceGroups/g",
            json!({"authorization": {"scope": "x"}, "status": "Succeeded"}),
        );
        let n = decode(&v.to_string()).unwrap().remove(0);
        assert!(n.event.is_unknown());
        assert_eq!(n.event.type_key(), "unknown");
        assert_eq!(
            n.event.wire_type(),
            "Microsoft.Resources.ResourceWriteSuccess"
        );
        assert_eq!(
            n.event.view().name,
            "Microsoft.Resources.ResourceWriteSuccess"
        );
        let json = serde_json::to_value(&n.event).unwrap();
        assert_eq!(json["type"], "unknown");
        assert_eq!(
            json["event_type"],
            "Microsoft.Resources.ResourceWriteSuccess"
        );
        assert_eq!(json["data"]["status"], "Succeeded");
        // Without data, and with data that is not an object: still delivered.
        for data in [json!(null), json!("text"), json!([1])] {
            let v = cloud_event("Contoso.Thing", "/c", "s", data.clone());
            assert_eq!(one(&v).data, Data::Unknown { data });
        }
        // Data-plane types of the known providers that cvnotify does not type.
        let v = event_grid("Microsoft.Storage.BlobTierChanged", STORAGE, "s", json!({}));
        assert!(matches!(one(&v).data, Data::Unknown { .. }));
    }

    fn blob_at(url: &str, subject: &str) -> Result<(String, String), String> {
        let v = event_grid(
            "Microsoft.Storage.BlobCreated",
            STORAGE,
            subject,
            json!({"url": url}),
        );
        decode(&v.to_string())
            .map(|mut e| {
                let b = e.remove(0).event.blob().unwrap().clone();
                (b.container, b.blob)
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn container_and_blob_from_the_subject_else_from_the_url() {
        let pair = |c: &str, b: &str| Ok((c.to_owned(), b.to_owned()));
        // The subject, as sent (not percent-encoded).
        assert_eq!(
            blob_at(
                "https://a.blob.core.windows.net/models/p%20-%20i.ONNX",
                "/blobServices/default/containers/models/blobs/p - i.ONNX"
            ),
            pair("models", "p - i.ONNX")
        );
        for (url, want) in [
            // Virtual-host style, a path of several segments, decoded.
            (
                "https://acct.blob.core.windows.net/models/automl/run%201/model.onnx?sv=1&sig=s",
                pair("models", "automl/run 1/model.onnx"),
            ),
            // Data Lake (hierarchical namespace).
            (
                "https://acct.dfs.core.windows.net/lake/dir/file.onnx",
                pair("lake", "dir/file.onnx"),
            ),
            // Path-style: Azurite, an IP or localhost, the account first.
            (
                "http://127.0.0.1:10000/devstoreaccount1/c/p/m.onnx",
                pair("c", "p/m.onnx"),
            ),
            (
                "http://localhost:10000/devstoreaccount1/c/m",
                pair("c", "m"),
            ),
            ("http://[::1]:10000/devstoreaccount1/c/m", pair("c", "m")),
        ] {
            assert_eq!(blob_at(url, "not-a-blob-subject"), want, "{url}");
        }
        // A subject of another shape falls back to the URL too.
        assert_eq!(
            blob_at(
                "https://acct.blob.core.windows.net/c/m",
                "/blobServices/default/containers//blobs/m"
            ),
            pair("c", "m")
        );
    }

    /// A blob event's URL is what a download fetches: a bad one is a
    /// decode error naming `data.url` (poisoned at once).
    #[test]
    fn a_bad_blob_url_is_a_decode_error_naming_the_field() {
        for (url, problem) in [
            (
                json!("file:///etc/passwd"),
                "`data.url`: scheme `file` is not allowed",
            ),
            (json!("no scheme"), "`data.url`: not a URL"),
            (
                json!("https://a.blob.core.windows.net/c/m\n.onnx"),
                "`data.url`: not a URL: it contains the control character U+000A",
            ),
            (
                json!("https://a.blob.core.windows.net/c"),
                "`data.url`: names no blob",
            ),
            (
                json!("https://a.blob.core.windows.net/"),
                "`data.url`: names no blob",
            ),
            (
                json!("http://127.0.0.1:10000/devstoreaccount1/c"),
                "`data.url`: names no blob",
            ),
            (json!(7), "`data.url`: expected a string, found a number"),
            (json!(""), "`data.url`: is empty"),
            (json!(null), "`data.url`: missing"),
        ] {
            let v = event_grid(
                "Microsoft.Storage.BlobCreated",
                STORAGE,
                "s",
                json!({"url": url}),
            );
            let e = err(&v);
            assert!(e.starts_with(problem), "{url}: {e}");
        }
    }

    #[test]
    fn malformed_events_are_decode_errors_naming_the_field() {
        let ty = "Microsoft.MachineLearningServices.ModelRegistered";
        let mut no_type = event_grid(ty, WS, "s", json!({}));
        no_type.as_object_mut().unwrap().remove("eventType");
        let mut ce_no_type = cloud_event(ty, WS, "s", json!({}));
        ce_no_type.as_object_mut().unwrap().remove("type");
        let mut no_id = cloud_event(ty, WS, "s", json!({}));
        no_id.as_object_mut().unwrap().remove("id");
        let mut old = cloud_event(ty, WS, "s", json!({}));
        old["specversion"] = json!("0.3");
        for (v, want) in [
            (no_type, "`eventType`: missing"),
            (ce_no_type, "`type`: missing"),
            (no_id, "`id`: missing"),
            (
                old,
                r#"`specversion`: unsupported CloudEvents version "0.3"; expected "1.0""#,
            ),
            (
                event_grid(ty, WS, "s", json!("ModelName=m")),
                "`data`: expected an object, found a string",
            ),
            (event_grid(ty, WS, "s", json!(null)), "`data`: missing"),
            (
                event_grid(ty, WS, "s", json!({"ModelName": 7})),
                "`data.ModelName`: expected a string, found a number",
            ),
            (
                event_grid(ty, WS, "s", json!({"modelTags": "a=b"})),
                "`data.modelTags`: expected an object, found a string",
            ),
            (
                event_grid(
                    "Microsoft.Storage.BlobCreated",
                    STORAGE,
                    "s",
                    json!({"url": "https://a.blob.core.windows.net/c/m", "contentLength": -1}),
                ),
                "`data.contentLength`: expected a size in bytes, found -1",
            ),
            (
                event_grid(
                    "Microsoft.MachineLearningServices.ModelDeployed",
                    WS,
                    "s",
                    json!({"modelIds": 3}),
                ),
                "`data.modelIds`: expected a comma-separated string, found a number",
            ),
            (
                event_grid(
                    "Microsoft.MachineLearningServices.DatasetDriftDetected",
                    WS,
                    "s",
                    json!({"DriftCoefficient": "high"}),
                ),
                "`data.DriftCoefficient`: expected a number, found a string",
            ),
            (
                json!({"eventType": {"a": 1}, "id": "x"}),
                "`eventType`: expected a string, found an object",
            ),
        ] {
            assert_eq!(err(&v), want, "{v}");
        }
    }

    #[test]
    fn malformed_arrays_name_the_element() {
        let good = event_grid("Contoso.X", "/c", "s", json!({}));
        let bad = event_grid(
            "Microsoft.Storage.BlobCreated",
            STORAGE,
            "s",
            json!({"url": "ftp://a/c/m"}),
        );
        let body = |items: Vec<Value>| Value::Array(items);
        assert_eq!(
            err(&body(vec![good.clone(), bad])),
            "`[1].data.url`: scheme `ftp` is not allowed; expected https"
        );
        assert_eq!(
            err(&body(vec![good.clone(), json!(3)])),
            "`[1]`: expected an event object, found a number"
        );
        let custom_vision = json!({"type": "ConnectionTest", "Content": {"projectId": "x"}});
        assert!(err(&body(vec![custom_vision])).starts_with(
            "`[0]`: not an Event Grid event (no `eventType`) nor a CloudEvents event"
        ));
        assert_eq!(
            err(&body(vec![])),
            "the body is an empty array: it holds no event"
        );
        let mut ce = cloud_event("Contoso.X", "/c", "s", json!({}));
        ce.as_object_mut().unwrap().remove("type");
        assert_eq!(err(&body(vec![good, ce])), "`[1].type`: missing");
    }
}
