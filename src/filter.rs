//! The `events` filter grammar, and the subject filter of a handler table.
//!
//! ```text
//! filter  = "*" | type [ "." status ]
//! type    = "connection_test" | "training" | "export"            (Custom Vision)
//!         | "blob_created" | "blob_deleted"                       (Blob Storage)
//!         | "run_completed" | "run_status_changed" | "model_registered"
//!         | "model_deployed" | "dataset_drift_detected"         (Azure Machine Learning)
//!         | "unknown" | "*"
//! status  = "*" | a status of the type (see [`KINDS`])
//! ```
//!
//! `training` alone means `training.*`; `unknown` is any type this version
//! does not know (Custom Vision's or Event Grid's). Matching is
//! case-insensitive: `run_status_changed.NotStarted` is
//! `run_status_changed.notstarted`, and matches a `runStatus` sent in any
//! case. An event goes to a handler when any of its patterns match.
//!
//! Unknown names are rejected at start-up, so that a typo cannot silently
//! route nothing. That holds for Azure Machine Learning's run statuses too:
//! the service's documented job statuses are listed, and a status it adds
//! later is still routed by `run_status_changed` (every status), whose
//! events carry it in `run_status`; `run_status_changed.faild` is an error
//! rather than a handler that never runs.
//!
//! `*.<status>` is every event with that status, whatever its type:
//! `*.failed` is every failed training, export **and** Azure Machine
//! Learning run (`run_status_changed.failed`), because a handler that
//! reports failures should keep doing so when the training moves from
//! Custom Vision to Azure Machine Learning; list
//! `training.failed`, `export.failed` to keep Custom Vision's alone.
//!
//! [`SubjectFilter`] is Event Grid's own subject filter (`subjectBeginsWith`,
//! `subjectEndsWith`, `isSubjectCaseSensitive`), with its meaning: a plain
//! prefix and suffix, no wildcards, compared without regard to case unless
//! asked. An event without a subject (Custom Vision's) never matches a
//! filter that sets either.
//!
//! A leaf above [`crate::event`]: `events` keys are parsed into an
//! [`EventFilter`] once, when the configuration is loaded.

use crate::event::Event;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Custom Vision's statuses (`TrainingCompleted`, `ExportFailed`, without
/// the type).
const CUSTOM_VISION_STATUSES: &[&str] = &["completed", "failed"];

/// Azure Machine Learning's run (job) statuses, as the service spells them
/// (the `JobStatus` values of its REST API; matched without regard to case).
const RUN_STATUSES: &[&str] = &[
    "NotStarted",
    "Starting",
    "Provisioning",
    "Preparing",
    "Queued",
    "Running",
    "Finalizing",
    "CancelRequested",
    "Completed",
    "Failed",
    "Canceled",
    "NotResponding",
    "Paused",
    "Unknown",
];

/// Every routing type ([`Event::type_key`]) with the statuses its events
/// can have; the ones with none take no `.status` (but `.*`).
pub const KINDS: &[(&str, &[&str])] = &[
    ("connection_test", &[]),
    ("training", CUSTOM_VISION_STATUSES),
    ("export", CUSTOM_VISION_STATUSES),
    ("blob_created", &[]),
    ("blob_deleted", &[]),
    ("run_completed", &[]),
    ("run_status_changed", RUN_STATUSES),
    ("model_registered", &[]),
    ("model_deployed", &[]),
    ("dataset_drift_detected", &[]),
    ("unknown", &[]),
];

/// Custom Vision's types: their events have no subject.
const WITHOUT_SUBJECT: &[&str] = &["connection_test", "training", "export"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// None = any type.
    ty: Option<String>,
    /// None = any status. Lower case.
    status: Option<String>,
}

/// A parsed `events` list. Serialized back to its patterns (lower case)
/// for the defaults the configuration's JSON Schema shows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct EventFilter {
    patterns: Vec<Pattern>,
}

/// Why an `events` list is rejected; the text is the user's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("is empty; use [\"*\"] for every event")]
    Empty,
    #[error("`{raw}`: unknown event type `{ty}`; allowed: *, {}", type_names())]
    UnknownType { raw: String, ty: String },
    #[error("`{raw}`: {ty} events have no status; use `{ty}`")]
    NoStatus { raw: String, ty: String },
    #[error("`{raw}`: unknown status `{status}` for {}; allowed: *, {}", 
        .ty.as_deref().map_or("any event type".to_owned(), |t| format!("{t} events")),
        status_names(.ty.as_deref()).join(", "))]
    UnknownStatus {
        raw: String,
        /// None: `*`.
        ty: Option<String>,
        status: String,
    },
}

fn type_names() -> String {
    KINDS.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
}

/// The statuses of `ty` (`None`: of every type, each once), as spelled in
/// [`KINDS`].
fn status_names(ty: Option<&str>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (t, statuses) in KINDS {
        if ty.is_none_or(|ty| ty == *t) {
            for s in *statuses {
                if !out.iter().any(|o| o.eq_ignore_ascii_case(s)) {
                    out.push(s);
                }
            }
        }
    }
    out
}

impl TryFrom<Vec<String>> for EventFilter {
    type Error = FilterError;
    fn try_from(patterns: Vec<String>) -> Result<Self, FilterError> {
        Self::parse(&patterns)
    }
}

impl From<EventFilter> for Vec<String> {
    fn from(f: EventFilter) -> Self {
        f.patterns
            .iter()
            .map(|p| match (&p.ty, &p.status) {
                (None, None) => "*".to_owned(),
                (Some(t), None) => t.clone(),
                (t, Some(s)) => format!("{}.{s}", t.as_deref().unwrap_or("*")),
            })
            .collect()
    }
}

/// A non-empty list of patterns, each matched (case-insensitively, as
/// [`EventFilter::parse`] does) by a regular expression built from the same
/// type and status names, so an editor flags the typos start-up rejects.
impl schemars::JsonSchema for EventFilter {
    fn schema_name() -> Cow<'static, str> {
        "EventFilter".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // JSON Schema patterns have no case-insensitive flag: `[tT]`.
        let any_case = |s: &str| {
            s.chars()
                .map(|c| match c {
                    '*' => "\\*".to_owned(),
                    c if c.is_ascii_alphabetic() => {
                        format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                    }
                    c => c.to_string(),
                })
                .collect::<String>()
        };
        let alt = |names: &[&str]| {
            names
                .iter()
                .map(|n| any_case(n))
                .collect::<Vec<_>>()
                .join("|")
        };
        // One branch per type that has statuses, one for `*` (every
        // status), one for the types without.
        let with_statuses = |ty: &str, statuses: &[&str]| {
            format!(
                "(?:{})(?:\\.(?:{}))?",
                any_case(ty),
                alt(&[&["*"], statuses].concat())
            )
        };
        let mut branches: Vec<String> = KINDS
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(t, s)| with_statuses(t, s))
            .collect();
        branches.push(with_statuses("*", &status_names(None)));
        let without: Vec<&str> = KINDS
            .iter()
            .filter(|(_, s)| s.is_empty())
            .map(|(t, _)| *t)
            .collect();
        branches.push(format!("(?:{})(?:\\.\\*)?", alt(&without)));
        let pattern = format!("^\\s*(?:{})\\s*$", branches.join("|"));
        schemars::json_schema!({
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "string",
                "pattern": pattern,
            },
            "examples": [
                ["*"],
                ["training.completed", "export.*"],
                ["*.failed"],
                ["run_status_changed.failed", "model_registered", "blob_created"],
            ],
        })
    }
}

impl EventFilter {
    pub fn parse(patterns: &[String]) -> Result<Self, FilterError> {
        if patterns.is_empty() {
            return Err(FilterError::Empty);
        }
        let mut out = Vec::with_capacity(patterns.len());
        for raw in patterns {
            let p = raw.trim().to_ascii_lowercase();
            let (ty, status) = match p.split_once('.') {
                Some((t, s)) => (t, Some(s)),
                None => (p.as_str(), None),
            };
            let ty = match ty {
                "*" => None,
                t if KINDS.iter().any(|(k, _)| *k == t) => Some(t.to_owned()),
                t => {
                    return Err(FilterError::UnknownType {
                        raw: raw.clone(),
                        ty: t.to_owned(),
                    });
                }
            };
            let status = match status {
                None | Some("*") => None,
                Some(s) => {
                    let allowed = status_names(ty.as_deref());
                    if allowed.is_empty()
                        && let Some(t) = &ty
                    {
                        return Err(FilterError::NoStatus {
                            raw: raw.clone(),
                            ty: t.clone(),
                        });
                    }
                    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(s)) {
                        return Err(FilterError::UnknownStatus {
                            raw: raw.clone(),
                            ty,
                            status: s.to_owned(),
                        });
                    }
                    Some(s.to_owned())
                }
            };
            out.push(Pattern { ty, status });
        }
        Ok(Self { patterns: out })
    }

    /// Every event.
    pub fn all() -> Self {
        Self {
            patterns: vec![Pattern {
                ty: None,
                status: None,
            }],
        }
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.patterns.iter().any(|p| {
            let type_ok = match p.ty.as_deref() {
                None => true,
                Some("unknown") => event.is_unknown(),
                Some(t) => !event.is_unknown() && event.type_key() == t,
            };
            let status_ok = match &p.status {
                None => true,
                Some(s) => event.status_key().as_deref() == Some(s),
            };
            type_ok && status_ok
        })
    }

    /// Whether an event this filter takes may have a subject: false when
    /// it names only Custom Vision's types, whose events have none (so a
    /// subject filter beside it could never match).
    pub fn may_have_subject(&self) -> bool {
        self.patterns.iter().any(|p| {
            p.ty.as_deref()
                .is_none_or(|t| !WITHOUT_SUBJECT.contains(&t))
        })
    }
}

/// A handler table's `subject_begins_with`, `subject_ends_with` and
/// `subject_case_sensitive`: Event Grid's subject filter. Unset, it takes
/// every event; set, only events whose subject has that prefix and suffix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectFilter {
    pub begins_with: Option<String>,
    pub ends_with: Option<String>,
    /// Event Grid's `isSubjectCaseSensitive`, false by default as there.
    pub case_sensitive: bool,
}

impl SubjectFilter {
    /// Whether either end is set: then an event needs a subject.
    pub fn is_set(&self) -> bool {
        self.begins_with.is_some() || self.ends_with.is_some()
    }

    pub fn matches(&self, subject: Option<&str>) -> bool {
        if !self.is_set() {
            return true;
        }
        let Some(subject) = subject else {
            return false;
        };
        let begins = self.begins_with.as_deref().is_none_or(|prefix| {
            if self.case_sensitive {
                subject.starts_with(prefix)
            } else {
                begins_without_case(subject.chars(), prefix.chars())
            }
        });
        let ends = self.ends_with.as_deref().is_none_or(|suffix| {
            if self.case_sensitive {
                subject.ends_with(suffix)
            } else {
                begins_without_case(subject.chars().rev(), suffix.chars().rev())
            }
        });
        begins && ends
    }
}

/// Whether `text` begins with `prefix`, each character compared by its
/// lower case (Unicode's, as Event Grid's comparison is not ASCII-only),
/// without allocating: a subject is outside text, up to a message long.
fn begins_without_case(
    text: impl Iterator<Item = char>,
    prefix: impl Iterator<Item = char>,
) -> bool {
    let mut text = text.flat_map(char::to_lowercase);
    prefix
        .flat_map(char::to_lowercase)
        .all(|c| text.next() == Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExportStatus, TrainingStatus};
    use uuid::Uuid;

    fn f(p: &[&str]) -> EventFilter {
        EventFilter::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn err(p: &str) -> String {
        EventFilter::parse(&[p.to_owned()]).unwrap_err().to_string()
    }

    fn training(s: TrainingStatus) -> Event {
        Event::Training {
            project_id: Uuid::nil(),
            iteration_id: Uuid::nil(),
            status: s,
        }
    }

    fn export(s: ExportStatus) -> Event {
        Event::Export {
            project_id: Uuid::nil(),
            iteration_id: Uuid::nil(),
            status: s,
            model_uri: None,
        }
    }

    #[test]
    fn grammar() {
        let ct = Event::ConnectionTest {
            project_id: Uuid::nil(),
        };
        let unknown = Event::Unknown {
            r#type: "Training2".into(),
            content: serde_json::Value::Null,
        };
        let tf = training(TrainingStatus::Failed);
        let tc = training(TrainingStatus::Completed);
        let t_other = training(TrainingStatus::Other("TrainingCancelled".into()));
        let ec = export(ExportStatus::Completed);
        let ef = export(ExportStatus::Failed);

        assert!(
            [&ct, &unknown, &tf, &tc, &ec]
                .iter()
                .all(|e| f(&["*"]).matches(e))
        );
        assert!(f(&["training.failed"]).matches(&tf));
        assert!(!f(&["training.failed"]).matches(&tc));
        assert!(!f(&["training.failed"]).matches(&t_other));
        assert!(f(&["training"]).matches(&t_other));
        assert!(f(&["export.*"]).matches(&ec) && f(&["export.*"]).matches(&ef));
        assert!(!f(&["export.*"]).matches(&tf));
        assert!(f(&["*.failed"]).matches(&tf) && f(&["*.failed"]).matches(&ef));
        assert!(!f(&["*.failed"]).matches(&ct) && !f(&["*.failed"]).matches(&ec));
        assert!(f(&["unknown"]).matches(&unknown) && !f(&["unknown"]).matches(&tf));
        assert!(!f(&["training"]).matches(&unknown));
        assert!(f(&["Connection_Test"]).matches(&ct));
        assert!(f(&["training.completed", "export.failed"]).matches(&ef));
    }

    /// Every event kind has a routing name the grammar knows, its own
    /// name routes it and no other type's does, and its status (if any)
    /// is one the grammar lists for its type.
    #[test]
    fn every_event_kind_is_routed_by_its_name() {
        for (sample, event) in crate::event::samples() {
            let key = if event.is_unknown() {
                "unknown".to_owned()
            } else {
                event.type_key()
            };
            let (_, statuses) = KINDS
                .iter()
                .find(|(t, _)| *t == key)
                .unwrap_or_else(|| panic!("{sample}: `{key}` is not in KINDS"));
            for (t, _) in KINDS {
                assert_eq!(f(&[t]).matches(&event), *t == key, "{sample} vs {t}");
            }
            if let Some(status) = event.status_key()
                && statuses.iter().any(|s| s.eq_ignore_ascii_case(&status))
            {
                assert!(f(&[&format!("{key}.{status}")]).matches(&event), "{sample}");
                assert!(f(&[&format!("*.{status}")]).matches(&event), "{sample}");
            }
        }
    }

    /// The Event Grid kinds, decoded from the wire: their names, run
    /// statuses in any case, and `*.failed` across both worlds.
    #[test]
    fn event_grid_kinds_and_run_statuses() {
        let grid = |event_type: &str, data: &str| {
            let body = format!(
                r#"{{"id":"1","topic":"/subscriptions/s","subject":"x","eventType":"{event_type}","eventTime":"2026-12-02T12:00:00Z","data":{data},"dataVersion":"","metadataVersion":"1"}}"#
            );
            crate::event::decode(body.as_bytes())
                .unwrap()
                .remove(0)
                .event
        };
        let run = |status: &str| {
            grid(
                "Microsoft.MachineLearningServices.RunStatusChanged",
                &format!(r#"{{"runId":"r","runStatus":"{status}"}}"#),
            )
        };
        let other = grid("Microsoft.Storage.BlobTierChanged", "{}");
        let run_completed = grid(
            "Microsoft.MachineLearningServices.RunCompleted",
            r#"{"runId":"r"}"#,
        );
        let cv_named_like_grid = Event::Unknown {
            r#type: "blob_created".into(),
            content: serde_json::Value::Null,
        };
        assert!(f(&["unknown"]).matches(&other) && !f(&["blob_created"]).matches(&other));
        assert!(!f(&["blob_created"]).matches(&cv_named_like_grid));
        assert!(f(&["run_completed"]).matches(&run_completed));
        assert!(!f(&["run_completed"]).matches(&run("Completed")));
        for status in RUN_STATUSES {
            for sent in [
                status.to_string(),
                status.to_lowercase(),
                status.to_uppercase(),
            ] {
                let e = run(&sent);
                assert!(
                    f(&[&format!("run_status_changed.{status}")]).matches(&e),
                    "{sent}"
                );
                assert!(f(&[&format!("RUN_STATUS_CHANGED.{}", status.to_lowercase())]).matches(&e));
                assert!(f(&["run_status_changed", "run_status_changed.*"]).matches(&e));
                let others = RUN_STATUSES.iter().filter(|s| *s != status);
                for o in others {
                    assert!(
                        !f(&[&format!("run_status_changed.{o}")]).matches(&e),
                        "{sent} vs {o}"
                    );
                }
            }
        }
        // `*.failed`: Custom Vision's failures and Azure ML's.
        assert!(f(&["*.failed"]).matches(&run("Failed")));
        assert!(f(&["*.failed"]).matches(&training(TrainingStatus::Failed)));
        assert!(!f(&["*.failed"]).matches(&run("Canceled")));
        assert!(!f(&["training.failed", "export.failed"]).matches(&run("Failed")));
        assert!(f(&["*.completed"]).matches(&run("completed")));
        assert!(!f(&["*.completed"]).matches(&run_completed));
    }

    /// Every type and every status of it parses, in any case, and reads
    /// back as written in lower case.
    #[test]
    fn every_type_and_status_parses_in_any_case() {
        for (ty, statuses) in KINDS {
            for written in [ty.to_string(), ty.to_uppercase(), format!("{ty}.*")] {
                let back: Vec<String> = f(&[&written]).into();
                assert_eq!(back, [*ty], "{written}");
            }
            for s in *statuses {
                for written in [
                    format!("{ty}.{s}"),
                    format!("{ty}.{}", s.to_lowercase()),
                    format!("{}.{}", ty.to_uppercase(), s.to_uppercase()),
                    format!("*.{s}"),
                ] {
                    let back: Vec<String> = f(&[&written]).into();
                    let t = written.split('.').next().unwrap().to_lowercase();
                    assert_eq!(back, [format!("{t}.{}", s.to_lowercase())], "{written}");
                }
            }
        }
        assert_eq!(
            KINDS
                .iter()
                .find(|(t, _)| *t == "run_status_changed")
                .unwrap()
                .1
                .len(),
            14
        );
    }

    /// The JSON Schema's pattern accepts what `parse` accepts, in any case,
    /// and rejects what it rejects; the serialized form parses back.
    #[test]
    fn schema_pattern_agrees_with_the_parser() {
        let schema = schemars::schema_for!(EventFilter);
        let pattern = schema
            .as_value()
            .pointer("/items/pattern")
            .and_then(|p| p.as_str())
            .expect("a pattern");
        let re = regex::Regex::new(pattern).unwrap();
        let mut candidates = vec![
            " export.completed ".to_owned(),
            "".to_owned(),
            ".".to_owned(),
        ];
        let types = KINDS.iter().map(|(t, _)| *t).chain([
            "*",
            "trainig",
            "exports",
            "run_status",
            "blob",
            "blob_created_",
        ]);
        let statuses = status_names(None)
            .into_iter()
            .map(|s| format!(".{s}"))
            .chain(
                ["", ".*", ".fail", ".", ".completed.x", ".cancelled", ".*.*"].map(str::to_owned),
            )
            .collect::<Vec<_>>();
        for t in types {
            for s in &statuses {
                candidates.push(format!("{t}{s}"));
                candidates.push(format!("{t}{s}").to_uppercase());
            }
        }
        for c in &candidates {
            let parsed = EventFilter::parse(std::slice::from_ref(c));
            assert_eq!(
                re.is_match(c),
                parsed.is_ok(),
                "{c:?}: {parsed:?} vs {pattern}"
            );
            if let Ok(f) = parsed {
                let back: Vec<String> = f.clone().into();
                assert_eq!(EventFilter::parse(&back).unwrap(), f, "{c:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn rejects_typos_listing_the_allowed_names() {
        let e = err("trainig.failed");
        assert!(e.contains("unknown event type `trainig`"), "{e}");
        assert!(
            e.ends_with(
                "allowed: *, connection_test, training, export, blob_created, blob_deleted, \
                 run_completed, run_status_changed, model_registered, model_deployed, \
                 dataset_drift_detected, unknown"
            ),
            "{e}"
        );
        assert_eq!(
            err("training.fail"),
            "`training.fail`: unknown status `fail` for training events; allowed: *, completed, failed"
        );
        // A run status is not a training status.
        assert_eq!(
            err("training.running"),
            "`training.running`: unknown status `running` for training events; allowed: *, completed, failed"
        );
        assert_eq!(
            err("Run_Status_Changed.Cancelled"),
            "`Run_Status_Changed.Cancelled`: unknown status `cancelled` for run_status_changed events; \
             allowed: *, NotStarted, Starting, Provisioning, Preparing, Queued, Running, Finalizing, \
             CancelRequested, Completed, Failed, Canceled, NotResponding, Paused, Unknown"
        );
        let e = err("*.faild");
        assert!(
            e.starts_with("`*.faild`: unknown status `faild` for any event type; allowed: *, completed, failed, NotStarted,"),
            "{e}"
        );
        for no_status in [
            "connection_test.failed",
            "blob_created.completed",
            "run_completed.failed",
            "model_registered.failed",
            "unknown.failed",
        ] {
            let e = err(no_status);
            assert!(e.contains("events have no status; use `"), "{e}");
        }
        assert_eq!(
            err("run_completed.completed"),
            "`run_completed.completed`: run_completed events have no status; use `run_completed`"
        );
        assert!(EventFilter::parse(&[]).is_err());
    }

    #[test]
    fn only_custom_vision_types_have_no_subject() {
        assert!(!f(&["training", "export.completed", "connection_test"]).may_have_subject());
        for with in [
            "*",
            "*.failed",
            "blob_created",
            "unknown",
            "run_status_changed.failed",
        ] {
            assert!(f(&["training", with]).may_have_subject(), "{with}");
        }
    }

    fn subject(begins: Option<&str>, ends: Option<&str>, case_sensitive: bool) -> SubjectFilter {
        SubjectFilter {
            begins_with: begins.map(str::to_owned),
            ends_with: ends.map(str::to_owned),
            case_sensitive,
        }
    }

    #[test]
    fn subject_filter_is_a_plain_prefix_and_suffix() {
        let path = "/blobServices/default/containers/models/blobs/birds/v2/model.onnx";
        let blob = Some(path);
        assert!(SubjectFilter::default().matches(blob));
        assert!(SubjectFilter::default().matches(None));
        let prefix = "/blobServices/default/containers/models/blobs/birds/";
        assert!(subject(Some(prefix), None, false).matches(blob));
        assert!(subject(None, Some(".onnx"), false).matches(blob));
        assert!(subject(Some(prefix), Some(".onnx"), false).matches(blob));
        assert!(!subject(Some(prefix), Some(".txt"), false).matches(blob));
        assert!(
            !subject(Some("/blobServices/default/containers/other/"), None, false).matches(blob)
        );
        // No wildcards, as in Event Grid.
        assert!(!subject(None, Some("*.onnx"), false).matches(blob));
        assert!(!subject(Some("*"), None, false).matches(blob));
        // Longer than the subject.
        assert!(!subject(None, Some(&format!("x{path}")), false).matches(blob));
        // An event without a subject (Custom Vision) matches no set filter.
        assert!(!subject(None, Some(".onnx"), false).matches(None));
        assert!(!subject(Some("/"), None, false).matches(None));
    }

    /// Event Grid compares subjects without regard to case unless
    /// `isSubjectCaseSensitive`; so does `subject_case_sensitive`.
    #[test]
    fn subject_case_follows_event_grid() {
        let s = Some("models/Birds:3.ONNX");
        assert!(subject(Some("MODELS/birds"), Some(".onnx"), false).matches(s));
        assert!(subject(None, Some(".Onnx"), false).matches(s));
        assert!(!subject(None, Some(".onnx"), true).matches(s));
        assert!(subject(None, Some(".ONNX"), true).matches(s));
        assert!(!subject(Some("MODELS/"), None, true).matches(s));
        // Not only ASCII.
        assert!(subject(None, Some("MODÈLE.onnx"), false).matches(Some("x/modèle.onnx")));
        assert!(!subject(None, Some("MODÈLE.onnx"), true).matches(Some("x/modèle.onnx")));
    }
}
