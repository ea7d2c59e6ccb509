//! OpenTelemetry traces: the tracer provider exporting over OTLP/HTTP, the
//! `tracing` layer that turns spans into OpenTelemetry spans, and the W3C
//! trace context of the current span for webhooks (`traceparent`) and hooks
//! (`TRACEPARENT`).
//!
//! Below handlers and the worker (they read the current trace context
//! here); above the config and metrics. It must not block message handling:
//! finished spans go into a bounded queue with `try_send`, a thread of its
//! own exports them, and a full queue drops spans and counts them
//! ([`crate::metrics::spans_dropped`]). That thread also removes secrets
//! from every text of a span before export ([`crate::secret::redact`]).
//! Attributes that only traces carry (the messaging conventions', the
//! outcome) are set with [`set_attributes`], never as `tracing` fields, so
//! log lines do not repeat them.

use crate::config::TelemetryConfig;
use crate::metrics::{spans_dropped, spans_exported};
use crate::secret::redact;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// What the `tracing` subscriber's OpenTelemetry layer records through.
pub type Tracer = opentelemetry_sdk::trace::Tracer;

/// Traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter (telemetry.otlp_endpoint, OTEL_EXPORTER_OTLP_*)")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot build the HTTP client for the OTLP exporter")]
    Http(#[source] reqwest::Error),
    #[error("cannot start the span export thread")]
    Thread(#[source] std::io::Error),
}

/// The running tracer provider: flush and stop it before the process ends.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is queued (bounded by the export timeout) and stops.
    pub fn shutdown(self) {
        let _ = self.provider.shutdown();
    }
}

/// Whether traces are on: an endpoint in the configuration or the standard
/// environment, and the SDK not disabled.
pub fn enabled(config: &TelemetryConfig) -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled
        && (config.otlp_endpoint.is_some()
            || set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Starts exporting traces when [`enabled`]; the tracer for the
/// subscriber's layer and the provider to shut down at exit.
pub fn init(config: &TelemetryConfig) -> Result<Option<(Tracer, Telemetry)>, TelemetryError> {
    if !enabled(config) {
        return Ok(None);
    }
    let http = reqwest::Client::builder()
        .timeout(config.export_timeout)
        .connect_timeout(config.export_timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(TelemetryError::Http)?;
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(OtlpClient(http))
        .with_timeout(config.export_timeout);
    if let Some(endpoint) = &config.otlp_endpoint {
        builder = builder.with_endpoint(traces_url(endpoint));
    }
    let mut exporter = builder.build().map_err(TelemetryError::Exporter)?;
    // The resource reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    // without them the service is "cvnotify".
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("cvnotify");
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    // The exporter lives on the export thread: it gets the resource now.
    exporter.set_resource(&resource);
    let processor = BoundedBatch::start(exporter, config.max_queue_size)?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("cvnotify");
    ON.store(true, Ordering::Relaxed);
    Ok(Some((tracer, Telemetry { provider })))
}

/// `{base}/v1/traces`, as for `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(base: &url::Url) -> String {
    format!("{}/v1/traces", base.as_str().trim_end_matches('/'))
}

/// Whether [`init`] started exporting: attributes that only traces carry
/// are not even built otherwise.
static ON: AtomicBool = AtomicBool::new(false);

/// Sets attributes on `span`'s OpenTelemetry span only, never as its
/// `tracing` fields: log lines do not carry them. `make` runs only with
/// traces on.
pub fn set_attributes<I>(span: &tracing::Span, make: impl FnOnce() -> I)
where
    I: IntoIterator<Item = (&'static str, opentelemetry::Value)>,
{
    if ON.load(Ordering::Relaxed) {
        for (key, value) in make() {
            span.set_attribute(key, value);
        }
    }
}

/// [`set_attributes`] for one attribute.
pub fn set_attribute(span: &tracing::Span, key: &'static str, value: &'static str) {
    set_attributes(span, || [(key, value.into())]);
}

/// The W3C `traceparent` of `span`, when traces are on.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The trace and span ids of `span` (hex), when traces are on.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// The exporter's HTTP transport: reqwest, which the daemon already uses
/// (the exporter's own reqwest feature would pull in a second reqwest).
#[derive(Debug)]
struct OtlpClient(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let request = reqwest::Request::try_from(request)?;
        let response = self.0.execute(request).await?;
        let mut out = opentelemetry_http::Response::builder().status(response.status().as_u16());
        for (k, v) in response.headers() {
            out = out.header(k.as_str(), v.as_bytes());
        }
        // A collector's answer is small; more is not read.
        let body = response.bytes().await?;
        let body = body.slice(..body.len().min(64 * 1024));
        Ok(out.body(body)?)
    }
}

/// A batching span processor whose queue is bounded and never blocks: the
/// SDK's `BatchSpanProcessor` drops spans too when full, but keeps the count
/// to itself, and the daemon must report it (`cvnotify_spans_dropped_total`).
/// Hand-written for that reason only; exporting is the OTLP exporter's.
#[derive(Debug)]
struct BoundedBatch {
    spans: SyncSender<SpanData>,
    control: Mutex<std::sync::mpsc::Sender<Control>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug)]
enum Control {
    Flush(std::sync::mpsc::Sender<()>),
    Shutdown(std::sync::mpsc::Sender<()>),
}

/// Spans per export request.
const BATCH: usize = 512;
/// A partial batch waits at most this long.
const BATCH_DELAY: Duration = Duration::from_secs(1);

impl BoundedBatch {
    fn start<E: SpanExporter + 'static>(
        exporter: E,
        max_queue_size: usize,
    ) -> Result<Self, TelemetryError> {
        let (spans, queue) = sync_channel(max_queue_size);
        let (control, commands) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cvnotify-otlp".into())
            .spawn(move || export_loop(exporter, queue, commands))
            .map_err(TelemetryError::Thread)?;
        Ok(Self {
            spans,
            control: Mutex::new(control),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn command(
        &self,
        make: impl FnOnce(std::sync::mpsc::Sender<()>) -> Control,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (done, wait) = std::sync::mpsc::channel();
        self.control
            .lock()
            .unwrap()
            .send(make(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        wait.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

/// The export thread: batches of up to [`BATCH`] spans, sent when full or
/// after [`BATCH_DELAY`], on a runtime of its own so that a slow collector
/// never occupies the daemon's.
fn export_loop<E: SpanExporter>(
    exporter: E,
    queue: Receiver<SpanData>,
    commands: std::sync::mpsc::Receiver<Control>,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut batch = Vec::with_capacity(BATCH);
    let export = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let mut spans = std::mem::take(batch);
        spans.iter_mut().for_each(redact_span);
        let n = spans.len() as u64;
        let _ = runtime.block_on(exporter.export(spans));
        spans_exported().inc_by(n);
    };
    loop {
        match queue.recv_timeout(BATCH_DELAY) {
            Ok(span) => {
                batch.push(span);
                if batch.len() >= BATCH {
                    export(&mut batch);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => export(&mut batch),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                export(&mut batch);
                return;
            }
        }
        while let Ok(command) = commands.try_recv() {
            batch.extend(queue.try_iter().take(BATCH * 4));
            export(&mut batch);
            match command {
                Control::Flush(done) => {
                    let _ = done.send(());
                }
                Control::Shutdown(done) => {
                    let _ = done.send(());
                    return;
                }
            }
        }
    }
}

/// Removes secrets ([`crate::secret::redact`]) from every text of a span
/// before it leaves the process: its name, string attributes, events (log
/// lines inside the span become events, with their fields) and status.
/// Done on the export thread, off the message's path.
fn redact_span(span: &mut SpanData) {
    use opentelemetry::{Array, StringValue, Value};
    fn text(s: &mut std::borrow::Cow<'static, str>) {
        if let std::borrow::Cow::Owned(r) = redact(s) {
            *s = r.into();
        }
    }
    fn string(s: &mut StringValue) {
        if let std::borrow::Cow::Owned(r) = redact(s.as_str()) {
            *s = r.into();
        }
    }
    fn attributes(kvs: &mut [opentelemetry::KeyValue]) {
        for kv in kvs {
            match &mut kv.value {
                Value::String(s) => string(s),
                Value::Array(Array::String(list)) => list.iter_mut().for_each(string),
                _ => {}
            }
        }
    }
    text(&mut span.name);
    attributes(&mut span.attributes);
    for event in span.events.events.iter_mut() {
        text(&mut event.name);
        attributes(&mut event.attributes);
    }
    if let opentelemetry::trace::Status::Error { description } = &mut span.status {
        text(description);
    }
}

impl SpanProcessor for BoundedBatch {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        match self.spans.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                spans_dropped().inc();
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.command(Control::Flush, Duration::from_secs(15))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.command(Control::Shutdown, timeout);
        if let Some(thread) = self.thread.lock().unwrap().take() {
            // The thread ends after the shutdown command, or once it gave up.
            if result.is_ok() {
                let _ = thread.join();
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(traces_url(&u("http://c:4318")), "http://c:4318/v1/traces");
        assert_eq!(traces_url(&u("http://c:4318/")), "http://c:4318/v1/traces");
        assert_eq!(traces_url(&u("https://c/otlp")), "https://c/otlp/v1/traces");
    }

    #[test]
    fn without_traces_there_is_no_trace_context() {
        let span = tracing::info_span!("x");
        assert_eq!(traceparent(&span), None);
        assert_eq!(ids(&span), None);
    }
}
