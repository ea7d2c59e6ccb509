//! `type = "customvision"`: when a training completes, export the new
//! iteration for the configured platforms and publish it.
//!
//! Idempotent, because delivery is at least once:
//! - An export of the same platform and flavor that GetExports shows as
//!   `Exporting` or `Done` counts as done; no second request is made. A
//!   `Failed` one is requested again.
//! - An iteration already published under the name counts as published.
//!   With `replace`, a name held by another iteration is moved in one call,
//!   PublishIteration with `overwrite=true`, and read back with
//!   GetIterations; if the service refuses the parameter or the name did
//!   not move, the holder is unpublished and the iteration published (two
//!   calls, a gap between them), with a WARN saying so. Without `replace`,
//!   a name held by another iteration is a permanent failure.
//!
//! A platform the iteration cannot export to (its `exportableTo`, or the
//! service's export error codes) is a permanent failure carrying the
//! reason: the message goes to the poison queue at once. Every requested
//! export is recorded in [`ExpectedExports`], so the poll loop polls fast
//! until its `Export` notification arrives.

use super::config::{CustomVisionHandlerConfig, ExportTarget, PublishConfig};
use crate::customvision::{CvError, Iteration, TrainingClient};
use crate::event::{Event, TrainingStatus};
use crate::handler::types::{BuildContext, Delivery, Handler, HandlerError};
use crate::notice::ExpectedExports;
use async_trait::async_trait;
use std::sync::Arc;
use uuid::Uuid;

/// A customvision handler that cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("a customvision handler needs the [customvision] section (endpoint and training key)")]
pub struct NoCustomVision;

/// Why one step (an export, the publish) failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("iteration {iteration} cannot be exported to {target}: {reason}")]
    NotExportable {
        iteration: Uuid,
        target: String,
        reason: String,
    },
    #[error(
        "publish name `{name}` is held by iteration {holder}; set publish.replace = true to move it to iteration {iteration}"
    )]
    NameTaken {
        name: String,
        holder: Uuid,
        iteration: Uuid,
    },
    #[error("PublishIteration answered false for `{name}`")]
    NotPublished { name: String },
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: CvError,
    },
}

impl StepError {
    fn api(what: impl Into<String>) -> impl FnOnce(CvError) -> StepError {
        let what = what.into();
        move |source| StepError::Api { what, source }
    }

    /// No redelivery can make this step succeed.
    fn is_permanent(&self) -> bool {
        match self {
            StepError::NotExportable { .. } | StepError::NameTaken { .. } => true,
            StepError::NotPublished { .. } => false,
            StepError::Api { source, .. } => source.is_permanent(),
        }
    }
}

/// Every failed step of one delivery. One is shown as it is (its cause is
/// its source); several are joined each with its causes, since an error
/// has only one source to hold them.
#[derive(Debug)]
pub struct StepErrors(Vec<StepError>);

impl std::fmt::Display for StepErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => std::fmt::Display::fmt(one, f),
            several => {
                let chains: Vec<String> = several
                    .iter()
                    .map(|e| crate::error::error_chain(e))
                    .collect();
                f.write_str(&chains.join("; "))
            }
        }
    }
}

impl std::error::Error for StepErrors {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.0.as_slice() {
            [one] => std::error::Error::source(one),
            _ => None,
        }
    }
}

pub struct CustomVisionHandler {
    config: CustomVisionHandlerConfig,
    client: Arc<TrainingClient>,
    expected: Arc<ExpectedExports>,
}

impl CustomVisionHandler {
    pub fn new(
        config: &CustomVisionHandlerConfig,
        ctx: &BuildContext,
    ) -> Result<Self, NoCustomVision> {
        Ok(Self {
            config: config.clone(),
            client: ctx.customvision.clone().ok_or(NoCustomVision)?,
            expected: ctx.expected_exports.clone(),
        })
    }
}

#[async_trait]
impl Handler for CustomVisionHandler {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let Event::Training {
            project_id,
            iteration_id,
            status: TrainingStatus::Completed,
        } = &d.notification.event
        else {
            tracing::debug!("Not a completed training; nothing to do");
            return Ok(());
        };
        let (p, i) = (*project_id, *iteration_id);
        let mut errors = Vec::new();
        if !self.config.export.is_empty() {
            errors.extend(self.export(p, i).await);
        }
        if let Some(publish) = &self.config.publish
            && let Err(e) = self.publish(p, i, publish).await
        {
            errors.push(e);
        }
        if errors.is_empty() {
            return Ok(());
        }
        let permanent = errors.iter().any(StepError::is_permanent);
        let error = StepErrors(errors);
        Err(if permanent {
            HandlerError::permanent(error)
        } else {
            HandlerError::new(error)
        })
    }
}

/// Platforms of `exportableTo` named in a reason (v3.3 has five).
const MAX_PLATFORMS_SHOWN: usize = 16;
/// The longest platform name shown (real ones are under 16 bytes).
const MAX_PLATFORM_NAME: usize = 64;

/// Why `iteration` cannot be exported to `target`, from what GetIteration
/// says; None when it may be (or the service did not say).
fn not_exportable(iteration: &Iteration, target: &ExportTarget) -> Option<String> {
    if iteration.exportable == Some(false) {
        return Some(
            "the iteration is not exportable (exports need a project on a compact domain)".into(),
        );
    }
    match &iteration.exportable_to {
        Some(list)
            if !list.is_empty()
                && !list
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&target.platform)) =>
        {
            // The service's list: a few names, but the answer may say
            // anything (up to 4 MiB), and this becomes a reason and a log
            // field.
            let shown: Vec<&str> = list
                .iter()
                .take(MAX_PLATFORMS_SHOWN)
                .map(|p| crate::limit::prefix(p, MAX_PLATFORM_NAME))
                .collect();
            let more = match list.len().saturating_sub(shown.len()) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            Some(format!(
                "it is exportable only to {}{more} (the project's domain decides)",
                shown.join(", ")
            ))
        }
        _ => None,
    }
}

impl CustomVisionHandler {
    /// Requests every configured export not already running or done;
    /// returns the steps that failed.
    async fn export(&self, p: Uuid, i: Uuid) -> Vec<StepError> {
        let iteration = match self.client.get_iteration(p, i).await {
            Ok(it) => it,
            Err(e) => return vec![StepError::api(format!("reading iteration {i}"))(e)],
        };
        let existing = match self.client.get_exports(p, i).await {
            Ok(x) => x,
            Err(e) => {
                return vec![StepError::api(format!(
                    "reading the exports of iteration {i}"
                ))(e)];
            }
        };
        let mut errors = Vec::new();
        let mut notifications = 0u32;
        for target in &self.config.export {
            let flavor = target.flavor.as_deref();
            let previous = existing.iter().find(|e| e.is_of(&target.platform, flavor));
            match previous.map(|e| e.status.as_str()) {
                Some(s) if s.eq_ignore_ascii_case("Exporting") => {
                    tracing::info!(target = %target, "The export is already running");
                    notifications += 1;
                    continue;
                }
                Some(s) if s.eq_ignore_ascii_case("Done") => {
                    tracing::info!(target = %target, "The iteration is already exported");
                    continue;
                }
                Some(s) => {
                    tracing::info!(target = %target, status = s, "The previous export did not finish; requesting it again")
                }
                None => {}
            }
            if let Some(reason) = not_exportable(&iteration, target) {
                errors.push(StepError::NotExportable {
                    iteration: i,
                    target: target.to_string(),
                    reason,
                });
                continue;
            }
            match self
                .client
                .export_iteration(p, i, &target.platform, flavor)
                .await
            {
                Ok(_) => {
                    tracing::info!(target = %target, "Requested the export");
                    notifications += 1;
                }
                // Requested since GetExports answered (another instance,
                // or an earlier attempt whose answer was lost).
                Err(e) if e.code() == Some("BadRequestExportAlreadyInProgress") => {
                    tracing::info!(target = %target, "The export is already running");
                    notifications += 1;
                }
                Err(e) => errors.push(StepError::api(format!("exporting to {target}"))(e)),
            }
        }
        self.expected
            .expect(p, i, notifications, self.config.export_wait);
        errors
    }

    /// Publishes the iteration as `publish.name`; with `replace`, in place
    /// of the iteration holding the name ([`Self::replace`]).
    async fn publish(&self, p: Uuid, i: Uuid, publish: &PublishConfig) -> Result<(), StepError> {
        let name = publish.name.as_str();
        let iterations = self
            .client
            .get_iterations(p)
            .await
            .map_err(StepError::api("listing the iterations"))?;
        if iterations
            .iter()
            .any(|it| it.id == i && it.published_as() == Some(name))
        {
            tracing::info!(publish_name = name, "The iteration is already published");
            return Ok(());
        }
        let Some(holder) = iterations
            .iter()
            .find(|it| it.id != i && it.published_as() == Some(name))
        else {
            return self.publish_once(p, i, publish).await;
        };
        if !publish.replace {
            return Err(StepError::NameTaken {
                name: name.to_owned(),
                holder: holder.id,
                iteration: i,
            });
        }
        self.replace(p, i, publish, holder.id).await
    }

    /// PublishIteration without `overwrite`.
    async fn publish_once(
        &self,
        p: Uuid,
        i: Uuid,
        publish: &PublishConfig,
    ) -> Result<(), StepError> {
        let name = publish.name.as_str();
        let published = self
            .client
            .publish_iteration(p, i, name, &publish.prediction_resource_id, false)
            .await
            .map_err(StepError::api(format!("publishing as `{name}`")))?;
        if !published {
            return Err(StepError::NotPublished {
                name: name.to_owned(),
            });
        }
        tracing::info!(publish_name = name, "Published the iteration");
        Ok(())
    }

    /// Moves `publish.name` from `holder` to iteration `i` with one call,
    /// PublishIteration with `overwrite=true`, so that predictions under the
    /// name never find it unpublished. The spec documents the parameter but
    /// not what the service does with it, so the result is read back; when
    /// the service refused the parameter or the name did not move, the two
    /// calls of before (unpublish the holders, publish), with a WARN.
    async fn replace(
        &self,
        p: Uuid,
        i: Uuid,
        publish: &PublishConfig,
        holder: Uuid,
    ) -> Result<(), StepError> {
        let name = publish.name.as_str();
        let (why, holders, mine) = match self
            .client
            .publish_iteration(p, i, name, &publish.prediction_resource_id, true)
            .await
        {
            Ok(answer) => {
                let after =
                    self.client
                        .get_iterations(p)
                        .await
                        .map_err(StepError::api(format!(
                            "reading back `{name}` after PublishIteration with overwrite=true"
                        )))?;
                let mine = after
                    .iter()
                    .any(|it| it.id == i && it.published_as() == Some(name));
                let holders: Vec<Uuid> = after
                    .iter()
                    .filter(|it| it.id != i && it.published_as() == Some(name))
                    .map(|it| it.id)
                    .collect();
                if mine && holders.is_empty() {
                    tracing::info!(publish_name = name, previous = %holder, "Published the iteration in place of the one holding the name (PublishIteration with overwrite=true)");
                    return Ok(());
                }
                let shows = match (mine, holders.as_slice()) {
                    (true, others) => format!("on this iteration and on {}", ids(others)),
                    (false, []) => "on no iteration".to_owned(),
                    (false, others) => format!("still on {}", ids(others)),
                };
                (
                    format!(
                        "PublishIteration with overwrite=true answered {answer}, but GetIterations shows `{name}` {shows}"
                    ),
                    holders,
                    mine,
                )
            }
            // A refusal is a `CvError::Service`: its message is all of it.
            Err(e) if overwrite_refused(&e) => (
                format!("the service refused PublishIteration with overwrite=true: {e}"),
                vec![holder],
                false,
            ),
            Err(e) => return Err(StepError::api(format!("publishing as `{name}`"))(e)),
        };
        tracing::warn!(publish_name = name, previous = %holder, reason = %why, "Falling back to UnpublishIteration then PublishIteration; predictions under the name fail in between");
        for h in holders {
            match self.client.unpublish_iteration(p, h).await {
                Ok(()) => {
                    tracing::info!(publish_name = name, previous = %h, "Unpublished the iteration holding the name")
                }
                // Unpublished meanwhile: the name is free all the same.
                Err(e) if e.code() == Some("BadRequestIterationNotPublished") => {}
                Err(e) => {
                    return Err(StepError::api(format!(
                        "unpublishing iteration {h} to free `{name}`"
                    ))(e));
                }
            }
        }
        if mine {
            tracing::info!(publish_name = name, "Published the iteration");
            return Ok(());
        }
        self.publish_once(p, i, publish).await
    }
}

fn ids(ids: &[Uuid]) -> String {
    ids.iter()
        .map(|u| format!("iteration {u}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a PublishIteration with `overwrite=true` failed in a way that
/// may be about the parameter (the service does not take it, or ignored it
/// and found the name in use), so the two calls are worth trying: a 400 or
/// 409 whose code does not say the publish itself is impossible (a wrong
/// prediction resource, an untrained or already published iteration).
fn overwrite_refused(e: &CvError) -> bool {
    const NOT_ABOUT_OVERWRITE: &[&str] = &[
        "BadRequestInvalidPublishTarget",
        "BadRequestIterationIsNotTrained",
        "BadRequestIterationValidationFailed",
        "BadRequestIterationIsPublished",
        "BadRequestInvalidIds",
        "BadRequestWorkspaceCannotBeModified",
    ];
    matches!(
        e,
        CvError::Service {
            status: 400 | 409,
            ..
        }
    ) && !e.code().is_some_and(|c| {
        NOT_ABOUT_OVERWRITE.contains(&c) || c.starts_with("NotFound") || c.starts_with("Forbidden")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_that_may_be_about_overwrite_falls_back() {
        let e = |status: u16, code: Option<&str>| CvError::Service {
            op: crate::customvision::Op::PublishIteration,
            status,
            code: code.map(str::to_owned),
            message: String::new(),
            hint: "",
        };
        for (status, code) in [
            (400, Some("BadRequest")),
            (400, Some("BadRequestInvalid")),
            (400, Some("BadRequestInvalidPublishName")),
            (400, None),
            (409, Some("Conflict")),
        ] {
            assert!(overwrite_refused(&e(status, code)), "{status} {code:?}");
        }
        for (status, code) in [
            (400, Some("BadRequestInvalidPublishTarget")),
            (400, Some("BadRequestIterationIsNotTrained")),
            (400, Some("BadRequestIterationIsPublished")),
            (404, Some("NotFoundIteration")),
            (400, Some("NotFoundIteration")),
            (403, Some("ForbiddenUser")),
            (429, None),
            (503, None),
        ] {
            assert!(!overwrite_refused(&e(status, code)), "{status} {code:?}");
        }
    }

    #[test]
    fn exportable_to_decides_before_any_request() {
        let target = ExportTarget {
            platform: "ONNX".into(),
            flavor: None,
        };
        let mut it = Iteration {
            exportable: Some(true),
            exportable_to: Some(vec!["CoreML".into(), "TensorFlow".into()]),
            ..Default::default()
        };
        let why = not_exportable(&it, &target).unwrap();
        assert!(why.contains("only to CoreML, TensorFlow"), "{why}");
        it.exportable_to = Some(vec!["onnx".into()]);
        assert!(not_exportable(&it, &target).is_none());
        // The service did not say: let ExportIteration decide.
        it.exportable_to = None;
        assert!(not_exportable(&it, &target).is_none());
        it.exportable = Some(false);
        assert!(not_exportable(&it, &target).is_some());
    }

    #[test]
    fn a_huge_exportable_to_list_is_named_in_part() {
        let target = ExportTarget {
            platform: "ONNX".into(),
            flavor: None,
        };
        let mut list: Vec<String> = (0..100_000).map(|n| format!("P{n}")).collect();
        list[0] = "x".repeat(1 << 20);
        let it = Iteration {
            exportable_to: Some(list),
            ..Default::default()
        };
        let why = not_exportable(&it, &target).unwrap();
        assert!(why.len() < 1024, "{} bytes", why.len());
        assert!(why.contains(", P1, P2, "), "{why}");
        assert!(
            why.ends_with("P15 and 99984 more (the project's domain decides)"),
            "{why}"
        );
    }
}
