//! `cvnotify setup --project ID | --create NAME`: points a Custom Vision
//! project at this daemon's queue (and backup container) the way the
//! storage integration guide does with cURL, reads the project back to
//! see the values stuck, and waits for the proof the service sends: a
//! `ConnectionTest` message in the queue and a blob under
//! `CustomVision-TestPermission/` in the container.
//!
//! Which way of setting the URIs the v3.3 service honours is not confirmed
//! (the reference lists three); setup tries the storage guide's form first,
//! then the other one, and says which stuck. One line per step, `ok` or
//! `FAIL`; a missing message or blob names the role the Custom Vision
//! resource's managed identity needs and the `az` command to grant it.
//!
//! Files, one per step after reading or creating the project here:
//! [`uris`] (the URIs compared and shown; the lowest), [`storage`] (the
//! queue and container are there), [`settings`] (the URIs set and read
//! back) and [`proof`] (waiting for the message and the test blob).

mod proof;
mod settings;
mod storage;
mod uris;

pub use proof::MAX_WAIT;
pub use uris::{backup_container, same_uri};

use super::edge::{runtime, with_config, with_queue};
use super::lines::{CheckLine, Lines, exit_code, line};
use crate::azure::Connector;
use crate::config::Config;
use crate::customvision::{CvError, StorageUris, TrainingClient};
use crate::error::error_chain;
use crate::logging::Target;
use crate::secret::printable;
use proof::{Names, wait_for_proof};
use settings::set_uris;
use std::path::Path;
use std::time::Duration;
use storage::prepare_storage;
use uris::show;
use url::Url;
use uuid::Uuid;

/// What `setup` was asked to do.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// An existing project.
    pub project: Option<Uuid>,
    /// A new project with this name (instead of `project`).
    pub create: Option<String>,
    /// `notificationQueueUri`; default: the configured queue's URL.
    pub queue_uri: Option<Url>,
    /// `exportModelContainerUri`; default: a download handler's `container`.
    pub container_uri: Option<Url>,
    /// Do not set a backup container.
    pub no_backup: bool,
    /// Show the change without making it.
    pub dry_run: bool,
    /// How long to wait for the message and the blob.
    pub wait: Duration,
}

/// Runs the command with the configuration at `config`, on the queue
/// `queue` names; the exit code.
pub fn exec(config: Option<&Path>, queue: Option<&str>, opts: &SetupOptions) -> i32 {
    with_config(config, Target::Stderr, |c| {
        with_queue(c, queue, |c| {
            let lines = runtime().block_on(run(c, opts, |l| println!("{l}")));
            exit_code(&lines)
        })
    })
}

/// `--wait`: a duration (`2m`), at most [`MAX_WAIT`].
pub fn parse_wait(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > MAX_WAIT {
        return Err("at most 30m".into());
    }
    Ok(d)
}

/// Runs setup, printing each line through `out` as it is known.
pub async fn run(
    config: &Config,
    opts: &SetupOptions,
    out: impl FnMut(&CheckLine),
) -> Vec<CheckLine> {
    let mut lines = Lines::new(out);
    steps(&mut lines, config, opts).await;
    lines.into_vec()
}

/// Every step, in order; a failed one ends setup.
async fn steps<F: FnMut(&CheckLine)>(lines: &mut Lines<F>, config: &Config, opts: &SetupOptions) {
    let Some(cv) = &config.customvision else {
        lines.push(line(
            "customvision",
            false,
            "the configuration has no [customvision] section: set endpoint and training_key (see config/cvnotify.example.toml)",
        ));
        return;
    };
    let client =
        match TrainingClient::from_config(cv, &config.auth, config.queue.cloud, &config.tls) {
            Ok(c) => c,
            Err(e) => {
                lines.push(line("customvision", false, error_chain(&e)));
                return;
            }
        };
    let connector = match Connector::new(&config.queue, &config.auth, &config.tls) {
        Ok(c) => c,
        Err(e) => {
            lines.push(line("client", false, error_chain(&e)));
            return;
        }
    };
    let own_queue = match connector.queue_url(config.queue_name()) {
        Ok(u) => u,
        Err(e) => {
            lines.push(line("client", false, error_chain(&e)));
            return;
        }
    };
    let queue_uri = opts.queue_uri.clone().unwrap_or_else(|| own_queue.clone());
    let container_uri = if opts.no_backup {
        None
    } else {
        opts.container_uri
            .clone()
            .or_else(|| backup_container(config))
    };
    let uris = StorageUris {
        notification_queue_uri: Some(queue_uri.to_string()),
        export_model_container_uri: container_uri.as_ref().map(Url::to_string),
    };
    let names = Names::new(&cv.endpoint, container_uri.as_ref().unwrap_or(&queue_uri));

    let watch = prepare_storage(
        lines,
        config,
        &connector,
        &queue_uri,
        &own_queue,
        container_uri.as_ref(),
        opts.dry_run,
    )
    .await;

    let project = match (opts.project, &opts.create) {
        (Some(id), _) => match client.get_project(id).await {
            Ok(p) => {
                lines.push(line(
                    "project",
                    true,
                    format!("`{}` ({id}) read", printable(&p.name)),
                ));
                (id, p)
            }
            Err(e) => {
                lines.push(line("project", false, project_error(&e, id)));
                return;
            }
        },
        (None, Some(name)) if opts.dry_run => {
            lines.push(line(
                "project",
                true,
                format!("dry run: would create project `{}` with notificationQueueUri = {}, exportModelContainerUri = {}; nothing changed",
                    printable(name), show(Some(queue_uri.as_str())), show(uris.export_model_container_uri.as_deref())),
            ));
            return;
        }
        (None, Some(name)) => match client.create_project(name, &uris, false).await {
            Ok(p) => {
                let Some(id) = p.id else {
                    lines.push(line(
                        "project",
                        false,
                        "CreateProject answered without a project id",
                    ));
                    return;
                };
                lines.push(line(
                    "project",
                    true,
                    format!("created `{}` ({id})", printable(&p.name)),
                ));
                (id, p)
            }
            Err(e) => {
                lines.push(line("project", false, error_chain(&e)));
                return;
            }
        },
        (None, None) => {
            lines.push(line("project", false, "give --project ID or --create NAME"));
            return;
        }
    };
    let (id, current) = project;

    if opts.dry_run {
        let change = |name: &str, have: Option<&str>, want: Option<&str>| match want {
            None => format!("{name}: left as {}", show(have)),
            Some(w) if have.is_some_and(|h| same_uri(h, w)) => {
                format!("{name}: already {}", show(Some(w)))
            }
            Some(w) => format!("{name}: {} → {}", show(have), show(Some(w))),
        };
        lines.push(line(
            "settings",
            true,
            format!(
                "dry run: would set {}; {}; nothing changed",
                change(
                    "notificationQueueUri",
                    current.settings.notification_queue_uri.as_deref(),
                    uris.notification_queue_uri.as_deref()
                ),
                change(
                    "exportModelContainerUri",
                    current.settings.export_model_container_uri.as_deref(),
                    uris.export_model_container_uri.as_deref()
                ),
            ),
        ));
        return;
    }

    if !set_uris(lines, &client, id, current, &uris, opts.create.is_some()).await {
        return;
    }
    wait_for_proof(
        lines,
        id,
        &names,
        &queue_uri,
        container_uri.as_ref(),
        watch,
        opts.wait,
    )
    .await;
}

/// GetProject failed: what it means for setup.
fn project_error(e: &CvError, id: Uuid) -> String {
    format!("reading project {id}: {}", error_chain(e))
}
