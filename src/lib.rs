//! cvnotify: acts on Azure Custom Vision training and export notifications.
//!
//! Custom Vision writes a JSON message into an Azure Storage queue when a
//! training or an export finishes. cvnotify polls that queue, decodes each
//! message into a typed [`event::Event`], hands it to the configured
//! handlers, and deletes it once every one of them succeeded.
//!
//! # Layout
//!
//! Layers, lowest first. A module imports only from its own layer or a
//! lower one, and files never import each other in a circle:
//! `scripts/check-layers` (run by `scripts/test`) reads the table below and
//! fails on an import that runs up it.
//!
//! ```text
//! layer 1  event view filter secret error retry limit notice envelope tls metrics reaper exit
//! layer 2  config telemetry logging handler::*::config
//! layer 3  queue blob
//! layer 4  azure customvision
//! layer 5  handler
//! layer 6  worker http
//! layer 7  daemon commands
//! ```
//!
//! 1. Leaves, importing nothing above them:
//!    - [`event`]: the wire formats and the decoder (pure; no I/O), and
//!      each kind's one description: its name and fields. A message is a
//!      Custom Vision notification (`event.rs`), an Event Grid or
//!      CloudEvents event, or an array of those (`event/grid.rs`: Azure
//!      Machine Learning, Blob Storage, any other type); `event/fields.rs`
//!      holds what both decoders share (the error naming the field, URL
//!      validation).
//!    - [`view`]: how that description becomes what the outside sees: the
//!      hook/webhook payload, hook variables, log records, span fields.
//!    - [`filter`]: the `events` routing grammar, over [`event`], and a
//!      handler table's subject filter (Event Grid's, on an event's subject).
//!    - [`secret`]: the [`secret::Secret`] type, the registry of every secret
//!      value the process holds, and redaction of every text that leaves it.
//!    - [`error`]: a cause chain as one line, printed once at the edge;
//!      the untrusted-certificate hint.
//!    - [`retry`]: the one back-off primitive and the one retry runner
//!      (a policy plus an attempt closure; one event per retry).
//!    - [`limit`]: response bodies read with a byte cap, and outside text
//!      cut to a few KiB before it is logged or recorded.
//!    - [`notice`]: the exports cvnotify asked for, whose `Export`
//!      notification the poll loop waits for at its fastest interval.
//!    - [`envelope`]: the retry envelope cvnotify wraps a failed message in.
//!    - [`tls`]: extra trusted CAs. [`metrics`]: the Prometheus registry
//!      and each queue's health state (the worker's counters are its own).
//!      [`reaper`]: reaping orphans as PID 1. [`exit`]: exit codes.
//! 2. [`config`]: the TOML file, `CVNOTIFY__*` overrides, every handler's
//!    table, and validation that reports every problem at once.
//!    `config/formats.rs` says how durations, sizes and enums are written
//!    (JSON Schema, the `string_enum!` macro); `config/queue.rs` holds
//!    `[queue]`, `config/schema.rs` the rest of the file's shape;
//!    `config/handler_table.rs` what every `[[handlers]]` table has, and
//!    `config/handlers.rs` the enum tagged by `type` over each handler's
//!    own table, which lives beside its handler in
//!    `handler/<type>/config.rs` (`handler::*::config`: pure serde types
//!    and validation, in this layer although under `handler/`). Then
//!    [`telemetry`] (OpenTelemetry traces, from `[telemetry]`) and
//!    [`logging`], which reads `[log]`.
//! 3. Narrow traits for storage: [`queue`] (the `Queue` trait, its errors, an
//!    in-memory queue for unit tests) and [`blob`] (`BlobSource`, what the
//!    download handler reads through).
//! 4. [`azure`]: everything that talks to Azure Storage (connector, queue
//!    and blob clients, Shared Key, Entra ID credentials), from the config
//!    sections it needs. [`customvision`]: the Custom Vision Training API
//!    client (over reqwest; Entra ID credentials from [`azure`]):
//!    `customvision/transport.rs` sends one call with its attempts,
//!    `customvision/client.rs` has one method per endpoint.
//! 5. [`handler`]: the `Handler` trait, one module per handler type
//!    (`handler/<type>/handler.rs`, beside its `config.rs` of layer 2), and
//!    the router. Sees storage only through [`blob`].
//! 6. [`worker`]: the poll loop and each message's lifecycle, with one typed
//!    internal event per outcome. [`http`]: `/healthz` `/readyz` `/metrics`.
//! 7. [`daemon`] (wiring, the shutdown signal) and [`commands`]: one file
//!    per command (`run`, `check` with `check_projects`, `decode`, `send`,
//!    `poison`, `schema` for `config schema`, and `setup/`, one file per
//!    step: `storage`, `settings`, `proof`, with `uris`), over
//!    `commands/edge.rs` (loading the configuration, picking `--queue`,
//!    printing errors, the runtime) and `commands/lines.rs` (the `ok` /
//!    `FAIL` lines of `check` and `setup`).
//!
//! `main.rs` only parses the command line and calls into these.

pub mod azure;
pub mod blob;
pub mod commands;
pub mod config;
pub mod customvision;
pub mod daemon;
pub mod envelope;
pub mod error;
pub mod event;
pub mod exit;
pub mod filter;
pub mod handler;
pub mod http;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod notice;
pub mod queue;
pub mod reaper;
pub mod retry;
pub mod secret;
pub mod telemetry;
pub mod tls;
pub mod view;
pub mod worker;
