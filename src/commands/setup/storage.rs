//! Setup's storage step: the queue and the container are there (created
//! unless this is a dry run), and what they hold before the project is
//! changed, so that only new proof counts.

use super::uris::same_uri;
use crate::azure::{AzureContainer, AzureQueue, Connector, ContainerError};
use crate::commands::lines::{CheckLine, Lines, line};
use crate::config::Config;
use crate::error::error_chain;
use crate::queue::{Queue, QueueError};
use std::collections::HashSet;
use url::Url;

/// The folder Custom Vision writes its test blob into.
pub const TEST_BLOB_PREFIX: &str = "CustomVision-TestPermission/";

/// What is watched for the proof, and what was there before.
pub struct Watch {
    pub queue: Option<(AzureQueue, HashSet<String>)>,
    pub container: Option<(AzureContainer, HashSet<String>)>,
}

/// Checks the queue and container are there (creating them unless this
/// is a dry run) and notes what they hold, so that only new proof
/// counts.
pub async fn prepare_storage<F: FnMut(&CheckLine)>(
    lines: &mut Lines<F>,
    config: &Config,
    connector: &Connector,
    queue_uri: &Url,
    own_queue: &Url,
    container_uri: Option<&Url>,
    dry_run: bool,
) -> Watch {
    let mut watch = Watch {
        queue: None,
        container: None,
    };
    if !same_uri(queue_uri.as_str(), own_queue.as_str()) {
        lines.push(line(
            "queue",
            true,
            format!("{queue_uri} is not this daemon's queue ({own_queue}); the ConnectionTest message will not be watched for"),
        ));
    } else {
        match connector.queue(config.queue_name()) {
            Err(e) => lines.push(line("queue", false, error_chain(&e))),
            Ok(q) => match q.peek(32).await {
                Ok(m) => {
                    lines.push(line("queue", true, format!("`{}` is reachable", q.name())));
                    watch.queue = Some((q, m.into_iter().map(|m| m.id).collect()));
                }
                Err(QueueError::QueueNotFound { .. }) if dry_run => lines.push(line(
                    "queue",
                    true,
                    format!(
                        "dry run: `{}` does not exist; setup would create it",
                        q.name()
                    ),
                )),
                Err(QueueError::QueueNotFound { .. }) => match q.create_if_missing().await {
                    Ok(()) => {
                        lines.push(line("queue", true, format!("created `{}`", q.name())));
                        watch.queue = Some((q, HashSet::new()));
                    }
                    Err(e) => lines.push(line(
                        "queue",
                        false,
                        format!(
                            "`{}` does not exist and cannot be created: {}",
                            q.name(),
                            error_chain(&e)
                        ),
                    )),
                },
                Err(e) => lines.push(line(
                    "queue",
                    false,
                    format!(
                        "cannot look into `{}` for the ConnectionTest message: {}",
                        q.name(),
                        error_chain(&e)
                    ),
                )),
            },
        }
    }
    let Some(container_uri) = container_uri else {
        lines.push(line(
            "container",
            true,
            "no backup container (--no-backup, or no download handler `container`); exportModelContainerUri is left as it is",
        ));
        return watch;
    };
    match connector.container(container_uri) {
        Err(e) => lines.push(line("container", false, error_chain(&e))),
        Ok(c) => match c.list(TEST_BLOB_PREFIX).await {
            Ok(names) => {
                lines.push(line(
                    "container",
                    true,
                    format!("{container_uri} is reachable"),
                ));
                watch.container = Some((c, names.into_iter().collect()));
            }
            Err(ContainerError::NotFound) if dry_run => lines.push(line(
                "container",
                true,
                format!("dry run: {container_uri} does not exist; setup would create it"),
            )),
            Err(ContainerError::NotFound) => match c.create_if_missing().await {
                Ok(()) => {
                    lines.push(line("container", true, format!("created {container_uri}")));
                    watch.container = Some((c, HashSet::new()));
                }
                Err(e) => lines.push(line(
                    "container",
                    false,
                    format!(
                        "{container_uri} does not exist and cannot be created: {}",
                        error_chain(&e)
                    ),
                )),
            },
            Err(e) => lines.push(line(
                "container",
                false,
                format!(
                    "cannot list {container_uri} to look for the test blob: {}",
                    error_chain(&e)
                ),
            )),
        },
    }
    watch
}
