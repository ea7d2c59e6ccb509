//! Setup's last step: waiting for the proof the service sends, a
//! `ConnectionTest` message in the queue and a test blob in the container;
//! where one does not come, the `az` commands that grant the role it needs.

use super::storage::{TEST_BLOB_PREFIX, Watch};
use crate::commands::lines::{CheckLine, Lines, line};
use crate::envelope::Envelope;
use crate::error::error_chain;
use crate::event::{Event, decode};
use crate::queue::Queue;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;
use uuid::Uuid;

/// The longest `--wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 60);

/// How often the queue and container are looked at while waiting.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Names for the `az` commands in hints, from the URLs (placeholders where
/// a URL does not say).
pub struct Names {
    custom_vision: String,
    account: String,
}

impl Names {
    pub fn new(cv_endpoint: &Url, storage_url: &Url) -> Self {
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

/// Waits for the `ConnectionTest` message and the test blob.
pub async fn wait_for_proof<F: FnMut(&CheckLine)>(
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
                            && decode(Envelope::original(&m.body).as_bytes()).is_ok_and(|ns| {
                                ns.iter().any(|n| {
                                    matches!(n.event,
                                    Event::ConnectionTest { project_id } if project_id == id)
                                })
                            })
                    });
                    if found {
                        message = Some(Ok(started.elapsed()));
                    }
                }
                Err(e) => {
                    message = Some(Err(format!(
                        "cannot look into the queue: {}",
                        error_chain(&e)
                    )))
                }
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
                Err(e) => {
                    blob = Some(Err(format!(
                        "cannot list the container: {}",
                        error_chain(&e)
                    )))
                }
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
