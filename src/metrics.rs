//! Prometheus metrics and the health state behind `/readyz`.
//!
//! One [`Metrics`] per queue: its health (renewed by the poll loop's
//! internal events, read by `/readyz`) and its length (written by the HTTP
//! listener). The worker's outcome counters are defined beside its events
//! (`worker::Recorder`), whose fields only those events can reach, and
//! join through [`Register`]. A [`MetricsRegistry`] holds every queue's,
//! each under its own `queue="<name>"` label, with the process-wide ones.
//! Label values are fixed sets: never anything from a message, so nothing
//! secret or unbounded reaches a label. A leaf: it imports nothing from the
//! crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    /// `main` or `poison` (the queue's name is the `queue` label).
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabel {
    /// One of [`RETRY_CLIENTS`].
    pub client: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// One queue's health and length: what `/readyz` and the HTTP listener
/// read about it. The worker's outcome counters are its own
/// (`worker::Recorder`), registered beside these through [`Register`].
pub struct Metrics {
    /// Written by the HTTP listener when `/metrics` is scraped.
    queue_length: Family<RoleLabel, Gauge>,
    /// Set by [`Metrics::receive_ok`].
    last_receive: Gauge<f64, AtomicU64>,
    /// Health: when a queue call last succeeded (Unix ms; 0 = never).
    last_success_ms: AtomicU64,
    /// Health: a credential was verified at start-up.
    started: AtomicBool,
}

/// Metrics a component owns and writes itself, registered under its
/// queue's label by [`MetricsRegistry::add_queue`]. The worker's counters
/// implement it, so their fields stay private to the events that write
/// them.
pub trait Register {
    /// Registers every metric (clones share the values).
    fn register(&self, registry: &mut Registry);
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

/// The `client` values of `cvnotify_retries_total` (`crate::retry::Client`
/// labels), each exported from start-up at 0 so that a rate sees its first
/// retry.
pub const RETRY_CLIENTS: [&str; 5] = ["webhook", "customvision", "token", "storage", "blob"];

/// In-process retries, by client (`crate::retry::Retrying` is the one
/// writer). Process-wide, like the span counters: the clients that retry
/// (handlers, the Training API client, the credential) are not one queue's.
pub fn retries() -> &'static Family<ClientLabel, Counter> {
    static RETRIES: std::sync::LazyLock<Family<ClientLabel, Counter>> =
        std::sync::LazyLock::new(|| {
            let family = Family::<ClientLabel, Counter>::default();
            for client in RETRY_CLIENTS {
                let _ = family.get_or_create(&ClientLabel { client });
            }
            family
        });
    &RETRIES
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
    /// One queue's health metrics, not registered yet (see
    /// [`MetricsRegistry::add_queue`]).
    pub fn new() -> Self {
        Metrics {
            queue_length: Family::default(),
            last_receive: Gauge::default(),
            last_success_ms: AtomicU64::new(0),
            started: AtomicBool::new(false),
        }
    }
}

impl Register for Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "queue_length",
            "Approximate number of messages (queue properties, refreshed at most every 30 s)",
            self.queue_length.clone(),
        );
        registry.register(
            "last_receive_timestamp_seconds",
            "Unix time of the last successful receive call",
            self.last_receive.clone(),
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
        "retries",
        "Attempts that failed and were retried in process, by client (webhook, customvision, token, storage, blob)",
        retries().clone(),
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

    /// The approximate length of the queue in `role` (`main` or `poison`).
    pub fn set_queue_length(&self, role: &'static str, length: i64) {
        self.queue_length
            .get_or_create(&RoleLabel { role })
            .set(length);
    }
}

/// The process's metrics: each queue's, labelled `queue="<name>"`, and
/// the process-wide ones (build info, retries, spans).
pub struct MetricsRegistry {
    registry: Registry,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsRegistry {
    /// The process-wide metrics, no queue yet.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cvnotify");
        register_process_wide(&mut registry);
        Self { registry }
    }

    /// Adds one queue's metrics: what its worker records (`component`)
    /// and its `health`, under `queue="<name>"`.
    pub fn add_queue(&mut self, name: &str, health: &Metrics, component: &dyn Register) {
        let r = self.registry.sub_registry_with_label((
            std::borrow::Cow::Borrowed("queue"),
            std::borrow::Cow::Owned(name.to_owned()),
        ));
        component.register(r);
        health.register(r);
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

    /// A component registering one counter, as the worker's `Recorder` does.
    #[derive(Default)]
    struct Received(Counter);

    impl Register for Received {
        fn register(&self, registry: &mut Registry) {
            registry.register("messages_received", "Received", self.0.clone());
        }
    }

    #[test]
    fn each_queue_is_labelled_with_its_name() {
        let mut r = MetricsRegistry::new();
        let (eu, us) = (Received::default(), Received::default());
        let (eu_health, us_health) = (Metrics::new(), Metrics::new());
        r.add_queue("eu-events", &eu_health, &eu);
        r.add_queue("us-events", &us_health, &us);
        eu.0.inc();
        us.0.inc_by(2);
        us_health.set_queue_length("poison", 3);
        let text = r.encode();
        for want in [
            "cvnotify_messages_received_total{queue=\"eu-events\"} 1",
            "cvnotify_messages_received_total{queue=\"us-events\"} 2",
            "cvnotify_queue_length{queue=\"us-events\",role=\"poison\"} 3",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert_eq!(text.matches("cvnotify_build_info{").count(), 1, "{text}");
        assert!(text.contains("cvnotify_build_info{version="), "{text}");
        for client in RETRY_CLIENTS {
            let series = format!("cvnotify_retries_total{{client=\"{client}\"}} ");
            assert!(text.contains(&series), "{series} in {text}");
        }
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
