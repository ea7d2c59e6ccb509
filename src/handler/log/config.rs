//! The `[[handlers]]` table of `type = "log"`: its keys and their
//! defaults. Pure; below the handlers, with the configuration (layer 2),
//! which names it in [`crate::config::HandlerConfig`].

use crate::config::handler_table::{HandlerTable, shared_keys};
use crate::config::issues::Issues;
use crate::filter::EventFilter;
use schemars::JsonSchema;
use serde::Deserialize;

/// `type = "log"`: one structured log record per event.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogHandlerConfig {
    /// Name used in logs; default `log#<index>`.
    pub name: Option<String>,
    /// Which events this handler gets (see the routing grammar).
    pub events: EventFilter,
    /// Only events whose subject begins with this text (Event Grid's
    /// `subjectBeginsWith`: a plain prefix, no wildcards), e.g.
    /// `/blobServices/default/containers/models/blobs/birds/`. Events
    /// without a subject (Custom Vision's) then never match. Default: any.
    #[schemars(length(min = 1))]
    pub subject_begins_with: Option<String>,
    /// Only events whose subject ends with this text (Event Grid's
    /// `subjectEndsWith`), e.g. `.onnx`. Events without a subject (Custom
    /// Vision's) then never match. Default: any.
    #[schemars(length(min = 1))]
    pub subject_ends_with: Option<String>,
    /// Compare `subject_begins_with` / `subject_ends_with` in the subject's
    /// exact case (Event Grid's `isSubjectCaseSensitive`); by default case
    /// is ignored, as Event Grid does.
    pub subject_case_sensitive: bool,
}

impl Default for LogHandlerConfig {
    fn default() -> Self {
        Self {
            name: None,
            events: EventFilter::all(),
            subject_begins_with: None,
            subject_ends_with: None,
            subject_case_sensitive: false,
        }
    }
}

impl HandlerTable for LogHandlerConfig {
    shared_keys!();
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}
