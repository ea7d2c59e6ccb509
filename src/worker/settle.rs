//! Settling a message: the one place that maps an [`Outcome`] to delete,
//! release, retry delay or poison queue.
//!
//! - Handled: deleted (a message already gone is not an error: someone else
//!   owns it now).
//! - Failed before `max_dequeue_count` failures: the failure count is
//!   written into the message (cvnotify's envelope around the original
//!   body) and it is hidden for the retry delay. Counting failures in the
//!   message, rather than taking the queue's dequeue count, is what keeps
//!   shutdowns and restarts from counting as failures.
//! - Failed for the `max_dequeue_count`-th time, or permanently: poisoned.
//! - Aborted at shutdown: made visible again at once, unchanged.
//!
//! The poison queue gets its copy first (never expiring); the original is
//! deleted only once the copy exists, so a message is never lost between
//! the two.

use super::events::{
    DeleteFailed, Deleted, FailureNotRecorded, InternalEvent, MessageFailed, MessageHandled,
    PoisonCreateDenied, PoisonEnvelopeTooLarge, PoisonFailed, PoisonReason, Poisoned,
    ReleaseFailed, ReleaseSkipped, Released, RetryDelayFailed, RetryDelaySkipped,
};
use super::shared::Shared;
use crate::config::PoisonFormat;
use crate::envelope::Envelope;
use crate::queue::{Expiry, QueueError, ReceivedMessage};
use crate::retry::Backoff;
use crate::secret::redact_text;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::sleep;

/// What cvnotify knows about a message beyond the queue's view of it.
pub(super) struct Tracked {
    /// The original body (unwrapped from cvnotify's envelope).
    pub body: String,
    /// Deliveries whose handlers failed, before this one.
    pub failures: u32,
    /// When cvnotify first saw it.
    pub first_delivery: OffsetDateTime,
}

/// Why the handlers of one delivery failed.
pub(super) struct Failure {
    pub reason: String,
    /// The failing handlers' names.
    pub handlers: String,
    /// At least one said retrying cannot help.
    pub permanent: bool,
}

/// What became of one message's handlers.
pub(super) enum Outcome {
    Handled,
    Failed(Failure),
    Aborted,
}

/// Attempts at deleting a handled message before leaving it to reappear.
const DELETE_ATTEMPTS: u32 = 3;

/// The longest failure reason kept in the message between deliveries.
const MAX_RECORDED_REASON: usize = 1024;

impl Shared {
    /// Applies `outcome` to message `m`, whose current pop receipt is
    /// `receipt` (renewals replace it), after handlers ran for `took`.
    pub(super) async fn settle(
        &self,
        m: &ReceivedMessage,
        tracked: &Tracked,
        receipt: &str,
        outcome: Outcome,
        took: Duration,
    ) {
        let s = &self.settings;
        let failure = match outcome {
            Outcome::Handled => {
                self.delete(&m.id, receipt).await;
                MessageHandled { took }.emit(&self.metrics);
                return;
            }
            Outcome::Aborted => {
                return self.release(&m.id, receipt).await;
            }
            Outcome::Failed(f) => f,
        };
        // Without Update Message nothing can be recorded in the message:
        // then every earlier delivery counts as a failure, as the queue's
        // dequeue count says.
        let failures = if self.update_is_denied() {
            tracked.failures.max(m.dequeue_count.saturating_sub(1))
        } else {
            tracked.failures
        } + 1;
        if failure.permanent || failures >= s.max_dequeue_count {
            MessageFailed::Final.emit(&self.metrics);
            let (reason, detail) = if failure.permanent {
                (
                    PoisonReason::PermanentFailure,
                    format!("permanent failure: {}", failure.reason),
                )
            } else {
                let restarts = m.dequeue_count.saturating_sub(failures);
                let restarts = if restarts > 0 {
                    format!(
                        " (delivered {} times, {restarts} ending without an outcome)",
                        m.dequeue_count
                    )
                } else {
                    String::new()
                };
                (
                    PoisonReason::MaxDequeueCount,
                    format!(
                        "failed on delivery {failures} of max_dequeue_count {}{restarts}: {}",
                        s.max_dequeue_count, failure.reason
                    ),
                )
            };
            let failed = Tracked {
                body: tracked.body.clone(),
                failures,
                first_delivery: tracked.first_delivery,
            };
            self.poison(
                m,
                &failed,
                receipt,
                reason,
                &detail,
                Some(&failure.handlers),
            )
            .await;
            return;
        }
        let delay = s.retry_delay(failures);
        MessageFailed::Retried {
            reason: &failure.reason,
            retry_in: delay,
            took,
        }
        .emit(&self.metrics);
        if self.update_is_denied() {
            RetryDelaySkipped.emit(&self.metrics);
            return;
        }
        let mut envelope = self.envelope(m, tracked, failures);
        envelope.reason = Some(
            crate::limit::text(&redact_text(&failure.reason), MAX_RECORDED_REASON).into_owned(),
        );
        envelope.handler = Some(failure.handlers);
        match self
            .queue
            .update_body(&m.id, receipt, delay, &envelope.to_text())
            .await
        {
            Ok(_) => {}
            Err(error @ QueueError::Forbidden { .. }) => self.update_forbidden(&error),
            Err(error) if error.is_message_gone() || error.is_transient() => {
                RetryDelayFailed { error: &error }.emit(&self.metrics)
            }
            // Most likely too large once wrapped: keep the delay at least.
            Err(error) => {
                FailureNotRecorded { error: &error }.emit(&self.metrics);
                if let Err(error) = self.queue.update_visibility(&m.id, receipt, delay).await {
                    RetryDelayFailed { error: &error }.emit(&self.metrics);
                }
            }
        }
    }

    /// cvnotify's envelope of `m` after `failures` failures.
    fn envelope(&self, m: &ReceivedMessage, tracked: &Tracked, failures: u32) -> Envelope {
        let mut e = Envelope::new(&tracked.body);
        e.failures = failures;
        e.dequeue_count = m.dequeue_count;
        e.first_delivery = Some(tracked.first_delivery);
        e.last_delivery = Some(OffsetDateTime::now_utc());
        e.message_id = Some(m.id.clone());
        e
    }

    /// Deletes a message, retrying transient errors a few times.
    pub(super) async fn delete(&self, id: &str, receipt: &str) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
        for attempt in 1..=DELETE_ATTEMPTS {
            match self.queue.delete(id, receipt).await {
                Ok(()) => {
                    Deleted.emit(&self.metrics);
                    return;
                }
                Err(error) => {
                    let retrying = error.is_transient()
                        && !error.is_message_gone()
                        && attempt < DELETE_ATTEMPTS;
                    DeleteFailed {
                        error: &error,
                        attempt,
                        retrying,
                    }
                    .emit(&self.metrics);
                    if !retrying {
                        return;
                    }
                    sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Makes a message visible again at once (shutdown).
    pub(super) async fn release(&self, id: &str, receipt: &str) {
        if self.update_is_denied() {
            return ReleaseSkipped.emit(&self.metrics);
        }
        match self
            .queue
            .update_visibility(id, receipt, Duration::ZERO)
            .await
        {
            Ok(_) => Released.emit(&self.metrics),
            Err(error) => ReleaseFailed { error: &error }.emit(&self.metrics),
        }
    }

    /// Copies the message to the poison queue (its original body, or the
    /// envelope with `poison_format = "envelope"`), never to expire, then
    /// deletes it. If the copy fails the original stays (and is retried
    /// later).
    pub(super) async fn poison(
        &self,
        m: &ReceivedMessage,
        tracked: &Tracked,
        receipt: &str,
        reason: PoisonReason,
        detail: &str,
        handler: Option<&str>,
    ) {
        // The reason goes into the log line and the envelope: bounded, so
        // the envelope has room for it beside the body.
        let detail = &crate::limit::text(detail, crate::limit::MAX_TEXT);
        let ready = self
            .poison_ready
            .get_or_try_init(|| async {
                match self.poison.create_if_missing().await {
                    // A SAS or role may allow sending but not creating
                    // queues; the poison queue may well exist already.
                    Err(error @ QueueError::Forbidden { .. }) => {
                        PoisonCreateDenied {
                            error: &error,
                            poison_queue: self.poison.name(),
                        }
                        .emit(&self.metrics);
                        Ok(())
                    }
                    other => other,
                }
            })
            .await;
        let sent = match ready {
            Ok(()) => self.send_poison(m, tracked, detail, handler).await,
            Err(e) => Err(e.clone()),
        };
        match sent {
            Ok(()) => {
                self.delete(&m.id, receipt).await;
                Poisoned {
                    reason,
                    detail,
                    poison_queue: self.poison.name(),
                }
                .emit(&self.metrics);
            }
            Err(error) => {
                let retry_in = self.settings.retry_delay(m.dequeue_count);
                PoisonFailed {
                    error: &error,
                    detail,
                    retry_in,
                }
                .emit(&self.metrics);
                let _ = self.queue.update_visibility(&m.id, receipt, retry_in).await;
            }
        }
    }

    async fn send_poison(
        &self,
        m: &ReceivedMessage,
        tracked: &Tracked,
        detail: &str,
        handler: Option<&str>,
    ) -> Result<(), QueueError> {
        if self.settings.poison_format == PoisonFormat::Envelope {
            let mut envelope = self.envelope(m, tracked, tracked.failures);
            envelope.reason = Some(redact_text(detail));
            envelope.handler = handler.map(str::to_owned);
            match self.poison.send(&envelope.to_text(), Expiry::Never).await {
                Ok(_) => return Ok(()),
                // Too large once wrapped (the limit is 64 KiB): the body
                // matters more than the reason, which is in the log too.
                Err(error @ QueueError::Other { .. }) => {
                    PoisonEnvelopeTooLarge { error: &error }.emit(&self.metrics)
                }
                Err(e) => return Err(e),
            }
        }
        self.poison
            .send(&tracked.body, Expiry::Never)
            .await
            .map(|_| ())
    }
}
