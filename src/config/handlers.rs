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
use super::formats::HumanDuration;
use super::handler_table::HandlerTable;
use super::issues::{Issues, as_table, deserialize_collecting};
use crate::filter::EventFilter;
use crate::handler::download::config::DownloadConfig;
use crate::handler::log::config::LogHandlerConfig;
use crate::handler::shell::config::ShellConfig;
use crate::handler::webhook::config::WebhookConfig;
use schemars::JsonSchema;
use serde::Deserialize;
use std::borrow::Cow;
use std::time::Duration;

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
}
