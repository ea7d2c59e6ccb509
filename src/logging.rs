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
const QUIET_SDK: &str = "azure_core=warn,azure_identity=warn,azure_storage_queue=warn,typespec_client_core=warn,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn,opentelemetry_http=warn";

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The daemon: logs are its output.
    Stdout,
    /// Commands whose stdout is their result (`decode`, `send`, `check`).
    Stderr,
}

/// Installs the global subscriber: log lines to `target`, and spans to
/// OpenTelemetry through `tracer` when traces are on. Safe to call once per
/// process.
pub fn init(config: &LogConfig, target: Target, tracer: Option<crate::telemetry::Tracer>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
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
    let writer = move || -> Box<dyn std::io::Write> {
        match target {
            Target::Stdout if !journald || json => Box::new(std::io::stdout()),
            _ => Box::new(std::io::stderr()),
        }
    };
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let lines: Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> =
        if json {
            fmt.json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_writer(writer)
                .with_filter(filter)
                .boxed()
        } else if journald {
            fmt.fmt_fields(text_fields())
                .with_ansi(false)
                .without_time()
                .with_writer(writer)
                .with_filter(filter)
                .boxed()
        } else {
            fmt.fmt_fields(text_fields())
                .with_ansi(terminal)
                .with_writer(writer)
                .with_filter(filter)
                .boxed()
        };
    // Traces do not depend on the log level: cvnotify's own INFO spans (a
    // message, its handlers, its storage calls) are always exported.
    let traces = tracer.map(|t| {
        tracing_opentelemetry::layer().with_tracer(t).with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("cvnotify", tracing::Level::INFO),
        )
    });
    let _ = tracing_subscriber::registry()
        .with(lines)
        .with(traces)
        .try_init();
}
