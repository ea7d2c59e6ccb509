//! Collecting configuration problems: every one at once, each with its key
//! path.
//!
//! The lowest layer of `config/`: the other config files and the handler
//! config structs record problems here. Structural errors (unknown keys,
//! wrong types) are collected by [`deserialize_collecting`], which
//! deserializes again after removing each offending key. It must not know
//! the schema.

use serde::de::DeserializeOwned;
use std::fmt;

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Key path such as `queue.batch_size` or `handlers[1].command`; empty
    /// for problems with the file itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the configuration has {n} error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for issue in &self.0 {
            write!(f, "\n  - {issue}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub(crate) fn one(path: &str, message: impl Into<String>) -> Self {
        ConfigError(vec![ConfigIssue {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// Collects issues during validation.
#[derive(Default)]
pub struct Issues(pub(crate) Vec<ConfigIssue>);

impl Issues {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    /// The issues, a key reported once: a key removed for a structural
    /// error must not be reported again by validation of the default put in
    /// its place.
    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        let mut seen = std::collections::HashSet::new();
        let mut issues = self.0;
        issues.retain(|i| i.path.is_empty() || seen.insert(i.path.clone()));
        if issues.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError(issues))
        }
    }
}

/// Deserializes `root` into `T`, recording every structural problem: after
/// each error the offending key is removed and deserialization is retried, so
/// one run reports all unknown keys and wrong types, not just the first.
/// Returns the value built without the offending keys (None if no value
/// could be built); the caller fails if `issues` is not empty.
///
/// The field name of an unknown or missing key is read from the error's
/// text: serde and `config` expose it no other way. The wording relied on
/// is pinned by `upstream_error_wording_is_what_the_collector_parses` below,
/// which fails if either crate changes it.
pub(crate) fn deserialize_collecting<T: DeserializeOwned>(
    mut root: config::Map<String, config::Value>,
    prefix: &str,
    issues: &mut Issues,
) -> Option<T> {
    // Bounded: each round removes one key.
    for _ in 0..256 {
        let value = config::Value::new(None, config::ValueKind::Table(root.clone()));
        match serde_path_to_error::deserialize::<_, T>(value) {
            // With the offending keys removed (their defaults in place), so
            // that validation can go on and report the rest.
            Ok(v) => return Some(v),
            Err(e) => {
                let mut segments: Vec<String> = e
                    .path()
                    .iter()
                    .filter_map(|s| match s {
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                        _ => None,
                    })
                    .collect();
                let message = e.inner().to_string();
                let field_in = |prefix: &str| {
                    message
                        .strip_prefix(prefix)
                        .and_then(|rest| rest.split('`').next())
                        .map(str::to_owned)
                };
                let unknown = field_in(UNKNOWN_FIELD);
                let missing = field_in(MISSING_FIELD).or_else(|| {
                    message
                        .strip_prefix(MISSING_CONFIG_FIELD)
                        .and_then(|rest| rest.split('"').next())
                        .map(str::to_owned)
                });
                // The path may or may not already end with the field name.
                for name in unknown.iter().chain(missing.iter()) {
                    if segments.last() != Some(name) {
                        segments.push(name.clone());
                    }
                }
                if missing.is_some() {
                    issues.push(join_path(prefix, &segments), "missing");
                    return None;
                }
                let message = match &unknown {
                    Some(_) => message
                        .split_once(", expected ")
                        .map(|(_, allowed)| {
                            format!("unknown key; allowed: {}", tidy_serde_message(allowed))
                        })
                        .or_else(|| {
                            message
                                .contains("there are no fields")
                                .then(|| "unknown key; this table takes no keys".to_owned())
                        })
                        .unwrap_or_else(|| "unknown key".to_owned()),
                    None => tidy_serde_message(&message),
                };
                issues.push(join_path(prefix, &segments), message);
                if !remove_path(&mut root, &segments) {
                    return None;
                }
            }
        }
    }
    None
}

/// serde's `Error::unknown_field` text starts so.
const UNKNOWN_FIELD: &str = "unknown field `";
/// serde's default `Error::missing_field` text starts so.
const MISSING_FIELD: &str = "missing field `";
/// `config`'s own `missing_field` (its `ConfigError::NotFound`) starts so.
const MISSING_CONFIG_FIELD: &str = "missing configuration field \"";

/// config's messages end with "for key `x` in ..."; the path is printed
/// separately, so drop that tail.
fn tidy_serde_message(m: &str) -> String {
    let m = m.split(" for key `").next().unwrap_or(m);
    m.split(" in 'Environment'").next().unwrap_or(m).to_owned()
}

fn join_path(prefix: &str, segments: &[String]) -> String {
    let mut out = prefix.to_owned();
    for s in segments {
        if !s.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(s);
    }
    out
}

/// Removes the key at `segments`; false when nothing could be removed (the
/// error is then not about one key and retrying would loop).
fn remove_path(root: &mut config::Map<String, config::Value>, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut table = root;
    for seg in parents {
        let next = match table.get_mut(seg) {
            Some(v) => v,
            None => return false,
        };
        match &mut next.kind {
            config::ValueKind::Table(t) => table = t,
            _ => return false,
        }
    }
    // config lower-cases environment keys, so match case-insensitively.
    let key = table.keys().find(|k| k.eq_ignore_ascii_case(last)).cloned();
    match key {
        Some(k) => table.remove(&k).is_some(),
        None => false,
    }
}

/// Turns a `config::Value` into its table, or records that it is not one.
pub(crate) fn as_table(
    value: config::Value,
    path: &str,
    issues: &mut Issues,
) -> Option<config::Map<String, config::Value>> {
    match value.kind {
        config::ValueKind::Table(t) => Some(t),
        _ => {
            issues.push(path, "expected a table");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        name: String,
        #[serde(default)]
        size: u8,
    }

    fn table(toml: &str) -> config::Map<String, config::Value> {
        config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap()
    }

    fn raw_error(toml: &str) -> String {
        let value = config::Value::new(None, config::ValueKind::Table(table(toml)));
        serde_path_to_error::deserialize::<_, Probe>(value)
            .unwrap_err()
            .inner()
            .to_string()
    }

    /// The collector reads field names out of serde's and config's error
    /// text. If an upgrade of either crate changes that wording, this test
    /// fails, instead of the collector silently reporting worse paths.
    #[test]
    fn upstream_error_wording_is_what_the_collector_parses() {
        let unknown = raw_error("name = \"x\"\ncolour = 1\n");
        assert!(
            unknown.starts_with("unknown field `colour`, expected "),
            "{unknown}"
        );
        let missing = raw_error("size = 1\n");
        assert!(
            missing.starts_with(MISSING_FIELD) || missing.starts_with(MISSING_CONFIG_FIELD),
            "{missing}"
        );
        assert!(missing.contains("name"), "{missing}");
        let wrong = raw_error("name = \"x\"\nsize = \"big\"\n");
        assert!(wrong.contains(" for key `"), "{wrong}");
    }

    #[test]
    fn every_structural_problem_is_collected_with_its_path() {
        let mut issues = Issues::default();
        let v: Option<Probe> = deserialize_collecting(
            table("name = \"x\"\ncolour = 1\nsize = \"big\"\n"),
            "t",
            &mut issues,
        );
        assert!(v.is_some());
        // The table is a hash map: the order of the two is not fixed.
        let mut text: Vec<String> = issues.0.iter().map(|i| i.to_string()).collect();
        text.sort();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("t.colour: unknown key; allowed: "),
            "{text:?}"
        );
        assert!(text[1].starts_with("t.size: invalid type"), "{text:?}");
        let mut issues = Issues::default();
        let v: Option<Probe> = deserialize_collecting(table("size = 1\n"), "t", &mut issues);
        assert!(v.is_none());
        assert_eq!(issues.0[0].to_string(), "t.name: missing");
    }
}
