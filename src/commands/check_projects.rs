//! `cvnotify check`, the Custom Vision part: for each project listed in
//! `customvision.projects`, that the credential can read it and that its
//! `notificationQueueUri` (and `exportModelContainerUri`, when a download
//! handler names a `container`) point at this daemon's queue (and
//! container). One line per project; nothing is changed.

use super::lines::{CheckLine, Lines, line};
use super::setup::{backup_container, same_uri};
use crate::azure::Connector;
use crate::config::Config;
use crate::customvision::TrainingClient;
use crate::error::error_chain;
use crate::secret::{printable, redact_url};

/// The lines, each printed through `out` as it is known; none without
/// `[customvision]`.
pub async fn run(config: &Config, out: impl FnMut(&CheckLine)) -> Vec<CheckLine> {
    let mut lines = Lines::new(out);
    let Some(cv) = &config.customvision else {
        return lines.into_vec();
    };
    let client =
        match TrainingClient::from_config(cv, &config.auth, config.queue.cloud, &config.tls) {
            Ok(c) => c,
            Err(e) => {
                lines.push(line("customvision", false, error_chain(&e)));
                return lines.into_vec();
            }
        };
    if cv.projects.is_empty() {
        lines.push(line(
            "customvision",
            true,
            "no projects listed in customvision.projects; nothing to verify",
        ));
        return lines.into_vec();
    }
    let queue = match Connector::new(&config.queue, &config.auth, &config.tls)
        .and_then(|c| c.queue_url(config.queue_name()))
    {
        Ok(u) => u,
        Err(e) => {
            lines.push(line("customvision", false, error_chain(&e)));
            return lines.into_vec();
        }
    };
    let container = backup_container(config);
    for id in &cv.projects {
        let p = match client.get_project(*id).await {
            Ok(p) => p,
            Err(e) => {
                lines.push(line("project", false, format!("{id}: {}", error_chain(&e))));
                continue;
            }
        };
        // What GetProject answered is shown escaped, and its URIs without
        // their query (a SAS would be a credential in the output).
        let shown = |uri: Option<&str>| uri.map_or("not set".into(), |u| printable(&redact_url(u)));
        let name = printable(&p.name);
        let mut wrong = Vec::new();
        let notifications = p.settings.notification_queue_uri.as_deref();
        if !notifications.is_some_and(|n| same_uri(n, queue.as_str())) {
            wrong.push(format!(
                "notificationQueueUri is {}, not this daemon's queue {queue}",
                shown(notifications)
            ));
        }
        let backups = p.settings.export_model_container_uri.as_deref();
        if let Some(c) = &container
            && !backups.is_some_and(|b| same_uri(b, c.as_str()))
        {
            wrong.push(format!(
                "exportModelContainerUri is {}, not the download handler's container {c}",
                shown(backups)
            ));
        }
        let l = if wrong.is_empty() {
            let backups = match &container {
                Some(c) => format!("; backups → {c}"),
                None => String::new(),
            };
            line(
                "project",
                true,
                format!("{id} `{name}`: notifications → this queue{backups}"),
            )
        } else {
            line(
                "project",
                false,
                format!(
                    "{id} `{name}`: {}; run `cvnotify setup --project {id}`",
                    wrong.join("; ")
                ),
            )
        };
        lines.push(l);
    }
    lines.into_vec()
}
