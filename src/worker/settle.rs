//! Settling a message: the one place that maps an [`Outcome`] to delete,
//! release, retry delay or poison queue.
//!
//! - Handled: deleted (a message already gone is not an error: someone else
//!   owns it now).
//! - Failed before `max_dequeue_count`: hidden for the retry delay.
//! - Failed on the last allowed delivery: poisoned.
//! - Aborted at shutdown: made visible again at once.
//!
//! The poison queue gets a verbatim copy first; the original is deleted only
//! once the copy exists, so a message is never lost between the two.

use super::events::{
    DeleteFailed, Deleted, MessageFailed, MessageHandled, PoisonCreateDenied, PoisonFailed,
    PoisonReason, Poisoned, ReleaseFailed, Released, RetryDelayFailed,
};
use super::shared::Shared;
use crate::queue::{QueueError, ReceivedMessage};
use crate::retry::Backoff;
use std::time::Duration;
use tokio::time::sleep;
use tracing::debug;

/// What became of one message's handlers.
pub(super) enum Outcome {
    Handled,
    Failed(String),
    Aborted,
}

/// Attempts at deleting a handled message before leaving it to reappear.
const DELETE_ATTEMPTS: u32 = 3;

impl Shared {
    /// Applies `outcome` to message `m`, whose current pop receipt is
    /// `receipt` (renewals replace it), after handlers ran for `took`.
    pub(super) async fn settle(
        &self,
        m: &ReceivedMessage,
        receipt: &str,
        outcome: Outcome,
        took: Duration,
    ) {
        let s = &self.settings;
        match outcome {
            Outcome::Handled => {
                self.delete(&m.id, receipt).await;
                MessageHandled { took }.emit(&self.metrics);
            }
            Outcome::Aborted => self.release(&m.id, receipt).await,
            Outcome::Failed(reason) if m.dequeue_count >= s.max_dequeue_count => {
                MessageFailed {
                    reason: &reason,
                    retry_in: None,
                    took,
                }
                .emit(&self.metrics);
                let reason = format!(
                    "failed on delivery {} of max_dequeue_count {}: {reason}",
                    m.dequeue_count, s.max_dequeue_count
                );
                self.poison(m, receipt, PoisonReason::MaxDequeueCount, &reason)
                    .await;
            }
            Outcome::Failed(reason) => {
                let delay = s.retry_delay(m.dequeue_count);
                MessageFailed {
                    reason: &reason,
                    retry_in: Some(delay),
                    took,
                }
                .emit(&self.metrics);
                if self.update_is_denied() {
                    debug!(
                        "Update Message is denied; the message reappears after its visibility timeout"
                    );
                } else if let Err(error) = self.queue.update_visibility(&m.id, receipt, delay).await
                {
                    if let QueueError::Forbidden { .. } = error {
                        self.update_forbidden(&error);
                    } else {
                        RetryDelayFailed { error: &error }.emit(&self.metrics);
                    }
                }
            }
        }
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
            return;
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

    /// Copies the message verbatim to the poison queue, then deletes it. If
    /// the copy fails the original stays (and is retried later).
    pub(super) async fn poison(
        &self,
        m: &ReceivedMessage,
        receipt: &str,
        reason: PoisonReason,
        detail: &str,
    ) {
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
            Ok(()) => self.poison.send(&m.body).await.map(|_| ()),
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
}
