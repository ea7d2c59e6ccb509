//! One typed internal event per outcome of the loop.
//!
//! Each event is an [`InternalEvent`]: its `emit` writes its log line and
//! updates its metrics in one place, so the two cannot drift (Vector's
//! internal events), and for a message's fate also the span's `outcome`
//! ([`Outcome`]). Nothing else in the worker writes an outcome's log line,
//! counter or span outcome: the counters live in [`Recorder`], whose
//! fields only this module reaches, with their label values (`Outcome`,
//! [`PoisonReason`]). The `--once` [`Summary`] is read back
//! from the same counters, so it always agrees with `/metrics`.

use crate::error::error_chain;
mod recorder;

pub(super) use recorder::PoisonReason;
pub use recorder::Recorder;
use recorder::{
    EventTypeLabel, HandlerLabel, HandlerOutcome, Outcome, ProcessedLabel, ReasonLabel,
    StorageErrorLabels,
};

use crate::queue::{Operation, QueueError};
use crate::retry::RetryError;
use crate::secret::redact_text;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// Something the worker did or saw, recorded as one log line and its
/// metrics (Vector's `InternalEvent`).
pub(super) trait InternalEvent {
    /// Writes the log line, the metrics and, for a message's fate, the
    /// span's `outcome`.
    fn emit(self, to: &Recorder);
}

/// Sets the current span's `outcome` (a trace attribute only). A
/// message's events are emitted inside its span.
fn record(outcome: Outcome) {
    crate::telemetry::set_attribute(&tracing::Span::current(), "outcome", outcome.label());
}

/// What the loop did (the `--once` summary), read from the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub received: u64,
    pub handled: u64,
    pub failed: u64,
    pub poisoned: u64,
    pub released: u64,
    pub receive_errors: u64,
}

impl Summary {
    pub(super) fn read(m: &Recorder) -> Self {
        let processed = |outcome| {
            m.processed
                .get(&ProcessedLabel { outcome })
                .map_or(0, |c| c.get())
        };
        Summary {
            received: m.received.get(),
            handled: processed(Outcome::Handled),
            failed: processed(Outcome::Failed),
            poisoned: PoisonReason::ALL
                .into_iter()
                .map(|reason| {
                    m.poisoned
                        .get(&ReasonLabel { reason })
                        .map_or(0, |c| c.get())
                })
                .sum(),
            released: m.released.get(),
            receive_errors: QueueError::KINDS
                .iter()
                .map(|kind| {
                    m.storage_errors
                        .get(&StorageErrorLabels {
                            operation: Operation::Receive.label(),
                            kind,
                        })
                        .map_or(0, |c| c.get())
                })
                .sum(),
        }
    }
}

/// The `--once` summary of several queues: their sum.
impl std::iter::Sum for Summary {
    fn sum<I: Iterator<Item = Summary>>(iter: I) -> Self {
        iter.fold(Summary::default(), |a, b| Summary {
            received: a.received + b.received,
            handled: a.handled + b.handled,
            failed: a.failed + b.failed,
            poisoned: a.poisoned + b.poisoned,
            released: a.released + b.released,
            receive_errors: a.receive_errors + b.receive_errors,
        })
    }
}

fn count_storage_error(m: &Recorder, e: &QueueError) {
    m.storage_errors
        .get_or_create(&StorageErrorLabels {
            operation: e.op().label(),
            kind: e.kind(),
        })
        .inc();
}

fn count_processed(m: &Recorder, outcome: Outcome) {
    m.processed.get_or_create(&ProcessedLabel { outcome }).inc();
}

/// A receive returned messages.
pub(super) struct MessagesReceived {
    pub count: usize,
}

impl InternalEvent for MessagesReceived {
    fn emit(self, m: &Recorder) {
        m.health.receive_ok();
        m.poll_interval.set(0.0);
        m.received.inc_by(self.count as u64);
    }
}

/// A receive found the queue empty; the loop waits `delay`.
pub(super) struct QueueEmpty {
    pub delay: Option<Duration>,
}

impl InternalEvent for QueueEmpty {
    fn emit(self, m: &Recorder) {
        m.health.receive_ok();
        if let Some(delay) = self.delay {
            m.poll_interval.set(delay.as_secs_f64());
            debug!(delay_ms = delay.as_millis() as u64, "The queue is empty");
        }
    }
}

/// A receive failed; the loop waits `retry_in`.
pub(super) struct ReceiveFailed<'a> {
    /// Which queue (several may be served).
    pub queue: &'a str,
    pub error: &'a QueueError,
    pub attempt: u32,
    pub retry_in: Duration,
}

impl InternalEvent for ReceiveFailed<'_> {
    fn emit(self, m: &Recorder) {
        count_storage_error(m, self.error);
        m.poll_interval.set(self.retry_in.as_secs_f64());
        let (e, attempt, queue) = (self.error, self.attempt, self.queue);
        let retry_in_ms = self.retry_in.as_millis() as u64;
        // A rejected credential is usually an expired token being replaced;
        // when it persists (a wrong key, a revoked SAS), an operator must act.
        let persistent_auth = matches!(e, QueueError::Unauthenticated { .. }) && attempt >= 5;
        if e.is_transient() && !persistent_auth {
            warn!(queue, error = %error_chain(e), kind = e.kind(), attempt, retry_in_ms, "Receiving from the queue failed; retrying");
        } else {
            // Denied access or a missing queue: an operator must act.
            // Repeated at the back-off rate, not per poll.
            error!(queue, error = %error_chain(e), kind = e.kind(), attempt, retry_in_ms, "Receiving from the queue failed");
        }
    }
}

/// A message task started or ended.
pub(super) struct InFlight(pub bool);

impl InternalEvent for InFlight {
    fn emit(self, m: &Recorder) {
        if self.0 {
            m.in_flight.inc();
        } else {
            m.in_flight.dec();
        }
    }
}

/// An event was decoded from a message (one per element of an array).
pub(super) struct EventReceived {
    /// Its view's kind: a fixed set.
    pub kind: &'static str,
}

impl InternalEvent for EventReceived {
    fn emit(self, m: &Recorder) {
        m.events
            .get_or_create(&EventTypeLabel {
                event_type: self.kind,
            })
            .inc();
    }
}

/// No handler takes one event of an array; the others' fate is the
/// message's (a message that is one event: [`NoRoute`]).
pub(super) struct EventUnrouted;

impl InternalEvent for EventUnrouted {
    fn emit(self, _: &Recorder) {
        info!("No handler takes this event of the message");
    }
}

/// One handler finished with one delivery.
pub(super) struct HandlerFinished<'a> {
    pub handler: &'a str,
    pub took: Duration,
    pub ok: bool,
}

impl InternalEvent for HandlerFinished<'_> {
    fn emit(self, m: &Recorder) {
        m.handler_duration
            .get_or_create(&HandlerLabel {
                handler: self.handler.to_owned(),
            })
            .observe(self.took.as_secs_f64());
        let outcome = if self.ok { "success" } else { "failure" };
        m.handled
            .get_or_create(&HandlerOutcome {
                handler: self.handler.to_owned(),
                outcome,
            })
            .inc();
        if self.ok {
            debug!(
                handler = self.handler,
                took_ms = self.took.as_millis() as u64,
                "Handler succeeded"
            );
        }
    }
}

/// Every handler succeeded (the message was then deleted).
pub(super) struct MessageHandled {
    pub took: Duration,
}

impl InternalEvent for MessageHandled {
    fn emit(self, m: &Recorder) {
        count_processed(m, Outcome::Handled);
        record(Outcome::Handled);
        info!(took_ms = self.took.as_millis() as u64, "Message handled");
    }
}

/// No handler takes the event; it is deleted.
pub(super) struct NoRoute;

impl InternalEvent for NoRoute {
    fn emit(self, m: &Recorder) {
        count_processed(m, Outcome::Handled);
        record(Outcome::Handled);
        info!("No handler takes this event; deleting it");
    }
}

/// A handler failed.
pub(super) enum MessageFailed<'a> {
    /// It is retried after `retry_in`.
    Retried {
        reason: &'a str,
        retry_in: Duration,
        took: Duration,
    },
    /// That was the last delivery allowed, or retrying cannot help: it is
    /// poisoned next.
    Final,
}

impl InternalEvent for MessageFailed<'_> {
    fn emit(self, m: &Recorder) {
        count_processed(m, Outcome::Failed);
        record(Outcome::Failed);
        if let MessageFailed::Retried {
            reason,
            retry_in,
            took,
        } = self
        {
            warn!(error = %redact_text(reason), retry_in_s = retry_in.as_secs(), took_ms = took.as_millis() as u64, "Handling failed; the message will be retried");
        }
    }
}

/// A message was deleted.
pub(super) struct Deleted;

impl InternalEvent for Deleted {
    fn emit(self, m: &Recorder) {
        m.health.storage_ok();
        m.deleted.inc();
    }
}

/// Deleting failed.
pub(super) struct DeleteFailed<'a> {
    /// Every attempt's error was counted as it happened
    /// ([`StorageCallFailed`]); each retry by the retry runner.
    pub error: &'a RetryError<QueueError>,
}

impl InternalEvent for DeleteFailed<'_> {
    fn emit(self, _: &Recorder) {
        let e = self.error;
        if e.last().is_some_and(QueueError::is_message_gone) {
            info!(reason = %error_chain(e), "The message was already gone when deleting it");
        } else {
            let kind = e.last().map(QueueError::kind);
            warn!(error = %error_chain(e), kind, "Deleting the message failed; it will be delivered again after its visibility timeout");
        }
    }
}

/// One storage call of the settle failed (the delete, between its
/// retries): counted by operation and kind; the outcome of the whole
/// series is its own event.
pub(super) struct StorageCallFailed<'a> {
    pub error: &'a QueueError,
}

impl InternalEvent for StorageCallFailed<'_> {
    fn emit(self, m: &Recorder) {
        count_storage_error(m, self.error);
    }
}

/// The message's visibility was extended while a handler runs.
pub(super) struct Renewed;

impl InternalEvent for Renewed {
    fn emit(self, _: &Recorder) {
        debug!("Extended the message's visibility");
    }
}

/// Extending the visibility failed; the next renewal tries again.
pub(super) struct RenewFailed<'a> {
    pub error: &'a QueueError,
}

impl InternalEvent for RenewFailed<'_> {
    fn emit(self, m: &Recorder) {
        if self.error.is_message_gone() {
            warn!(error = %error_chain(self.error), "Lost the message while a handler runs; another consumer may handle it too");
        } else {
            count_storage_error(m, self.error);
            warn!(error = %error_chain(self.error), kind = self.error.kind(), "Extending the message's visibility failed; will retry");
        }
    }
}

/// The failure count could not be written into the message (too large
/// once wrapped); its failures are bounded by
/// `max_deliveries_without_outcome` instead.
pub(super) struct FailureNotRecorded<'a> {
    pub error: &'a QueueError,
}

impl InternalEvent for FailureNotRecorded<'_> {
    fn emit(self, m: &Recorder) {
        count_storage_error(m, self.error);
        warn!(error = %error_chain(self.error), "Could not record the failure in the message; it will be retried until max_deliveries_without_outcome");
    }
}

/// The envelope did not fit the poison queue; the original body was sent.
pub(super) struct PoisonEnvelopeTooLarge<'a> {
    pub error: &'a QueueError,
}

impl InternalEvent for PoisonEnvelopeTooLarge<'_> {
    fn emit(self, m: &Recorder) {
        count_storage_error(m, self.error);
        warn!(error = %error_chain(self.error), "The poison envelope was refused; sending the original body verbatim");
    }
}

/// Setting a failed message's retry delay failed.
pub(super) struct RetryDelayFailed<'a> {
    pub error: &'a QueueError,
}

impl InternalEvent for RetryDelayFailed<'_> {
    fn emit(self, m: &Recorder) {
        count_storage_error(m, self.error);
        // It reappears after the visibility timeout instead.
        warn!(error = %error_chain(self.error), "Could not set the retry delay");
    }
}

/// Update Message is denied: a failed message's failure is not recorded
/// and it reappears after its visibility timeout, not its retry delay.
pub(super) struct RetryDelaySkipped;

impl InternalEvent for RetryDelaySkipped {
    fn emit(self, _: &Recorder) {
        debug!("Update Message is denied; the message reappears after its visibility timeout");
    }
}

/// Update Message is denied: the loop works without it from now on.
/// `first` is true only the first time.
pub(super) struct UpdateDenied<'a> {
    pub error: &'a QueueError,
    pub first: bool,
}

impl InternalEvent for UpdateDenied<'_> {
    fn emit(self, m: &Recorder) {
        count_storage_error(m, self.error);
        if self.first {
            warn!(
                error = %error_chain(self.error),
                "Update Message is denied; continuing without visibility renewal and retry delays: a failed message reappears after visibility_timeout, and a handler running longer than that may see its message delivered again. Grant 'Storage Queue Data Contributor' on the queue to fix this"
            );
        }
    }
}

/// A message was made visible again at shutdown.
pub(super) struct Released;

impl InternalEvent for Released {
    fn emit(self, m: &Recorder) {
        m.released.inc();
        record(Outcome::Released);
        info!("Released the message back to the queue");
    }
}

/// Releasing failed; the message reappears after its visibility timeout.
pub(super) struct ReleaseFailed<'a> {
    pub error: &'a QueueError,
}

impl InternalEvent for ReleaseFailed<'_> {
    fn emit(self, _: &Recorder) {
        // Given back all the same, only later.
        record(Outcome::Released);
        if !self.error.is_message_gone() {
            warn!(error = %error_chain(self.error), "Could not release the message; it reappears after its visibility timeout");
        }
    }
}

/// Update Message is denied, so a message cannot be released: it
/// reappears after its visibility timeout.
pub(super) struct ReleaseSkipped;

impl InternalEvent for ReleaseSkipped {
    fn emit(self, _: &Recorder) {
        record(Outcome::Released);
    }
}

/// A message was copied to the poison queue (and the original deleted).
pub(super) struct Poisoned<'a> {
    pub reason: PoisonReason,
    pub detail: &'a str,
    pub poison_queue: &'a str,
}

impl InternalEvent for Poisoned<'_> {
    fn emit(self, m: &Recorder) {
        m.poisoned
            .get_or_create(&ReasonLabel {
                reason: self.reason,
            })
            .inc();
        record(Outcome::Poisoned);
        error!(
            reason = %redact_text(self.detail),
            poison_queue = self.poison_queue,
            "Moved the message to the poison queue"
        );
    }
}

/// Copying to the poison queue failed; the message stays in the queue.
pub(super) struct PoisonFailed<'a> {
    pub error: &'a QueueError,
    pub detail: &'a str,
    pub retry_in: Duration,
}

impl InternalEvent for PoisonFailed<'_> {
    fn emit(self, m: &Recorder) {
        count_storage_error(m, self.error);
        error!(error = %error_chain(self.error), reason = %redact_text(self.detail), retry_in_s = self.retry_in.as_secs(), "Could not move the message to the poison queue; it stays in the queue");
    }
}

/// The poison queue cannot be created (it may well exist).
pub(super) struct PoisonCreateDenied<'a> {
    pub error: &'a QueueError,
    pub poison_queue: &'a str,
}

impl InternalEvent for PoisonCreateDenied<'_> {
    fn emit(self, _: &Recorder) {
        warn!(error = %error_chain(self.error), poison_queue = self.poison_queue, "Cannot create the poison queue; assuming it exists");
    }
}

/// The loop over one queue stopped.
pub(super) struct Stopped<'a>(pub &'a str, pub Summary);

impl InternalEvent for Stopped<'_> {
    fn emit(self, _: &Recorder) {
        let s = &self.1;
        info!(
            queue = self.0,
            received = s.received,
            handled = s.handled,
            failed = s.failed,
            poisoned = s.poisoned,
            released = s.released,
            "Stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Register;

    #[test]
    fn summary_reads_the_counters_events_write() {
        let m = Recorder::default();
        MessagesReceived { count: 3 }.emit(&m);
        MessageHandled {
            took: Duration::ZERO,
        }
        .emit(&m);
        NoRoute.emit(&m);
        MessageFailed::Final.emit(&m);
        Poisoned {
            reason: PoisonReason::MaxDequeueCount,
            detail: "x",
            poison_queue: "p",
        }
        .emit(&m);
        Poisoned {
            reason: PoisonReason::DecodeError,
            detail: "x",
            poison_queue: "p",
        }
        .emit(&m);
        Released.emit(&m);
        let e = QueueError::Transient {
            op: Operation::Receive,
            source: crate::queue::Cause::Malformed("x"),
        };
        ReceiveFailed {
            queue: "q",
            error: &e,
            attempt: 1,
            retry_in: Duration::from_secs(1),
        }
        .emit(&m);
        HandlerFinished {
            handler: "log#0",
            took: Duration::ZERO,
            ok: true,
        }
        .emit(&m);
        for kind in ["export", "blob_created", "blob_created"] {
            EventReceived { kind }.emit(&m);
        }
        assert_eq!(
            Summary::read(&m),
            Summary {
                received: 3,
                handled: 2,
                failed: 1,
                poisoned: 2,
                released: 1,
                receive_errors: 1,
            }
        );
        let mut registry = prometheus_client::registry::Registry::with_prefix("cvnotify");
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for want in [
            "cvnotify_messages_received_total 3",
            "cvnotify_messages_processed_total{outcome=\"handled\"} 2",
            "cvnotify_messages_processed_total{outcome=\"failed\"} 1",
            "cvnotify_messages_poisoned_total{reason=\"decode_error\"} 1",
            "cvnotify_messages_handled_total{handler=\"log#0\",outcome=\"success\"} 1",
            "cvnotify_events_received_total{event_type=\"export\"} 1",
            "cvnotify_events_received_total{event_type=\"blob_created\"} 2",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }
}
