//! Configuration: the TOML file, environment overrides, defaults and
//! validation.
//!
//! Loading never stops at the first problem. Structural errors (unknown keys,
//! wrong types) are collected by deserializing again after removing each
//! offending key, then every semantic rule is checked; the caller gets the
//! whole list at once, each with its key path, and exits with `EX_CONFIG`.
//! The doc comments on the fields below are the user documentation, mirrored
//! in `config/cvnotify.example.toml`.

use crate::handler::HandlerConfig;
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;
use url::Url;

/// The environment prefix for overrides: `CVNOTIFY__QUEUE__NAME=...`.
pub const ENV_PREFIX: &str = "CVNOTIFY";

/// The whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub queue: QueueConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    /// How long in-flight handlers may run after SIGTERM/SIGINT before their
    /// messages are released back to the queue.
    pub shutdown_timeout: Duration,
    /// Handlers each event is routed to. Empty means a single `log` handler.
    pub handlers: Vec<HandlerConfig>,
}

/// The file's shape before handlers are parsed (they are parsed one by one
/// so that an error inside one carries its exact path).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default)]
    auth: AuthConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    tls: TlsConfig,
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    shutdown_timeout: Duration,
    #[serde(default)]
    handlers: Vec<config::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Name of the queue Custom Vision writes to. Required.
    pub name: Option<String>,
    /// Storage account name; the endpoint is then
    /// `https://{account}.queue.{cloud suffix}`.
    pub account: Option<String>,
    /// Queue service endpoint, overriding `account` and the connection
    /// string's endpoint (Azurite, private endpoints, custom clouds).
    pub endpoint: Option<Url>,
    /// Which Azure cloud the account lives in.
    pub cloud: Cloud,
    /// Where messages that cannot be handled go. Default: `{name}-poison`.
    pub poison_queue: Option<String>,
    /// Messages asked for per receive call (1-32).
    pub batch_size: u8,
    /// How long a received message stays invisible to other consumers; it is
    /// renewed while a handler still runs.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// Messages handled at once; receiving never asks for more than this
    /// leaves free.
    pub max_concurrency: usize,
    /// Poll interval after the first empty receive.
    #[serde(with = "humantime_serde")]
    pub min_poll_interval: Duration,
    /// The interval empty receives back off to.
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// Deliveries before a failing message is moved to the poison queue.
    pub max_dequeue_count: u32,
    /// Delay before a failed message is visible again, doubled per delivery.
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Upper bound of that delay.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Timeout of one storage request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name: None,
            account: None,
            endpoint: None,
            cloud: Cloud::Public,
            poison_queue: None,
            batch_size: 16,
            visibility_timeout: Duration::from_secs(300),
            max_concurrency: 32,
            min_poll_interval: Duration::from_millis(100),
            max_poll_interval: Duration::from_secs(10),
            max_dequeue_count: 5,
            retry_base_delay: Duration::from_secs(10),
            retry_max_delay: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
        }
    }
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Implements `Deserialize` for a config enum from its snake_case names, so
/// that a wrong value is reported with the allowed ones (config's own enum
/// support does not list them).
macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const NAMES: &'static [&'static str] = &[$($name),+];
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                match s.as_str() {
                    $($name => Ok($ty::$variant),)+
                    other => Err(serde::de::Error::custom(format!(
                        "unknown value `{other}`; allowed: {}",
                        Self::NAMES.join(", ")
                    ))),
                }
            }
        }
    };
}

string_enum!(Cloud { Public => "public", UsGovernment => "us_government", China => "china", Custom => "custom" });
string_enum!(AuthMode {
    ManagedIdentity => "managed_identity",
    WorkloadIdentity => "workload_identity",
    AzureCli => "azure_cli",
    Sas => "sas",
    ConnectionString => "connection_string",
});
string_enum!(LogFormat { Auto => "auto", Json => "json", Text => "text" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cloud {
    #[default]
    Public,
    UsGovernment,
    China,
    /// Any other cloud: `queue.endpoint` is then required.
    Custom,
}

impl Cloud {
    /// The storage endpoint suffix.
    pub fn storage_suffix(self) -> Option<&'static str> {
        match self {
            Cloud::Public => Some("core.windows.net"),
            Cloud::UsGovernment => Some("core.usgovcloudapi.net"),
            Cloud::China => Some("core.chinacloudapi.cn"),
            Cloud::Custom => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// How long start-up keeps trying to get a first token before it exits
    /// with an error (token endpoints can be slow to come up).
    #[serde(with = "humantime_serde")]
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

/// Trust for outgoing HTTPS: storage, token endpoints, webhooks, downloads.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM bundle of extra trusted CAs, added to the system roots (a
    /// private CA, a TLS-inspecting proxy, Azurite over HTTPS).
    pub ca_file: Option<std::path::PathBuf>,
}

/// The optional HTTP listener for health checks and metrics.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address for `/healthz`, `/readyz` and `/metrics`, e.g.
    /// `127.0.0.1:9464`. Off when absent.
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
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

/// A value that must never be printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

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
    fn one(path: &str, message: impl Into<String>) -> Self {
        ConfigError(vec![ConfigIssue {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// Collects issues during validation.
#[derive(Default)]
pub struct Issues(Vec<ConfigIssue>);

impl Issues {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
}

impl Config {
    /// Loads `path` (if any) and the `CVNOTIFY__*` environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::one(
                    "",
                    format!(
                        "the configuration file {} does not exist (pass --config PATH or set CVNOTIFY_CONFIG)",
                        path.display()
                    ),
                ));
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        );
        let built = builder
            .build()
            .map_err(|e| ConfigError::one("", format!("cannot read the configuration: {e}")))?;
        let root = built
            .try_deserialize::<config::Map<String, config::Value>>()
            .map_err(|e| ConfigError::one("", format!("cannot read the configuration: {e}")))?;
        Self::from_table(root)
    }

    /// Parses a TOML document (for tests and `check`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::one("", format!("cannot read the configuration: {e}")))?;
        Self::from_table(
            built
                .try_deserialize::<config::Map<String, config::Value>>()
                .map_err(|e| ConfigError::one("", format!("cannot read the configuration: {e}")))?,
        )
    }

    fn from_table(root: config::Map<String, config::Value>) -> Result<Config, ConfigError> {
        let mut issues = Issues::default();
        let file: Option<FileConfig> = deserialize_collecting(root, "", &mut issues);
        let Some(file) = file else {
            return Err(ConfigError(issues.0));
        };
        let mut handlers = Vec::with_capacity(file.handlers.len());
        for (i, value) in file.handlers.into_iter().enumerate() {
            if let Some(h) = HandlerConfig::parse(value, &format!("handlers[{i}]"), &mut issues) {
                handlers.push(h);
            }
        }
        let config = Config {
            queue: file.queue,
            auth: file.auth,
            log: file.log,
            http: file.http,
            tls: file.tls,
            shutdown_timeout: file.shutdown_timeout,
            handlers,
        };
        config.validate(&mut issues);
        // A key that was removed for a structural error must not be
        // reported again by validation of the default put in its place.
        let mut seen = std::collections::HashSet::new();
        issues
            .0
            .retain(|i| i.path.is_empty() || seen.insert(i.path.clone()));
        if issues.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(issues.0))
        }
    }

    fn validate(&self, issues: &mut Issues) {
        let q = &self.queue;
        match &q.name {
            None => issues.push(
                "queue.name",
                "missing; set the name of the queue Custom Vision writes to",
            ),
            Some(name) => {
                if let Err(e) = validate_queue_name(name) {
                    issues.push("queue.name", e);
                }
            }
        }
        if let Some(p) = &q.poison_queue
            && let Err(e) = validate_queue_name(p)
        {
            issues.push("queue.poison_queue", e);
        } else if q.poison_queue.is_none()
            && let Some(name) = &q.name
            && name.len() > 56
        {
            issues.push(
                "queue.name",
                "longer than 56 characters, so `{name}-poison` exceeds 63; set queue.poison_queue",
            );
        }
        if !(1..=32).contains(&q.batch_size) {
            issues.push(
                "queue.batch_size",
                format!("{} is out of range; allowed: 1 to 32", q.batch_size),
            );
        }
        if q.max_concurrency == 0 || q.max_concurrency > 10_000 {
            issues.push("queue.max_concurrency", "allowed: 1 to 10000");
        }
        let week = Duration::from_secs(7 * 24 * 3600);
        if q.visibility_timeout < Duration::from_secs(2) || q.visibility_timeout > week {
            issues.push("queue.visibility_timeout", "allowed: 2s to 7days");
        } else if q.visibility_timeout.subsec_nanos() != 0 {
            issues.push(
                "queue.visibility_timeout",
                "must be whole seconds (the service counts seconds)",
            );
        }
        if q.min_poll_interval.is_zero() {
            issues.push("queue.min_poll_interval", "must be greater than 0");
        }
        if q.min_poll_interval > q.max_poll_interval {
            issues.push(
                "queue.max_poll_interval",
                "must not be less than queue.min_poll_interval",
            );
        }
        if q.max_dequeue_count == 0 {
            issues.push("queue.max_dequeue_count", "must be at least 1");
        }
        if q.retry_base_delay > q.retry_max_delay {
            issues.push(
                "queue.retry_max_delay",
                "must not be less than queue.retry_base_delay",
            );
        }
        if q.retry_max_delay > week {
            issues.push("queue.retry_max_delay", "allowed: at most 7days");
        }
        if q.request_timeout < Duration::from_secs(1) {
            issues.push("queue.request_timeout", "must be at least 1s");
        }
        if self.shutdown_timeout.is_zero() {
            issues.push("shutdown_timeout", "must be greater than 0");
        }
        if q.cloud == Cloud::Custom && q.endpoint.is_none() {
            issues.push("queue.endpoint", "required when queue.cloud = \"custom\"");
        }
        if let Some(ep) = &q.endpoint
            && !matches!(ep.scheme(), "http" | "https")
        {
            issues.push("queue.endpoint", "must be an http or https URL");
        }
        if let Some(ep) = &q.endpoint
            && ep.query().is_some()
        {
            issues.push(
                "queue.endpoint",
                "must not carry a query; put a SAS token in auth.sas_token",
            );
        }

        let a = &self.auth;
        match a.mode {
            AuthMode::ConnectionString => match &a.connection_string {
                None => issues.push(
                    "auth.connection_string",
                    "required when auth.mode = \"connection_string\" (UseDevelopmentStorage=true for Azurite)",
                ),
                Some(cs) => {
                    if let Err(e) = crate::auth::ConnectionString::parse(cs.expose()) {
                        issues.push("auth.connection_string", e.to_string());
                    }
                }
            },
            AuthMode::Sas => {
                match &a.sas_token {
                    None => issues.push("auth.sas_token", "required when auth.mode = \"sas\""),
                    Some(t) if !t.expose().contains("sig=") => {
                        issues.push("auth.sas_token", "does not look like a SAS token (no `sig=`)")
                    }
                    _ => {}
                }
                if q.account.is_none() && q.endpoint.is_none() {
                    issues.push("queue.account", "set queue.account or queue.endpoint");
                }
            }
            mode => {
                if q.account.is_none() && q.endpoint.is_none() {
                    issues.push("queue.account", "set queue.account or queue.endpoint");
                }
                if let Some(ep) = &q.endpoint
                    && ep.scheme() != "https"
                {
                    issues.push(
                        "queue.endpoint",
                        format!("must use https with auth.mode = \"{}\" (tokens are never sent in clear text)", mode.as_str()),
                    );
                }
            }
        }
        if a.connection_string.is_some() && a.mode != AuthMode::ConnectionString {
            issues.push("auth.connection_string", format!("set, but auth.mode is \"{}\"; set auth.mode = \"connection_string\" or remove it", a.mode.as_str()));
        }
        if a.sas_token.is_some() && a.mode != AuthMode::Sas {
            issues.push(
                "auth.sas_token",
                format!(
                    "set, but auth.mode is \"{}\"; set auth.mode = \"sas\" or remove it",
                    a.mode.as_str()
                ),
            );
        }
        if let Some(h) = &a.authority_host
            && h.scheme() != "https"
        {
            issues.push("auth.authority_host", "must be an https URL");
        }
        if a.client_id.is_some()
            && !matches!(
                a.mode,
                AuthMode::ManagedIdentity | AuthMode::WorkloadIdentity
            )
        {
            issues.push(
                "auth.client_id",
                "only used with auth.mode = \"managed_identity\" or \"workload_identity\"",
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            issues.push(
                "log.level",
                format!("not a valid filter ({e}); examples: info, debug, cvnotify=debug,warn"),
            );
        }
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

    /// Handlers in effect: the configured ones, or one `log` handler.
    pub fn effective_handlers(&self) -> Vec<HandlerConfig> {
        if self.handlers.is_empty() {
            vec![HandlerConfig::default_log()]
        } else {
            self.handlers.clone()
        }
    }
}

/// Queue naming rules of Azure Storage, checked here so that a typo is a
/// config error rather than a 400 at the first request.
fn validate_queue_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !(3..=63).contains(&name.len())
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return Err(format!(
            "`{name}` is not a valid queue name: 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Deserializes `root` into `T`, recording every structural problem: after
/// each error the offending key is removed and deserialization is retried, so
/// one run reports all unknown keys and wrong types, not just the first.
/// Returns the value built without the offending keys (None if no value
/// could be built); the caller fails if `issues` is not empty.
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
                let unknown = field_in("unknown field `");
                let missing = field_in("missing field `").or_else(|| {
                    message
                        .strip_prefix("missing configuration field \"")
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

/// A map of string to string as given in config (`env = { K = "v" }`).
pub type StringMap = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(toml: &str) -> Vec<String> {
        Config::from_toml(toml)
            .unwrap_err()
            .0
            .into_iter()
            .map(|i| i.to_string())
            .collect()
    }

    const MINIMAL: &str = r#"
        [queue]
        name = "cv-events"
        account = "acct"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.queue.batch_size, 16);
        assert_eq!(c.queue.visibility_timeout, Duration::from_secs(300));
        assert_eq!(c.queue.max_concurrency, 32);
        assert_eq!(c.queue.min_poll_interval, Duration::from_millis(100));
        assert_eq!(c.queue.max_poll_interval, Duration::from_secs(10));
        assert_eq!(c.queue.max_dequeue_count, 5);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.auth.mode, AuthMode::ManagedIdentity);
        assert_eq!(c.poison_queue_name(), "cv-events-poison");
        assert_eq!(c.effective_handlers().len(), 1);
    }

    #[test]
    fn all_errors_reported_at_once_with_paths() {
        let errs = errors(
            r#"
            shutdown_timout = "5s"
            [queue]
            name = "Bad_Name"
            batch_size = 64
            visibility_timeout = "soon"
            colour = "blue"
            [auth]
            mode = "password"
            [[handlers]]
            type = "shell"
            comand = ["x"]
            "#,
        );
        let joined = errors_text(&errs);
        assert!(
            joined.contains("shutdown_timout: unknown key; allowed:"),
            "{joined}"
        );
        assert!(
            joined.contains("queue.colour: unknown key; allowed: one of `name`"),
            "{joined}"
        );
        assert!(joined.contains("queue.visibility_timeout:"), "{joined}");
        assert!(
            joined.contains(
                "auth.mode: unknown value `password`; allowed: managed_identity, workload_identity"
            ),
            "{joined}"
        );
        assert!(
            joined.contains("handlers[0].comand: unknown key; allowed:"),
            "{joined}"
        );
        assert!(joined.contains("handlers[0].command: missing"), "{joined}");
        assert!(
            joined.contains("queue.name: `Bad_Name` is not a valid queue name"),
            "{joined}"
        );
        assert!(
            joined.contains("queue.batch_size: 64 is out of range; allowed: 1 to 32"),
            "{joined}"
        );
    }

    fn errors_text(e: &[String]) -> String {
        e.join("\n")
    }

    #[test]
    fn environment_overrides_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let c = Config::load_with_env(
            Some(&path),
            [
                ("CVNOTIFY__QUEUE__NAME".to_owned(), "from-env".to_owned()),
                ("CVNOTIFY__QUEUE__BATCH_SIZE".to_owned(), "4".to_owned()),
                (
                    "CVNOTIFY__QUEUE__MAX_POLL_INTERVAL".to_owned(),
                    "1s".to_owned(),
                ),
                ("UNRELATED".to_owned(), "x".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(c.queue_name(), "from-env");
        assert_eq!(c.queue.batch_size, 4);
        assert_eq!(c.queue.max_poll_interval, Duration::from_secs(1));
    }

    #[test]
    fn unknown_environment_key_is_rejected() {
        let e = Config::load_with_env(
            None,
            [
                ("CVNOTIFY__QUEUE__NAME".to_owned(), "q-x".to_owned()),
                ("CVNOTIFY__QUEUE__ACCOUNT".to_owned(), "acct".to_owned()),
                ("CVNOTIFY__QUEUE__BATCHSIZE".to_owned(), "4".to_owned()),
            ],
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(
            e.0[0]
                .to_string()
                .starts_with("queue.batchsize: unknown key"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e =
            Config::load_with_env(Some(Path::new("/nonexistent/cvnotify.toml")), []).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn mode_specific_requirements() {
        let errs = errors(
            r#"
            [queue]
            name = "q-x"
            [auth]
            mode = "connection_string"
            "#,
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("auth.connection_string: required")),
            "{errs:?}"
        );
        let errs = errors(
            r#"
            [queue]
            name = "q-x"
            endpoint = "http://127.0.0.1:10001/devstoreaccount1"
            "#,
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("queue.endpoint: must use https")),
            "{errs:?}"
        );
        let errs =
            errors("[queue]\nname = \"q-x\"\n[auth]\nmode = \"sas\"\nsas_token = \"sv=1\"\n");
        assert!(errs.iter().any(|e| e.contains("no `sig=`")), "{errs:?}");
        assert!(
            errs.iter().any(|e| e.starts_with("queue.account")),
            "{errs:?}"
        );
    }

    #[test]
    fn sovereign_cloud_endpoints() {
        for (cloud, host) in [
            (
                "us_government",
                "https://acct.queue.core.usgovcloudapi.net/",
            ),
            ("china", "https://acct.queue.core.chinacloudapi.cn/"),
            ("public", "https://acct.queue.core.windows.net/"),
        ] {
            let c = Config::from_toml(&format!(
                "[queue]\nname = \"q-x\"\naccount = \"acct\"\ncloud = \"{cloud}\"\n"
            ))
            .unwrap();
            let connector = crate::queue::azure::Connector::from_config(&c).unwrap();
            assert_eq!(connector.endpoint().as_str(), host);
        }
        let errs = errors("[queue]\nname = \"q-x\"\naccount = \"acct\"\ncloud = \"custom\"\n");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("queue.endpoint: required")),
            "{errs:?}"
        );
        let c = Config::from_toml(
            "[queue]\nname = \"q-x\"\ncloud = \"custom\"\nendpoint = \"https://acct.queue.example.test\"\n[auth]\nauthority_host = \"https://login.example.test\"\n",
        )
        .unwrap();
        assert_eq!(
            crate::queue::azure::Connector::from_config(&c)
                .unwrap()
                .endpoint()
                .as_str(),
            "https://acct.queue.example.test/"
        );
    }

    #[test]
    fn poll_interval_order() {
        let errs = errors(
            "[queue]\nname=\"q-x\"\naccount=\"a\"\nmin_poll_interval=\"5s\"\nmax_poll_interval=\"1s\"\n",
        );
        assert_eq!(
            errs,
            vec!["queue.max_poll_interval: must not be less than queue.min_poll_interval"]
        );
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let c = Config::from_toml(
            "[queue]\nname=\"q-x\"\n[auth]\nmode=\"connection_string\"\nconnection_string=\"UseDevelopmentStorage=true\"\n",
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("UseDevelopmentStorage"), "{dbg}");
    }

    #[test]
    fn container_config_needs_only_the_queue_from_the_environment() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/container.toml");
        let env = [
            ("CVNOTIFY__QUEUE__NAME".to_owned(), "cv-events".to_owned()),
            ("CVNOTIFY__QUEUE__ACCOUNT".to_owned(), "acct".to_owned()),
        ];
        let c = Config::load_with_env(Some(&path), env).unwrap();
        assert_eq!(c.auth.mode, AuthMode::ManagedIdentity);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn example_and_dev_configs_are_valid() {
        for f in ["config/cvnotify.example.toml", "config/dev.toml"] {
            let text =
                std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap();
            if let Err(e) = Config::from_toml(&text) {
                panic!("{f}: {e}");
            }
        }
    }
}
