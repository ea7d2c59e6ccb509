//! Applying a message's fate: [`Settler::apply`] carries out the
//! [`Disposition`] that `disposition` decided, and is the one place a
//! message is deleted, released, hidden for a retry or poisoned. The
//! [`Settler`] also extends a message's visibility while its handlers run:
//! it is the only code that changes a received message in the queue.
//!
//! The poison queue gets its copy first (never expiring); the original is
//! deleted only once the copy exists, so a message is never lost between
//! the two.

use super::disposition::{Disposition, Facts, Poison, Retry};
use super::events::{
    DeleteFailed, Deleted, FailureNotRecorded, InternalEvent, MessageFailed, MessageHandled,
    NoRoute, PoisonCreateDenied, PoisonEnvelopeTooLarge, PoisonFailed, Poisoned, Recorder,
    ReleaseFailed, ReleaseSkipped, Released, RenewFailed, Renewed, RetryDelayFailed,
    RetryDelaySkipped, StorageCallFailed, UpdateDenied,
};
use crate::config::PoisonFormat;
use crate::envelope::Envelope;
use crate::queue::{Expiry, Queue, QueueError, ReceivedMessage};
use crate::retry::{self, Attempt, Backoff, Client, Policy};
use crate::secret::redact_text;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::OnceCell;

/// A received message as the worker tracks it: the queue's view, and what
/// cvnotify recorded in it (its retry envelope, unwrapped).
pub(super) struct Message {
    pub id: String,
    /// The latest pop receipt: visibility renewals replace it.
    pub receipt: String,
    /// 1 on the first delivery.
    pub dequeue_count: u32,
    pub inserted_at: Option<OffsetDateTime>,
    /// The original body (unwrapped from cvnotify's envelope).
    pub body: String,
    /// Deliveries whose handlers failed, before this one.
    pub failures: u32,
    /// When cvnotify first saw it.
    pub first_delivery: OffsetDateTime,
}

impl Message {
    /// Takes `m` apart (no copy of its body unless it is an envelope).
    pub fn open(m: ReceivedMessage) -> Self {
        let now = OffsetDateTime::now_utc();
        let (body, failures, first_delivery) = match Envelope::open(&m.body) {
            Some(e) => (e.body, e.failures, e.first_delivery.unwrap_or(now)),
            None => (m.body, 0, now),
        };
        Message {
            id: m.id,
            receipt: m.pop_receipt,
            dequeue_count: m.dequeue_count,
            inserted_at: m.inserted_at,
            body,
            failures,
            first_delivery,
        }
    }

    /// What `disposition` needs to know about it.
    pub fn facts(&self, update_denied: bool) -> Facts {
        Facts {
            dequeue_count: self.dequeue_count,
            failures: self.failures,
            update_denied,
        }
    }

    /// cvnotify's envelope of it after `failures` failures.
    fn envelope(&self, failures: u32) -> Envelope {
        let mut e = Envelope::new(&self.body);
        e.failures = failures;
        e.dequeue_count = self.dequeue_count;
        e.first_delivery = Some(self.first_delivery);
        e.last_delivery = Some(OffsetDateTime::now_utc());
        e.message_id = Some(self.id.clone());
        e
    }
}

/// Attempts at deleting a handled message before leaving it to reappear.
const DELETE_ATTEMPTS: u32 = 3;

/// The longest failure reason kept in the message between deliveries.
const MAX_RECORDED_REASON: usize = 1024;

/// Every change to a received message in one queue: renewal while its
/// handlers run, then its [`Disposition`].
pub(super) struct Settler {
    queue: Arc<dyn Queue>,
    poison: Arc<dyn Queue>,
    /// The poison queue was created (or found to exist) once.
    poison_ready: OnceCell<()>,
    poison_format: PoisonFormat,
    /// Update Message was denied (an identity with only the Message
    /// Processor role): renewal and retry delays are skipped from then on.
    update_denied: AtomicBool,
    metrics: Arc<Recorder>,
}

impl Settler {
    pub fn new(
        queue: Arc<dyn Queue>,
        poison: Arc<dyn Queue>,
        poison_format: PoisonFormat,
        metrics: Arc<Recorder>,
    ) -> Self {
        Settler {
            queue,
            poison,
            poison_ready: OnceCell::new(),
            poison_format,
            update_denied: AtomicBool::new(false),
            metrics,
        }
    }

    /// The queue its messages come from.
    pub fn queue(&self) -> &dyn Queue {
        self.queue.as_ref()
    }

    pub fn update_is_denied(&self) -> bool {
        self.update_denied.load(Ordering::Relaxed)
    }

    /// Update Message is forbidden: say so once, then work without it.
    fn update_forbidden(&self, error: &QueueError) {
        let first = !self.update_denied.swap(true, Ordering::Relaxed);
        UpdateDenied { error, first }.emit(&self.metrics);
    }

    /// Carries out `d` on `m`.
    pub async fn apply(&self, m: &Message, d: Disposition) {
        match d {
            Disposition::Delete { handled_in } => {
                if handled_in.is_none() {
                    NoRoute.emit(&self.metrics);
                }
                self.delete(m).await;
                // After the delete: operators and tests read "Message
                // handled" as the proof that it was deleted.
                if let Some(took) = handled_in {
                    MessageHandled { took }.emit(&self.metrics);
                }
            }
            Disposition::Release => self.release(m).await,
            Disposition::Retry(r) => self.retry(m, r).await,
            Disposition::Poison(p) => self.poison(m, p).await,
        }
    }

    /// Hides `m` for another `visibility` while its handlers run. Returns
    /// false when the message is gone (someone else received it).
    pub async fn renew(&self, m: &mut Message, visibility: Duration) -> bool {
        match self
            .queue
            .update_visibility(&m.id, &m.receipt, visibility)
            .await
        {
            Ok(r) => {
                m.receipt = r;
                Renewed.emit(&self.metrics);
            }
            Err(error @ QueueError::Forbidden { .. }) => self.update_forbidden(&error),
            Err(error) => {
                RenewFailed { error: &error }.emit(&self.metrics);
                return !error.is_message_gone();
            }
        }
        true
    }

    /// Deletes `m`, retrying transient errors a few times on the retry
    /// runner (each retry logged and counted in
    /// `cvnotify_retries_total{client="storage"}`); a message already gone
    /// is not retried: someone else owns it now.
    async fn delete(&self, m: &Message) {
        // 0.5 s, then 1 s between the attempts.
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
        let policy = Policy::new(Client::Storage, DELETE_ATTEMPTS, backoff);
        let deleted = retry::run(&policy, "delete", || async {
            match self.queue.delete(&m.id, &m.receipt).await {
                Ok(()) => Attempt::Done(()),
                Err(error) => {
                    StorageCallFailed { error: &error }.emit(&self.metrics);
                    if error.is_transient() && !error.is_message_gone() {
                        Attempt::Retry { error, after: None }
                    } else {
                        Attempt::Permanent(error)
                    }
                }
            }
        })
        .await;
        match deleted {
            Ok(()) => Deleted.emit(&self.metrics),
            Err(error) => DeleteFailed { error: &error }.emit(&self.metrics),
        }
    }

    /// Makes `m` visible again at once, unchanged.
    async fn release(&self, m: &Message) {
        if self.update_is_denied() {
            return ReleaseSkipped.emit(&self.metrics);
        }
        match self
            .queue
            .update_visibility(&m.id, &m.receipt, Duration::ZERO)
            .await
        {
            Ok(_) => Released.emit(&self.metrics),
            Err(error) => ReleaseFailed { error: &error }.emit(&self.metrics),
        }
    }

    /// Records the failure in `m` (cvnotify's envelope) and hides it for
    /// the retry delay; when the envelope cannot be written, the delay at
    /// least.
    async fn retry(&self, m: &Message, r: Retry) {
        MessageFailed::Retried {
            reason: &r.failure.reason,
            retry_in: r.delay,
            took: r.took,
        }
        .emit(&self.metrics);
        if !r.record {
            return RetryDelaySkipped.emit(&self.metrics);
        }
        let mut envelope = m.envelope(r.failures);
        envelope.reason = Some(
            crate::limit::text(&redact_text(&r.failure.reason), MAX_RECORDED_REASON).into_owned(),
        );
        envelope.handler = Some(r.failure.handlers);
        match self
            .queue
            .update_body(&m.id, &m.receipt, r.delay, &envelope.to_text())
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
                if let Err(error) = self
                    .queue
                    .update_visibility(&m.id, &m.receipt, r.delay)
                    .await
                {
                    RetryDelayFailed { error: &error }.emit(&self.metrics);
                }
            }
        }
    }

    /// Copies `m` to the poison queue (its original body, or the envelope
    /// with `poison_format = "envelope"`), never to expire, then deletes
    /// it. If the copy fails the original stays, hidden for `p.retry_in`
    /// (and is poisoned on a later delivery).
    async fn poison(&self, m: &Message, p: Poison) {
        if p.handlers.is_some() {
            MessageFailed::Final.emit(&self.metrics);
        }
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
            Ok(()) => self.send_poison(m, &p).await,
            Err(e) => Err(e.clone()),
        };
        match sent {
            Ok(()) => {
                self.delete(m).await;
                Poisoned {
                    reason: p.reason,
                    detail: &p.detail,
                    poison_queue: self.poison.name(),
                }
                .emit(&self.metrics);
            }
            Err(error) => {
                PoisonFailed {
                    error: &error,
                    detail: &p.detail,
                    retry_in: p.retry_in,
                }
                .emit(&self.metrics);
                let _ = self
                    .queue
                    .update_visibility(&m.id, &m.receipt, p.retry_in)
                    .await;
            }
        }
    }

    async fn send_poison(&self, m: &Message, p: &Poison) -> Result<(), QueueError> {
        if self.poison_format == PoisonFormat::Envelope {
            let mut envelope = m.envelope(p.failures);
            envelope.reason = Some(redact_text(&p.detail));
            envelope.handler = p.handlers.clone();
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
        self.poison.send(&m.body, Expiry::Never).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::memory::MemoryQueue;
    use crate::queue::{Cause, Operation};

    fn reset() -> QueueError {
        QueueError::Transient {
            op: Operation::Delete,
            source: Cause::client(std::io::Error::other("connection reset")),
        }
    }

    /// Sends one message, receives it, and applies `Delete` to it with
    /// the deletes failing with `errors` first. Returns the queue, the
    /// number of delete calls and how much `retries_total{client="storage"}`
    /// grew.
    async fn delete_with(errors: Vec<QueueError>) -> (Arc<MemoryQueue>, u64, u64) {
        let queue = Arc::new(MemoryQueue::new("q"));
        queue.send("{}", Expiry::ServiceDefault).await.unwrap();
        let received = queue.receive(1, Duration::from_secs(30)).await.unwrap();
        queue.fail_deletes(errors);
        let settler = Settler::new(
            queue.clone(),
            Arc::new(MemoryQueue::new("q-poison")),
            PoisonFormat::Verbatim,
            Arc::default(),
        );
        let retries = crate::metrics::retries().get_or_create(&crate::metrics::ClientLabel {
            client: Client::Storage.label(),
        });
        let before = retries.get();
        let m = Message::open(received.into_iter().next().unwrap());
        settler
            .apply(&m, Disposition::Delete { handled_in: None })
            .await;
        let deletes = queue.delete_calls.load(Ordering::Relaxed);
        (queue, deletes, retries.get() - before)
    }

    #[tokio::test(start_paused = true)]
    async fn a_delete_that_fails_transiently_is_retried_on_the_runner_and_counted() {
        let (queue, deletes, retries) = delete_with(vec![reset(), reset()]).await;
        assert_eq!(deletes, 3, "two failed attempts, then the delete");
        assert!(queue.is_empty(), "deleted on the third attempt");
        assert_eq!(retries, 2, "each retry counted under client=\"storage\"");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delete_gives_up_after_three_attempts_and_leaves_the_message() {
        let (queue, deletes, retries) = delete_with(vec![reset(), reset(), reset()]).await;
        assert_eq!(deletes, u64::from(DELETE_ATTEMPTS));
        assert_eq!(queue.len(), 1, "left to reappear after its visibility");
        assert_eq!(retries, 2, "no retry after the last attempt");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_already_gone_is_not_retried() {
        let gone = QueueError::MessageNotFound {
            op: Operation::Delete,
        };
        let (_, deletes, retries) = delete_with(vec![gone]).await;
        assert_eq!((deletes, retries), (1, 0));
    }
}
