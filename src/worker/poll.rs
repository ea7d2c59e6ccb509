//! The poll loop: wait for free handler slots, receive at most that many
//! messages, spawn a task per message, back off while the queue is empty or
//! failing, and drain on shutdown.
//!
//! Shutdown is a future passed in: when it completes, receiving stops;
//! in-flight handlers get `shutdown_timeout` to finish, after which they are
//! dropped (killing hook processes) and their messages made visible at once.
//! What happens to each message is `Lifecycle`'s business (`lifecycle.rs`).

use super::events::{
    InFlight, InternalEvent, MessagesReceived, QueueEmpty, ReceiveFailed, Recorder, Stopped,
    Summary,
};
use super::heartbeat::{Heartbeat, alive};
use super::lifecycle::Lifecycle;
use super::settings::Settings;
use super::settle::Settler;
use crate::handler::Router;
use crate::notice::ExpectedExports;
use crate::queue::{Queue, QueueError, ReceivedMessage};
use crate::retry::Backoff;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("receiving failed {attempts} times in a row in --once mode")]
    OnceGaveUp {
        attempts: u32,
        #[source]
        last: QueueError,
    },
}

/// How long the loop waits for more handler slots to fill a batch.
const GATHER: Duration = Duration::from_millis(50);

/// Jitter of the poll interval: many instances must not poll in lockstep,
/// and the interval must never exceed `max_poll_interval` (it sets the idle
/// request rate), so delays are shortened by up to 10 %.
const POLL_JITTER: f64 = 0.1;

/// One handler slot: a permit of the queue's own limit and, with several
/// queues, one of the process-wide limit. Dropped when the message's task
/// ends.
struct Slot {
    _queue: OwnedSemaphorePermit,
    _process: Option<OwnedSemaphorePermit>,
}

/// Where slots come from: the queue's own semaphore (its cap) and, with
/// several queues, the process-wide one (`max_concurrency`) they share.
/// Each queue's cap is below the process-wide bound by the other queues'
/// reserve (see `daemon`), so a flood on one queue always leaves the others
/// slots. The queue permit is taken first, so a queue at its cap does not
/// even wait in line for process-wide permits.
#[derive(Clone)]
struct Limits {
    queue: Arc<Semaphore>,
    process: Option<Arc<Semaphore>>,
}

impl Limits {
    async fn acquire(&self) -> Slot {
        let queue = self
            .queue
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let process = match &self.process {
            Some(p) => Some(
                p.clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed"),
            ),
            None => None,
        };
        Slot {
            _queue: queue,
            _process: process,
        }
    }

    fn try_acquire(&self) -> Option<Slot> {
        let queue = self.queue.clone().try_acquire_owned().ok()?;
        let process = match &self.process {
            Some(p) => Some(p.clone().try_acquire_owned().ok()?),
            None => None,
        };
        Some(Slot {
            _queue: queue,
            _process: process,
        })
    }

    fn exhausted(&self) -> bool {
        self.queue.available_permits() == 0
            || self
                .process
                .as_ref()
                .is_some_and(|p| p.available_permits() == 0)
    }
}

/// Takes at least one slot and up to `want`. When fewer are free, waits up
/// to [`GATHER`] for running handlers to free more: receiving one or two
/// messages whenever a single handler finishes would multiply receive calls
/// during a drain (the same reason Azure Functions' queue trigger fetches a
/// new batch only when in-flight work falls to a threshold).
async fn gather(limits: &Limits, want: usize) -> Vec<Slot> {
    let mut slots = vec![limits.acquire().await];
    while slots.len() < want {
        match limits.try_acquire() {
            Some(s) => slots.push(s),
            None => break,
        }
    }
    if slots.len() < want && limits.exhausted() {
        let deadline = sleep(GATHER);
        tokio::pin!(deadline);
        while slots.len() < want {
            tokio::select! {
                s = limits.acquire() => slots.push(s),
                _ = &mut deadline => break,
            }
        }
    }
    slots
}

/// The poll loop over one queue.
pub struct Worker {
    /// What each received message goes through.
    life: Arc<Lifecycle>,
    /// Exports a handler asked for: while one is awaited, empty polls wait
    /// `min_poll_interval` instead of backing off.
    expected: Arc<ExpectedExports>,
    /// With several queues: the process-wide limit every worker shares.
    process_limit: Option<Arc<Semaphore>>,
}

impl Worker {
    /// `metrics` records every outcome (its health is shared with the HTTP
    /// listener).
    pub fn new(
        queue: Arc<dyn Queue>,
        poison: Arc<dyn Queue>,
        router: Arc<Router>,
        settings: Settings,
        metrics: Arc<Recorder>,
    ) -> Self {
        let settler = Settler::new(queue, poison, settings.poison_format, metrics.clone());
        Self {
            life: Arc::new(Lifecycle::new(settler, router, settings, metrics)),
            expected: Arc::new(ExpectedExports::new()),
            process_limit: None,
        }
    }

    /// Shares `expected` with the handlers that request exports.
    pub fn with_expected_exports(mut self, expected: Arc<ExpectedExports>) -> Self {
        self.expected = expected;
        self
    }

    /// Shares `limit` (the process-wide `max_concurrency`) with the other
    /// queues' workers; `settings.max_concurrency` is then this queue's cap.
    pub fn with_process_limit(mut self, limit: Arc<Semaphore>) -> Self {
        self.process_limit = Some(limit);
        self
    }

    /// Runs until `shutdown` completes (or, with `once`, the queue is empty),
    /// then drains in-flight messages as described in the module docs.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<Summary, WorkerError> {
        let (life, s) = (&self.life, self.life.settings());
        info!(
            queue = life.queue().name(),
            batch_size = s.batch_size,
            max_concurrency = s.max_concurrency,
            "Listening for Custom Vision notifications"
        );
        tokio::pin!(shutdown);
        let mut poll = Loop::new(&self, shutdown);
        let result = loop {
            if let ControlFlow::Break(result) = poll.step().await {
                break result;
            }
        };
        poll.drain().await;
        let summary = Summary::read(life.metrics());
        Stopped(life.queue().name(), summary).emit(life.metrics());
        result.map(|_| summary)
    }
}

/// What a step of the loop returns: go on, or stop with this result.
type Step = ControlFlow<Result<(), WorkerError>>;

/// The loop's state between steps.
struct Loop<'w, F> {
    life: &'w Arc<Lifecycle>,
    /// Completes when the loop is to stop.
    shutdown: Pin<&'w mut F>,
    expected: &'w ExpectedExports,
    /// This queue's slots (`max_concurrency` of them).
    semaphore: Arc<Semaphore>,
    limits: Limits,
    /// Every message's task, and the signal that stops their handlers.
    tracker: TaskTracker,
    abort: CancellationToken,
    /// The delay between receives while the queue is empty.
    idle: Backoff,
    /// Storage errors back off separately and further: an outage must not
    /// turn into a request storm, whatever the poll interval.
    error_backoff: Backoff,
    consecutive_errors: u32,
    hb: Heartbeat,
}

impl<'w, F: Future<Output = ()>> Loop<'w, F> {
    fn new(w: &'w Worker, shutdown: Pin<&'w mut F>) -> Self {
        let s = w.life.settings();
        let semaphore = Arc::new(Semaphore::new(s.max_concurrency));
        Loop {
            life: &w.life,
            shutdown,
            expected: &w.expected,
            limits: Limits {
                queue: semaphore.clone(),
                process: w.process_limit.clone(),
            },
            semaphore,
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
            idle: Backoff::new(s.min_poll_interval, s.max_poll_interval).with_jitter(POLL_JITTER),
            error_backoff: Backoff::new(
                Duration::from_secs(1).max(s.min_poll_interval),
                Duration::from_secs(30).max(s.max_poll_interval),
            )
            .with_jitter(POLL_JITTER),
            consecutive_errors: 0,
            hb: Heartbeat::new(),
        }
    }

    /// Waits for free slots, receives at most that many messages and hands
    /// each to its task, or waits while the queue is empty or failing.
    async fn step(&mut self) -> Step {
        let s = self.life.settings();
        let want = (s.batch_size as usize).min(s.max_concurrency);
        let slots = tokio::select! {
            biased;
            _ = self.shutdown.as_mut() => return ControlFlow::Break(Ok(())),
            p = alive(&mut self.hb, gather(&self.limits, want)) => p,
        };
        let Some(received) = self.receive(slots.len()).await else {
            return ControlFlow::Break(Ok(()));
        };
        match received {
            Ok(messages) if messages.is_empty() => {
                drop(slots);
                self.empty().await
            }
            Ok(messages) => {
                self.spawn(messages, slots);
                ControlFlow::Continue(())
            }
            Err(error) => {
                drop(slots);
                self.failed(error).await
            }
        }
    }

    /// Receives up to `n` messages; `None` when shutdown came first.
    async fn receive(&mut self, n: usize) -> Option<Result<Vec<ReceivedMessage>, QueueError>> {
        let life = self.life;
        let receive = life
            .queue()
            .receive(n as u8, life.settings().visibility_timeout);
        tokio::pin!(receive);
        let received = tokio::select! {
            r = alive(&mut self.hb, &mut receive) => r,
            _ = self.shutdown.as_mut() => {
                // The request may already have hidden messages: wait a
                // little for the answer and hand them straight back.
                if let Ok(Ok(messages)) = timeout(Duration::from_secs(5), &mut receive).await {
                    for m in messages {
                        life.hand_back(m).await;
                    }
                }
                return None;
            }
        };
        if received.is_ok() {
            self.consecutive_errors = 0;
            self.error_backoff.reset();
            self.hb.ready();
        }
        Some(received)
    }

    /// Hands each message to its own task, which holds one slot.
    fn spawn(&mut self, messages: Vec<ReceivedMessage>, slots: Vec<Slot>) {
        self.idle.reset();
        self.expected
            .observe(messages.iter().map(|m| m.body.as_str()));
        let metrics = self.life.metrics();
        MessagesReceived {
            count: messages.len(),
        }
        .emit(metrics);
        for (message, slot) in messages.into_iter().zip(slots) {
            let life = self.life.clone();
            let abort = self.abort.clone();
            InFlight(true).emit(metrics);
            self.tracker.spawn(async move {
                life.run(message, abort).await;
                InFlight(false).emit(life.metrics());
                drop(slot);
            });
        }
    }

    /// The queue is empty: with `once`, stop once nothing is in flight;
    /// otherwise wait for the next poll.
    async fn empty(&mut self) -> Step {
        let (s, metrics, expected) = (self.life.settings(), self.life.metrics(), self.expected);
        if s.once {
            QueueEmpty { delay: None }.emit(metrics);
            let in_flight = s.max_concurrency - self.semaphore.available_permits();
            if in_flight == 0 {
                info!("The queue is drained");
                return ControlFlow::Break(Ok(()));
            }
            // Wait for the in-flight messages, then look again: their
            // failures are hidden by a retry delay and will not keep --once
            // running.
            tokio::select! {
                _ = self.shutdown.as_mut() => return ControlFlow::Break(Ok(())),
                all = alive(&mut self.hb, self.semaphore.acquire_many(s.max_concurrency as u32)) => drop(all),
            }
            return ControlFlow::Continue(());
        }
        // An export notification is on its way: look often, and back off
        // from the start once it arrived.
        let delay = if expected.is_waiting() {
            self.idle.reset();
            s.min_poll_interval
        } else {
            self.idle.next_delay()
        };
        QueueEmpty { delay: Some(delay) }.emit(metrics);
        tokio::select! {
            _ = self.shutdown.as_mut() => return ControlFlow::Break(Ok(())),
            _ = alive(&mut self.hb, sleep(delay)) => {}
            // A handler just requested an export.
            _ = expected.added() => self.idle.reset(),
        }
        ControlFlow::Continue(())
    }

    /// Receiving failed: wait, backing off; in --once mode give up after
    /// five failures in a row.
    async fn failed(&mut self, error: QueueError) -> Step {
        self.consecutive_errors += 1;
        let delay = self.error_backoff.next_delay();
        ReceiveFailed {
            queue: self.life.queue().name(),
            error: &error,
            attempt: self.consecutive_errors,
            retry_in: delay,
        }
        .emit(self.life.metrics());
        if self.life.settings().once && self.consecutive_errors >= 5 {
            return ControlFlow::Break(Err(WorkerError::OnceGaveUp {
                attempts: self.consecutive_errors,
                last: error,
            }));
        }
        tokio::select! {
            _ = self.shutdown.as_mut() => return ControlFlow::Break(Ok(())),
            _ = alive(&mut self.hb, sleep(delay)) => {}
        }
        ControlFlow::Continue(())
    }

    /// Gives in-flight messages `shutdown_timeout` to finish, then stops
    /// their handlers, which releases their messages.
    async fn drain(self) {
        let s = self.life.settings();
        self.hb.stopping();
        self.tracker.close();
        let in_flight = self.tracker.len();
        if in_flight > 0 {
            info!(
                in_flight,
                timeout_s = s.shutdown_timeout.as_secs_f64(),
                "Waiting for in-flight messages"
            );
        }
        if timeout(s.shutdown_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.tracker.len(),
                "Shutdown timeout reached; stopping handlers and releasing their messages"
            );
            self.abort.cancel();
            // Releases are single requests; bound them all the same.
            let _ = timeout(Duration::from_secs(10), self.tracker.wait()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::EventFilter;
    use crate::handler::{Delivery, Handler, HandlerError, Route};
    use crate::queue::Expiry;
    use crate::queue::memory::MemoryQueue;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

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
                Err(HandlerError::new("probe failure"))
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
            max_deliveries_without_outcome: 10,
            poison_format: crate::config::PoisonFormat::Verbatim,
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
            subject: Default::default(),
            handler: probe.clone(),
        }]);
        Worker::new(q.clone(), p.clone(), Arc::new(router), s, Arc::default())
    }

    fn probe(fail_first: usize, delay: Duration) -> Arc<Probe> {
        Arc::new(Probe {
            calls: Mutex::default(),
            fail_first,
            delay,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn handled_messages_are_deleted() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        for _ in 0..10 {
            q.send(TRAINING, Expiry::ServiceDefault).await.unwrap();
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

    /// The events of an Event Grid array are handled one after the other
    /// while the message's visibility is renewed for all of them together:
    /// three events taking 12 s each (36 s) under a 30 s visibility timeout
    /// keep the message hidden throughout, so it is handled once, each
    /// event on delivery 1, then deleted.
    #[tokio::test(start_paused = true)]
    async fn the_events_of_an_array_share_one_visibility_renewal() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        let event = |i: u32| {
            format!(
                r#"{{"id":"e{i}","eventType":"Contoso.Thing","subject":"s{i}","eventTime":"2026-11-21T06:01:11Z","data":{{}},"dataVersion":"1"}}"#
            )
        };
        let body = format!("[{},{},{}]", event(0), event(1), event(2));
        q.send(&body, Expiry::ServiceDefault).await.unwrap();
        let probe = probe(0, Duration::from_secs(12));
        let mut s = settings();
        // Polling on: a message visible again would be received again.
        s.once = false;
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker(&q, &p, &probe, s).run(stop.clone().cancelled_owned()));
        sleep(Duration::from_secs(60)).await;
        stop.cancel();
        let summary = handle.await.unwrap().unwrap();
        let calls = probe.calls.lock().unwrap().clone();
        assert_eq!(
            calls.iter().map(|c| c.1).collect::<Vec<_>>(),
            vec![1, 1, 1],
            "each event once, on the first delivery"
        );
        assert_eq!((summary.received, summary.handled), (1, 1));
        assert!(q.is_empty() && p.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn receive_never_exceeds_free_capacity() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        for _ in 0..10 {
            q.send(TRAINING, Expiry::ServiceDefault).await.unwrap();
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
        q.send(TRAINING, Expiry::ServiceDefault).await.unwrap();
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
        q.send(TRAINING, Expiry::ServiceDefault).await.unwrap();
        q.send("not json", Expiry::ServiceDefault).await.unwrap();
        q.send(TRAINING, Expiry::ServiceDefault).await.unwrap();
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
        q.send(TRAINING, Expiry::ServiceDefault).await.unwrap();
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
        q.send(TRAINING, Expiry::ServiceDefault).await.unwrap();
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

    const EXPORT: &str = r#"{"version":"1.0","type":"Export","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportCompleted","modelUri":"https://a.blob.core.windows.net/c/m.ONNX"}}"#;

    fn ids() -> (uuid::Uuid, uuid::Uuid) {
        (
            "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c".parse().unwrap(),
            "0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f".parse().unwrap(),
        )
    }

    fn receives(q: &MemoryQueue) -> u64 {
        q.receive_calls.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn an_expected_export_keeps_polling_fast_until_it_arrives() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        let probe = probe(0, Duration::ZERO);
        let mut s = settings();
        s.once = false;
        let expected = Arc::new(ExpectedExports::new());
        let w = worker(&q, &p, &probe, s).with_expected_exports(expected.clone());
        let stop = CancellationToken::new();
        let handle = tokio::spawn(w.run(stop.clone().cancelled_owned()));
        // Backed off to the 10 s cap.
        sleep(Duration::from_secs(60)).await;
        let (project, iteration) = ids();
        let before = receives(&q);
        expected.expect(project, iteration, 1, Duration::from_secs(900));
        // Woken out of its 10 s sleep at once, then every 100 ms.
        sleep(Duration::from_millis(50)).await;
        assert!(receives(&q) > before, "not woken by the expectation");
        sleep(Duration::from_secs(10)).await;
        let fast = receives(&q) - before;
        assert!((90..=102).contains(&fast), "{fast} receives in 10 s");
        // The notification arrives: handled, then the usual back-off.
        q.send(EXPORT, Expiry::ServiceDefault).await.unwrap();
        sleep(Duration::from_millis(150)).await;
        assert_eq!(probe.calls.lock().unwrap().len(), 1);
        assert!(!expected.is_waiting());
        sleep(Duration::from_secs(60)).await;
        let after = receives(&q);
        sleep(Duration::from_secs(60)).await;
        let idle_minute = receives(&q) - after;
        stop.cancel();
        handle.await.unwrap().unwrap();
        assert!(
            (6..=7).contains(&idle_minute),
            "{idle_minute} receives in a minute after the export arrived"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expected_export_that_never_comes_stops_fast_polling_at_its_deadline() {
        let q = Arc::new(MemoryQueue::new("q"));
        let p = Arc::new(MemoryQueue::new("q-poison"));
        let probe = probe(0, Duration::ZERO);
        let mut s = settings();
        s.once = false;
        let expected = Arc::new(ExpectedExports::new());
        let w = worker(&q, &p, &probe, s).with_expected_exports(expected.clone());
        let stop = CancellationToken::new();
        let handle = tokio::spawn(w.run(stop.clone().cancelled_owned()));
        let (project, iteration) = ids();
        expected.expect(project, iteration, 1, Duration::from_secs(20));
        sleep(Duration::from_secs(20)).await;
        let during = receives(&q);
        assert!(
            (190..=202).contains(&during),
            "{during} receives while waiting 20 s"
        );
        sleep(Duration::from_secs(60)).await;
        let later = receives(&q);
        sleep(Duration::from_secs(60)).await;
        let idle_minute = receives(&q) - later;
        stop.cancel();
        handle.await.unwrap().unwrap();
        assert!(
            (6..=7).contains(&idle_minute),
            "{idle_minute} receives in a minute after the deadline"
        );
    }

    /// Two queues sharing a process-wide limit of 4, each capped at 3 (a
    /// reserve of 1): a flood of slow messages on A leaves B a slot, so B's
    /// message is handled within a poll interval, not after A's backlog.
    #[tokio::test(start_paused = true)]
    async fn a_flood_on_one_queue_leaves_the_other_a_slot() {
        let (qa, pa) = (
            Arc::new(MemoryQueue::new("a")),
            Arc::new(MemoryQueue::new("a-poison")),
        );
        let (qb, pb) = (
            Arc::new(MemoryQueue::new("b")),
            Arc::new(MemoryQueue::new("b-poison")),
        );
        for _ in 0..100 {
            qa.send(TRAINING, Expiry::ServiceDefault).await.unwrap();
        }
        let slow = probe(0, Duration::from_secs(10));
        let fast = probe(0, Duration::ZERO);
        let limit = Arc::new(Semaphore::new(4));
        let mut s = settings();
        s.once = false;
        s.max_concurrency = 3;
        let stop = CancellationToken::new();
        let a = tokio::spawn(
            worker(&qa, &pa, &slow, s.clone())
                .with_process_limit(limit.clone())
                .run(stop.clone().cancelled_owned()),
        );
        let b = tokio::spawn(
            worker(&qb, &pb, &fast, s)
                .with_process_limit(limit.clone())
                .run(stop.clone().cancelled_owned()),
        );
        sleep(Duration::from_secs(1)).await;
        assert_eq!(limit.available_permits(), 1, "A holds its cap, not more");
        qb.send(TRAINING, Expiry::ServiceDefault).await.unwrap();
        // Within B's poll interval (at most 10 s here, backed off while idle).
        sleep(Duration::from_secs(11)).await;
        assert_eq!(fast.calls.lock().unwrap().len(), 1, "B starved by A");
        stop.cancel();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn once_summaries_of_several_queues_add_up() {
        let s: Summary = [
            Summary {
                received: 2,
                handled: 1,
                poisoned: 1,
                ..Default::default()
            },
            Summary {
                received: 3,
                handled: 3,
                ..Default::default()
            },
        ]
        .into_iter()
        .sum();
        assert_eq!((s.received, s.handled, s.poisoned), (5, 4, 1));
    }
}
