//! The poll loop: receive, dispatch, renew, delete, retry, poison.
//!
//! Guarantees (see "Delivery guarantees" in the README):
//! - A message is deleted only after every handler it was routed to
//!   succeeded; a failure leaves it in the queue, hidden for a delay that
//!   grows with its dequeue count.
//! - A message that failed on its `max_dequeue_count`-th delivery, or that
//!   cannot be decoded, is copied verbatim to the poison queue and only then
//!   deleted.
//! - Receiving never asks for more messages than free handler slots: a slow
//!   handler slows polling instead of piling messages up invisibly.
//! - While a handler runs, the message's visibility is extended every half
//!   visibility timeout, so no other consumer receives it meanwhile.
//!
//! Shutdown is a future passed in: when it completes, receiving stops;
//! in-flight handlers get `shutdown_timeout` to finish, after which they are
//! dropped (killing hook processes) and their messages made visible at once.

use crate::event::decode;
use crate::handler::{Delivery, Router};
use crate::metrics::{HandlerLabel, HandlerOutcome, Metrics, ReasonLabel, StorageErrorLabels};
use crate::queue::{Queue, QueueError, ReceivedMessage};
use crate::redact::redact_text;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// Tuning of the loop (from `[queue]` and `shutdown_timeout`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch_size: u8,
    pub visibility_timeout: Duration,
    pub max_concurrency: usize,
    pub min_poll_interval: Duration,
    pub max_poll_interval: Duration,
    pub max_dequeue_count: u32,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    pub shutdown_timeout: Duration,
    /// Stop once the queue is drained (`run --once`).
    pub once: bool,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config, once: bool) -> Self {
        let q = &c.queue;
        Self {
            batch_size: q.batch_size,
            visibility_timeout: q.visibility_timeout,
            max_concurrency: q.max_concurrency,
            min_poll_interval: q.min_poll_interval,
            max_poll_interval: q.max_poll_interval,
            max_dequeue_count: q.max_dequeue_count,
            retry_base_delay: q.retry_base_delay,
            retry_max_delay: q.retry_max_delay,
            shutdown_timeout: c.shutdown_timeout,
            once,
        }
    }

    /// How long a failed message stays hidden before its next delivery:
    /// `retry_base_delay * 2^(dequeue_count - 1)`, capped, whole seconds.
    pub fn retry_delay(&self, dequeue_count: u32) -> Duration {
        let factor = 2u32.saturating_pow(dequeue_count.saturating_sub(1).min(30));
        let d = self
            .retry_base_delay
            .saturating_mul(factor)
            .min(self.retry_max_delay);
        Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }
}

/// Counters of what the loop did (also the `--once` summary).
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub handled: AtomicU64,
    pub failed: AtomicU64,
    pub poisoned: AtomicU64,
    pub released: AtomicU64,
    pub receive_errors: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub received: u64,
    pub handled: u64,
    pub failed: u64,
    pub poisoned: u64,
    pub released: u64,
    pub receive_errors: u64,
}

impl Stats {
    pub fn summary(&self) -> Summary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Summary {
            received: g(&self.received),
            handled: g(&self.handled),
            failed: g(&self.failed),
            poisoned: g(&self.poisoned),
            released: g(&self.released),
            receive_errors: g(&self.receive_errors),
        }
    }
}

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("receiving failed {attempts} times in a row in --once mode; last error: {last}")]
    OnceGaveUp { attempts: u32, last: QueueError },
}

/// The jittered exponential poll interval. Hand-written: it is a few lines,
/// and the retry crates model "retry this call" rather than a resettable
/// interval whose jitter must stay below the cap (the cap sets the idle
/// request rate).
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    current: Option<Duration>,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            current: None,
        }
    }

    fn reset(&mut self) {
        self.current = None;
    }

    /// The next delay: min, 2*min, ... up to max, each reduced by up to 10%
    /// at random so that many instances do not poll in lockstep.
    fn next_delay(&mut self) -> Duration {
        let next = match self.current {
            None => self.min,
            Some(c) => c.saturating_mul(2).min(self.max),
        };
        self.current = Some(next);
        next.mul_f64(1.0 - fastrand::f64() * 0.1)
    }
}

/// Everything a message task needs.
struct Shared {
    queue: Arc<dyn Queue>,
    poison: Arc<dyn Queue>,
    poison_ready: OnceCell<()>,
    /// Update Message was denied (an identity with only the Message
    /// Processor role): renewal and retry delays are skipped from then on.
    update_denied: std::sync::atomic::AtomicBool,
    router: Arc<Router>,
    settings: Settings,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
}

/// Tells systemd (when `NOTIFY_SOCKET` is set) that the daemon is ready,
/// alive, and stopping. `WATCHDOG=1` is sent only from the poll loop's own
/// waits, so a loop that hangs stops sending it and systemd restarts it.
struct Heartbeat {
    interval: Option<tokio::time::Interval>,
    ready_sent: bool,
}

impl Heartbeat {
    fn new() -> Self {
        let interval = if let Some(timeout) = sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
        {
            let period = (timeout / 2).max(Duration::from_millis(100));
            // First ping after one period, not at once (before READY=1).
            let mut i = tokio::time::interval_at(Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Some(i)
        } else {
            None
        };
        Self {
            interval,
            ready_sent: false,
        }
    }

    async fn tick(&mut self) {
        match &mut self.interval {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    fn beat(&self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    }

    fn ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            let _ = sd_notify::notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("Listening"),
            ]);
        }
    }
}

/// How long the loop waits for more handler slots to fill a batch.
const GATHER: Duration = Duration::from_millis(50);

/// Takes at least one permit and up to `want`. When fewer are free, waits up
/// to [`GATHER`] for running handlers to free more: receiving one or two
/// messages whenever a single handler finishes would multiply receive calls
/// during a drain (the same reason Azure Functions' queue trigger fetches a
/// new batch only when in-flight work falls to a threshold).
async fn gather(semaphore: &Arc<Semaphore>, want: usize) -> Vec<tokio::sync::OwnedSemaphorePermit> {
    let first = semaphore
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore is never closed");
    let mut permits = vec![first];
    while permits.len() < want {
        match semaphore.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    if permits.len() < want && semaphore.available_permits() == 0 {
        let deadline = sleep(GATHER);
        tokio::pin!(deadline);
        while permits.len() < want {
            tokio::select! {
                p = semaphore.clone().acquire_owned() => permits.push(p.expect("semaphore is never closed")),
                _ = &mut deadline => break,
            }
        }
    }
    permits
}

/// Awaits `fut`, sending watchdog pings while it is pending.
async fn alive<F: Future>(hb: &mut Heartbeat, fut: F) -> F::Output {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = hb.tick() => hb.beat(),
        }
    }
}

/// The poll loop over one queue.
pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    pub fn new(
        queue: Arc<dyn Queue>,
        poison: Arc<dyn Queue>,
        router: Arc<Router>,
        settings: Settings,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue,
                poison,
                poison_ready: OnceCell::new(),
                update_denied: Default::default(),
                router,
                settings,
                stats: Arc::default(),
                metrics: Arc::default(),
            }),
        }
    }

    /// Records into `metrics` (shared with the HTTP listener).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("called before run")
            .metrics = metrics;
        self
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Runs until `shutdown` completes (or, with `once`, the queue is empty),
    /// then drains in-flight messages as described in the module docs.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<Summary, WorkerError> {
        let s = &self.shared.settings;
        let semaphore = Arc::new(Semaphore::new(s.max_concurrency));
        let tracker = TaskTracker::new();
        let abort = CancellationToken::new();
        let mut poll = Backoff::new(s.min_poll_interval, s.max_poll_interval);
        // Storage errors back off separately and further: an outage must not
        // turn into a request storm, whatever the poll interval.
        let mut error_backoff = Backoff::new(
            Duration::from_secs(1).max(s.min_poll_interval),
            Duration::from_secs(30).max(s.max_poll_interval),
        );
        let mut consecutive_errors = 0u32;
        let mut result = Ok(());
        let mut hb = Heartbeat::new();
        let metrics = self.shared.metrics.clone();
        tokio::pin!(shutdown);

        info!(
            queue = self.shared.queue.name(),
            batch_size = s.batch_size,
            max_concurrency = s.max_concurrency,
            "Listening for Custom Vision notifications"
        );
        'poll: loop {
            // Wait for free slots, then receive at most that many.
            let mut permits = tokio::select! {
                biased;
                _ = &mut shutdown => break 'poll,
                p = alive(&mut hb, gather(&semaphore, (s.batch_size as usize).min(s.max_concurrency))) => p,
            };

            let receive = self
                .shared
                .queue
                .receive(permits.len() as u8, s.visibility_timeout);
            tokio::pin!(receive);
            let received = tokio::select! {
                r = alive(&mut hb, &mut receive) => r,
                _ = &mut shutdown => {
                    // The request may already have hidden messages: wait a
                    // little for the answer and hand them straight back.
                    if let Ok(Ok(messages)) = timeout(Duration::from_secs(5), &mut receive).await {
                        for m in messages {
                            self.shared.release(&m.id, &m.pop_receipt).await;
                        }
                    }
                    break 'poll;
                }
            };

            match &received {
                Ok(_) => {
                    metrics.receive_ok();
                    hb.ready();
                }
                Err(e) => {
                    metrics
                        .storage_errors
                        .get_or_create(&StorageErrorLabels {
                            operation: e.op().label(),
                            kind: e.kind(),
                        })
                        .inc();
                }
            }
            match received {
                Ok(messages) if messages.is_empty() => {
                    consecutive_errors = 0;
                    error_backoff.reset();
                    drop(permits);
                    if s.once {
                        let in_flight = s.max_concurrency - semaphore.available_permits();
                        if in_flight == 0 {
                            info!("The queue is drained");
                            break 'poll;
                        }
                        // Wait for the in-flight messages, then look again:
                        // their failures are hidden by a retry delay and
                        // will not keep --once running.
                        tokio::select! {
                            _ = &mut shutdown => break 'poll,
                            all = alive(&mut hb, semaphore.acquire_many(s.max_concurrency as u32)) => drop(all),
                        }
                        continue;
                    }
                    let delay = poll.next_delay();
                    metrics.poll_interval.set(delay.as_secs_f64());
                    debug!(delay_ms = delay.as_millis() as u64, "The queue is empty");
                    tokio::select! {
                        _ = &mut shutdown => break 'poll,
                        _ = alive(&mut hb, sleep(delay)) => {}
                    }
                }
                Ok(messages) => {
                    consecutive_errors = 0;
                    error_backoff.reset();
                    poll.reset();
                    metrics.poll_interval.set(0.0);
                    metrics.received.inc_by(messages.len() as u64);
                    self.shared
                        .stats
                        .received
                        .fetch_add(messages.len() as u64, Ordering::Relaxed);
                    for (message, permit) in messages.into_iter().zip(permits.drain(..)) {
                        let shared = self.shared.clone();
                        let abort = abort.clone();
                        shared.metrics.in_flight.inc();
                        tracker.spawn(async move {
                            let metrics = shared.metrics.clone();
                            shared.process(message, abort).await;
                            metrics.in_flight.dec();
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    drop(permits);
                    consecutive_errors += 1;
                    self.shared
                        .stats
                        .receive_errors
                        .fetch_add(1, Ordering::Relaxed);
                    let delay = error_backoff.next_delay();
                    let retry_in_ms = delay.as_millis() as u64;
                    // A rejected credential is usually an expired token being
                    // replaced; when it persists (a wrong key, a revoked
                    // SAS), an operator must act.
                    let persistent_auth =
                        matches!(e, QueueError::Unauthenticated { .. }) && consecutive_errors >= 5;
                    if e.is_transient() && !persistent_auth {
                        warn!(error = %e, kind = e.kind(), attempt = consecutive_errors, retry_in_ms, "Receiving from the queue failed; retrying");
                    } else {
                        // Denied access or a missing queue: an operator must
                        // act. Repeated at the back-off rate, not per poll.
                        error!(error = %e, kind = e.kind(), attempt = consecutive_errors, retry_in_ms, "Receiving from the queue failed");
                    }
                    if s.once && consecutive_errors >= 5 {
                        result = Err(WorkerError::OnceGaveUp {
                            attempts: consecutive_errors,
                            last: e,
                        });
                        break 'poll;
                    }
                    metrics.poll_interval.set(delay.as_secs_f64());
                    tokio::select! {
                        _ = &mut shutdown => break 'poll,
                        _ = alive(&mut hb, sleep(delay)) => {}
                    }
                }
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);

        tracker.close();
        let in_flight = tracker.len();
        if in_flight > 0 {
            info!(
                in_flight,
                timeout_s = s.shutdown_timeout.as_secs_f64(),
                "Waiting for in-flight messages"
            );
        }
        if timeout(s.shutdown_timeout, tracker.wait()).await.is_err() {
            warn!(
                in_flight = tracker.len(),
                "Shutdown timeout reached; stopping handlers and releasing their messages"
            );
            abort.cancel();
            // Releases are single requests; bound them all the same.
            let _ = timeout(Duration::from_secs(10), tracker.wait()).await;
        }
        let summary = self.shared.stats.summary();
        info!(
            received = summary.received,
            handled = summary.handled,
            failed = summary.failed,
            poisoned = summary.poisoned,
            released = summary.released,
            "Stopped"
        );
        result.map(|_| summary)
    }
}

/// What became of one message.
enum Outcome {
    Handled,
    Failed(String),
    Aborted,
}

impl Shared {
    fn update_is_denied(&self) -> bool {
        self.update_denied.load(Ordering::Relaxed)
    }

    /// Update Message is forbidden: say so once, then work without it.
    fn update_forbidden(&self, e: &QueueError) {
        if !self.update_denied.swap(true, Ordering::Relaxed) {
            warn!(
                error = %e,
                "Update Message is denied; continuing without visibility renewal and retry delays: a failed message reappears after visibility_timeout, and a handler running longer than that may see its message delivered again. Grant 'Storage Queue Data Contributor' on the queue to fix this"
            );
        }
    }

    fn storage_error(&self, e: &QueueError) {
        self.metrics
            .storage_errors
            .get_or_create(&StorageErrorLabels {
                operation: e.op().label(),
                kind: e.kind(),
            })
            .inc();
    }

    async fn process(self: Arc<Self>, m: ReceivedMessage, abort: CancellationToken) {
        let span = info_span!(
            "message",
            message_id = %m.id,
            dequeue_count = m.dequeue_count,
            event_type = tracing::field::Empty,
            project_id = tracing::field::Empty,
        );
        self.process_in_span(m, abort, span.clone())
            .instrument(span)
            .await
    }

    async fn process_in_span(
        &self,
        m: ReceivedMessage,
        abort: CancellationToken,
        span: tracing::Span,
    ) {
        let s = &self.settings;
        if m.dequeue_count > s.max_dequeue_count {
            // Delivered more often than allowed without ever failing
            // cleanly: the daemon likely crashed while handling it.
            let reason = format!(
                "delivered {} times, more than max_dequeue_count ({}); it may crash the daemon",
                m.dequeue_count, s.max_dequeue_count
            );
            self.poison(&m, &m.pop_receipt, "dequeue_count_exceeded", &reason)
                .await;
            return;
        }
        let notification = match decode(m.body.as_bytes()) {
            Ok(n) => n,
            Err(e) => {
                self.poison(
                    &m,
                    &m.pop_receipt,
                    "decode_error",
                    &format!("cannot be decoded: {e}"),
                )
                .await;
                return;
            }
        };
        let event = &notification.event;
        span.record("event_type", event.wire_type());
        if let Some(p) = event.project_id() {
            span.record("project_id", tracing::field::display(p));
        }
        let routes = self.router.route(&notification);
        if routes.is_empty() {
            info!("No handler takes this event; deleting it");
            self.delete(&m.id, &m.pop_receipt).await;
            self.stats.handled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let delivery = Delivery {
            message_id: m.id.clone(),
            dequeue_count: m.dequeue_count,
            inserted_at: m.inserted_at,
            received_at: OffsetDateTime::now_utc(),
            notification,
        };
        let started = Instant::now();
        let work = futures_util::future::join_all(routes.iter().map(|r| {
            let delivery = &delivery;
            async move {
                let t = Instant::now();
                let res = r.handler.handle(delivery).await;
                (r.name.as_str(), res, t.elapsed())
            }
            .instrument(info_span!("handler", handler = %r.name))
        }));
        tokio::pin!(work);

        let mut receipt = m.pop_receipt.clone();
        let renew_every = s.visibility_timeout / 2;
        let mut next_renewal = Instant::now() + renew_every;
        let mut lost = false;
        let outcome = loop {
            tokio::select! {
                results = &mut work => {
                    for (name, r, took) in &results {
                        let handler = (*name).to_owned();
                        self.metrics
                            .handler_duration
                            .get_or_create(&HandlerLabel { handler: handler.clone() })
                            .observe(took.as_secs_f64());
                        let outcome = if r.is_ok() { "success" } else { "failure" };
                        self.metrics.handled.get_or_create(&HandlerOutcome { handler, outcome }).inc();
                    }
                    let failures: Vec<String> = results
                        .iter()
                        .filter_map(|(name, r, took)| match r {
                            Ok(()) => {
                                debug!(handler = name, took_ms = took.as_millis() as u64, "Handler succeeded");
                                None
                            }
                            Err(e) => Some(format!("handler `{name}` failed: {e}")),
                        })
                        .collect();
                    break if failures.is_empty() {
                        Outcome::Handled
                    } else {
                        Outcome::Failed(failures.join("; "))
                    };
                }
                _ = sleep_until(next_renewal), if !lost && !self.update_is_denied() => {
                    match self.queue.update_visibility(&m.id, &receipt, s.visibility_timeout).await {
                        Ok(r) => {
                            receipt = r;
                            debug!("Extended the message's visibility");
                        }
                        Err(e) if e.is_message_gone() => {
                            warn!(error = %e, "Lost the message while a handler runs; another consumer may handle it too");
                            lost = true;
                        }
                        Err(e @ QueueError::Forbidden { .. }) => {
                            self.storage_error(&e);
                            self.update_forbidden(&e);
                        }
                        Err(e) => {
                            self.storage_error(&e);
                            warn!(error = %e, kind = e.kind(), "Extending the message's visibility failed; will retry");
                        }
                    }
                    next_renewal += renew_every;
                }
                _ = abort.cancelled() => break Outcome::Aborted,
            }
        };
        let took_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Outcome::Handled => {
                self.delete(&m.id, &receipt).await;
                self.stats.handled.fetch_add(1, Ordering::Relaxed);
                info!(took_ms, "Message handled");
            }
            Outcome::Aborted => {
                self.release(&m.id, &receipt).await;
            }
            Outcome::Failed(reason) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                if m.dequeue_count >= s.max_dequeue_count {
                    let reason = format!(
                        "failed on delivery {} of max_dequeue_count {}: {reason}",
                        m.dequeue_count, s.max_dequeue_count
                    );
                    self.poison(&m, &receipt, "max_dequeue_count", &reason)
                        .await;
                } else {
                    let delay = s.retry_delay(m.dequeue_count);
                    warn!(error = %redact_text(&reason), retry_in_s = delay.as_secs(), took_ms, "Handling failed; the message will be retried");
                    if self.update_is_denied() {
                        debug!(
                            "Update Message is denied; the message reappears after its visibility timeout"
                        );
                    } else if let Err(e) =
                        self.queue.update_visibility(&m.id, &receipt, delay).await
                    {
                        self.storage_error(&e);
                        if let QueueError::Forbidden { .. } = e {
                            self.update_forbidden(&e);
                        } else {
                            // It reappears after the visibility timeout instead.
                            warn!(error = %e, "Could not set the retry delay");
                        }
                    }
                }
            }
        }
    }

    /// Deletes a message, retrying transient errors a few times. A message
    /// that is already gone is not an error: someone else owns it now.
    async fn delete(&self, id: &str, receipt: &str) {
        for attempt in 1..=3u32 {
            let result = self.queue.delete(id, receipt).await;
            match &result {
                Ok(()) => {
                    self.metrics.storage_ok();
                    self.metrics.deleted.inc();
                }
                Err(e) => self.storage_error(e),
            }
            match result {
                Ok(()) => return,
                Err(e) if e.is_message_gone() => {
                    info!(reason = %e, "The message was already gone when deleting it");
                    return;
                }
                Err(e) if e.is_transient() && attempt < 3 => {
                    warn!(error = %e, attempt, "Deleting the message failed; retrying");
                    sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
                Err(e) => {
                    warn!(error = %e, kind = e.kind(), "Deleting the message failed; it will be delivered again after its visibility timeout");
                    return;
                }
            }
        }
    }

    /// Makes a message visible again at once (shutdown).
    async fn release(&self, id: &str, receipt: &str) {
        if self.update_is_denied() {
            return;
        }
        match self
            .queue
            .update_visibility(id, receipt, Duration::ZERO)
            .await
        {
            Ok(_) => {
                self.metrics.released.inc();
                self.stats.released.fetch_add(1, Ordering::Relaxed);
                info!("Released the message back to the queue");
            }
            Err(e) if e.is_message_gone() => {}
            Err(e) => {
                warn!(error = %e, "Could not release the message; it reappears after its visibility timeout")
            }
        }
    }

    /// Copies the message verbatim to the poison queue, then deletes it. If
    /// the copy fails the original stays (and is retried later): a message
    /// is never deleted before it exists elsewhere.
    async fn poison(&self, m: &ReceivedMessage, receipt: &str, kind: &'static str, reason: &str) {
        let reason = redact_text(reason);
        let ready = self
            .poison_ready
            .get_or_try_init(|| async {
                match self.poison.create_if_missing().await {
                    // A SAS or role may allow sending but not creating
                    // queues; the poison queue may well exist already.
                    Err(e @ QueueError::Forbidden { .. }) => {
                        warn!(error = %e, poison_queue = self.poison.name(), "Cannot create the poison queue; assuming it exists");
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
                self.metrics
                    .poisoned
                    .get_or_create(&ReasonLabel { reason: kind })
                    .inc();
                self.stats.poisoned.fetch_add(1, Ordering::Relaxed);
                error!(
                    reason = %reason,
                    poison_queue = self.poison.name(),
                    "Moved the message to the poison queue"
                );
            }
            Err(e) => {
                self.storage_error(&e);
                let delay = self.settings.retry_delay(m.dequeue_count);
                error!(error = %e, reason = %reason, retry_in_s = delay.as_secs(), "Could not move the message to the poison queue; it stays in the queue");
                let _ = self.queue.update_visibility(&m.id, receipt, delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{EventFilter, Handler, HandlerError, Route};
    use crate::queue::memory::MemoryQueue;
    use async_trait::async_trait;
    use std::sync::Mutex;

    const TRAINING: &str = r#"{"version":"1.0","type":"Training","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","trainingStatus":"TrainingCompleted"}}"#;

    /// Records calls; fails the first `fail_first` of them; takes `delay`.
    struct Probe {
        calls: Mutex<Vec<(String, u32)>>,
        fail_first: usize,
        delay: Duration,
    }

    #[async_trait]
    impl Handler for Probe {
        async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
            let n = {
                let mut c = self.calls.lock().unwrap();
                c.push((d.message_id.clone(), d.dequeue_count));
                c.len()
            };
            sleep(self.delay).await;
            if n <= self.fail_first {
                Err(HandlerError("probe failure".into()))
            } else {
                Ok(())
            }
        }
    }

    fn settings() -> Settings {
        Settings {
            batch_size: 16,
            visibility_timeout: Duration::from_secs(30),
            max_concurrency: 4,
            min_poll_interval: Duration::from_millis(100),
            max_poll_interval: Duration::from_secs(10),
            max_dequeue_count: 3,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(5),
            once: true,
        }
    }

    fn worker(
        q: &Arc<MemoryQueue>,
        p: &Arc<MemoryQueue>,
        probe: &Arc<Probe>,
        s: Settings,
    ) -> Worker {
        let router = Router::from_routes(vec![Route {
            name: "probe".into(),
            filter: EventFilter::all(),
            handler: probe.clone(),
        }]);
        Worker::new(q.clone(), p.clone(), Arc::new(router), s)
    }

    fn probe(fail_first: usize, delay: Duration) -> Arc<Probe> {
        Arc::new(Probe {
            calls: Mutex::default(),
            fail_first,
            delay,
        })
    }

    #[test]
    fn retry_delay_doubles_and_caps() {
        let s = settings();
        let d: Vec<u64> = (1..=8).map(|n| s.retry_delay(n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(s.retry_delay(u32::MAX).as_secs(), 60);
    }

    #[test]
    fn backoff_grows_to_max_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let seq: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(seq[0] <= Duration::from_millis(100) && seq[0] >= Duration::from_millis(90));
        assert!(seq[3] <= Duration::from_millis(800) && seq[3] >= Duration::from_millis(720));
        for d in &seq[8..] {
            assert!(
                *d <= Duration::from_secs(10) && *d >= Duration::from_secs(9),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn handled_messages_are_deleted() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        for _ in 0..10 {
            q.send(TRAINING).await.unwrap();
        }
        let probe = probe(0, Duration::from_millis(10));
        let summary = worker(&q, &p, &probe, settings())
            .run(std::future::pending())
            .await
            .unwrap();
        assert_eq!(summary.handled, 10);
        assert!(q.is_empty() && p.is_empty());
        assert_eq!(probe.calls.lock().unwrap().len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn receive_never_exceeds_free_capacity() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        for _ in 0..10 {
            q.send(TRAINING).await.unwrap();
        }
        let probe = probe(0, Duration::from_secs(1));
        let w = worker(&q, &p, &probe, settings());
        let handle = tokio::spawn(w.run(std::future::pending()));
        // Mid-way through the first batch of 4, 6 are still visible.
        sleep(Duration::from_millis(500)).await;
        assert_eq!(q.peek(32).await.unwrap().len(), 6);
        let summary = handle.await.unwrap().unwrap();
        assert_eq!(summary.handled, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_growing_delay_then_poisoned() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        q.send(TRAINING).await.unwrap();
        let probe = probe(usize::MAX, Duration::ZERO);
        let mut s = settings();
        s.once = false;
        let w = worker(&q, &p, &probe, s);
        let stop = CancellationToken::new();
        let handle = tokio::spawn(w.run(stop.clone().cancelled_owned()));
        sleep(Duration::from_secs(30)).await;
        stop.cancel();
        let summary = handle.await.unwrap().unwrap();
        let calls = probe.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().map(|c| c.1).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(summary.poisoned, 1);
        assert!(q.is_empty());
        assert_eq!(p.bodies(), vec![TRAINING.to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn undecodable_message_is_poisoned_at_once() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        q.send(TRAINING).await.unwrap();
        q.send("not json").await.unwrap();
        q.send(TRAINING).await.unwrap();
        let probe = probe(0, Duration::ZERO);
        let summary = worker(&q, &p, &probe, settings())
            .run(std::future::pending())
            .await
            .unwrap();
        assert_eq!((summary.handled, summary.poisoned), (2, 1));
        assert_eq!(p.bodies(), vec!["not json".to_owned()]);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn long_handler_keeps_the_message_invisible() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        q.send(TRAINING).await.unwrap();
        // 100 s of work against a 30 s visibility timeout.
        let probe = probe(0, Duration::from_secs(100));
        let w = worker(&q, &p, &probe, settings());
        let handle = tokio::spawn(w.run(std::future::pending()));
        sleep(Duration::from_secs(95)).await;
        assert!(
            q.peek(32).await.unwrap().is_empty(),
            "became visible while handled"
        );
        handle.await.unwrap().unwrap();
        assert!(q.is_empty());
        assert_eq!(probe.calls.lock().unwrap().len(), 1);
        // Renewed at 15, 30, 45, 60, 75, 90 s.
        assert_eq!(q.update_calls.load(Ordering::Relaxed), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_releases_unfinished_messages() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        q.send(TRAINING).await.unwrap();
        let probe = probe(0, Duration::from_secs(3600));
        let mut s = settings();
        s.once = false;
        let w = worker(&q, &p, &probe, s);
        let stop = CancellationToken::new();
        let handle = tokio::spawn(w.run(stop.clone().cancelled_owned()));
        sleep(Duration::from_secs(1)).await;
        stop.cancel();
        let summary = handle.await.unwrap().unwrap();
        assert_eq!(summary.released, 1);
        assert_eq!(
            q.peek(32).await.unwrap().len(),
            1,
            "not visible again at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_polling_backs_off_to_max_interval() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        let probe = probe(0, Duration::ZERO);
        let mut s = settings();
        s.once = false;
        let w = worker(&q, &p, &probe, s);
        let stop = CancellationToken::new();
        let handle = tokio::spawn(w.run(stop.clone().cancelled_owned()));
        sleep(Duration::from_secs(60)).await;
        let first_minute = q.receive_calls.load(Ordering::Relaxed);
        sleep(Duration::from_secs(60)).await;
        let second_minute = q.receive_calls.load(Ordering::Relaxed) - first_minute;
        stop.cancel();
        handle.await.unwrap().unwrap();
        // 0.1+0.2+...+6.4 s reach the 10 s cap within 13 s; then 6-7 a minute.
        assert!(
            (6..=7).contains(&second_minute),
            "{second_minute} receives in a minute"
        );
        assert!(first_minute <= 14, "{first_minute}");
    }
}
