//! One message's life: decode → route → run its handlers while renewing its
//! visibility → settle.
//!
//! Runs inside the message's span (message id, dequeue count, event type,
//! project id); every log line of the message and its handlers carries it.
//! What happens to the message afterwards is [`super::settle`]'s decision.

use super::events::{HandlerFinished, NoRoute, PoisonReason, RenewFailed, Renewed};
use super::settle::Outcome;
use super::shared::Shared;
use crate::event::decode;
use crate::handler::{Delivery, Route};
use crate::queue::{QueueError, ReceivedMessage};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

impl Shared {
    /// Handles one received message to the end, unless `abort` fires first
    /// (shutdown timeout), in which case it is released.
    pub(super) async fn process(self: Arc<Self>, m: ReceivedMessage, abort: CancellationToken) {
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
            let detail = format!(
                "delivered {} times, more than max_dequeue_count ({}); it may crash the daemon",
                m.dequeue_count, s.max_dequeue_count
            );
            self.poison(
                &m,
                &m.pop_receipt,
                PoisonReason::DequeueCountExceeded,
                &detail,
            )
            .await;
            return;
        }
        let notification = match decode(m.body.as_bytes()) {
            Ok(n) => n,
            Err(e) => {
                let detail = format!("cannot be decoded: {e}");
                self.poison(&m, &m.pop_receipt, PoisonReason::DecodeError, &detail)
                    .await;
                return;
            }
        };
        let event = &notification.event;
        span.record("event_type", event.wire_type());
        if let Some(p) = event.project_id() {
            span.record("project_id", tracing::field::display(p));
        }
        let router = self.router.clone();
        let routes = router.route(&notification);
        if routes.is_empty() {
            NoRoute.emit(&self.metrics);
            self.delete(&m.id, &m.pop_receipt).await;
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
        let (outcome, receipt) = self.run_handlers(&m, &routes, &delivery, abort).await;
        self.settle(&m, &receipt, outcome, started.elapsed()).await;
    }

    /// Runs every routed handler at once, extending the message's visibility
    /// every half visibility timeout meanwhile. Returns the outcome and the
    /// message's latest pop receipt.
    async fn run_handlers(
        &self,
        m: &ReceivedMessage,
        routes: &[&Route],
        delivery: &Delivery,
        abort: CancellationToken,
    ) -> (Outcome, String) {
        let s = &self.settings;
        let work = futures_util::future::join_all(routes.iter().map(|r| {
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
                    let mut failures = Vec::new();
                    for (name, r, took) in &results {
                        HandlerFinished { handler: name, took: *took, ok: r.is_ok() }.emit(&self.metrics);
                        if let Err(e) = r {
                            failures.push(format!("handler `{name}` failed: {e}"));
                        }
                    }
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
                            Renewed.emit(&self.metrics);
                        }
                        Err(error @ QueueError::Forbidden { .. }) => self.update_forbidden(&error),
                        Err(error) => {
                            lost = error.is_message_gone();
                            RenewFailed { error: &error }.emit(&self.metrics);
                        }
                    }
                    next_renewal += renew_every;
                }
                _ = abort.cancelled() => break Outcome::Aborted,
            }
        };
        (outcome, receipt)
    }
}
