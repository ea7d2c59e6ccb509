//! [`ExpectedExports`]: the exports cvnotify asked for whose `Export`
//! notification has not arrived yet; while any is expected, the poll loop
//! polls at `queue.min_poll_interval` instead of backing off.
//!
//! A leaf: the `customvision` handler records an expectation with a
//! deadline, the poll loop reports what it received and asks, when it
//! chooses its delay, whether any expectation is still open. Neither
//! reaches into the other; this object is all they share. It imports
//! only the leaves [`crate::event`] and [`crate::envelope`], and never logs.

use crate::envelope::Envelope;
use crate::event::{Event, decode};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

/// Expectations kept at most: a flood of training notifications must not
/// grow this without bound; the oldest is dropped first.
const MAX_EXPECTED: usize = 1024;

#[derive(Debug)]
struct Expected {
    project: Uuid,
    iteration: Uuid,
    /// `Export` notifications still to come.
    remaining: u32,
    deadline: Instant,
}

/// Exports whose notification the poll loop is waiting for.
#[derive(Debug, Default)]
pub struct ExpectedExports {
    entries: Mutex<Vec<Expected>>,
    /// Wakes the poll loop out of a long back-off sleep when an
    /// expectation is added.
    added: Notify,
}

impl ExpectedExports {
    pub fn new() -> Self {
        Self::default()
    }

    /// `count` more `Export` notifications are expected for this iteration
    /// within `wait`.
    pub fn expect(&self, project: Uuid, iteration: Uuid, count: u32, wait: Duration) {
        if count == 0 {
            return;
        }
        let deadline = Instant::now() + wait;
        {
            let mut entries = self.entries.lock().expect("not poisoned");
            match entries
                .iter_mut()
                .find(|e| e.project == project && e.iteration == iteration)
            {
                Some(e) => {
                    e.remaining = e.remaining.saturating_add(count);
                    e.deadline = e.deadline.max(deadline);
                }
                None => {
                    if entries.len() >= MAX_EXPECTED {
                        entries.remove(0);
                    }
                    entries.push(Expected {
                        project,
                        iteration,
                        remaining: count,
                        deadline,
                    });
                }
            }
        }
        self.added.notify_one();
    }

    /// An `Export` notification (completed or failed) for this iteration
    /// was received.
    pub fn arrived(&self, project: Uuid, iteration: Uuid) {
        let mut entries = self.entries.lock().expect("not poisoned");
        if let Some(pos) = entries
            .iter()
            .position(|e| e.project == project && e.iteration == iteration)
        {
            entries[pos].remaining -= 1;
            if entries[pos].remaining == 0 {
                entries.remove(pos);
            }
        }
    }

    /// Looks at received message bodies (cvnotify's retry envelope
    /// unwrapped) for `Export` notifications; only decodes them while
    /// something is expected.
    pub fn observe<'a>(&self, bodies: impl IntoIterator<Item = &'a str>) {
        if !self.is_waiting() {
            return;
        }
        for body in bodies {
            let Ok(events) = decode(Envelope::original(body).as_bytes()) else {
                continue;
            };
            for n in events {
                if let Event::Export {
                    project_id,
                    iteration_id,
                    ..
                } = n.event
                {
                    self.arrived(project_id, iteration_id);
                }
            }
        }
    }

    /// Whether an expected export is still open (expired ones are dropped).
    pub fn is_waiting(&self) -> bool {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("not poisoned");
        entries.retain(|e| e.deadline > now);
        !entries.is_empty()
    }

    /// Completes when an expectation is added (at once if one was added
    /// since the last call).
    pub async fn added(&self) {
        self.added.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export_body(p: Uuid, i: Uuid) -> String {
        format!(
            r#"{{"version":"1.0","type":"Export","Content":{{"projectId":"{p}","iterationId":"{i}","exportStatus":"ExportCompleted","modelUri":"https://a.blob.core.windows.net/c/m.ONNX"}}}}"#
        )
    }

    #[tokio::test(start_paused = true)]
    async fn waits_until_every_expected_export_arrived_or_the_deadline() {
        let e = ExpectedExports::new();
        let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(!e.is_waiting());
        e.expect(p, i, 2, Duration::from_secs(60));
        assert!(e.is_waiting());
        let other = export_body(p, Uuid::new_v4());
        e.observe([other.as_str(), "not json"]);
        assert!(e.is_waiting());
        let mine = export_body(p, i);
        e.observe([mine.as_str()]);
        assert!(e.is_waiting(), "one of two arrived");
        // Redelivered after a failure: wrapped in the retry envelope.
        let wrapped = Envelope::new(&mine).to_text();
        e.observe([wrapped.as_str()]);
        assert!(!e.is_waiting());

        e.expect(p, i, 1, Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!e.is_waiting(), "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn adding_wakes_a_waiter_even_if_it_was_not_yet_waiting() {
        let e = ExpectedExports::new();
        e.expect(Uuid::new_v4(), Uuid::new_v4(), 1, Duration::from_secs(5));
        tokio::time::timeout(Duration::from_millis(1), e.added())
            .await
            .expect("the permit was stored");
    }

    #[test]
    fn the_number_of_expectations_is_bounded() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let e = ExpectedExports::new();
            for _ in 0..MAX_EXPECTED + 10 {
                e.expect(Uuid::new_v4(), Uuid::new_v4(), 1, Duration::from_secs(5));
            }
            assert_eq!(e.entries.lock().unwrap().len(), MAX_EXPECTED);
        });
    }
}
