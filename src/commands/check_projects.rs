//! `cvnotify check`, the Custom Vision part: for each project listed in
//! `customvision.projects`, that the credential can read it and that its
//! `notificationQueueUri` (and `exportModelContainerUri`, when a download
//! handler names a `container`) point at this daemon's queue (and
//! container). One line per project; nothing is changed.

use super::check::CheckLine;
use super::setup::{backup_container, same_uri};
use crate::azure::Connector;
use crate::config::Config;
use crate::customvision::TrainingClient;
use crate::error::error_chain;
use crate::secret::{printable, redact_url};

fn line(name: &'static str, ok: bool, detail: impl Into<String>) -> CheckLine {
    CheckLine {
        name,
        ok,
        detail: detail.into(),
    }
}

/// The lines, each printed through `out` as it is known; none without
/// `[customvision]`.
pub async fn run(config: &Config, mut out: impl FnMut(&CheckLine)) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    let mut push = |l: CheckLine, lines: &mut Vec<CheckLine>| {
        out(&l);
        lines.push(l);
    };
    let Some(cv) = &config.customvision else {
        return lines;
    };
    let client =
        match TrainingClient::from_config(cv, &config.auth, config.queue.cloud, &config.tls) {
            Ok(c) => c,
            Err(e) => {
                push(line("customvision", false, error_chain(&e)), &mut lines);
                return lines;
            }
        };
    if cv.projects.is_empty() {
        push(
            line(
                "customvision",
                true,
                "no projects listed in customvision.projects; nothing to verify",
            ),
            &mut lines,
        );
        return lines;
    }
    let queue = match Connector::new(&config.queue, &config.auth, &config.tls)
        .and_then(|c| c.queue_url(config.queue_name()))
    {
        Ok(u) => u,
        Err(e) => {
            push(line("customvision", false, error_chain(&e)), &mut lines);
            return lines;
        }
    };
    let container = backup_container(config);
    for id in &cv.projects {
        let p = match client.get_project(*id).await {
            Ok(p) => p,
            Err(e) => {
                push(
                    line("project", false, format!("{id}: {}", error_chain(&e))),
                    &mut lines,
                );
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
        push(l, &mut lines);
    }
    lines
}
