//! cvnotify: acts on Azure Custom Vision training and export notifications.
//!
//! Custom Vision writes a JSON message into an Azure Storage queue when a
//! training or an export finishes. cvnotify polls that queue, decodes each
//! message into a typed [`event::Event`], hands it to the configured
//! handlers, and deletes it once every one of them succeeded.
//!
//! # Layout
//!
//! - [`event`]: the wire format and the decoder (pure; no I/O).
//! - [`config`]: the TOML file, `CVNOTIFY__*` overrides, validation that
//!   reports every problem at once.
//! - [`auth`]: connection strings and the Shared Key signing policy.
//! - [`credential`]: Entra ID credentials with half-life token refresh.
//! - [`queue`]: the narrow [`queue::Queue`] trait, its Azure implementation
//!   and an in-memory one for unit tests; classification of storage errors.
//! - [`handler`]: the [`handler::Handler`] trait, the tagged
//!   [`handler::HandlerConfig`] enum (one module per handler type) and the
//!   `events` routing grammar.
//! - [`worker`]: the poll loop: bounded concurrency, adaptive polling,
//!   visibility renewal, retries, poison queue, graceful shutdown.
//! - [`daemon`]: wires configuration into a running worker; the signal
//!   future used in production.
//! - [`check`], [`send`], [`poison`]: the `check`, `send` and `poison`
//!   commands.
//! - [`metrics`], [`http`]: Prometheus metrics, health state, and the
//!   optional `/healthz` `/readyz` `/metrics` listener.
//! - [`reaper`]: reaping orphans when running as PID 1.
//! - [`logging`], [`redact`]: log output, and keeping secrets out of it.
//! - [`tls`]: extra trusted CAs.
//!
//! `main.rs` only parses the command line and calls into these.

pub mod auth;
pub mod check;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod event;
pub mod handler;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod poison;
pub mod queue;
pub mod reaper;
pub mod redact;
pub mod send;
pub mod tls;
pub mod worker;

/// Exit codes (sysexits.h where one fits).
pub mod exit {
    /// Done, or stopped by SIGTERM/SIGINT after draining.
    pub const OK: i32 = 0;
    /// A runtime failure (a check failed, storage unusable in `--once`).
    pub const FAILURE: i32 = 1;
    /// Bad command-line usage (clap).
    pub const USAGE: i32 = 2;
    /// EX_DATAERR: `decode` was given a message it cannot decode.
    pub const DATA_ERR: i32 = 65;
    /// EX_UNAVAILABLE: the credential could not get a token at start-up.
    pub const UNAVAILABLE: i32 = 69;
    /// EX_CONFIG: the configuration is invalid.
    pub const CONFIG: i32 = 78;
}
