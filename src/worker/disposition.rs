//! Deciding a message's fate: [`disposition`], a pure function of what
//! became of its delivery ([`Outcome`]), what is known of its deliveries
//! ([`Facts`]) and the [`Settings`]. `settle` applies what it returns;
//! nothing else decides.
//!
//! - Handled, or wanted by no handler: deleted.
//! - Failed before `max_dequeue_count` failures: retried. The failure count
//!   is written into the message (cvnotify's envelope around the original
//!   body) and it is hidden for the retry delay. Counting failures in the
//!   message, rather than taking the queue's dequeue count, is what keeps
//!   shutdowns and restarts from counting as failures.
//! - Failed for the `max_dequeue_count`-th time, or permanently: poisoned.
//! - Undecodable, or delivered `max_deliveries_without_outcome` times
//!   without an outcome (it may be what crashes the daemon): poisoned
//!   without running a handler.
//! - Aborted at shutdown: made visible again at once, unchanged.
//!
//! No I/O, no clock: every rule is table-tested below.

use super::events::PoisonReason;
use super::settings::Settings;
use crate::event::DecodeError;
use std::borrow::Cow;
use std::time::Duration;

/// What became of one delivery.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Earlier deliveries ended without an outcome `without_outcome`
    /// times, reaching `max_deliveries_without_outcome`: not run again.
    Unfinished { without_outcome: u32 },
    /// The body cannot be decoded.
    Undecodable(DecodeError),
    /// No handler takes the event.
    NoRoute,
    /// Every routed handler succeeded; they took `took`.
    Handled { took: Duration },
    /// At least one handler failed; they took `took`.
    Failed { failure: Failure, took: Duration },
    /// The shutdown timeout stopped its handlers.
    Aborted,
}

/// Why the handlers of one delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    /// Every failing handler's reason, bounded.
    pub reason: String,
    /// The failing handlers' names.
    pub handlers: String,
    /// At least one said retrying cannot help.
    pub permanent: bool,
}

/// What is known about a message's deliveries when its fate is decided.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    /// The queue's count of deliveries, this one included.
    pub dequeue_count: u32,
    /// Deliveries whose handlers failed before this one, as recorded in
    /// the message.
    pub failures: u32,
    /// Update Message is denied: nothing can be recorded in the message,
    /// and no delay set.
    pub update_denied: bool,
}

impl Facts {
    /// Deliveries before this one that ended neither handled nor failed
    /// (the daemon stopped or crashed while handling the message), when
    /// they reached `max_deliveries_without_outcome`: then its handlers are
    /// not run again.
    pub fn unfinished(&self, s: &Settings) -> Option<u32> {
        let without_outcome = self
            .dequeue_count
            .saturating_sub(1)
            .saturating_sub(self.failures);
        (without_outcome >= s.max_deliveries_without_outcome).then_some(without_outcome)
    }

    /// Failures so far, this delivery's included. Without Update Message
    /// nothing can be recorded in the message: then every earlier delivery
    /// counts as a failure, as the queue's dequeue count says.
    fn failures_now(&self) -> u32 {
        if self.update_denied {
            self.failures.max(self.dequeue_count.saturating_sub(1)) + 1
        } else {
            self.failures + 1
        }
    }
}

/// What to do with a message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Disposition {
    /// Delete it: handled after `handled_in`, or (`None`) wanted by no
    /// handler.
    Delete { handled_in: Option<Duration> },
    /// Make it visible again at once, unchanged.
    Release,
    /// Retry it later.
    Retry(Retry),
    /// Copy it to the poison queue, then delete it.
    Poison(Poison),
}

/// A failed message's next try.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Retry {
    /// Failures so far, this one included (recorded in the message).
    pub failures: u32,
    /// How long it stays hidden.
    pub delay: Duration,
    /// Whether the failure can be recorded and the delay set; without
    /// Update Message it reappears after its visibility timeout instead.
    pub record: bool,
    pub failure: Failure,
    /// How long its handlers took.
    pub took: Duration,
}

/// A message for the poison queue.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Poison {
    pub reason: PoisonReason,
    /// Why, for the log line and the envelope: bounded, so the envelope
    /// has room for it beside the body.
    pub detail: String,
    /// Failures recorded in the poison envelope.
    pub failures: u32,
    /// The failing handlers, when handlers failed (the delivery then
    /// counts as failed before it is poisoned).
    pub handlers: Option<String>,
    /// How long it stays hidden if the copy fails (it is retried then).
    pub retry_in: Duration,
}

/// The one decision of a message's fate.
pub(super) fn disposition(outcome: Outcome, facts: &Facts, s: &Settings) -> Disposition {
    let poison = |reason, detail, failures, handlers| {
        Disposition::Poison(Poison {
            reason,
            detail: bounded(detail),
            failures,
            handlers,
            retry_in: s.retry_delay(facts.dequeue_count),
        })
    };
    match outcome {
        Outcome::Handled { took } => Disposition::Delete {
            handled_in: Some(took),
        },
        Outcome::NoRoute => Disposition::Delete { handled_in: None },
        Outcome::Aborted => Disposition::Release,
        Outcome::Undecodable(e) => {
            let detail = format!("cannot be decoded: {e}");
            poison(PoisonReason::DecodeError, detail, facts.failures, None)
        }
        Outcome::Unfinished { without_outcome } => {
            let detail = format!(
                "delivered {} times, {without_outcome} of them ending without an outcome (max_deliveries_without_outcome is {}); it may crash the daemon",
                facts.dequeue_count, s.max_deliveries_without_outcome
            );
            poison(
                PoisonReason::DequeueCountExceeded,
                detail,
                facts.failures,
                None,
            )
        }
        Outcome::Failed { failure, took } => {
            let failures = facts.failures_now();
            match give_up(&failure, failures, facts, s) {
                Some((reason, detail)) => poison(reason, detail, failures, Some(failure.handlers)),
                None => Disposition::Retry(Retry {
                    failures,
                    delay: s.retry_delay(failures),
                    record: !facts.update_denied,
                    failure,
                    took,
                }),
            }
        }
    }
}

/// Why a message that failed for the `failures`-th time is not retried,
/// if it is not: a permanent failure, or `max_dequeue_count` reached.
fn give_up(
    failure: &Failure,
    failures: u32,
    facts: &Facts,
    s: &Settings,
) -> Option<(PoisonReason, String)> {
    if failure.permanent {
        let detail = format!("permanent failure: {}", failure.reason);
        return Some((PoisonReason::PermanentFailure, detail));
    }
    if failures < s.max_dequeue_count {
        return None;
    }
    let restarts = facts.dequeue_count.saturating_sub(failures);
    let restarts = if restarts > 0 {
        format!(
            " (delivered {} times, {restarts} ending without an outcome)",
            facts.dequeue_count
        )
    } else {
        String::new()
    };
    let detail = format!(
        "failed on delivery {failures} of max_dequeue_count {}{restarts}: {}",
        s.max_dequeue_count, failure.reason
    );
    Some((PoisonReason::MaxDequeueCount, detail))
}

/// `detail` cut to [`crate::limit::MAX_TEXT`], without a copy when it fits.
fn bounded(detail: String) -> String {
    match crate::limit::text(&detail, crate::limit::MAX_TEXT) {
        Cow::Borrowed(_) => detail,
        Cow::Owned(cut) => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueConfig;

    /// max_dequeue_count 3, max_deliveries_without_outcome 2, retry delays
    /// 1 s doubling up to 60 s.
    fn settings() -> Settings {
        let mut s = Settings::new(&QueueConfig::default(), Duration::from_secs(5), false);
        s.max_dequeue_count = 3;
        s.max_deliveries_without_outcome = 2;
        s.retry_base_delay = Duration::from_secs(1);
        s.retry_max_delay = Duration::from_secs(60);
        s
    }

    fn facts(dequeue_count: u32, failures: u32, update_denied: bool) -> Facts {
        Facts {
            dequeue_count,
            failures,
            update_denied,
        }
    }

    fn failed(permanent: bool) -> Outcome {
        Outcome::Failed {
            failure: failure(permanent),
            took: Duration::from_millis(7),
        }
    }

    fn failure(permanent: bool) -> Failure {
        Failure {
            reason: "handler `hook` failed: exit 1".into(),
            handlers: "hook".into(),
            permanent,
        }
    }

    fn retry(failures: u32, delay_s: u64, record: bool) -> Disposition {
        Disposition::Retry(Retry {
            failures,
            delay: Duration::from_secs(delay_s),
            record,
            failure: failure(false),
            took: Duration::from_millis(7),
        })
    }

    fn poison(
        reason: PoisonReason,
        detail: &str,
        failures: u32,
        handlers: Option<&str>,
        retry_in_s: u64,
    ) -> Disposition {
        Disposition::Poison(Poison {
            reason,
            detail: detail.into(),
            failures,
            handlers: handlers.map(str::to_owned),
            retry_in: Duration::from_secs(retry_in_s),
        })
    }

    #[test]
    fn every_outcome_has_one_disposition() {
        let took = Duration::from_millis(7);
        let undecodable = || Outcome::Undecodable(crate::event::decode(b"").unwrap_err());
        let cases: Vec<(&str, Outcome, Facts, Disposition)> = vec![
            (
                "handled: deleted",
                Outcome::Handled { took },
                facts(1, 0, false),
                Disposition::Delete {
                    handled_in: Some(took),
                },
            ),
            (
                "no route: deleted",
                Outcome::NoRoute,
                facts(2, 1, false),
                Disposition::Delete { handled_in: None },
            ),
            (
                "aborted: released",
                Outcome::Aborted,
                facts(3, 2, false),
                Disposition::Release,
            ),
            (
                "first failure: retried after 1 s",
                failed(false),
                facts(1, 0, false),
                retry(1, 1, true),
            ),
            (
                "second failure: retried after 2 s",
                failed(false),
                facts(2, 1, false),
                retry(2, 2, true),
            ),
            (
                "restarts do not count as failures",
                failed(false),
                facts(3, 1, false),
                retry(2, 2, true),
            ),
            (
                "without Update Message earlier deliveries count as failures",
                failed(false),
                facts(2, 0, true),
                retry(2, 2, false),
            ),
            (
                "third failure: poisoned",
                failed(false),
                facts(3, 2, false),
                poison(
                    PoisonReason::MaxDequeueCount,
                    "failed on delivery 3 of max_dequeue_count 3: handler `hook` failed: exit 1",
                    3,
                    Some("hook"),
                    4,
                ),
            ),
            (
                "third failure after restarts: poisoned, restarts named",
                failed(false),
                facts(4, 2, false),
                poison(
                    PoisonReason::MaxDequeueCount,
                    "failed on delivery 3 of max_dequeue_count 3 (delivered 4 times, 1 ending without an outcome): handler `hook` failed: exit 1",
                    3,
                    Some("hook"),
                    8,
                ),
            ),
            (
                "without Update Message the dequeue count reaches the limit",
                failed(false),
                facts(3, 0, true),
                poison(
                    PoisonReason::MaxDequeueCount,
                    "failed on delivery 3 of max_dequeue_count 3: handler `hook` failed: exit 1",
                    3,
                    Some("hook"),
                    4,
                ),
            ),
            (
                "permanent failure: poisoned at once",
                failed(true),
                facts(1, 0, false),
                poison(
                    PoisonReason::PermanentFailure,
                    "permanent failure: handler `hook` failed: exit 1",
                    1,
                    Some("hook"),
                    1,
                ),
            ),
            (
                "undecodable: poisoned, failures kept",
                undecodable(),
                facts(2, 1, false),
                poison(
                    PoisonReason::DecodeError,
                    "cannot be decoded: the body is empty",
                    1,
                    None,
                    2,
                ),
            ),
            (
                "unfinished too often: poisoned",
                Outcome::Unfinished { without_outcome: 2 },
                facts(3, 0, false),
                poison(
                    PoisonReason::DequeueCountExceeded,
                    "delivered 3 times, 2 of them ending without an outcome (max_deliveries_without_outcome is 2); it may crash the daemon",
                    0,
                    None,
                    4,
                ),
            ),
        ];
        let s = settings();
        for (case, outcome, facts, want) in cases {
            assert_eq!(disposition(outcome, &facts, &s), want, "{case}");
        }
    }

    #[test]
    fn unfinished_counts_deliveries_that_neither_succeeded_nor_failed() {
        let s = settings();
        for (dequeue_count, failures, want) in [
            (1, 0, None),
            (2, 0, None),
            (3, 0, Some(2)),
            (3, 1, None),
            (5, 2, Some(2)),
            (0, 0, None),
        ] {
            assert_eq!(
                facts(dequeue_count, failures, false).unfinished(&s),
                want,
                "dequeue count {dequeue_count}, failures {failures}"
            );
        }
    }

    #[test]
    fn a_long_detail_is_bounded() {
        let mut f = failure(true);
        f.reason = "x".repeat(10 * 1024);
        let outcome = Outcome::Failed {
            failure: f,
            took: Duration::ZERO,
        };
        let Disposition::Poison(p) = disposition(outcome, &facts(1, 0, false), &settings()) else {
            panic!("a permanent failure is poisoned");
        };
        assert!(
            p.detail.len() < crate::limit::MAX_TEXT + 64,
            "{} bytes",
            p.detail.len()
        );
        assert!(p.detail.ends_with("more bytes not shown)"), "{}", p.detail);
    }
}
