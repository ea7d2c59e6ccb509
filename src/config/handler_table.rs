//! What every `[[handlers]]` table has, whatever its type: the
//! [`HandlerTable`] trait each handler's configuration implements (its
//! `name`, its `events`, its subject filter and its validation), the
//! validation of those shared keys ([`validate_shared`]), and the small
//! types and defaults they share. Below [`super::handlers`] and every
//! handler's `config` module, which all import it.
//!
//! The shared keys are fields of each table's struct rather than one
//! struct flattened into all of them: serde's `flatten` buffers the table
//! (losing the `config` crate's conversions and the key path of an error)
//! and cannot be combined with `deny_unknown_fields`.

use super::issues::Issues;
use crate::filter::{EventFilter, SubjectFilter};
use std::collections::BTreeMap;

/// A map of string to string as given in config (`env = { K = "v" }`).
pub type StringMap = BTreeMap<String, String>;

/// What every handler table has.
pub trait HandlerTable {
    /// `name`, when set.
    fn name(&self) -> Option<&str>;
    /// `events`, parsed.
    fn events(&self) -> &EventFilter;
    /// `subject_begins_with`, `subject_ends_with`, `subject_case_sensitive`.
    fn subject(&self) -> SubjectFilter;
    /// Semantic rules beyond the types; `path` is the table's key path.
    /// The shared keys are checked by [`validate_shared`].
    fn validate(&self, path: &str, issues: &mut Issues);
}

/// The [`HandlerTable`] methods of the keys every table has, for a table
/// whose fields `name`, `events`, `subject_begins_with`,
/// `subject_ends_with` and `subject_case_sensitive` hold them: written
/// once here instead of in each handler's `impl` (`shared_keys!();` in
/// it, beside its own `validate`).
macro_rules! shared_keys {
    () => {
        fn name(&self) -> Option<&str> {
            self.name.as_deref()
        }
        fn events(&self) -> &$crate::filter::EventFilter {
            &self.events
        }
        fn subject(&self) -> $crate::filter::SubjectFilter {
            $crate::filter::SubjectFilter {
                begins_with: self.subject_begins_with.clone(),
                ends_with: self.subject_ends_with.clone(),
                case_sensitive: self.subject_case_sensitive,
            }
        }
    };
}
pub(crate) use shared_keys;

/// `events` when a table does not set it: every event.
pub fn all_events() -> EventFilter {
    EventFilter::all()
}

/// The rules of the keys every table has, checked once for every type.
pub fn validate_shared(table: &dyn HandlerTable, path: &str, issues: &mut Issues) {
    let subject = table.subject();
    for (key, value) in [
        ("subject_begins_with", &subject.begins_with),
        ("subject_ends_with", &subject.ends_with),
    ] {
        if value.as_deref() == Some("") {
            issues.push(
                format!("{path}.{key}"),
                "is empty; remove the key to take every subject, or give the text subjects must have",
            );
        }
    }
    if subject.is_set() && !table.events().may_have_subject() {
        issues.push(
            format!("{path}.events"),
            "lists only Custom Vision events, which have no subject, beside subject_begins_with / subject_ends_with: this handler would get nothing; remove the subject keys or add the Event Grid types",
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, HandlerConfig};
    use crate::filter::SubjectFilter;

    fn config(handlers: &str) -> Result<Config, Vec<String>> {
        Config::from_toml(&format!(
            "[queue]\nname = \"q-x\"\naccount = \"a\"\n\
             [customvision]\nendpoint = \"https://cv.example\"\ntraining_key = \"k-0123456789\"\n{handlers}"
        ))
        .map_err(|e| e.0.into_iter().map(|i| i.to_string()).collect())
    }

    /// Each handler type takes the subject keys, and the router gets them
    /// through the trait.
    #[test]
    fn every_handler_type_takes_the_subject_keys() {
        let tables = [
            ("log", ""),
            ("shell", "command = [\"/bin/true\"]"),
            ("webhook", "url = \"https://hooks.example/x\""),
            ("download", "dir = \"/m\""),
            ("customvision", "export = [{ platform = \"ONNX\" }]"),
        ];
        assert_eq!(tables.map(|t| t.0), HandlerConfig::TYPES);
        for (ty, keys) in tables {
            let c = config(&format!(
                "[[handlers]]\ntype = \"{ty}\"\n{keys}\nevents = [\"*\"]\n\
                 subject_begins_with = \"/blobServices/default/containers/models/\"\n\
                 subject_ends_with = \".onnx\"\nsubject_case_sensitive = true\n"
            ))
            .unwrap_or_else(|e| panic!("{ty}: {e:?}"));
            assert_eq!(
                c.handlers[0].table().subject(),
                SubjectFilter {
                    begins_with: Some("/blobServices/default/containers/models/".into()),
                    ends_with: Some(".onnx".into()),
                    case_sensitive: true,
                },
                "{ty}"
            );
            let c = config(&format!("[[handlers]]\ntype = \"{ty}\"\n{keys}\n")).unwrap();
            assert_eq!(c.handlers[0].table().subject(), SubjectFilter::default());
        }
    }

    #[test]
    fn empty_subject_keys_are_errors() {
        let e = config(
            "[[handlers]]\ntype = \"log\"\nsubject_begins_with = \"\"\n\
             [[handlers]]\ntype = \"shell\"\ncommand = [\"/bin/true\"]\nsubject_ends_with = \"\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e,
            [
                "handlers[0].subject_begins_with: is empty; remove the key to take every subject, or give the text subjects must have",
                "handlers[1].subject_ends_with: is empty; remove the key to take every subject, or give the text subjects must have",
            ]
        );
    }

    /// Custom Vision events have no subject: a subject filter beside
    /// Custom Vision types only would route nothing, silently.
    #[test]
    fn a_subject_filter_on_custom_vision_events_only_is_an_error() {
        let e = config(
            "[[handlers]]\ntype = \"log\"\nevents = [\"training\", \"export.completed\"]\nsubject_ends_with = \".onnx\"\n",
        )
        .unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "handlers[0].events: lists only Custom Vision events, which have no subject"
            ),
            "{e:?}"
        );
        // With an Event Grid type beside them, or the default `*`, it is fine.
        config("[[handlers]]\ntype = \"log\"\nevents = [\"export.completed\", \"blob_created\"]\nsubject_ends_with = \".onnx\"\n").unwrap();
        config("[[handlers]]\ntype = \"log\"\nsubject_ends_with = \".onnx\"\n").unwrap();
    }

    #[test]
    fn new_event_names_and_their_typos_in_a_config() {
        config(
            "[[handlers]]\ntype = \"log\"\nevents = [\"run_status_changed.Failed\", \"model_registered\", \"blob_created\", \"*.failed\"]\n",
        )
        .unwrap();
        let e = config(
            "[[handlers]]\ntype = \"log\"\nevents = [\"run_status_changed.faild\"]\n\
             [[handlers]]\ntype = \"log\"\nevents = [\"model_registred\"]\n\
             [[handlers]]\ntype = \"log\"\nsubject_endswith = \".onnx\"\n",
        )
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("handlers[0].events: `run_status_changed.faild`: unknown status `faild` for run_status_changed events; allowed: *, NotStarted,"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("handlers[1].events: `model_registred`: unknown event type `model_registred`; allowed: *, connection_test,"),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("handlers[2].subject_endswith: unknown key; allowed:")
                && e[2].contains("subject_ends_with"),
            "{e:?}"
        );
    }
}
