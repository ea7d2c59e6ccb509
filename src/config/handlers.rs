//! `[[handlers]]` tables: the [`HandlerConfig`] enum tagged by `type`.
//! Each variant's struct lives beside its handler, in
//! `crate::handler::{type}::config` (pure serde types and validation, in
//! this layer: the layer table's `handler::*::config`), and what every
//! table has is in [`super::handler_table`].
//!
//! The handler types are listed once, in the `handler_types!` invocation
//! below; the enum, the list of allowed names, parsing and validation
//! dispatch all come from it. A table's `type` is read first and the
//! variant's struct deserialized on its own, rather than through serde's
//! internally tagged enums, which buffer the table and lose the key path of
//! an error inside it (`handlers[0].timeout`). Pure: building handlers (I/O)
//! is [`crate::handler`]'s.

use super::handler_table::{HandlerTable, validate_shared};
use super::issues::{Issues, as_table, deserialize_collecting};
use crate::handler::customvision::config::CustomVisionHandlerConfig;
use crate::handler::download::config::DownloadConfig;
use crate::handler::log::config::LogHandlerConfig;
use crate::handler::shell::config::ShellConfig;
use crate::handler::webhook::config::WebhookConfig;
use schemars::JsonSchema;
use std::borrow::Cow;

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
        validate_shared(config.table(), path, issues);
        config.table().validate(path, issues);
        Some(config)
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
