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

use super::edge::{runtime, with_config, with_queue};
use super::lines::{CheckLine, Lines, exit_code, line};
use crate::azure::Connector;
use crate::config::Config;
use crate::customvision::{CvError, StorageUris, TrainingClient};
use crate::envelope::Envelope;
use crate::error::error_chain;
use crate::event::{Event, decode};
use crate::logging::Target;
use crate::queue::Queue;
use crate::secret::printable;
use settings::set_uris;
use std::path::Path;
use std::time::Duration;
use storage::{TEST_BLOB_PREFIX, Watch, prepare_storage};
use tokio::time::Instant;
use uris::show;
use url::Url;
use uuid::Uuid;

mod settings;
mod storage;
mod uris;

pub use uris::{backup_container, same_uri};

/// The longest `--wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 60);

/// How often the queue and container are looked at while waiting.
const LOOK_EVERY: Duration = Duration::from_millis(500);

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

/// Names for the `az` commands in hints, from the URLs (placeholders where
/// a URL does not say).
struct Names {
    custom_vision: String,
    account: String,
}

impl Names {
    fn new(cv_endpoint: &Url, storage_url: &Url) -> Self {
        let custom_vision = cv_endpoint
            .host_str()
            .and_then(|h| h.strip_suffix(".cognitiveservices.azure.com"))
            .map(str::to_owned)
            .unwrap_or_else(|| "<custom-vision-resource>".into());
        let account = match storage_url.host() {
            Some(url::Host::Domain(d))
                if d.split('.')
                    .nth(1)
                    .is_some_and(|s| s == "queue" || s == "blob") =>
            {
                d.split('.').next().unwrap_or_default().to_owned()
            }
            // Path-style URLs (Azurite, IP endpoints): the account is the
            // first path segment.
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))
            | Some(url::Host::Domain("localhost")) => storage_url
                .path_segments()
                .and_then(|mut s| s.next())
                .unwrap_or("<storage-account>")
                .to_owned(),
            _ => "<storage-account>".into(),
        };
        Names {
            custom_vision,
            account,
        }
    }

    /// What to run so that the Custom Vision resource's identity gets
    /// `role` on `scope_tail` (`queueServices/default/queues/q`).
    fn grant(&self, role: &str, scope_tail: &str) -> String {
        let cv = &self.custom_vision;
        format!(
            "the Custom Vision resource's system-assigned managed identity needs '{role}' there. Grant it (role assignments take a few minutes to apply), then run setup again:\n\
             \x20     az cognitiveservices account identity assign --name {cv} --resource-group <resource-group>\n\
             \x20     az role assignment create --role \"{role}\" --assignee-principal-type ServicePrincipal \\\n\
             \x20       --assignee-object-id \"$(az cognitiveservices account show --name {cv} --resource-group <resource-group> --query identity.principalId -o tsv)\" \\\n\
             \x20       --scope \"$(az storage account show --name {account} --query id -o tsv)/{scope_tail}\"",
            account = self.account,
        )
    }
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

/// Waits for the `ConnectionTest` message and the test blob.
async fn wait_for_proof<F: FnMut(&CheckLine)>(
    lines: &mut Lines<F>,
    id: Uuid,
    names: &Names,
    queue_uri: &Url,
    container_uri: Option<&Url>,
    watch: Watch,
    wait: Duration,
) {
    let started = Instant::now();
    let deadline = started + wait.min(MAX_WAIT);
    let mut message: Option<Result<Duration, String>> = None;
    let mut blob: Option<Result<(Duration, String), String>> = None;
    let mut queue_full = false;
    if watch.queue.is_none() {
        message = Some(Err(String::new()));
    }
    if watch.container.is_none() {
        blob = Some(Err(String::new()));
    }
    loop {
        if message.is_none()
            && let Some((q, before)) = &watch.queue
        {
            match q.peek(32).await {
                Ok(msgs) => {
                    queue_full = msgs.len() >= 32;
                    let found = msgs.iter().any(|m| {
                        !before.contains(&m.id)
                            && matches!(decode(Envelope::original(&m.body).as_bytes()).map(|n| n.event),
                                Ok(Event::ConnectionTest { project_id }) if project_id == id)
                    });
                    if found {
                        message = Some(Ok(started.elapsed()));
                    }
                }
                Err(e) => message = Some(Err(format!("cannot look into the queue: {e}"))),
            }
        }
        if blob.is_none()
            && let Some((c, before)) = &watch.container
        {
            match c.list(TEST_BLOB_PREFIX).await {
                Ok(names) => {
                    if let Some(n) = names.into_iter().find(|n| !before.contains(n)) {
                        blob = Some(Ok((started.elapsed(), n)));
                    }
                }
                Err(e) => blob = Some(Err(format!("cannot list the container: {e}"))),
            }
        }
        if (message.is_some() && blob.is_some()) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(LOOK_EVERY.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
    let waited = humantime::format_duration(Duration::from_secs(wait.min(MAX_WAIT).as_secs()));
    if let Some((q, _)) = &watch.queue {
        let queue_name = q.name().to_owned();
        match message {
            Some(Ok(after)) => lines.push(line(
                "message",
                true,
                format!(
                    "ConnectionTest for project {id} arrived in `{queue_name}` after {:.1} s",
                    after.as_secs_f64()
                ),
            )),
            Some(Err(e)) => lines.push(line("message", false, e)),
            None => {
                let full = if queue_full {
                    " The queue holds 32 or more messages and setup sees only the first 32: the message may be behind them."
                } else {
                    ""
                };
                lines.push(line(
                    "message",
                    false,
                    format!(
                        "no ConnectionTest for project {id} in `{queue_name}` ({queue_uri}) within {waited}: {}\n\
                         \x20     Or a cvnotify daemon already running on this queue received and deleted it: look for event_type \"ConnectionTest\" in its log.{full}",
                        names.grant("Storage Queue Data Contributor", &format!("queueServices/default/queues/{queue_name}"))
                    ),
                ));
            }
        }
    }
    if let (Some(container_uri), Some(_)) = (container_uri, &watch.container) {
        let container = container_uri
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_owned();
        match blob {
            Some(Ok((after, name))) => lines.push(line(
                "blob",
                true,
                format!("test blob `{name}` appeared in {container_uri} after {:.1} s", after.as_secs_f64()),
            )),
            Some(Err(e)) => lines.push(line("blob", false, e)),
            None => lines.push(line(
                "blob",
                false,
                format!(
                    "no blob under {TEST_BLOB_PREFIX} in {container_uri} within {waited} (it exists only briefly): {}",
                    names.grant("Storage Blob Data Contributor", &format!("blobServices/default/containers/{container}"))
                ),
            )),
        }
    }
}
/// GetProject failed: what it means for setup.
fn project_error(e: &CvError, id: Uuid) -> String {
    format!("reading project {id}: {}", error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_names_come_from_the_urls() {
        let n = Names::new(
            &Url::parse("https://my-cv.cognitiveservices.azure.com/").unwrap(),
            &Url::parse("https://acct.queue.core.windows.net/q").unwrap(),
        );
        assert_eq!(
            (n.custom_vision.as_str(), n.account.as_str()),
            ("my-cv", "acct")
        );
        let g = n.grant(
            "Storage Queue Data Contributor",
            "queueServices/default/queues/q",
        );
        assert!(
            g.contains("az role assignment create --role \"Storage Queue Data Contributor\""),
            "{g}"
        );
        assert!(g.contains("--scope \"$(az storage account show --name acct --query id -o tsv)/queueServices/default/queues/q\""), "{g}");
        let n = Names::new(
            &Url::parse("https://westeurope.api.cognitive.microsoft.com").unwrap(),
            &Url::parse("http://127.0.0.1:10001/devstoreaccount1/q").unwrap(),
        );
        assert_eq!(
            (n.custom_vision.as_str(), n.account.as_str()),
            ("<custom-vision-resource>", "devstoreaccount1")
        );
    }
}
