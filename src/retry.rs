//! Retrying: the one back-off primitive ([`Backoff`]) and the one runner
//! ([`run`]) every in-process retry goes through.
//!
//! A leaf (it imports only [`crate::metrics`] and [`crate::error`], its
//! neighbours in layer 1). A retry is a [`Policy`] (how many attempts, the
//! back-off between them, the longest `Retry-After` honoured, an optional
//! time limit) plus an attempt closure that says what one attempt came to
//! ([`Attempt`]: done, failed for good, or worth another try, perhaps after
//! the server's `Retry-After`). Call sites do not loop: the webhook, the
//! Training API transport, start-up's first token, the model download and
//! the worker's delete each hand [`run`] a policy and a closure, as the
//! delete does (`worker/settle.rs`, `DELETE_ATTEMPTS`, 0.5 s to 2 s):
//!
//! ```ignore
//! let policy = Policy::new(Client::Storage, DELETE_ATTEMPTS, Backoff::new(ms(500), secs(2)));
//! let deleted = retry::run(&policy, "delete", || async {
//!     match queue.delete(id, receipt).await {
//!         Ok(()) => Attempt::Done(()),
//!         Err(e) if e.is_transient() && !e.is_message_gone() => {
//!             Attempt::Retry { error: e, after: None }
//!         }
//!         Err(e) => Attempt::Permanent(e),
//!     }
//! })
//! .await;
//! // Err(RetryError::Permanent(e)): e as returned; Err(GaveUp { last, .. }):
//! // the last QueueError, typed (RetryError::last() gives either).
//! ```
//!
//! Each retry then logs `Storage call failed; retrying` (WARN, with
//! `client = "storage"`, `operation = "delete"`, `attempt`, `max_attempts`,
//! `retry_in_ms`, `error`) and counts in
//! `cvnotify_retries_total{client="storage"}`; what the caller counts per
//! failed call (its storage errors) stays in its closure or its own event.
//!
//! Every retry is one typed event, [`Retrying`]: one WARN line and one
//! `cvnotify_retries_total{client}` increment, written together. A series
//! that ends without a result is a [`RetryError`] whose source is the last
//! attempt's error, typed.
//!
//! Hand-written rather than taken from a retry crate (`backon`): the poll
//! loop needs a resettable interval whose jitter must stay below the cap
//! (the cap sets the idle request rate), not a closure runner; and the
//! runner's rules (a `Retry-After` replaces the back-off delay, one longer
//! than the policy allows ends the series at once with its own error, a
//! time limit cuts an attempt short and keeps the previous attempt's
//! error) would each be an adapter over such a crate, for about as many
//! lines as the runner itself.

use std::error::Error;
use std::future::Future;
use std::time::Duration;

/// Delays `min`, `2*min`, `4*min`, ... up to `max`, each shortened at random
/// by up to `jitter` (a fraction from 0 to 1) of itself, so that many
/// instances do not retry in lockstep. Jitter only shortens: a delay never
/// exceeds `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    current: Option<Duration>,
}

impl Backoff {
    /// Without jitter.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            jitter: 0.0,
            current: None,
        }
    }

    /// Shortens each delay at random by up to `fraction` of it.
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// Starts again from `min`.
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let next = match self.current {
            None => self.min,
            Some(c) => c.saturating_mul(2).min(self.max),
        };
        self.current = Some(next);
        if self.jitter == 0.0 {
            next
        } else {
            next.mul_f64(1.0 - fastrand::f64() * self.jitter)
        }
    }
}

/// A `Retry-After` header value: delay seconds or an HTTP date (RFC 9110).
/// A date in the past is zero; anything else is None.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Who retries: the `client` label of `cvnotify_retries_total`, and what
/// the retry's log line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// A webhook handler's POST.
    Webhook,
    /// A Training API call.
    CustomVision,
    /// Start-up's first token from the storage credential.
    Token,
    /// A queue call (the worker's delete).
    Storage,
    /// Opening a model blob for the download handler.
    Blob,
}

impl Client {
    /// Every client, for tests and documentation.
    pub const ALL: [Client; 5] = [
        Client::Webhook,
        Client::CustomVision,
        Client::Token,
        Client::Storage,
        Client::Blob,
    ];

    /// The `client` label value.
    pub fn label(self) -> &'static str {
        match self {
            Client::Webhook => "webhook",
            Client::CustomVision => "customvision",
            Client::Token => "token",
            Client::Storage => "storage",
            Client::Blob => "blob",
        }
    }

    /// The retry's log message.
    fn message(self) -> &'static str {
        match self {
            Client::Webhook => "Webhook attempt failed; retrying",
            Client::CustomVision => "Training API call failed; retrying",
            Client::Token => "Could not get a token yet; retrying",
            Client::Storage => "Storage call failed; retrying",
            Client::Blob => "Opening the model blob failed; retrying",
        }
    }
}

/// How a series of attempts is run: at most `max_attempts`, the delays of a
/// [`Backoff`] between them (each run starts from its first delay), a
/// server's `Retry-After` honoured up to `max_retry_after`, and optionally
/// a time limit for the whole series.
#[derive(Debug, Clone)]
pub struct Policy {
    client: Client,
    /// None: only the time limit bounds the series.
    max_attempts: Option<u32>,
    backoff: Backoff,
    /// The longest `Retry-After` waited for in place; a longer one ends the
    /// series ([`RetryError::RetryAfterTooLong`]).
    max_retry_after: Duration,
    /// The setting that sets `max_retry_after`, named in the error.
    retry_after_setting: &'static str,
    /// The whole series' limit: an attempt still running at the limit is
    /// cut short.
    within: Option<Duration>,
}

impl Policy {
    /// `max_attempts` (at least 1) with `backoff`'s delays; a `Retry-After`
    /// is honoured up to the back-off's own cap until
    /// [`Policy::retry_after_at_most`] says otherwise.
    pub fn new(client: Client, max_attempts: u32, backoff: Backoff) -> Self {
        Self {
            client,
            max_attempts: Some(max_attempts.max(1)),
            max_retry_after: backoff.max,
            retry_after_setting: "the longest retry delay",
            backoff,
            within: None,
        }
    }

    /// Honours a `Retry-After` of at most `max`; `setting` names what sets
    /// it (`retry_max_delay`), for the error of a longer one.
    pub fn retry_after_at_most(mut self, max: Duration, setting: &'static str) -> Self {
        self.max_retry_after = max;
        self.retry_after_setting = setting;
        self
    }

    /// As many attempts as fit in `limit`, with `backoff`'s delays.
    pub fn for_time(client: Client, limit: Duration, backoff: Backoff) -> Self {
        Self {
            max_attempts: None,
            ..Self::new(client, 1, backoff).within(limit)
        }
    }

    /// Stops the series after `limit` in all, cutting the running attempt
    /// short.
    pub fn within(mut self, limit: Duration) -> Self {
        self.within = Some(limit);
        self
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt<T, E> {
    Done(T),
    /// No later attempt can change it: the series ends with this error.
    Permanent(E),
    /// A later attempt may succeed; `after` is the server's `Retry-After`,
    /// which replaces the back-off delay.
    Retry {
        error: E,
        after: Option<Duration>,
    },
}

/// Why a series of attempts ended without a result. The source is the
/// last attempt's error (the one before it, when the time limit cut the
/// last one short).
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    /// An attempt failed in a way no retry can change: the error itself.
    #[error(transparent)]
    Permanent(E),
    /// Every attempt allowed failed.
    #[error("gave up after {attempts} attempt{}", plural(*attempts))]
    GaveUp {
        attempts: u32,
        #[source]
        last: E,
    },
    /// The server asked for a longer pause than the policy waits in place.
    #[error(
        "the server asks to retry after {}s, which exceeds {setting} ({})",
        after.as_secs(),
        humantime::format_duration(*max)
    )]
    RetryAfterTooLong {
        after: Duration,
        max: Duration,
        setting: &'static str,
        #[source]
        last: E,
    },
    /// The time limit passed; `last` is None when not one attempt finished.
    #[error(
        "{}",
        match last {
            Some(_) => format!("gave up after {attempts} attempt{} in {}", plural(*attempts), humantime::format_duration(*limit)),
            None => format!("no answer within {}", humantime::format_duration(*limit)),
        }
    )]
    TimedOut {
        attempts: u32,
        limit: Duration,
        #[source]
        last: Option<E>,
    },
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl<E> RetryError<E> {
    /// The last attempt's error, if one finished.
    pub fn last(&self) -> Option<&E> {
        match self {
            RetryError::Permanent(e)
            | RetryError::GaveUp { last: e, .. }
            | RetryError::RetryAfterTooLong { last: e, .. } => Some(e),
            RetryError::TimedOut { last, .. } => last.as_ref(),
        }
    }
}

/// One attempt failed and another follows after `delay`: the one log line
/// (WARN) and the `cvnotify_retries_total{client}` increment of a retry.
pub struct Retrying<'a> {
    pub client: Client,
    /// What was attempted (the Training API operation, the webhook's
    /// scheme and host, the credential's mode): never a URL's query.
    pub operation: &'a str,
    /// The attempt that failed, from 1.
    pub attempt: u32,
    /// None when only a time limit bounds the series.
    pub max_attempts: Option<u32>,
    pub delay: Duration,
    pub error: &'a (dyn Error + 'static),
}

impl Retrying<'_> {
    pub fn emit(&self) {
        crate::metrics::retries()
            .get_or_create(&crate::metrics::ClientLabel {
                client: self.client.label(),
            })
            .inc();
        let error = crate::error::error_chain(self.error);
        let (client, operation, attempt) = (self.client.label(), self.operation, self.attempt);
        let retry_in_ms = self.delay.as_millis() as u64;
        let message = self.client.message();
        match self.max_attempts {
            Some(max_attempts) => {
                tracing::warn!(
                    client,
                    operation,
                    attempt,
                    max_attempts,
                    retry_in_ms,
                    error,
                    "{message}"
                )
            }
            None => tracing::warn!(client, operation, attempt, retry_in_ms, error, "{message}"),
        }
    }
}

/// Runs `attempt` under `policy` until it is done, fails for good, or the
/// policy's attempts, `Retry-After` limit or time limit end the series.
/// `operation` names what is attempted in the retry events.
pub async fn run<T, E, F, Fut>(
    policy: &Policy,
    operation: &str,
    mut attempt: F,
) -> Result<T, RetryError<E>>
where
    E: Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let deadline = policy.within.map(|l| tokio::time::Instant::now() + l);
    let mut backoff = policy.backoff.clone();
    backoff.reset();
    let mut previous: Option<E> = None;
    let mut n = 0u32;
    loop {
        n += 1;
        let outcome = match deadline {
            None => attempt().await,
            Some(deadline) => match tokio::time::timeout_at(deadline, attempt()).await {
                Ok(outcome) => outcome,
                // Cut short: the previous attempt's error says more than
                // "no answer".
                Err(_) => {
                    return Err(RetryError::TimedOut {
                        attempts: n,
                        limit: policy.within.unwrap_or_default(),
                        last: previous,
                    });
                }
            },
        };
        let (error, after) = match outcome {
            Attempt::Done(t) => return Ok(t),
            Attempt::Permanent(e) => return Err(RetryError::Permanent(e)),
            Attempt::Retry { error, after } => (error, after),
        };
        if policy.max_attempts.is_some_and(|max| n >= max) {
            return Err(RetryError::GaveUp {
                attempts: n,
                last: error,
            });
        }
        let mut delay = match after {
            Some(a) if a > policy.max_retry_after => {
                return Err(RetryError::RetryAfterTooLong {
                    after: a,
                    max: policy.max_retry_after,
                    setting: policy.retry_after_setting,
                    last: error,
                });
            }
            Some(a) => a,
            None => backoff.next_delay(),
        };
        if let Some(deadline) = deadline {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(RetryError::TimedOut {
                    attempts: n,
                    limit: policy.within.unwrap_or_default(),
                    last: Some(error),
                });
            }
            delay = delay.min(remaining);
        }
        Retrying {
            client: policy.client,
            operation,
            attempt: n,
            max_attempts: policy.max_attempts,
            delay,
            error: &error,
        }
        .emit();
        previous = Some(error);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(110) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn grows_to_max_with_bounded_jitter() {
        let mut b =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).with_jitter(0.1);
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

    #[test]
    fn without_jitter_the_sequence_is_exact() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let seq: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(seq, vec![500, 1000, 2000, 4000, 8000, 10000, 10000]);
    }

    #[test]
    fn half_jitter_stays_between_half_and_whole() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).with_jitter(0.5);
        for nominal in [1, 2, 4, 8, 16, 30, 30] {
            let d = b.next_delay();
            let n = Duration::from_secs(nominal);
            assert!(d <= n && d >= n / 2, "{d:?} for {n:?}");
        }
    }
    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("attempt {0} failed")]
    struct Failed(u32);

    fn policy(max_attempts: u32) -> Policy {
        Policy::new(
            Client::Storage,
            max_attempts,
            Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
        )
    }

    /// Runs `policy` over attempts that follow `script` (attempt n gets
    /// `script(n)`); the result, the number of attempts and the (paused)
    /// time it took.
    async fn run_script(
        policy: &Policy,
        script: impl Fn(u32) -> Attempt<&'static str, Failed>,
    ) -> (Result<&'static str, RetryError<Failed>>, u32, Duration) {
        let calls = std::cell::Cell::new(0);
        let started = tokio::time::Instant::now();
        let result = run(policy, "test", || {
            calls.set(calls.get() + 1);
            let outcome = script(calls.get());
            async move { outcome }
        })
        .await;
        (result, calls.get(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn done_the_first_time_is_one_attempt_and_no_wait() {
        let (r, calls, took) = run_script(&policy(5), |_| Attempt::Done("ok")).await;
        assert_eq!((r.unwrap(), calls, took), ("ok", 1, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_stops_at_once_with_its_own_error() {
        let (r, calls, took) = run_script(&policy(5), |n| Attempt::Permanent(Failed(n))).await;
        let e = r.unwrap_err();
        assert_eq!((calls, took), (1, Duration::ZERO));
        assert!(matches!(e, RetryError::Permanent(Failed(1))), "{e:?}");
        // Transparent: the error is the attempt's own.
        assert_eq!(e.to_string(), "attempt 1 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_the_backoff_and_succeed() {
        let (r, calls, took) = run_script(&policy(5), |n| {
            if n < 3 {
                Attempt::Retry {
                    error: Failed(n),
                    after: None,
                }
            } else {
                Attempt::Done("third")
            }
        })
        .await;
        assert_eq!(r.unwrap(), "third");
        // 100 ms, then 200 ms: no jitter in this policy.
        assert_eq!((calls, took), (3, Duration::from_millis(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_replaces_the_backoff_delay_up_to_the_policy_cap() {
        let p = policy(5).retry_after_at_most(Duration::from_secs(5), "retry_max_delay");
        let (r, calls, took) = run_script(&p, |n| match n {
            1 => Attempt::Retry {
                error: Failed(n),
                after: Some(Duration::from_secs(3)),
            },
            _ => Attempt::Done("after 3 s"),
        })
        .await;
        assert_eq!(r.unwrap(), "after 3 s");
        assert_eq!((calls, took), (2, Duration::from_secs(3)));

        // Beyond the cap: no wait, no further attempt, the server's wish
        // and the attempt's error in the result.
        let (r, calls, took) = run_script(&p, |n| Attempt::Retry {
            error: Failed(n),
            after: Some(Duration::from_secs(6)),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!((calls, took), (1, Duration::ZERO));
        match &e {
            RetryError::RetryAfterTooLong {
                after, max, last, ..
            } => {
                assert_eq!(*after, Duration::from_secs(6));
                assert_eq!(*max, Duration::from_secs(5));
                assert_eq!(*last, Failed(1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "the server asks to retry after 6s, which exceeds retry_max_delay (5s)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_keeping_the_last_error_as_its_typed_source() {
        let (r, calls, took) = run_script(&policy(3), |n| Attempt::Retry {
            error: Failed(n),
            after: None,
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!((calls, took), (3, Duration::from_millis(300)));
        assert_eq!(e.to_string(), "gave up after 3 attempts");
        let source = e.source().expect("the last error is the source");
        assert_eq!(source.downcast_ref::<Failed>(), Some(&Failed(3)));
        assert_eq!(e.last(), Some(&Failed(3)));
        assert_eq!(
            crate::error::error_chain(&e),
            "gave up after 3 attempts: attempt 3 failed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_time_limit_cuts_the_running_attempt_and_keeps_the_previous_error() {
        let p = Policy::for_time(
            Client::Storage,
            Duration::from_secs(1),
            Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
        );
        let calls = std::cell::Cell::new(0u32);
        let started = tokio::time::Instant::now();
        let r: Result<(), _> = run(&p, "test", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n == 1 {
                    Attempt::Retry {
                        error: Failed(n),
                        after: None,
                    }
                } else {
                    std::future::pending().await
                }
            }
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(calls.get(), 2);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(
            matches!(
                &e,
                RetryError::TimedOut {
                    attempts: 2,
                    last: Some(Failed(1)),
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "gave up after 2 attempts in 1s");

        // Not one attempt finished: nothing to keep.
        let (r, calls, _) = run_script(&p, |_| Attempt::Done("never")).await;
        assert_eq!((r.unwrap(), calls), ("never", 1));
        let r: Result<(), RetryError<Failed>> = run(&p, "test", std::future::pending).await;
        let e = r.unwrap_err();
        assert!(e.source().is_none(), "{e:?}");
        assert_eq!(e.to_string(), "no answer within 1s");
    }

    #[test]
    fn every_client_has_its_series_in_the_metrics() {
        for c in Client::ALL {
            assert!(crate::metrics::RETRY_CLIENTS.contains(&c.label()), "{c:?}");
        }
        assert_eq!(Client::ALL.len(), crate::metrics::RETRY_CLIENTS.len());
    }
}
