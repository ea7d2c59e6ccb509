//! Log output: JSON or text, level from config or `RUST_LOG`.
//!
//! Field values can carry text from a message, a hook or a service's
//! answer; JSON escapes control characters itself, and the text format
//! escapes them here, so no escape sequence or carriage return reaches a
//! terminal or forges a line. Every line, in either format, is written
//! through [`crate::secret::redact`]: no registered secret value and no
//! secret-shaped text reaches the output, whichever field or message
//! carried it.
//!
//! What a line holds: the event's own fields and those of the spans it is
//! in (`message_id`, `dequeue_count`, `event_type`, `project_id`,
//! `iteration_id`; `handler`). The OpenTelemetry span name and kind
//! (`otel.*` fields) are for traces only and never written; JSON lines keep
//! `trace_id` and `span_id` (to find the trace), text lines leave them out.

use crate::config::{LogConfig, LogFormat};
use crate::secret::{escape_control, redact};
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{RecordFields, VisitOutput as _};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{JsonVisitor, Writer};

/// Span fields that only traces use: the OpenTelemetry layer reads the
/// span name and kind from them.
fn traces_only(name: &str) -> bool {
    name.starts_with("otel.")
}

/// Fields a text line leaves out: the traces-only ones, and the trace and
/// span ids (a person reading a terminal does not look traces up by them;
/// JSON lines, which log pipelines read, keep them).
fn hidden_in_text(name: &str) -> bool {
    traces_only(name) || name == "trace_id" || name == "span_id"
}

/// The text format's fields: `name=value` separated by spaces, the
/// message first as is, control characters escaped, [`hidden_in_text`]
/// fields left out.
struct TextFields;

struct TextVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() || hidden_in_text(field.name()) {
            return;
        }
        let text = format!("{value:?}");
        let text = escape_control(&text);
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{text}")
        } else {
            write!(self.writer, "{sep}{}={text}", field.name())
        };
    }
}

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut v = TextVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }

    /// Fields recorded later: appended, without a separator when all of
    /// them are hidden (the default would leave a trailing space).
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let mut added = String::new();
        self.format_fields(Writer::new(&mut added), fields)?;
        if !added.is_empty() {
            if !current.fields.is_empty() {
                current.fields.push(' ');
            }
            current.fields.push_str(&added);
        }
        Ok(())
    }
}

/// Forwards to `inner` every field but the traces-only ones.
struct WithoutTracesOnly<V>(V);

impl<V: Visit> Visit for WithoutTracesOnly<V> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if !traces_only(field.name()) {
            self.0.record_f64(field, value)
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if !traces_only(field.name()) {
            self.0.record_i64(field, value)
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if !traces_only(field.name()) {
            self.0.record_u64(field, value)
        }
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        if !traces_only(field.name()) {
            self.0.record_i128(field, value)
        }
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        if !traces_only(field.name()) {
            self.0.record_u128(field, value)
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if !traces_only(field.name()) {
            self.0.record_bool(field, value)
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if !traces_only(field.name()) {
            self.0.record_str(field, value)
        }
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        if !traces_only(field.name()) {
            self.0.record_bytes(field, value)
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !traces_only(field.name()) {
            self.0.record_error(field, value)
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !traces_only(field.name()) {
            self.0.record_debug(field, value)
        }
    }
}

/// The JSON format's span fields: tracing-subscriber's own JSON fields
/// without the traces-only ones (it has no option to leave fields out).
struct JsonLineFields;

impl<'w> FormatFields<'w> for JsonLineFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut v = WithoutTracesOnly(JsonVisitor::new(&mut writer));
        fields.record(&mut v);
        v.0.finish()
    }

    /// Fields recorded later (`event_type`, `trace_id`...) merged into the
    /// span's JSON object, as tracing-subscriber's own JSON fields do.
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let mut added = String::new();
        self.format_fields(Writer::new(&mut added), fields)?;
        if current.fields.is_empty() {
            current.fields = added;
            return Ok(());
        }
        let parse = |s: &str| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s)
                .map_err(|_| std::fmt::Error)
        };
        let mut merged = parse(&current.fields)?;
        merged.extend(parse(&added)?);
        current.fields = serde_json::to_string(&merged).map_err(|_| std::fmt::Error)?;
        Ok(())
    }
}

/// Writes each formatted line with its secrets removed. The fmt layer
/// formats a whole line and writes it with one `write_all`, so a line
/// arrives here in one `write` (which consumes all of it) and a secret is
/// never split between two calls.
struct Redacting<W>(W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(redact(text).as_bytes())?,
            Err(_) => self
                .0
                .write_all(redact(&String::from_utf8_lossy(buf)).as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
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
    let writer = move || -> Redacting<Box<dyn std::io::Write>> {
        Redacting(match target {
            Target::Stdout if !journald || json => Box::new(std::io::stdout()),
            _ => Box::new(std::io::stderr()),
        })
    };
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let lines: Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> =
        if json {
            fmt.json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .fmt_fields(JsonLineFields)
                .with_writer(writer)
                .with_filter(filter)
                .boxed()
        } else if journald {
            fmt.fmt_fields(TextFields)
                .with_ansi(false)
                .without_time()
                .with_writer(writer)
                .with_filter(filter)
                .boxed()
        } else {
            fmt.fmt_fields(TextFields)
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
