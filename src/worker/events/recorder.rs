//! [`Recorder`]: the worker's counters, and the queue's health that
//! successful calls renew; the label values of its counters.
//!
//! Its fields are visible to `events` only (`pub(super)`), so the compiler
//! holds the rule that an outcome's counter is written by its internal
//! event and by nothing else. Label values are fixed sets (handler names
//! from the config, operation and error kinds, outcomes, poison reasons,
//! event kinds), never anything from a message (an unknown type is
//! `unknown`, not its name), so nothing secret or unbounded reaches a
//! label.

use crate::metrics::{Metrics, Register};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// What became of a message: the `outcome` of its span and, for handled
/// and failed, the label of `cvnotify_messages_processed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Outcome {
    /// Every handler succeeded, or none was routed.
    Handled,
    /// A handler failed (it is retried or poisoned next).
    Failed,
    /// Moved to the poison queue.
    Poisoned,
    /// Handed back to the queue at shutdown.
    Released,
}

impl Outcome {
    pub(super) fn label(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Failed => "failed",
            Outcome::Poisoned => "poisoned",
            Outcome::Released => "released",
        }
    }
}

/// Why a message went to the poison queue (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(in crate::worker) enum PoisonReason {
    /// The body cannot be decoded.
    DecodeError,
    /// It failed on its `max_dequeue_count`-th delivery.
    MaxDequeueCount,
    /// Delivered more often than allowed without an outcome (the daemon
    /// stopped or crashed while handling it).
    DequeueCountExceeded,
    /// A handler said retrying cannot help.
    PermanentFailure,
}

impl PoisonReason {
    pub(super) const ALL: [PoisonReason; 4] = [
        PoisonReason::DecodeError,
        PoisonReason::MaxDequeueCount,
        PoisonReason::DequeueCountExceeded,
        PoisonReason::PermanentFailure,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            PoisonReason::DecodeError => "decode_error",
            PoisonReason::MaxDequeueCount => "max_dequeue_count",
            PoisonReason::DequeueCountExceeded => "dequeue_count_exceeded",
            PoisonReason::PermanentFailure => "permanent_failure",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HandlerOutcome {
    pub(super) handler: String,
    /// `success` or `failure`.
    pub(super) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProcessedLabel {
    /// `handled` (every handler succeeded, or none was routed) or `failed`.
    pub(super) outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EventTypeLabel {
    /// The event's kind (`export`, `blob_created`, `unknown`).
    pub(super) event_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HandlerLabel {
    pub(super) handler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    pub(super) reason: PoisonReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StorageErrorLabels {
    pub(super) operation: &'static str,
    pub(super) kind: &'static str,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.label())
    }
}

impl EncodeLabelValue for PoisonReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.label())
    }
}

/// Where the worker of one queue records: its counters (written only by
/// its internal events) and the queue's health (read by `/readyz`).
pub struct Recorder {
    /// The queue's health: successful storage calls renew it.
    pub(super) health: Arc<Metrics>,
    pub(super) received: Counter,
    pub(super) events: Family<EventTypeLabel, Counter>,
    pub(super) handled: Family<HandlerOutcome, Counter>,
    pub(super) processed: Family<ProcessedLabel, Counter>,
    pub(super) deleted: Counter,
    pub(super) released: Counter,
    pub(super) poisoned: Family<ReasonLabel, Counter>,
    pub(super) handler_duration: Family<HandlerLabel, Histogram>,
    pub(super) storage_errors: Family<StorageErrorLabels, Counter>,
    pub(super) in_flight: Gauge,
    pub(super) poll_interval: Gauge<f64, AtomicU64>,
}

impl Recorder {
    /// Counters for one queue, renewing `health`.
    pub fn new(health: Arc<Metrics>) -> Self {
        Recorder {
            health,
            received: Counter::default(),
            events: Family::default(),
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
        }
    }
}

/// Counters nobody registers, with health nobody reads (unit tests).
impl Default for Recorder {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Register for Recorder {
    fn register(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "messages_received",
            "Messages received from the queue",
            m.received.clone(),
        );
        registry.register(
            "events_received",
            "Events decoded from received messages (one per element of an array), by kind",
            m.events.clone(),
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
    }
}
