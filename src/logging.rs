//! Log output: JSON or text, level from config or `RUST_LOG`.
//!
//! Field values can carry text from a message or a hook; JSON escapes
//! control characters itself, and the text format escapes them here, so no
//! escape sequence or carriage return reaches a terminal or forges a line.

use crate::config::{LogConfig, LogFormat};
use crate::secret::escape_control;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

/// The text format's fields, control characters escaped.
fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    debug_fn(
        |w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            let text = format!("{value:?}");
            let text = escape_control(&text);
            if field.name() == "message" {
                write!(w, "{text}")
            } else {
                write!(w, "{}={text}", field.name())
            }
        },
    )
    .delimited(" ")
}

/// The Azure SDK logs every failed try at INFO; the daemon reports storage
/// problems itself (with back-off and redaction), so the SDK is kept to WARN
/// unless `RUST_LOG` asks for more.
const QUIET_SDK: &str =
    "azure_core=warn,azure_identity=warn,azure_storage_queue=warn,typespec_client_core=warn";

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The daemon: logs are its output.
    Stdout,
    /// Commands whose stdout is their result (`decode`, `send`, `check`).
    Stderr,
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(config: &LogConfig, target: Target) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(format!("{},{QUIET_SDK}", config.level))
                .unwrap_or_else(|_| EnvFilter::new("info"))
        });
    let terminal = match target {
        Target::Stdout => std::io::stdout().is_terminal(),
        Target::Stderr => std::io::stderr().is_terminal(),
    };
    // Under systemd, journald adds its own timestamp and does not render
    // colours; JOURNAL_STREAM is how a service learns it is connected there.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal && !journald,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = match (json, target) {
        (true, Target::Stdout) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stdout)
            .try_init(),
        (true, Target::Stderr) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .try_init(),
        (false, _) if journald => builder
            .fmt_fields(text_fields())
            .with_ansi(false)
            .without_time()
            .with_writer(std::io::stderr)
            .try_init(),
        (false, Target::Stdout) => builder
            .fmt_fields(text_fields())
            .with_ansi(terminal)
            .with_writer(std::io::stdout)
            .try_init(),
        (false, Target::Stderr) => builder
            .fmt_fields(text_fields())
            .with_ansi(terminal)
            .with_writer(std::io::stderr)
            .try_init(),
    };
    let _ = result;
}
