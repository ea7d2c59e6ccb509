//! `[[handlers]]` tables: one config struct per handler type and the
//! [`HandlerConfig`] enum tagged by `type`.
//!
//! The handler types are listed once, in the `handler_types!` invocation
//! below; the enum, the list of allowed names, parsing and validation
//! dispatch all come from it. A table's `type` is read first and the
//! variant's struct deserialized on its own, rather than through serde's
//! internally tagged enums, which buffer the table and lose the key path of
//! an error inside it (`handlers[0].timeout`). Pure: building handlers (I/O)
//! is [`crate::handler`]'s.

use super::customvision::check_export_target;
use super::formats::{HumanDuration, HumanSize};
use super::handler_table::HandlerTable;
use super::issues::{Issues, as_table, deserialize_collecting};
use crate::filter::EventFilter;
use crate::handler::log::config::LogHandlerConfig;
use crate::handler::shell::config::ShellConfig;
use crate::handler::webhook::config::WebhookConfig;
use schemars::JsonSchema;
use serde::Deserialize;
use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

macro_rules! handler_types {
    ($($variant:ident($config:ty) => $name:literal),+ $(,)?) => {
        /// A `[[handlers]]` table.
        #[derive(Debug, Clone)]
        pub enum HandlerConfig {
            $($variant($config)),+
        }

        /// Each type's table as one `if type = ... then` branch, so that an
        /// editor reports a wrong key against the type it belongs to
        /// (`oneOf` would only say that no branch matched).
        impl JsonSchema for HandlerConfig {
            fn schema_name() -> Cow<'static, str> {
                "HandlerConfig".into()
            }
            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let branches = vec![
                    $(type_branch($name, <$config as JsonSchema>::json_schema(generator)),)+
                ];
                schemars::json_schema!({
                    "description": "A handler (`[[handlers]]`): `type` picks it, the other keys are that type's.",
                    "type": "object",
                    "required": ["type"],
                    "properties": { "type": { "type": "string", "enum": Self::TYPES } },
                    "allOf": branches,
                })
            }
        }

        impl HandlerConfig {
            /// Every handler `type`.
            pub const TYPES: &'static [&'static str] = &[$($name),+];

            /// The table's `type`.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(HandlerConfig::$variant(_) => $name),+
                }
            }

            /// The common keys and validation.
            pub fn table(&self) -> &dyn HandlerTable {
                match self {
                    $(HandlerConfig::$variant(c) => c),+
                }
            }

            /// The variant for `ty`, deserialized from `table`; `None` when
            /// `ty` is unknown, `Some(None)` when the table has errors.
            fn parse_variant(
                ty: &str,
                table: config::Map<String, config::Value>,
                path: &str,
                issues: &mut Issues,
            ) -> Option<Option<Self>> {
                match ty {
                    $($name => Some(
                        deserialize_collecting::<$config>(table, path, issues)
                            .map(HandlerConfig::$variant),
                    ),)+
                    _ => None,
                }
            }
        }
    };
}

handler_types! {
    Log(LogHandlerConfig) => "log",
    Shell(ShellConfig) => "shell",
    Webhook(WebhookConfig) => "webhook",
    Download(DownloadConfig) => "download",
    CustomVision(CustomVisionHandlerConfig) => "customvision",
}

/// `if type = name then table`, the table's keys plus its `type`.
fn type_branch(name: &str, mut table: schemars::Schema) -> serde_json::Value {
    if let Some(props) = table
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        props.insert("type".into(), serde_json::json!({ "const": name }));
    }
    serde_json::json!({
        "if": { "required": ["type"], "properties": { "type": { "const": name } } },
        "then": table,
    })
}

impl HandlerConfig {
    /// The default when no handler is configured.
    pub fn default_log() -> Self {
        HandlerConfig::Log(LogHandlerConfig::default())
    }

    /// The name used in logs and metrics: `name`, or `{type}#{index}`.
    pub fn display_name(&self, index: usize) -> String {
        self.table()
            .name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}#{index}", self.type_name()))
    }

    /// Parses one table, recording problems with paths under `path`.
    pub(crate) fn parse(value: config::Value, path: &str, issues: &mut Issues) -> Option<Self> {
        let allowed = || {
            Self::TYPES
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut table = as_table(value, path, issues)?;
        let ty = match table.remove("type").map(|v| v.into_string()) {
            Some(Ok(t)) => t,
            Some(Err(_)) => {
                issues.push(format!("{path}.type"), "expected a string");
                return None;
            }
            None => {
                issues.push(
                    format!("{path}.type"),
                    format!("missing; allowed: {}", allowed()),
                );
                return None;
            }
        };
        let Some(parsed) = Self::parse_variant(&ty, table, path, issues) else {
            issues.push(
                format!("{path}.type"),
                format!("unknown handler type `{ty}`; allowed: {}", allowed()),
            );
            return None;
        };
        let config = parsed?;
        config.table().validate(path, issues);
        Some(config)
    }
}

/// `type = "download"`: keeps a local copy of every exported model.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadConfig {
    /// Name used in logs; default `download#<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Which events this handler gets; only completed exports download
    /// anything, others succeed at once.
    #[serde(default = "completed_exports")]
    pub events: EventFilter,
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
    EventFilter::parse(&["export.completed".to_owned()]).expect("a valid filter")
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
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn events(&self) -> &EventFilter {
        &self.events
    }
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
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn events(&self) -> &EventFilter {
        &self.events
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 11, finding 9): `Debug` would have printed URL
    /// tokens, header values and hook `env` values.
    #[test]
    fn debug_of_handler_configs_hides_values() {
        let c = crate::config::Config::from_toml(
            r#"
            [queue]
            name = "q-x"
            account = "a"
            [[handlers]]
            type = "webhook"
            url = "https://user:pw@hooks.example/T0KEN/path?code=QUERYSECRET"
            headers = { Authorization = "Bearer HEADERSECRET" }
            [[handlers]]
            type = "shell"
            command = ["/bin/hook", "--token=ARGSECRET"]
            env = { API_KEY = "ENVSECRET" }
            "#,
        )
        .unwrap();
        let dbg = format!("{:?}", c.handlers);
        for secret in [
            "T0KEN",
            "QUERYSECRET",
            "HEADERSECRET",
            "ARGSECRET",
            "ENVSECRET",
            "pw@",
        ] {
            assert!(!dbg.contains(secret), "{secret} in {dbg}");
        }
        assert!(
            dbg.contains("hooks.example")
                && dbg.contains("Authorization")
                && dbg.contains("API_KEY"),
            "{dbg}"
        );
    }

    #[test]
    fn every_type_is_listed_once() {
        assert_eq!(
            HandlerConfig::TYPES,
            ["log", "shell", "webhook", "download", "customvision"]
        );
        assert_eq!(HandlerConfig::default_log().type_name(), "log");
        assert_eq!(HandlerConfig::default_log().display_name(3), "log#3");
    }

    fn download(keys: &str) -> Result<DownloadConfig, Vec<String>> {
        let text = format!(
            "[queue]\nname = \"q-x\"\naccount = \"a\"\n[[handlers]]\ntype = \"download\"\ndir = \"/m\"\n{keys}"
        );
        match super::super::Config::from_toml(&text) {
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
