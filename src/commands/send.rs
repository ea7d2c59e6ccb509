//! `cvnotify send`: building notifications exactly as Custom Vision writes
//! them, or Azure Machine Learning's and Blob Storage's events as Event Grid
//! delivers them to a queue (Event Grid or CloudEvents schema), and
//! enqueueing one, to try a pipeline end to end.

use super::edge::{print_error, report, runtime, with_config, with_queue};
use crate::azure::Connector;
use crate::config::Config;
use crate::exit;
use crate::logging::Target;
use crate::queue::{Expiry, Queue, QueueError};
use anyhow::Context as _;
use base64::Engine as _;
use serde_json::json;
use std::path::Path;
use uuid::Uuid;

/// The `--type` of `cvnotify send`: Custom Vision's three, then the
/// Event Grid events (written `blob-created` or `blob_created`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendType {
    Training,
    Export,
    ConnectionTest,
    #[value(alias = "blob_created")]
    BlobCreated,
    #[value(alias = "blob_deleted")]
    BlobDeleted,
    #[value(alias = "run_completed")]
    RunCompleted,
    #[value(alias = "run_status_changed")]
    RunStatusChanged,
    #[value(alias = "model_registered")]
    ModelRegistered,
    #[value(alias = "model_deployed")]
    ModelDeployed,
    #[value(alias = "dataset_drift_detected")]
    DatasetDriftDetected,
}

impl SendType {
    /// The Event Grid `eventType`, for the Event Grid kinds.
    fn event_type(self) -> Option<&'static str> {
        Some(match self {
            SendType::Training | SendType::Export | SendType::ConnectionTest => return None,
            SendType::BlobCreated => "Microsoft.Storage.BlobCreated",
            SendType::BlobDeleted => "Microsoft.Storage.BlobDeleted",
            SendType::RunCompleted => "Microsoft.MachineLearningServices.RunCompleted",
            SendType::RunStatusChanged => "Microsoft.MachineLearningServices.RunStatusChanged",
            SendType::ModelRegistered => "Microsoft.MachineLearningServices.ModelRegistered",
            SendType::ModelDeployed => "Microsoft.MachineLearningServices.ModelDeployed",
            SendType::DatasetDriftDetected => {
                "Microsoft.MachineLearningServices.DatasetDriftDetected"
            }
        })
    }
}

/// The `--schema` of an Event Grid event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SendSchema {
    /// `EventGridSchema` (`eventType`, `topic`, `eventTime`).
    #[default]
    Eventgrid,
    /// `CloudEventSchemaV1_0` (`specversion`, `type`, `source`, `time`).
    Cloudevents,
}

/// What to put in the message: the options of `cvnotify send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendSpec {
    /// Event type.
    #[arg(long = "type", value_enum)]
    pub kind: SendType,
    /// `completed` (default), `failed`, or a literal status value.
    #[arg(long)]
    pub status: Option<String>,
    /// Default: a random GUID.
    #[arg(long)]
    pub project_id: Option<Uuid>,
    /// Default: a random GUID.
    #[arg(long)]
    pub iteration_id: Option<Uuid>,
    /// The exported model's URL (export only).
    #[arg(long)]
    pub model_uri: Option<String>,
    /// Base64-encode the body, as some producers do (Event Grid does).
    #[arg(long)]
    pub base64: bool,
    /// Event Grid events: the delivery schema (default eventgrid).
    #[arg(long, value_enum)]
    pub schema: Option<SendSchema>,
    /// Event Grid events: the subject (default: the one the service
    /// writes, e.g. /blobServices/default/containers/{c}/blobs/{path}).
    #[arg(long)]
    pub subject: Option<String>,
    /// blob-created, blob-deleted: the blob's URL (required).
    #[arg(long)]
    pub blob_url: Option<String>,
    /// model-registered, model-deployed (default `model`).
    #[arg(long)]
    pub model_name: Option<String>,
    /// model-registered, model-deployed (default `1`).
    #[arg(long)]
    pub model_version: Option<String>,
    /// run-status-changed: the run status as sent (default `Completed`).
    #[arg(long)]
    pub run_status: Option<String>,
}

/// What is wrong with a `send` request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("a connection test takes only --project-id")]
    ConnectionTestArgs,
    #[error("--model-uri is only for --type export")]
    ModelUriNotExport,
    #[error("--model-uri is required for a completed export")]
    ModelUriRequired,
    #[error("{0} is only for Event Grid events (--type blob-created, model-registered, ...)")]
    EventGridOnly(&'static str),
    #[error("{0} is only for Custom Vision events (--type training, export, connection-test)")]
    CustomVisionOnly(&'static str),
    #[error("--blob-url is required for a blob event")]
    BlobUrlRequired,
    #[error(
        "--blob-url `{0}` is not an http(s) URL of a blob ({{account}}/{{container}}/{{blob}})"
    )]
    BadBlobUrl(String),
}

/// Runs the command with the configuration at `config`, on the queue
/// `queue` names: prints the new message's id; the exit code.
pub fn exec(config: Option<&Path>, queue: Option<&str>, spec: &SendSpec) -> i32 {
    with_config(config, Target::Stderr, |c| {
        with_queue(c, queue, |c| send_one(c, spec))
    })
}

fn send_one(config: &Config, spec: &SendSpec) -> i32 {
    let body = match build_message(spec) {
        Ok(b) => b,
        Err(e) => {
            print_error(e);
            return exit::USAGE;
        }
    };
    let sent = runtime().block_on(send(config, &body));
    match sent.context("Failed to send the message") {
        Ok(id) => {
            println!("{id}");
            exit::OK
        }
        Err(e) => {
            print_error(report(&e));
            exit::FAILURE
        }
    }
}

/// Enqueues `body` in the configured queue, creating the queue on first use
/// (a tool for trying a pipeline); returns the new message's id.
pub async fn send(config: &Config, body: &str) -> anyhow::Result<String> {
    let queue =
        Connector::new(&config.queue, &config.auth, &config.tls)?.queue(config.queue_name())?;
    let sent = match queue.send(body, Expiry::ServiceDefault).await {
        Err(QueueError::QueueNotFound { .. }) => {
            queue.create_if_missing().await?;
            eprintln!("Created queue `{}`", queue.name());
            queue.send(body, Expiry::ServiceDefault).await?
        }
        other => other?,
    };
    Ok(sent.id)
}

/// The message body, or what is wrong with the request.
pub fn build_message(spec: &SendSpec) -> Result<String, SendError> {
    let body = match spec.kind.event_type() {
        Some(event_type) => grid_event(spec, event_type)?,
        None => custom_vision(spec)?,
    };
    let text = body.to_string();
    Ok(if spec.base64 {
        base64::engine::general_purpose::STANDARD.encode(text)
    } else {
        text
    })
}

/// An Event Grid event of `spec.kind`, with the subject and data the
/// service writes (field names as the published specs spell them).
fn grid_event(spec: &SendSpec, event_type: &str) -> Result<serde_json::Value, SendError> {
    if spec.project_id.is_some() || spec.iteration_id.is_some() {
        return Err(SendError::CustomVisionOnly("--project-id/--iteration-id"));
    }
    if spec.model_uri.is_some() {
        return Err(SendError::ModelUriNotExport);
    }
    if spec.status.is_some() {
        return Err(SendError::CustomVisionOnly("--status (use --run-status)"));
    }
    let not_blob = spec.kind != SendType::BlobCreated && spec.kind != SendType::BlobDeleted;
    if not_blob && spec.blob_url.is_some() {
        return Err(SendError::EventGridOnly("--blob-url (for blob events)"));
    }
    if spec.run_status.is_some() && spec.kind != SendType::RunStatusChanged {
        return Err(SendError::EventGridOnly(
            "--run-status (for run-status-changed)",
        ));
    }
    let resource =
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/cvnotify/providers";
    let workspace = format!("{resource}/Microsoft.MachineLearningServices/workspaces/cvnotify");
    let name = spec.model_name.as_deref().unwrap_or("model");
    let version = spec.model_version.as_deref().unwrap_or("1");
    let (experiment, run) = (Uuid::new_v4(), format!("run_{}", Uuid::new_v4().simple()));
    let run_data = |status: Option<&str>| {
        let mut d = json!({"experimentId": experiment, "experimentName": "cvnotify-send",
            "runId": run, "runType": "automl", "runTags": {}, "runProperties": {}});
        if let Some(s) = status {
            d["runStatus"] = json!(s);
        }
        d
    };
    let (source, subject, data) = match spec.kind {
        SendType::BlobCreated | SendType::BlobDeleted => {
            let raw = spec.blob_url.as_deref().ok_or(SendError::BlobUrlRequired)?;
            let bad = || SendError::BadBlobUrl(raw.to_owned());
            let url = url::Url::parse(raw).map_err(|_| bad())?;
            let (container, blob) = crate::event::grid::blob_of_url(&url).ok_or_else(bad)?;
            let account = url
                .host_str()
                .unwrap_or_default()
                .split('.')
                .next()
                .unwrap_or_default();
            let mut data = json!({"api": "PutBlockList", "clientRequestId": Uuid::new_v4(),
                "requestId": Uuid::new_v4(), "eTag": "0x8D4BCC2E4835CD0",
                "contentType": "application/octet-stream", "contentLength": 0,
                "blobType": "BlockBlob", "url": url.as_str(),
                "sequencer": "00000000000004420000000000028963"});
            if spec.kind == SendType::BlobDeleted {
                data["api"] = json!("DeleteBlob");
            }
            (
                format!("{resource}/Microsoft.Storage/storageAccounts/{account}"),
                format!("/blobServices/default/containers/{container}/blobs/{blob}"),
                data,
            )
        }
        SendType::RunCompleted => (
            workspace,
            format!("experiments/{experiment}/runs/{run}"),
            run_data(None),
        ),
        SendType::RunStatusChanged => (
            workspace,
            format!("experiments/{experiment}/runs/{run}"),
            run_data(Some(spec.run_status.as_deref().unwrap_or("Completed"))),
        ),
        SendType::ModelRegistered => (
            workspace,
            format!("models/{name}:{version}"),
            json!({"modelName": name, "modelVersion": version, "modelTags": {},
                "modelProperties": {}}),
        ),
        SendType::ModelDeployed => (
            workspace,
            "endpoints/cvnotify-service".to_owned(),
            json!({"serviceName": "cvnotify-service", "serviceComputeType": "ACI",
                "modelIds": format!("{name}:{version}"), "serviceTags": {},
                "serviceProperties": {}}),
        ),
        SendType::DatasetDriftDetected => {
            let drift = Uuid::new_v4();
            (
                workspace,
                format!("datadrifts/{drift}/runs/{run}"),
                json!({"dataDriftId": drift, "dataDriftName": "cvnotify-send", "runId": run,
                    "baseDatasetId": Uuid::new_v4(), "targetDatasetId": Uuid::new_v4(),
                    "driftCoefficient": 0.5, "startTime": "2026-01-01T00:00:00+00:00",
                    "endTime": "2026-01-02T00:00:00+00:00"}),
            )
        }
        SendType::Training | SendType::Export | SendType::ConnectionTest => {
            unreachable!("Custom Vision types have no eventType")
        }
    };
    let subject = spec.subject.clone().unwrap_or(subject);
    let time = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let id = Uuid::new_v4();
    Ok(match spec.schema.unwrap_or_default() {
        SendSchema::Eventgrid => json!({"id": id, "topic": source, "subject": subject,
            "eventType": event_type, "eventTime": time, "data": data, "dataVersion": "1",
            "metadataVersion": "1"}),
        SendSchema::Cloudevents => json!({"specversion": "1.0", "id": id, "source": source,
            "subject": subject, "type": event_type, "time": time, "data": data,
            "datacontenttype": "application/json"}),
    })
}

/// A notification as Custom Vision writes it.
fn custom_vision(spec: &SendSpec) -> Result<serde_json::Value, SendError> {
    let grid_flags = [
        (spec.schema.is_some(), "--schema"),
        (spec.subject.is_some(), "--subject"),
        (spec.blob_url.is_some(), "--blob-url"),
        (spec.model_name.is_some(), "--model-name"),
        (spec.model_version.is_some(), "--model-version"),
        (spec.run_status.is_some(), "--run-status"),
    ];
    if let Some((_, flag)) = grid_flags.iter().find(|(given, _)| *given) {
        return Err(SendError::EventGridOnly(flag));
    }
    let project = spec.project_id.unwrap_or_else(Uuid::new_v4);
    let iteration = spec.iteration_id.unwrap_or_else(Uuid::new_v4);
    let status = |prefix: &str| match spec.status.as_deref().unwrap_or("completed") {
        "completed" => format!("{prefix}Completed"),
        "failed" => format!("{prefix}Failed"),
        other => other.to_owned(),
    };
    let body = match spec.kind {
        SendType::ConnectionTest => {
            if spec.status.is_some() || spec.iteration_id.is_some() || spec.model_uri.is_some() {
                return Err(SendError::ConnectionTestArgs);
            }
            json!({"version": "1.0", "type": "ConnectionTest", "Content": {"projectId": project}})
        }
        SendType::Training => {
            if spec.model_uri.is_some() {
                return Err(SendError::ModelUriNotExport);
            }
            json!({"version": "1.0", "type": "Training", "Content": {
                "projectId": project, "iterationId": iteration, "trainingStatus": status("Training")}})
        }
        SendType::Export => {
            let status = status("Export");
            let mut content =
                json!({"projectId": project, "iterationId": iteration, "exportStatus": status});
            match &spec.model_uri {
                Some(uri) => content["modelUri"] = json!(uri),
                None if status == "ExportCompleted" => {
                    return Err(SendError::ModelUriRequired);
                }
                None => {}
            }
            json!({"version": "1.0", "type": "Export", "Content": content})
        }
        _ => unreachable!("Event Grid types are built by grid_event"),
    };
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, ExportStatus, decode};

    fn spec(kind: SendType) -> SendSpec {
        SendSpec {
            kind,
            status: None,
            project_id: None,
            iteration_id: None,
            model_uri: None,
            base64: false,
            schema: None,
            subject: None,
            blob_url: None,
            model_name: None,
            model_version: None,
            run_status: None,
        }
    }

    #[test]
    fn built_messages_decode_back() {
        let mut s = spec(SendType::Export);
        s.model_uri = Some("https://a.blob.core.windows.net/c/m.onnx".into());
        s.base64 = true;
        let n = decode(build_message(&s).unwrap().as_bytes())
            .unwrap()
            .remove(0);
        assert!(matches!(
            n.event,
            Event::Export {
                status: ExportStatus::Completed,
                ..
            }
        ));
        let mut s = spec(SendType::Training);
        s.status = Some("failed".into());
        let n = decode(build_message(&s).unwrap().as_bytes())
            .unwrap()
            .remove(0);
        assert_eq!(n.event.status(), Some("TrainingFailed"));
        let n = decode(
            build_message(&spec(SendType::ConnectionTest))
                .unwrap()
                .as_bytes(),
        )
        .unwrap()
        .remove(0);
        assert!(matches!(n.event, Event::ConnectionTest { .. }));
    }

    #[test]
    fn wire_shape_matches_the_reference() {
        let mut s = spec(SendType::Training);
        s.project_id = Some(Uuid::nil());
        s.iteration_id = Some(Uuid::nil());
        let v: serde_json::Value = serde_json::from_str(&build_message(&s).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"version":"1.0","type":"Training","Content":{
                "projectId":"00000000-0000-0000-0000-000000000000",
                "iterationId":"00000000-0000-0000-0000-000000000000",
                "trainingStatus":"TrainingCompleted"}})
        );
    }

    /// Every Event Grid kind, in both schemas, plain and base64, decodes
    /// back to its kind with the flags' values.
    #[test]
    fn every_event_grid_kind_decodes_back_in_both_schemas() {
        use crate::event::grid::{Data, Schema};
        let kinds = [
            (SendType::BlobCreated, "blob_created"),
            (SendType::BlobDeleted, "blob_deleted"),
            (SendType::RunCompleted, "run_completed"),
            (SendType::RunStatusChanged, "run_status_changed"),
            (SendType::ModelRegistered, "model_registered"),
            (SendType::ModelDeployed, "model_deployed"),
            (SendType::DatasetDriftDetected, "dataset_drift_detected"),
        ];
        for (kind, name) in kinds {
            for (schema, want) in [
                (SendSchema::Eventgrid, Schema::EventGrid),
                (SendSchema::Cloudevents, Schema::CloudEvents),
            ] {
                for base64 in [false, true] {
                    let mut s = spec(kind);
                    s.schema = Some(schema);
                    s.base64 = base64;
                    if name.starts_with("blob") {
                        s.blob_url = Some(
                            "http://127.0.0.1:10000/devstoreaccount1/models/a b/m.onnx".into(),
                        );
                    }
                    if name.starts_with("model") {
                        s.model_name = Some("signs".into());
                        s.model_version = Some("7".into());
                    }
                    if kind == SendType::RunStatusChanged {
                        s.run_status = Some("Failed".into());
                    }
                    let body = build_message(&s).unwrap();
                    assert_eq!(body.starts_with('{'), !base64);
                    let n = decode(body.as_bytes()).unwrap().remove(0);
                    assert_eq!(n.event.type_key(), name);
                    let g = n.event.grid().unwrap();
                    assert_eq!(g.envelope.schema, want);
                    match &g.data {
                        Data::BlobCreated(b) | Data::BlobDeleted(b) => {
                            assert_eq!(
                                (b.container.as_str(), b.blob.as_str()),
                                ("models", "a b/m.onnx")
                            );
                            assert_eq!(
                                n.event.subject(),
                                Some("/blobServices/default/containers/models/blobs/a b/m.onnx")
                            );
                        }
                        Data::ModelRegistered(m) => {
                            assert_eq!(m.model_name.as_deref(), Some("signs"));
                            assert_eq!(m.model_version.as_deref(), Some("7"));
                            assert_eq!(n.event.subject(), Some("models/signs:7"));
                        }
                        Data::ModelDeployed(d) => assert_eq!(d.model_ids, ["signs:7"]),
                        Data::RunStatusChanged(_) => {
                            assert_eq!(n.event.status_key().as_deref(), Some("failed"));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    #[test]
    fn flags_of_the_other_family_are_refused() {
        let mut s = spec(SendType::Training);
        s.schema = Some(SendSchema::Cloudevents);
        assert_eq!(build_message(&s), Err(SendError::EventGridOnly("--schema")));
        let mut s = spec(SendType::ModelRegistered);
        s.project_id = Some(Uuid::nil());
        assert!(matches!(
            build_message(&s),
            Err(SendError::CustomVisionOnly(_))
        ));
        assert_eq!(
            build_message(&spec(SendType::BlobCreated)),
            Err(SendError::BlobUrlRequired)
        );
        let mut s = spec(SendType::BlobCreated);
        s.blob_url = Some("https://acct.blob.core.windows.net/only-a-container".into());
        assert!(matches!(build_message(&s), Err(SendError::BadBlobUrl(_))));
        let mut s = spec(SendType::ModelRegistered);
        s.run_status = Some("Failed".into());
        assert!(matches!(
            build_message(&s),
            Err(SendError::EventGridOnly(_))
        ));
        let mut s = spec(SendType::RunCompleted);
        s.subject = Some("experiments/e/runs/r".into());
        let n = decode(build_message(&s).unwrap().as_bytes())
            .unwrap()
            .remove(0);
        assert_eq!(n.event.subject(), Some("experiments/e/runs/r"));
    }

    #[test]
    fn completed_export_needs_a_uri() {
        assert!(build_message(&spec(SendType::Export)).is_err());
    }
}
