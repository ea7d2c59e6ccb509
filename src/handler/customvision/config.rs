//! The `[[handlers]]` table of `type = "customvision"`: its keys, their
//! defaults and its validation (export targets, the publish name and
//! prediction resource). Pure; below the handlers, with the configuration
//! (layer 2), which names it in [`crate::config::HandlerConfig`].

use crate::config::customvision::check_export_target;
use crate::config::formats::HumanDuration;
use crate::config::handler_table::{HandlerTable, shared_keys};
use crate::config::issues::Issues;
use crate::filter::EventFilter;
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

/// `type = "customvision"`: acts on the Training API when training
/// completes: exports the iteration and publishes it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomVisionHandlerConfig {
    /// Name used in logs; default `customvision#<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Which events this handler gets; only completed trainings do
    /// anything, others succeed at once.
    #[serde(default = "completed_trainings")]
    pub events: EventFilter,
    /// Only events whose subject begins with this text (Event Grid's
    /// `subjectBeginsWith`: a plain prefix, no wildcards), e.g.
    /// `/blobServices/default/containers/models/blobs/birds/`. Events
    /// without a subject (Custom Vision's) then never match. Default: any.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub subject_begins_with: Option<String>,
    /// Only events whose subject ends with this text (Event Grid's
    /// `subjectEndsWith`), e.g. `.onnx`. Events without a subject (Custom
    /// Vision's) then never match. Default: any.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub subject_ends_with: Option<String>,
    /// Compare `subject_begins_with` / `subject_ends_with` in the subject's
    /// exact case (Event Grid's `isSubjectCaseSensitive`); by default case
    /// is ignored, as Event Grid does.
    #[serde(default)]
    pub subject_case_sensitive: bool,
    /// Exports to request for the trained iteration, e.g.
    /// `[{ platform = "ONNX" }, { platform = "TensorFlow", flavor = "TensorFlowLite" }]`.
    /// Default: none.
    #[serde(default)]
    pub export: Vec<ExportTarget>,
    /// Publish the trained iteration to a prediction resource. Default: no.
    #[serde(default)]
    pub publish: Option<PublishConfig>,
    /// After requesting an export, the queue is polled at
    /// `queue.min_poll_interval` until its `Export` notification arrived or
    /// this long passed.
    #[serde(default = "default_export_wait", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub export_wait: Duration,
}

/// One export of an iteration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportTarget {
    /// `CoreML`, `TensorFlow`, `DockerFile`, `ONNX` or `VAIDK`.
    pub platform: String,
    /// `TensorFlowNormal`/`TensorFlowLite` (TensorFlow), `Linux`/`Windows`/
    /// `ARM` (DockerFile), `ONNX10`/`ONNX12` (ONNX). Default: none.
    #[serde(default)]
    pub flavor: Option<String>,
}

impl std::fmt::Display for ExportTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.flavor {
            Some(fl) => write!(f, "{}/{fl}", self.platform),
            None => f.write_str(&self.platform),
        }
    }
}

/// Publishing a trained iteration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// The publish name prediction clients use (`production`).
    pub name: String,
    /// Full Azure resource id of the Custom Vision *prediction* resource:
    /// `/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.CognitiveServices/accounts/<name>`.
    pub prediction_resource_id: String,
    /// Move `name` from the iteration holding it: PublishIteration with
    /// `overwrite=true`, read back; where the service refuses the parameter
    /// or the name does not move, unpublish the holder and then publish
    /// (with a WARN). Without it, a name held by another iteration is a
    /// permanent failure.
    #[serde(default)]
    pub replace: bool,
}

fn completed_trainings() -> EventFilter {
    EventFilter::parse(&["training.completed".to_owned()]).expect("a valid filter")
}

fn default_export_wait() -> Duration {
    Duration::from_secs(15 * 60)
}

impl HandlerTable for CustomVisionHandlerConfig {
    shared_keys!();
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.export.is_empty() && self.publish.is_none() {
            issues.push(
                path.to_owned(),
                "nothing to do: set `export` (a list of { platform, flavor }) or `publish`",
            );
        }
        let mut seen = Vec::new();
        for (i, t) in self.export.iter().enumerate() {
            if let Err(e) = check_export_target(&t.platform, t.flavor.as_deref()) {
                issues.push(format!("{path}.export[{i}]"), e);
            } else if seen.contains(&t) {
                issues.push(
                    format!("{path}.export[{i}]"),
                    format!("{t} is listed twice"),
                );
            }
            seen.push(t);
        }
        if let Some(p) = &self.publish {
            if p.name.trim().is_empty() || p.name.chars().any(char::is_control) {
                issues.push(format!("{path}.publish.name"), "must be a non-empty name");
            }
            let id = p.prediction_resource_id.to_ascii_lowercase();
            if !id.starts_with("/subscriptions/")
                || !id.contains("/providers/microsoft.cognitiveservices/accounts/")
            {
                issues.push(
                    format!("{path}.publish.prediction_resource_id"),
                    "must be the prediction resource's full Azure resource id: /subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.CognitiveServices/accounts/<name> (Azure portal: the prediction resource → Properties → Resource ID)",
                );
            }
        }
        if self.export_wait.is_zero() || self.export_wait > Duration::from_secs(24 * 3600) {
            issues.push(format!("{path}.export_wait"), "allowed: 1s to 24h");
        }
    }
}
