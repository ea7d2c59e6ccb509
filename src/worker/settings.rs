//! [`Settings`]: the loop's tuning, taken from `[queue]` and
//! `shutdown_timeout`, and the retry-delay rule.

use crate::config::{PoisonFormat, QueueConfig};
use std::time::Duration;

/// Tuning of the loop (from `[queue]` and `shutdown_timeout`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch_size: u8,
    pub visibility_timeout: Duration,
    pub max_concurrency: usize,
    pub min_poll_interval: Duration,
    pub max_poll_interval: Duration,
    pub max_dequeue_count: u32,
    pub max_deliveries_without_outcome: u32,
    pub poison_format: PoisonFormat,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    pub shutdown_timeout: Duration,
    /// Stop once the queue is drained (`run --once`).
    pub once: bool,
}

impl Settings {
    pub fn new(q: &QueueConfig, shutdown_timeout: Duration, once: bool) -> Self {
        Self {
            batch_size: q.batch_size,
            visibility_timeout: q.visibility_timeout,
            max_concurrency: q.max_concurrency,
            min_poll_interval: q.min_poll_interval,
            max_poll_interval: q.max_poll_interval,
            max_dequeue_count: q.max_dequeue_count,
            max_deliveries_without_outcome: q.max_deliveries_without_outcome,
            poison_format: q.poison_format,
            retry_base_delay: q.retry_base_delay,
            retry_max_delay: q.retry_max_delay,
            shutdown_timeout,
            once,
        }
    }

    /// How long a failed message stays hidden before its next delivery:
    /// `retry_base_delay * 2^(failures - 1)`, capped, whole seconds.
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
        let d = self
            .retry_base_delay
            .saturating_mul(factor)
            .min(self.retry_max_delay);
        Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let mut s = Settings::new(&QueueConfig::default(), Duration::from_secs(5), true);
        s.retry_base_delay = Duration::from_secs(1);
        s.retry_max_delay = Duration::from_secs(60);
        let d: Vec<u64> = (1..=8).map(|n| s.retry_delay(n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(s.retry_delay(u32::MAX).as_secs(), 60);
    }
}
