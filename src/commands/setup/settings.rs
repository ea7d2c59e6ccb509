//! Setup's settings step: the URIs set on the project, each way the
//! service might take them in turn, each read back with GetProject.

use super::uris::{same_uri, show};
use crate::commands::lines::{CheckLine, Lines, line};
use crate::customvision::{Project, StorageUris, TrainingClient};
use crate::error::error_chain;
use uuid::Uuid;

/// Whether the project's settings show `uris`.
fn stuck(project: &Project, uris: &StorageUris) -> bool {
    let ok = |want: &Option<String>, have: &Option<String>| match (want, have) {
        (None, _) => true,
        (Some(w), Some(h)) => same_uri(w, h),
        (Some(_), None) => false,
    };
    ok(
        &uris.notification_queue_uri,
        &project.settings.notification_queue_uri,
    ) && ok(
        &uris.export_model_container_uri,
        &project.settings.export_model_container_uri,
    )
}

/// What GetProject shows for the two URIs.
fn shows(project: &Project) -> String {
    format!(
        "notificationQueueUri = {}, exportModelContainerUri = {}",
        show(project.settings.notification_queue_uri.as_deref()),
        show(project.settings.export_model_container_uri.as_deref())
    )
}

/// The ways of setting the URIs on an existing project, in the order tried.
#[derive(Clone, Copy)]
enum UpdateForm {
    /// In `settings` of the UpdateProject body (the storage guide).
    Body,
    /// As UpdateProject query parameters (the guide's CreateProject form;
    /// not documented for UpdateProject).
    Query,
}

impl UpdateForm {
    fn describe(self) -> &'static str {
        match self {
            UpdateForm::Body => {
                "UpdateProject with the URIs in `settings` (the storage guide's form)"
            }
            UpdateForm::Query => {
                "UpdateProject with the URIs as query parameters (the guide's CreateProject form; not documented for UpdateProject)"
            }
        }
    }
}

/// Sets the URIs and reads the project back; false when they did not
/// stick in any form.
pub async fn set_uris<F: FnMut(&CheckLine)>(
    lines: &mut Lines<F>,
    client: &TrainingClient,
    id: Uuid,
    current: Project,
    uris: &StorageUris,
    created: bool,
) -> bool {
    let mut tried: Vec<&'static str> = Vec::new();
    let mut last = current;
    if created {
        match client.get_project(id).await {
            Ok(p) if stuck(&p, uris) => {
                lines.push(line(
                    "settings",
                    true,
                    "set by CreateProject with the URIs as query parameters (the storage guide's form); GetProject shows both",
                ));
                return true;
            }
            Ok(p) => last = p,
            Err(e) => {
                lines.push(line(
                    "settings",
                    false,
                    format!("reading the project back: {}", error_chain(&e)),
                ));
                return false;
            }
        }
        tried.push("CreateProject with the URIs as query parameters (the storage guide's form)");
    }
    for form in [UpdateForm::Body, UpdateForm::Query] {
        let (body, query) = match form {
            UpdateForm::Body => (last.update_body(uris), Vec::new()),
            UpdateForm::Query => (last.update_body(&StorageUris::default()), uris.query()),
        };
        let query: Vec<(&str, String)> = query.into_iter().collect();
        if let Err(e) = client.update_project(id, body, &query).await {
            lines.push(line("settings", false, error_chain(&e)));
            return false;
        }
        match client.get_project(id).await {
            Ok(p) if stuck(&p, uris) => {
                let before = if tried.is_empty() {
                    String::new()
                } else {
                    format!("; did not stick: {}", tried.join("; "))
                };
                lines.push(line(
                    "settings",
                    true,
                    format!(
                        "set with {}; GetProject shows both{before}",
                        form.describe()
                    ),
                ));
                return true;
            }
            Ok(p) => last = p,
            Err(e) => {
                lines.push(line(
                    "settings",
                    false,
                    format!("reading the project back: {}", error_chain(&e)),
                ));
                return false;
            }
        }
        tried.push(form.describe());
    }
    lines.push(line(
        "settings",
        false,
        format!(
            "the service accepted every form but the values did not stick: after {}, GetProject shows {}. Set them in a way the service takes (see the storage integration guide) and run `cvnotify check`",
            tried.join(", then "),
            shows(&last)
        ),
    ));
    false
}
