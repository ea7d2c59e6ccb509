//! The one back-off primitive: exponential delays with bounded jitter.
//!
//! A leaf. Used by the poll loop (empty receives and storage errors), the
//! webhook's attempts, credential verification at start-up, and the delete
//! retry. Hand-written rather than taken from a retry crate: those model
//! "retry this call" (a closure they own), while the poll loop needs a
//! resettable interval whose jitter must stay below the cap (the cap sets the
//! idle request rate), and the webhook must be able to replace a delay with
//! the server's `Retry-After`. The whole primitive is this one type, plus
//! [`parse_retry_after`] for the servers that say how long to wait.

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
}
