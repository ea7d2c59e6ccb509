//! Prometheus metrics and the health state behind `/readyz`.
//!
//! One [`Metrics`] per queue, shared by that queue's poll loop (which
//! records, only through its typed internal events in `worker::events`) and
//! the HTTP listener (which encodes). A [`MetricsRegistry`] holds them all,
//! each under its own `queue="<name>"` label, with the process-wide ones. Label values are fixed sets (handler names from
//! the config, operation and error kinds, outcome): never anything from a
//! message, so nothing secret or unbounded reaches a label. A leaf: it
//! imports nothing from the crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerOutcome {
    pub handler: String,
    /// `success` or `failure`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessedLabel {
    /// `handled` (every handler succeeded, or none was routed) or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabel {
    pub handler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `decode_error`, `max_dequeue_count`, `dequeue_count_exceeded`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageErrorLabels {
    pub operation: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    /// `main` or `poison` (the queue's name is the `queue` label).
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// Everything measured about one queue.
pub struct Metrics {
    /// Set for a standalone `Metrics` ([`Metrics::new`]); `None` when it is
    /// registered in a [`MetricsRegistry`], which encodes it.
    registry: Option<Registry>,
    pub received: Counter,
    pub handled: Family<HandlerOutcome, Counter>,
    pub processed: Family<ProcessedLabel, Counter>,
    pub deleted: Counter,
    pub released: Counter,
    pub poisoned: Family<ReasonLabel, Counter>,
    pub handler_duration: Family<HandlerLabel, Histogram>,
    pub storage_errors: Family<StorageErrorLabels, Counter>,
    pub in_flight: Gauge,
    pub poll_interval: Gauge<f64, AtomicU64>,
    pub queue_length: Family<RoleLabel, Gauge>,
    pub last_receive: Gauge<f64, AtomicU64>,
    /// Health: when a queue call last succeeded (Unix ms; 0 = never).
    last_success_ms: AtomicU64,
    /// Health: a credential was verified at start-up.
    started: AtomicBool,
}

/// Spans the trace exporter dropped because its queue was full (the
/// collector slow or down). Process-wide: the exporter is set up before the
/// daemon's [`Metrics`], and every `Metrics` registers this one counter.
pub fn spans_dropped() -> &'static Counter {
    static DROPPED: std::sync::LazyLock<Counter> = std::sync::LazyLock::new(Counter::default);
    &DROPPED
}

/// Spans handed to the collector (exported or refused by it).
pub fn spans_exported() -> &'static Counter {
    static EXPORTED: std::sync::LazyLock<Counter> = std::sync::LazyLock::new(Counter::default);
    &EXPORTED
}

/// Why `/readyz` answers 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("starting: no token or first queue call yet")]
    Starting,
    #[error("no queue call has succeeded yet")]
    NoQueueCall,
    #[error("the last successful queue call was {age_s} s ago (limit {limit_s} s)")]
    Stale { age_s: u64, limit_s: u64 },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A standalone `Metrics` without a `queue` label, encoded on its own
    /// (unit tests).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cvnotify");
        let m = Self::unregistered();
        m.register(&mut registry);
        register_process_wide(&mut registry);
        Metrics {
            registry: Some(registry),
            ..m
        }
    }

    fn unregistered() -> Self {
        Metrics {
            received: Counter::default(),
            handled: Family::default(),
            processed: Family::default(),
            deleted: Counter::default(),
            released: Counter::default(),
            poisoned: Family::default(),
            handler_duration: Family::new_with_constructor(|| {
                // 5 ms to ~10 min.
                Histogram::new(exponential_buckets(0.005, 2.0, 18))
            }),
            storage_errors: Family::default(),
            in_flight: Gauge::default(),
            poll_interval: Gauge::default(),
            queue_length: Family::default(),
            last_receive: Gauge::default(),
            last_success_ms: AtomicU64::new(0),
            started: AtomicBool::new(false),
            registry: None,
        }
    }

    fn register(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "messages_received",
            "Messages received from the queue",
            m.received.clone(),
        );
        registry.register(
            "messages_handled",
            "Deliveries to a handler, by handler and outcome",
            m.handled.clone(),
        );
        registry.register(
            "messages_processed",
            "Messages whose handling finished, by outcome (handled, failed)",
            m.processed.clone(),
        );
        registry.register(
            "messages_deleted",
            "Messages deleted after every handler succeeded",
            m.deleted.clone(),
        );
        registry.register(
            "messages_released",
            "Messages made visible again at shutdown",
            m.released.clone(),
        );
        registry.register(
            "messages_poisoned",
            "Messages moved to the poison queue, by reason",
            m.poisoned.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "Time a handler took for one delivery",
            m.handler_duration.clone(),
        );
        registry.register(
            "storage_errors",
            "Failed storage requests, by operation and kind",
            m.storage_errors.clone(),
        );
        registry.register(
            "messages_in_flight",
            "Messages being handled now",
            m.in_flight.clone(),
        );
        registry.register(
            "poll_interval_seconds",
            "Current delay between receive calls",
            m.poll_interval.clone(),
        );
        registry.register(
            "queue_length",
            "Approximate number of messages (queue properties, refreshed at most every 30 s)",
            m.queue_length.clone(),
        );
        registry.register(
            "last_receive_timestamp_seconds",
            "Unix time of the last successful receive call",
            m.last_receive.clone(),
        );
    }
}

/// What the process has once, whatever the number of queues.
fn register_process_wide(registry: &mut Registry) {
    let build: Family<BuildLabels, Gauge> = Family::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    registry.register("build_info", "cvnotify version", build);
    registry.register(
        "spans_dropped",
        "Trace spans dropped because the export queue was full",
        spans_dropped().clone(),
    );
    registry.register(
        "spans_exported",
        "Trace spans sent to the OTLP collector",
        spans_exported().clone(),
    );
}

impl Metrics {
    /// A queue call succeeded.
    pub fn storage_ok(&self) {
        self.last_success_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A receive succeeded.
    pub fn receive_ok(&self) {
        self.storage_ok();
        self.last_receive.set(now_ms() as f64 / 1000.0);
    }

    /// Start-up got a token (or needs none).
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Ready: started, and a queue call succeeded within `window`.
    pub fn ready(&self, window: Duration) -> Result<(), NotReady> {
        if !self.started.load(Ordering::Relaxed) {
            return Err(NotReady::Starting);
        }
        let last = self.last_success_ms.load(Ordering::Relaxed);
        if last == 0 {
            return Err(NotReady::NoQueueCall);
        }
        let age = now_ms().saturating_sub(last);
        if age > window.as_millis() as u64 {
            return Err(NotReady::Stale {
                age_s: age / 1000,
                limit_s: window.as_secs(),
            });
        }
        Ok(())
    }

    /// Prometheus text format (a standalone `Metrics` only; empty when it
    /// belongs to a [`MetricsRegistry`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(r) = &self.registry {
            prometheus_client::encoding::text::encode(&mut out, r).expect("writing to a String");
        }
        out
    }
}

/// The process's metrics: one [`Metrics`] per queue, each labelled
/// `queue="<name>"`, and the process-wide ones (build info, spans).
pub struct MetricsRegistry {
    registry: Registry,
    /// In configuration order, with the queue's name.
    queues: Vec<(String, std::sync::Arc<Metrics>)>,
}

impl MetricsRegistry {
    pub fn new<'a>(queue_names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix("cvnotify");
        register_process_wide(&mut registry);
        let queues = queue_names
            .into_iter()
            .map(|name| {
                let m = Metrics::unregistered();
                m.register(registry.sub_registry_with_label((
                    std::borrow::Cow::Borrowed("queue"),
                    std::borrow::Cow::Owned(name.to_owned()),
                )));
                (name.to_owned(), std::sync::Arc::new(m))
            })
            .collect();
        Self { registry, queues }
    }

    /// Each queue's name and metrics, in configuration order.
    pub fn queues(&self) -> &[(String, std::sync::Arc<Metrics>)] {
        &self.queues
    }

    /// Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_prefix_and_labels() {
        let m = Metrics::new();
        m.received.inc();
        m.handled
            .get_or_create(&HandlerOutcome {
                handler: "log#0".into(),
                outcome: "success",
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("cvnotify_messages_received_total 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "cvnotify_messages_handled_total{handler=\"log#0\",outcome=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("cvnotify_build_info{version="), "{text}");
    }

    #[test]
    fn each_queue_is_labelled_with_its_name() {
        let r = MetricsRegistry::new(["eu-events", "us-events"]);
        r.queues()[0].1.received.inc();
        r.queues()[1].1.received.inc_by(2);
        r.queues()[1]
            .1
            .queue_length
            .get_or_create(&RoleLabel { role: "poison" })
            .set(3);
        let text = r.encode();
        for want in [
            "cvnotify_messages_received_total{queue=\"eu-events\"} 1",
            "cvnotify_messages_received_total{queue=\"us-events\"} 2",
            "cvnotify_queue_length{queue=\"us-events\",role=\"poison\"} 3",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert_eq!(text.matches("cvnotify_build_info{").count(), 1, "{text}");
    }

    #[test]
    fn readiness_needs_start_and_a_recent_success() {
        let m = Metrics::new();
        assert!(m.ready(Duration::from_secs(30)).is_err());
        m.set_started();
        assert!(m.ready(Duration::from_secs(30)).is_err());
        m.storage_ok();
        assert!(m.ready(Duration::from_secs(30)).is_ok());
        m.last_success_ms
            .store(now_ms() - 60_000, Ordering::Relaxed);
        assert!(
            m.ready(Duration::from_secs(30))
                .unwrap_err()
                .to_string()
                .contains("60 s ago")
        );
    }
}
