//! The systemd heartbeat: `READY=1`, `WATCHDOG=1`, `STOPPING=1` over
//! `NOTIFY_SOCKET` (a no-op when it is unset).
//!
//! `WATCHDOG=1` is sent only while the poll loop itself is waiting (through
//! [`alive`]), so a loop that hangs stops sending it and systemd restarts
//! the service. Knows nothing of queues or messages.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

pub(super) struct Heartbeat {
    interval: Option<tokio::time::Interval>,
    ready_sent: bool,
}

impl Heartbeat {
    pub(super) fn new() -> Self {
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

    /// `READY=1`, once: the first successful receive.
    pub(super) fn ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            let _ = sd_notify::notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("Listening"),
            ]);
        }
    }

    /// `STOPPING=1`.
    pub(super) fn stopping(&self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
}

/// Awaits `fut`, sending watchdog pings while it is pending.
pub(super) async fn alive<F: Future>(hb: &mut Heartbeat, fut: F) -> F::Output {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = hb.tick() => hb.beat(),
        }
    }
}
