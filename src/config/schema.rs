//! The configuration's schema: the whole [`Config`] and its sections, with
//! their defaults. The doc comments on the fields are the user
//! documentation, mirrored in `config/cvnotify.example.toml`.
//!
//! `[queue]` is in [`super::queue`], handler tables in [`super::handlers`];
//! loading in [`super::load`]; semantic rules in [`super::validate`]. This
//! file only describes shapes.

use super::customvision::CustomVisionConfig;
use super::formats::{HumanDuration, string_enum};
use super::handlers::HandlerConfig;
use super::queue::QueueConfig;
use crate::secret::Secret;
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;
use url::Url;

/// The environment prefix for overrides: `CVNOTIFY__QUEUE__NAME=...`.
pub const ENV_PREFIX: &str = "CVNOTIFY";

/// The whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The single `[queue]` form (its defaults when `[[queues]]` is used).
    pub queue: QueueConfig,
    /// `[[queues]]`: several queues in one daemon. Empty with the single
    /// `[queue]` form; the two forms are mutually exclusive. Read the queues
    /// through [`Config::effective_queues`], which covers both forms.
    pub queues: Vec<QueueEntry>,
    /// With `[[queues]]`: messages handled at once by the whole process
    /// (default 32). While several queues are busy, each keeps a reserved
    /// share of it (see "Several queues" in the README). With `[queue]`,
    /// `queue.max_concurrency` is that bound and this key is refused.
    pub max_concurrency: Option<usize>,
    /// Storage credentials; a `[[queues]]` entry without its own `auth`
    /// table uses this one.
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    pub telemetry: TelemetryConfig,
    /// How long in-flight handlers may run after SIGTERM/SIGINT before their
    /// messages are released back to the queue.
    pub shutdown_timeout: Duration,
    /// Handlers each event is routed to. Empty means a single `log` handler.
    pub handlers: Vec<HandlerConfig>,
    /// The Custom Vision training resource (`setup`, `check`, the
    /// `customvision` handler). Absent: cvnotify only reads the queue.
    pub customvision: Option<CustomVisionConfig>,
}

/// The file's shape before handlers are parsed (they are parsed one by one
/// so that an error inside one carries its exact path). The JSON Schema
/// (`cvnotify config schema`) is derived from it: its doc comments are the
/// descriptions an editor shows for the top-level keys.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "cvnotify configuration",
    description = "The cvnotify configuration file (TOML). Every key can also be set from the environment: its path in upper case after CVNOTIFY__, joined by __ (CVNOTIFY__QUEUE__NAME). See config/cvnotify.example.toml.",
    extend("not" = { "required": ["queue", "queues"] })
)]
pub(super) struct FileConfig {
    /// The queue Custom Vision writes to (one queue). Mutually exclusive
    /// with `[[queues]]`.
    #[serde(default)]
    pub(super) queue: Option<QueueConfig>,
    /// Several queues in one daemon, each with the keys of `[queue]` and
    /// optionally its own `auth` table and `[[queues.handlers]]`. Mutually
    /// exclusive with `[queue]`.
    #[serde(default)]
    #[schemars(with = "Vec<QueueEntry>")]
    pub(super) queues: Vec<config::Value>,
    /// With `[[queues]]`: messages handled at once by the whole process
    /// (default 32); while several queues are busy, each keeps a reserved
    /// share of it. With `[queue]`, use `queue.max_concurrency` instead.
    #[serde(default)]
    pub(super) max_concurrency: Option<usize>,
    /// Storage credentials; a `[[queues]]` entry without its own `auth`
    /// table uses this one.
    #[serde(default)]
    pub(super) auth: AuthConfig,
    /// Logging.
    #[serde(default)]
    pub(super) log: LogConfig,
    /// The health and metrics listener.
    #[serde(default)]
    pub(super) http: HttpConfig,
    /// Trust for outgoing HTTPS.
    #[serde(default)]
    pub(super) tls: TlsConfig,
    /// OpenTelemetry traces.
    #[serde(default)]
    pub(super) telemetry: TelemetryConfig,
    /// How long in-flight handlers may run after SIGTERM/SIGINT before their
    /// messages are released back to the queue.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub(super) shutdown_timeout: Duration,
    /// Handlers each event is routed to (`[[handlers]]`, each with a
    /// `type`). None: a single `log` handler.
    #[serde(default)]
    #[schemars(with = "Vec<HandlerConfig>")]
    pub(super) handlers: Vec<config::Value>,
    /// The Custom Vision training resource (`setup`, `check`, the
    /// `customvision` handler). Absent: cvnotify only reads the queue.
    #[serde(default)]
    pub(super) customvision: Option<CustomVisionConfig>,
}

/// One `[[queues]]` entry: the keys of `[queue]`, plus an optional `auth`
/// table and optional `[[queues.handlers]]`.
#[derive(Debug, Clone, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct QueueEntry {
    /// The keys of `[queue]`. `name` also identifies the queue in metrics
    /// (`queue` label), logs, `/readyz` and `--queue NAME`, so names must be
    /// unique across `[[queues]]`.
    #[schemars(flatten)]
    pub queue: QueueConfig,
    /// This queue's storage credentials. Default: the top-level `[auth]`.
    pub auth: Option<AuthConfig>,
    /// This queue's handlers (`[[queues.handlers]]`, same tables as
    /// `[[handlers]]`). Default: the top-level `[[handlers]]`. A message
    /// reaches only its own queue's handlers.
    pub handlers: Option<Vec<HandlerConfig>>,
}

/// One queue as the daemon and the commands see it, whichever form
/// configured it: its settings, its credentials and its handlers in effect.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub queue: QueueConfig,
    pub auth: AuthConfig,
    /// Never empty: one `log` handler when none is configured.
    pub handlers: Vec<HandlerConfig>,
}

impl QueueSpec {
    /// The queue's name (validated present).
    pub fn name(&self) -> &str {
        self.queue.name.as_deref().unwrap_or_default()
    }

    /// The poison queue's name.
    pub fn poison_name(&self) -> String {
        self.queue
            .poison_queue
            .clone()
            .unwrap_or_else(|| format!("{}-poison", self.name()))
    }
}

/// `--queue NAME` did not pick one configured queue.
#[derive(Debug, thiserror::Error)]
pub enum SelectQueueError {
    #[error("no queue is named `{name}`; configured: {known}")]
    Unknown { name: String, known: String },
    #[error("several queues are configured; pass --queue NAME (one of: {known})")]
    Ambiguous { known: String },
}

/// With `[[queues]]` and no top-level `max_concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 32;

pub(super) fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

string_enum!(AuthMode {
    ManagedIdentity => "managed_identity",
    WorkloadIdentity => "workload_identity",
    AzureCli => "azure_cli",
    Sas => "sas",
    ConnectionString => "connection_string",
});
string_enum!(LogFormat { Auto => "auto", Json => "json", Text => "text" });

/// `[auth]`: how cvnotify authenticates to storage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `managed_identity` (Azure hosts), `workload_identity` (AKS),
    /// `azure_cli` (developer machines), `sas` (`sas_token`) or
    /// `connection_string` (`connection_string`: Azurite, account keys).
    pub mode: AuthMode,
    /// How long start-up keeps trying to get a first token before it exits
    /// with an error (token endpoints can be slow to come up).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub startup_timeout: Duration,
    /// Client id of a user-assigned managed identity, or (workload
    /// identity) instead of `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// Entra ID authority for token requests, overriding `queue.cloud`'s
    /// (custom clouds). `AZURE_AUTHORITY_HOST` is used when neither is set.
    pub authority_host: Option<Url>,
    /// For `mode = "connection_string"`; `UseDevelopmentStorage=true` for Azurite.
    pub connection_string: Option<Secret>,
    /// For `mode = "sas"`: the SAS token (query string) appended to the
    /// queue URLs. It must grant the poison queue too (an account SAS does).
    pub sas_token: Option<Secret>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::default(),
            startup_timeout: Duration::from_secs(60),
            client_id: None,
            authority_host: None,
            connection_string: None,
            sas_token: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    #[default]
    ManagedIdentity,
    WorkloadIdentity,
    AzureCli,
    Sas,
    ConnectionString,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::ManagedIdentity => "managed_identity",
            AuthMode::WorkloadIdentity => "workload_identity",
            AuthMode::AzureCli => "azure_cli",
            AuthMode::Sas => "sas",
            AuthMode::ConnectionString => "connection_string",
        }
    }

    /// Whether this mode gets Entra ID tokens (and so needs https).
    pub fn uses_token(self) -> bool {
        matches!(
            self,
            AuthMode::ManagedIdentity | AuthMode::WorkloadIdentity | AuthMode::AzureCli
        )
    }
}

/// OpenTelemetry traces, exported over OTLP/HTTP (protobuf). Off unless an
/// endpoint is set here or in `OTEL_EXPORTER_OTLP_ENDPOINT` /
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (and `OTEL_SDK_DISABLED` is not
/// `true`). `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are honoured.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318`
    /// (`/v1/traces` is appended, as for `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<Url>,
    /// Finished spans waiting for export; when the collector is slow or
    /// down, more are dropped (and counted in
    /// `cvnotify_spans_dropped_total`) rather than slowing message handling.
    pub max_queue_size: usize,
    /// Timeout of one export request (the collector's answer is read up
    /// to 64 KiB).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub export_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            max_queue_size: 2048,
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// Trust for outgoing HTTPS: storage, token endpoints, webhooks, downloads.
#[derive(Debug, Clone, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM bundle of extra trusted CAs, added to the system roots (a
    /// private CA, a TLS-inspecting proxy, Azurite over HTTPS).
    pub ca_file: Option<std::path::PathBuf>,
}

/// The optional HTTP listener for health checks and metrics.
#[derive(Debug, Clone, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address for `/healthz`, `/readyz` and `/metrics`, e.g.
    /// `127.0.0.1:9464`. Off when absent. Bounded: 32 connections, 5 s for
    /// a request head, 60 s and 100 requests per connection; a new client
    /// (a probe) is answered within a second whatever the others do.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[log]`: where and how cvnotify logs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (JSON unless stdout is a terminal), `json` or `text`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `cvnotify=debug,info`. `RUST_LOG`
    /// wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Auto,
    Json,
    Text,
}

impl Config {
    /// The JSON Schema (draft 2020-12) of the configuration file, derived
    /// from the types that parse it: every key with its description (the
    /// doc comments) and its default. Printed by `cvnotify config schema`
    /// for editors (taplo, Even Better TOML) and checked against the shipped
    /// configurations by `scripts/check-deploy`.
    pub fn json_schema() -> schemars::Schema {
        let mut settings = schemars::generate::SchemaSettings::draft2020_12();
        settings
            .transforms
            .push(Box::new(schemars::transform::RecursiveTransform(
                super::formats::without_null,
            )));
        settings
            .into_generator()
            .into_root_schema_for::<FileConfig>()
    }

    /// The main queue's name (validated present).
    pub fn queue_name(&self) -> &str {
        self.queue.name.as_deref().unwrap_or_default()
    }

    /// The poison queue's name.
    pub fn poison_queue_name(&self) -> String {
        self.queue
            .poison_queue
            .clone()
            .unwrap_or_else(|| format!("{}-poison", self.queue_name()))
    }

    /// Environment variables secrets are read from (handlers'
    /// `secret_env` of any queue, `customvision.training_key_env`): hooks
    /// must not inherit them.
    pub fn secret_env_names(&self) -> Vec<String> {
        let per_queue = self.queues.iter().flat_map(|q| q.handlers.iter().flatten());
        self.handlers
            .iter()
            .chain(per_queue)
            .filter_map(|h| match h {
                HandlerConfig::Webhook(w) => w.secret_env.clone(),
                _ => None,
            })
            .chain(
                self.customvision
                    .iter()
                    .filter_map(|cv| cv.training_key_env.clone()),
            )
            .collect()
    }

    /// Handlers in effect: the configured ones, or one `log` handler.
    pub fn effective_handlers(&self) -> Vec<HandlerConfig> {
        if self.handlers.is_empty() {
            vec![HandlerConfig::default_log()]
        } else {
            self.handlers.clone()
        }
    }

    /// Every queue the daemon consumes, in configuration order: the
    /// `[[queues]]` entries with their credentials and handlers resolved,
    /// or the single `[queue]` as a one-element list.
    pub fn effective_queues(&self) -> Vec<QueueSpec> {
        if self.queues.is_empty() {
            return vec![QueueSpec {
                queue: self.queue.clone(),
                auth: self.auth.clone(),
                handlers: self.effective_handlers(),
            }];
        }
        self.queues
            .iter()
            .map(|e| QueueSpec {
                queue: e.queue.clone(),
                auth: e.auth.clone().unwrap_or_else(|| self.auth.clone()),
                handlers: match &e.handlers {
                    Some(h) if !h.is_empty() => h.clone(),
                    _ => self.effective_handlers(),
                },
            })
            .collect()
    }

    /// The process-wide bound on messages handled at once.
    pub fn process_max_concurrency(&self) -> usize {
        if self.queues.is_empty() {
            self.queue.max_concurrency
        } else {
            self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY)
        }
    }

    /// The queue `--queue NAME` names; without a name, the only one.
    pub fn select_queue(&self, name: Option<&str>) -> Result<QueueSpec, SelectQueueError> {
        let mut all = self.effective_queues();
        let known = all_names(&all);
        match name {
            Some(n) => match all.iter().position(|q| q.name() == n) {
                Some(i) => Ok(all.swap_remove(i)),
                None => Err(SelectQueueError::Unknown {
                    name: n.to_owned(),
                    known,
                }),
            },
            None if all.len() == 1 => Ok(all.remove(0)),
            None => Err(SelectQueueError::Ambiguous { known }),
        }
    }
}

impl Config {
    /// This configuration narrowed to one queue (`--queue NAME`; without a
    /// name, the only one), in the single `[queue]` form: the commands
    /// (`check`, `send`, `poison`) then read `queue`, `auth` and `handlers`
    /// as they always did.
    pub fn for_queue(&self, name: Option<&str>) -> Result<Config, SelectQueueError> {
        let spec = self.select_queue(name)?;
        Ok(Config {
            queue: spec.queue,
            queues: Vec::new(),
            max_concurrency: None,
            auth: spec.auth,
            handlers: spec.handlers,
            ..self.clone()
        })
    }
}

fn all_names(queues: &[QueueSpec]) -> String {
    queues
        .iter()
        .map(QueueSpec::name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    fn schema() -> Value {
        Config::json_schema().to_value()
    }

    /// The `default` of every property that has one.
    fn defaults(properties: &Value) -> Map<String, Value> {
        properties
            .as_object()
            .expect("properties")
            .iter()
            .filter_map(|(k, p)| Some((k.clone(), p.get("default")?.clone())))
            .collect()
    }

    fn with(mut table: Map<String, Value>, required: Value) -> Value {
        table.extend(required.as_object().unwrap().clone());
        Value::Object(table)
    }

    /// A file that writes out every default the schema shows parses to
    /// the same configuration as one that leaves them out: the schema's
    /// defaults are the parser's, for every section and handler type.
    #[test]
    fn schema_defaults_are_the_parsers() {
        let s = schema();
        let def = |name: &str| defaults(&s["$defs"][name]["properties"]);
        let required = json!({
            "queue": { "name": "q-x", "account": "a" },
            "customvision": { "endpoint": "https://cv.example" },
            "log": {}, "http": {}, "tls": {}, "telemetry": {}, "auth": {},
        });
        let handler_required = json!({
            "log": {},
            "shell": { "command": ["/bin/true"] },
            "webhook": { "url": "https://hooks.example/x" },
            "download": { "dir": "/m" },
            "customvision": { "export": [{ "platform": "ONNX" }] },
        });
        let branches = s["$defs"]["HandlerConfig"]["allOf"].as_array().unwrap();
        assert_eq!(branches.len(), HandlerConfig::TYPES.len());
        let mut full = Map::new();
        let mut minimal = Map::new();
        for (section, def_name) in [
            ("queue", "QueueConfig"),
            ("customvision", "CustomVisionConfig"),
            ("log", "LogConfig"),
            ("http", "HttpConfig"),
            ("tls", "TlsConfig"),
            ("telemetry", "TelemetryConfig"),
            ("auth", "AuthConfig"),
        ] {
            full.insert(
                section.into(),
                with(def(def_name), required[section].clone()),
            );
            minimal.insert(section.into(), required[section].clone());
        }
        let top = defaults(&s["properties"]);
        assert_eq!(top.keys().collect::<Vec<_>>(), ["shutdown_timeout"]);
        full.extend(top);
        let (mut full_handlers, mut minimal_handlers) = (vec![], vec![]);
        for b in branches {
            let props = &b["then"]["properties"];
            let ty = props["type"]["const"].as_str().unwrap();
            let mut table = defaults(props);
            table.insert("type".into(), ty.into());
            let req = with(
                Map::from_iter([("type".into(), ty.into())]),
                handler_required[ty].clone(),
            );
            full_handlers.push(with(table, handler_required[ty].clone()));
            minimal_handlers.push(req);
        }
        full.insert("handlers".into(), full_handlers.into());
        minimal.insert("handlers".into(), minimal_handlers.into());

        let full_toml = toml::to_string(&full).unwrap();
        let parse = |text: &str| Config::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let (a, b) = (
            parse(&full_toml),
            parse(&toml::to_string(&minimal).unwrap()),
        );
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{full_toml}");
        // Debug hides some handler keys (it shows shapes, not values).
        let delays = |c: &Config| match &c.handlers[2] {
            HandlerConfig::Webhook(w) => (w.retry_initial_delay, w.retry_max_delay, w.timeout),
            other => panic!("{other:?}"),
        };
        assert_eq!(delays(&a), delays(&b));
        // And the file did write them out.
        for key in [
            "visibility_timeout = \"5m\"",
            "max_size = \"2.0 GiB\"",
            "events = [\"export.completed\", \"blob_created\"]",
            "retry_initial_delay = \"1s\"",
        ] {
            assert!(full_toml.contains(key), "{key} not in\n{full_toml}");
        }
    }

    /// Every key has a description; unknown keys are refused everywhere,
    /// as the parser refuses them.
    #[test]
    fn every_key_is_described_and_tables_are_closed() {
        fn walk(path: &str, v: &Value, problems: &mut Vec<String>) {
            match v {
                Value::Object(o) => {
                    if let Some(Value::Object(props)) = o.get("properties") {
                        let closed = o.get("additionalProperties") == Some(&Value::Bool(false));
                        // The handler enum's outer object and its `if`s only
                        // name `type`; each `then` branch is closed.
                        if !closed && !path.ends_with("HandlerConfig") && !path.ends_with("/if") {
                            problems.push(format!("{path}: unknown keys allowed"));
                        }
                        for (k, p) in props {
                            let described = p.get("description").is_some() || k == "type";
                            if !described {
                                problems.push(format!("{path}.{k}: no description"));
                            }
                        }
                    }
                    for (k, child) in o {
                        walk(&format!("{path}/{k}"), child, problems);
                    }
                }
                Value::Array(a) => {
                    for (i, child) in a.iter().enumerate() {
                        walk(&format!("{path}/{i}"), child, problems);
                    }
                }
                _ => {}
            }
        }
        let s = schema();
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        let mut problems = vec![];
        walk("", &s, &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
