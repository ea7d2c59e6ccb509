//! Configuration: the TOML file, environment overrides, defaults and
//! validation.
//!
//! Loading never stops at the first problem: the caller gets every problem
//! at once, each with its key path, and exits with `EX_CONFIG`. Files,
//! lowest first: [`issues`] (the collector) and [`formats`] (how durations,
//! sizes and enums are written, as JSON Schema) import nothing from here;
//! [`connection_string`] (the format of `auth.connection_string`),
//! [`handler_table`] (what every `[[handlers]]` table has),
//! [`customvision`] (`[customvision]` and the export platform table),
//! [`queue`] (`[queue]` and the keys of each `[[queues]]` entry),
//! [`handlers`] (the `[[handlers]]` enum over each handler's own config),
//! [`schema`] (the whole shape and defaults, and the JSON Schema derived
//! from it), [`validate`] (semantic rules) and [`load`] (file +
//! environment → a validated [`Config`]).
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
pub mod queue;
pub mod schema;
mod validate;

pub use connection_string::{ConnectionString, ConnectionStringError, DEV_ACCOUNT, DEV_KEY};
pub use customvision::CustomVisionConfig;
pub use handler_table::{HandlerTable, StringMap};
pub use handlers::HandlerConfig;
pub use issues::{ConfigError, ConfigIssue, Issues};
pub use queue::{Cloud, PoisonFormat, QueueConfig};
pub use schema::{
    AuthConfig, AuthMode, Config, ENV_PREFIX, HttpConfig, LogConfig, LogFormat, QueueEntry,
    QueueSpec, SelectQueueError, TelemetryConfig, TlsConfig,
};
