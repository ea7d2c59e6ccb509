//! Configuration: the TOML file, environment overrides, defaults and
//! validation.
//!
//! Loading never stops at the first problem: the caller gets every problem
//! at once, each with its key path, and exits with `EX_CONFIG`. Files:
//! [`issues`] (the collector; the lowest), [`connection_string`] (the format
//! of `auth.connection_string`), [`customvision`] (`[customvision]` and the
//! export platform table), [`handlers`] (`[[handlers]]` tables),
//! [`formats`] (how durations and sizes are written, as JSON Schema; the
//! lowest with `issues`), [`schema`] (the whole shape and defaults, and the
//! JSON Schema derived from it), [`validate`] (semantic rules) and [`load`]
//! (file + environment → a validated [`Config`]).
//!
//! This layer is pure apart from reading the file and registering the
//! secret values it finds with [`crate::secret`] (every `Secret` on
//! deserialization; webhook header values and URL credentials, and the
//! `OTEL_*HEADERS` variables, when loading): it must not build clients,
//! start anything, or log. It imports only the leaves (`secret`,
//! `filter`, `event`).

pub mod connection_string;
pub mod customvision;
pub mod formats;
pub mod handler_table;
pub mod handlers;
pub mod issues;
mod load;
pub mod schema;
mod validate;

pub use connection_string::{ConnectionString, ConnectionStringError, DEV_ACCOUNT, DEV_KEY};
pub use customvision::CustomVisionConfig;
pub use handler_table::{HandlerTable, StringMap};
pub use handlers::HandlerConfig;
pub use issues::{ConfigError, ConfigIssue, Issues};
pub use schema::{
    AuthConfig, AuthMode, Cloud, Config, ENV_PREFIX, HttpConfig, LogConfig, LogFormat,
    PoisonFormat, QueueConfig, QueueEntry, QueueSpec, SelectQueueError, TelemetryConfig, TlsConfig,
};
