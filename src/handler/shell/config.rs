//! The `[[handlers]]` table of `type = "shell"`: its keys, their defaults
//! and its validation. Pure; below the handlers, with the configuration
//! (layer 2), which names it in [`crate::config::HandlerConfig`].

use crate::config::formats::HumanDuration;
use crate::config::handler_table::{HandlerTable, StringMap, all_events, shared_keys};
use crate::config::issues::Issues;
use crate::filter::EventFilter;
use schemars::JsonSchema;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// `type = "shell"`: runs a program for each event.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellConfig {
    /// Name used in logs; default `shell#<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Which events this handler gets (see the routing grammar).
    #[serde(default = "all_events")]
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
    /// Program and arguments, e.g. `["/usr/local/bin/on-export", "--fast"]`.
    pub command: Vec<String>,
    /// The program is killed (with its process group) after this long.
    #[serde(default = "default_shell_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub timeout: Duration,
    /// Working directory; default: the daemon's.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: StringMap,
    /// Whether the program inherits the daemon's environment, minus every
    /// variable that may hold a secret: the `CVNOTIFY_*` ones (configuration
    /// overrides), every handler's `secret_env`, the credential
    /// variables of managed and workload identity (`IDENTITY_HEADER`,
    /// `MSI_SECRET`, `AZURE_CLIENT_SECRET`,
    /// `AZURE_CLIENT_CERTIFICATE_PASSWORD`), and the OpenTelemetry
    /// exporter's `OTEL_*HEADERS` (the collector's credentials).
    #[serde(default = "yes")]
    pub inherit_env: bool,
    /// Exit codes that mean retrying cannot help (bad input, a model the
    /// hook rejects): the message goes to the poison queue at once, with the
    /// reason. Any other non-zero code is retried. Empty (the default): all
    /// are retried.
    #[serde(default)]
    pub permanent_exit_codes: Vec<i32>,
}

/// Shows the shape, not the values: `env` values and arguments may hold
/// tokens.
impl fmt::Debug for ShellConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShellConfig")
            .field("name", &self.name)
            .field("events", &self.events)
            .field("subject_begins_with", &self.subject_begins_with)
            .field("subject_ends_with", &self.subject_ends_with)
            .field("subject_case_sensitive", &self.subject_case_sensitive)
            .field("program", &self.command.first())
            .field("args", &self.command.len().saturating_sub(1))
            .field("timeout", &self.timeout)
            .field("working_dir", &self.working_dir)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("inherit_env", &self.inherit_env)
            .field("permanent_exit_codes", &self.permanent_exit_codes)
            .finish()
    }
}

fn default_shell_timeout() -> Duration {
    Duration::from_secs(60)
}

fn yes() -> bool {
    true
}

impl HandlerTable for ShellConfig {
    shared_keys!();
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.command.first().is_none_or(|p| p.is_empty()) {
            issues.push(
                format!("{path}.command"),
                "must name a program, e.g. [\"/usr/local/bin/hook\", \"arg\"]",
            );
        }
        if self.timeout.is_zero() {
            issues.push(format!("{path}.timeout"), "must be greater than 0");
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                issues.push(
                    format!("{path}.env"),
                    format!("`{k}` is not a valid variable name"),
                );
            } else if k.starts_with("CVNOTIFY_") {
                issues.push(
                    format!("{path}.env"),
                    format!("`{k}`: names starting with CVNOTIFY_ are set by cvnotify"),
                );
            }
        }
        for code in &self.permanent_exit_codes {
            if !(1..=255).contains(code) {
                issues.push(
                    format!("{path}.permanent_exit_codes"),
                    format!("{code} is not an exit code of a failure; allowed: 1 to 255"),
                );
            }
        }
    }
}
