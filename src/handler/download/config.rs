//! The `[[handlers]]` table of `type = "download"`: its keys, their
//! defaults and its validation (container URLs, hosts, limits). Pure;
//! below the handlers, with the configuration (layer 2), which names it in
//! [`crate::config::HandlerConfig`].

use crate::config::formats::{HumanDuration, HumanSize};
use crate::config::handler_table::{HandlerTable, shared_keys};
use crate::config::issues::Issues;
use crate::filter::EventFilter;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// `type = "download"`: keeps a local copy of every exported model.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadConfig {
    /// Name used in logs; default `download#<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Which events this handler gets; only completed exports and created
    /// blobs (inside `container`) download anything, others succeed at
    /// once.
    #[serde(default = "completed_exports")]
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
    /// Where models are stored. Created if missing.
    pub dir: PathBuf,
    /// The project's backup container (its `exportModelContainerUri`,
    /// `https://<account>.blob.core.windows.net/<container>`, no SAS), or a
    /// list of them. Blobs inside it are fetched with the daemon's own
    /// credential; it is never used for any other URL. Without it, only
    /// URLs carrying their own SAS are fetched. `cvnotify setup` sets the
    /// first one on the project and `check` verifies it.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(schema_with = "one_or_many_schema")]
    pub container: Vec<Url>,
    /// Keep only the newest N models of each project and platform.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Hosts (`host` or `host:port`, `*.suffix` for a domain) models may be
    /// fetched from. Default: the configured storage account's blob host and
    /// the hosts of `container`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Limit for one whole download.
    #[serde(default = "default_download_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub timeout: Duration,
    /// Largest model accepted (and largest total an archive may unpack
    /// to), e.g. "500MiB".
    #[serde(default = "default_max_size")]
    #[schemars(with = "HumanSize")]
    pub max_size: bytesize::ByteSize,
    /// Downloads this handler runs at once; more wait for a slot.
    #[serde(default = "default_max_downloads")]
    pub max_downloads: usize,
    /// Unpack a zip model into `{name without .zip}/` beside it.
    #[serde(default)]
    pub extract: bool,
    /// Keep a `current-{projectId}-{platform}` symlink in `dir` pointing at
    /// the newest model of each project and platform (its unpacked folder
    /// with `extract`), switched atomically. Newest by the blob's
    /// `Last-Modified`, then the time stored, whatever the model's origin
    /// (`container` or a URL a message named).
    #[serde(default)]
    pub link_current: bool,
}

fn completed_exports() -> EventFilter {
    EventFilter::parse(&["export.completed".to_owned(), "blob_created".to_owned()])
        .expect("a valid filter")
}

fn default_download_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_max_size() -> bytesize::ByteSize {
    bytesize::ByteSize::gib(2)
}

fn default_max_downloads() -> usize {
    2
}

/// A URL or a list of URLs.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Url>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Url),
        Many(Vec<Url>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(u) => vec![u],
        OneOrMany::Many(v) => v,
    })
}

/// What [`one_or_many`] reads: a URL or a list of URLs.
fn one_or_many_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let url = generator.subschema_for::<Url>();
    schemars::json_schema!({ "anyOf": [url, { "type": "array", "items": url }] })
}

/// Storage container naming rules: 3-63 lowercase letters, digits and
/// single hyphens, starting with a letter or digit (`$root` aside).
fn is_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

impl HandlerTable for DownloadConfig {
    shared_keys!();
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.dir.as_os_str().is_empty() {
            issues.push(format!("{path}.dir"), "must name a directory");
        }
        if self.keep_last == Some(0) {
            issues.push(
                format!("{path}.keep_last"),
                "must be at least 1 (omit it to keep all)",
            );
        }
        for h in &self.allowed_hosts {
            if h.is_empty() || h.contains('/') || h.contains("://") {
                issues.push(
                    format!("{path}.allowed_hosts"),
                    format!("`{h}` is not a host (examples: acct.blob.core.windows.net, 127.0.0.1:10000, *.blob.core.windows.net)"),
                );
            }
        }
        for c in &self.container {
            // Only scheme, host and path are echoed: a pasted URL may
            // carry a SAS.
            let shown = format!(
                "{}://{}{}",
                c.scheme(),
                c.host_str().unwrap_or_default(),
                c.path()
            );
            let last = c
                .path_segments()
                .and_then(|mut s| s.rfind(|s| !s.is_empty()))
                .unwrap_or_default();
            if !matches!(c.scheme(), "http" | "https") || c.host_str().is_none() {
                issues.push(
                    format!("{path}.container"),
                    format!("`{shown}` must be an https URL (http only for Azurite)"),
                );
            } else if c.query().is_some() || c.fragment().is_some() || !c.username().is_empty() {
                issues.push(
                    format!("{path}.container"),
                    format!("`{shown}`: give the container URL without a query or credentials; the daemon's own credential (auth) is used inside it"),
                );
            } else if !is_container_name(last) {
                issues.push(
                    format!("{path}.container"),
                    format!("`{shown}` does not end in a container name (example: https://acct.blob.core.windows.net/models)"),
                );
            }
        }
        if self.timeout.is_zero() {
            issues.push(format!("{path}.timeout"), "must be greater than 0");
        }
        if self.max_size.as_u64() == 0 {
            issues.push(format!("{path}.max_size"), "must be greater than 0");
        }
        if !(1..=64).contains(&self.max_downloads) {
            issues.push(format!("{path}.max_downloads"), "allowed: 1 to 64");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HandlerConfig};

    fn download(keys: &str) -> Result<DownloadConfig, Vec<String>> {
        let text = format!(
            "[queue]\nname = \"q-x\"\naccount = \"a\"\n[[handlers]]\ntype = \"download\"\ndir = \"/m\"\n{keys}"
        );
        match Config::from_toml(&text) {
            Ok(c) => match c.handlers.into_iter().next() {
                Some(HandlerConfig::Download(d)) => Ok(d),
                other => panic!("{other:?}"),
            },
            Err(e) => Err(e.0.iter().map(|i| i.to_string()).collect()),
        }
    }

    #[test]
    fn download_keys_and_defaults() {
        let c = download("").unwrap();
        assert_eq!(c.max_size.as_u64(), 2 << 30);
        assert_eq!(c.max_downloads, 2);
        assert!(c.container.is_empty() && !c.extract && !c.link_current);

        let c = download(
            "container = \"https://acct.blob.core.windows.net/models\"\nmax_size = \"100MiB\"\nextract = true\nlink_current = true\n",
        )
        .unwrap();
        assert_eq!(c.container.len(), 1);
        assert_eq!(c.max_size.as_u64(), 100 << 20);
        assert!(c.extract && c.link_current);
        let c = download(
            "container = [\"https://a.blob.core.windows.net/mm1\", \"http://127.0.0.1:10000/devstoreaccount1/mm2\"]\n",
        )
        .unwrap();
        assert_eq!(c.container.len(), 2);
    }

    #[test]
    fn download_problems_are_reported_without_the_sas() {
        for (keys, expected) in [
            (
                "container = \"https://a.blob.core.windows.net/m?sv=1&sig=SECRET\"",
                "handlers[0].container: `https://a.blob.core.windows.net/m`: give the container URL without a query",
            ),
            ("container = \"ftp://a/m\"", "must be an https URL"),
            (
                "container = \"https://a.blob.core.windows.net/\"",
                "does not end in a container name",
            ),
            (
                "container = \"https://a.blob.core.windows.net/Bad_Name\"",
                "does not end in a container name",
            ),
            (
                "max_downloads = 0",
                "handlers[0].max_downloads: allowed: 1 to 64",
            ),
            (
                "max_size = 0",
                "handlers[0].max_size: must be greater than 0",
            ),
        ] {
            let errors = download(keys).unwrap_err().join("\n");
            assert!(errors.contains(expected), "{keys}: {errors}");
            assert!(!errors.contains("SECRET"), "{errors}");
        }
    }
}
