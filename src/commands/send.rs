//! `cvnotify send`: building notifications exactly as Custom Vision writes
//! them, and enqueueing one, to try a pipeline end to end.

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

/// The `--type` of `cvnotify send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendType {
    Training,
    Export,
    ConnectionTest,
}

/// What to put in the message.
#[derive(Debug, Clone)]
pub struct SendSpec {
    pub kind: SendType,
    /// `completed`, `failed`, or a literal status such as `TrainingCompleted`.
    pub status: Option<String>,
    pub project_id: Option<Uuid>,
    pub iteration_id: Option<Uuid>,
    pub model_uri: Option<String>,
    pub base64: bool,
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
    };
    let text = body.to_string();
    Ok(if spec.base64 {
        base64::engine::general_purpose::STANDARD.encode(text)
    } else {
        text
    })
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

    #[test]
    fn completed_export_needs_a_uri() {
        assert!(build_message(&spec(SendType::Export)).is_err());
    }
}
