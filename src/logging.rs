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
    /// span's JSON object, as tracing-subscriber's own JSON fields do. A
    /// message span records its context fields once each, after it was
    /// created, so the usual case is names the object does not hold yet:
    /// the two objects are then joined as text. A name recorded again is
    /// replaced through a parse and merge (measured: the parse-and-merge
    /// of every record was about 4% of the daemon's CPU per message).
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
        let Some(new) = added.strip_prefix('{').filter(|rest| *rest != "}") else {
            // Only traces-only fields were recorded.
            return Ok(());
        };
        let mut names = Names(Vec::new());
        fields.record(&mut names);
        if current.fields.ends_with('}') && !names.0.iter().any(|n| has_key(&current.fields, n)) {
            current.fields.pop();
            if current.fields != "{" {
                current.fields.push(',');
            }
            current.fields.push_str(new);
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

/// The names of the fields a record holds.
struct Names(Vec<&'static str>);

impl Visit for Names {
    fn record_debug(&mut self, field: &Field, _: &dyn std::fmt::Debug) {
        self.0.push(field.name());
    }
}

/// Whether the compact JSON object `json` has the key `name`: `"name":`
/// can only be a key there (inside a string value a quote is escaped, and
/// a string value is never followed by a colon). A false positive would
/// only take the parse-and-merge path.
fn has_key(json: &str, name: &str) -> bool {
    let bytes = json.as_bytes();
    json.match_indices(name).any(|(i, _)| {
        i > 0
            && bytes[i - 1] == b'"'
            && bytes.get(i + name.len()) == Some(&b'"')
            && bytes.get(i + name.len() + 1) == Some(&b':')
    })
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

/// JSON lines to `writer`: the event's fields flattened into the line,
/// with the list of its spans and their fields.
fn json_lines<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonLineFields)
        .event_format(JsonLine)
        .with_writer(writer)
}

/// One JSON line per event, as tracing-subscriber's JSON format writes it
/// with `flatten_event(true)`, `with_span_list(true)`, no target and no
/// current span: `timestamp`, `level`, the event's fields, then `spans`
/// (outermost first, each its fields and `name`) when the event is in a
/// span. Written here because that format parses every span's fields
/// (already a JSON object, [`JsonLineFields`]) and serializes them again
/// for every line (its own TODO, tokio-rs/tracing#391); this copies the
/// object in as text. Measured: that parse was about 5% of the daemon's
/// CPU per message (two lines per message, three spans' fields).
/// `json_lines_are_those_of_tracing_subscribers_json_format` pins the
/// output to that format's.
struct JsonLine;

impl<S> tracing_subscriber::fmt::FormatEvent<S, JsonLineFields> for JsonLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, JsonLineFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use serde::ser::{SerializeMap as _, Serializer as _};
        use tracing_subscriber::fmt::time::FormatTime as _;
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut line = Vec::with_capacity(256);
        let mut json = serde_json::Serializer::new(&mut line);
        let mut head = || -> Result<(), serde_json::Error> {
            let mut map = json.serialize_map(None)?;
            map.serialize_entry("timestamp", &timestamp)?;
            map.serialize_entry("level", event.metadata().level().as_str())?;
            let mut visitor = tracing_serde::SerdeMapVisitor::new(map);
            event.record(&mut visitor);
            visitor.take_serializer()?.end()
        };
        head().map_err(|_| std::fmt::Error)?;
        let line = std::str::from_utf8(&line).map_err(|_| std::fmt::Error)?;
        // `{…}`: everything but the closing brace, then the spans.
        writer.write_str(&line[..line.len() - 1])?;
        if let Some(scope) = ctx.event_scope() {
            writer.write_str(",\"spans\":[")?;
            for (i, span) in scope.from_root().enumerate() {
                if i > 0 {
                    writer.write_char(',')?;
                }
                let ext = span.extensions();
                let fields = ext
                    .get::<FormattedFields<JsonLineFields>>()
                    .map(|f| f.fields.as_str())
                    .unwrap_or_default();
                // `{…}` from JsonLineFields; empty when nothing was recorded.
                let inner = fields
                    .strip_prefix('{')
                    .and_then(|f| f.strip_suffix('}'))
                    .unwrap_or_default();
                writer.write_char('{')?;
                if !inner.is_empty() {
                    writer.write_str(inner)?;
                    writer.write_char(',')?;
                }
                let name =
                    serde_json::to_string(span.metadata().name()).map_err(|_| std::fmt::Error)?;
                write!(writer, "\"name\":{name}}}")?;
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
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
            json_lines(writer).with_filter(filter).boxed()
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// The span fields of the one JSON line `record` makes, as text.
    fn line(record: impl FnOnce()) -> String {
        let written = crate::view::Written::default();
        let subscriber = tracing_subscriber::registry().with(json_lines(written.clone()));
        tracing::subscriber::with_default(subscriber, record);
        written.text()
    }

    #[test]
    fn fields_recorded_later_join_the_span_once_each_with_their_last_value() {
        let text = line(|| {
            let span = tracing::info_span!(
                "message",
                message_id = "m1",
                event_type = tracing::field::Empty,
                project_id = tracing::field::Empty,
                "otel.kind" = "consumer",
            );
            span.record("event_type", "Training");
            span.record("project_id", "p1");
            // Recorded again: replaced, not repeated.
            span.record("event_type", "Export");
            // A traces-only field changes nothing.
            span.record("otel.kind", "server");
            span.in_scope(|| tracing::info!("inside"));
        });
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect(&text);
        assert_eq!(
            line["spans"][0],
            serde_json::json!({
                "message_id": "m1",
                "event_type": "Export",
                "project_id": "p1",
                "name": "message",
            }),
            "{text}"
        );
        assert_eq!(text.matches("\"event_type\"").count(), 1, "{text}");
    }

    #[test]
    fn a_key_is_found_only_as_a_key() {
        let json = r#"{"a":"x\"event_type\":1","event_type":"T"}"#;
        assert!(has_key(json, "event_type"));
        assert!(has_key(json, "a"));
        assert!(!has_key(r#"{"a":"\"b\":"}"#, "b"), "inside a string value");
        assert!(!has_key(r#"{"ab":1}"#, "b"));
        assert!(!has_key(r#"{"b_c":1}"#, "b"));
    }

    /// The lines of [`JsonLine`] and of tracing-subscriber's JSON format
    /// (configured as the daemon configured it before) for the same
    /// events are the same JSON, timestamps apart.
    #[test]
    fn json_lines_are_those_of_tracing_subscribers_json_format() {
        fn events() {
            tracing::info!(
                n = 3,
                ok = true,
                text = "a \"quoted\" \u{1b} line",
                "outside any span"
            );
            let outer = tracing::info_span!(
                "message",
                message_id = "m1",
                dequeue_count = 2u64,
                event_type = tracing::field::Empty,
                "otel.name" = "process q",
            );
            outer.record("event_type", "Export");
            outer.in_scope(|| {
                tracing::warn!(error = %"it failed", "in one span");
                let empty = tracing::info_span!("nothing");
                empty.in_scope(|| {
                    tracing::info_span!("handler", handler = "log")
                        .in_scope(|| tracing::info!(took_ms = 12u64, ratio = 0.5, "in three spans"))
                });
            });
        }
        let ours = line(events);
        let written = crate::view::Written::default();
        let theirs = tracing_subscriber::fmt::layer()
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .fmt_fields(JsonLineFields)
            .with_writer(written.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(theirs), events);
        let parse = |text: &str| -> Vec<serde_json::Value> {
            text.lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).expect(l);
                    assert!(
                        v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
                        "{l}"
                    );
                    v.as_object_mut().unwrap().remove("timestamp");
                    v
                })
                .collect()
        };
        let (ours, theirs) = (parse(&ours), parse(&written.text()));
        assert_eq!(ours.len(), 3);
        assert_eq!(ours, theirs);
        // Same keys in the same order, too.
        assert_eq!(
            ours.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            theirs.iter().map(|v| v.to_string()).collect::<Vec<_>>()
        );
    }
}
