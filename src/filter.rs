//! The `events` filter grammar.
//!
//! ```text
//! filter  = "*" | type [ "." status ]
//! type    = "connection_test" | "training" | "export" | "unknown" | "*"
//! status  = "completed" | "failed" | "*"
//! ```
//!
//! `training` alone means `training.*`; `*.failed` is every failed training
//! or export; `unknown` is any `type` this version does not know. Matching is
//! case-insensitive. An event goes to a handler when any of its patterns
//! match. Unknown names are rejected at start-up, so that a typo cannot
//! silently route nothing.
//!
//! A leaf above [`crate::event`]: `events` keys are parsed into an
//! [`EventFilter`] once, when the configuration is loaded.

use crate::event::Event;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// None = any type.
    ty: Option<String>,
    /// None = any status.
    status: Option<String>,
}

/// A parsed `events` list. Serialized back to its patterns (lower case)
/// for the defaults the configuration's JSON Schema shows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct EventFilter {
    patterns: Vec<Pattern>,
}

// `blob_created` only so that the download handler's default can name it;
// the grammar of issue 19 (branch i19-route) replaces this table.
const TYPES: [&str; 5] = [
    "connection_test",
    "training",
    "export",
    "unknown",
    "blob_created",
];
const STATUSES: [&str; 2] = ["completed", "failed"];

/// Why an `events` list is rejected; the text is the user's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("is empty; use [\"*\"] for every event")]
    Empty,
    #[error("`{raw}`: unknown event type `{ty}`; allowed: *, {}", TYPES.join(", "))]
    UnknownType { raw: String, ty: String },
    #[error("`{raw}`: {ty} events have no status; use `{ty}`")]
    NoStatus { raw: String, ty: String },
    #[error("`{raw}`: unknown status `{status}`; allowed: *, {}", STATUSES.join(", "))]
    UnknownStatus { raw: String, status: String },
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
        let (with_status, without): (Vec<&str>, Vec<&str>) = TYPES
            .iter()
            .partition(|t| !matches!(**t, "connection_test" | "unknown"));
        let statuses = alt(&[&["*"], &STATUSES[..]].concat());
        let pattern = format!(
            "^\\s*(?:(?:{})(?:\\.(?:{statuses}))?|(?:{})(?:\\.\\*)?)\\s*$",
            alt(&[&["*"], &with_status[..]].concat()),
            alt(&without),
        );
        schemars::json_schema!({
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "string",
                "pattern": pattern,
            },
            "examples": [["*"], ["training.completed", "export.*"], ["*.failed"]],
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
                t if TYPES.contains(&t) => Some(t.to_owned()),
                t => {
                    return Err(FilterError::UnknownType {
                        raw: raw.clone(),
                        ty: t.to_owned(),
                    });
                }
            };
            let status = match status {
                None | Some("*") => None,
                Some(s) if STATUSES.contains(&s) => {
                    if let Some(t @ ("connection_test" | "unknown")) = ty.as_deref() {
                        return Err(FilterError::NoStatus {
                            raw: raw.clone(),
                            ty: t.to_owned(),
                        });
                    }
                    Some(s.to_owned())
                }
                Some(s) => {
                    return Err(FilterError::UnknownStatus {
                        raw: raw.clone(),
                        status: s.to_owned(),
                    });
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExportStatus, TrainingStatus};
    use uuid::Uuid;

    fn f(p: &[&str]) -> EventFilter {
        EventFilter::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
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
        for t in [
            "*",
            "connection_test",
            "training",
            "export",
            "unknown",
            "trainig",
            "exports",
        ] {
            for s in [
                "",
                ".*",
                ".completed",
                ".failed",
                ".fail",
                ".",
                ".completed.x",
            ] {
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
    fn rejects_typos() {
        let e = EventFilter::parse(&["trainig.failed".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown event type `trainig`"), "{e}");
        let e = EventFilter::parse(&["training.fail".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown status `fail`"), "{e}");
        let e = EventFilter::parse(&["connection_test.failed".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("have no status"), "{e}");
        assert!(EventFilter::parse(&[]).is_err());
    }
}
