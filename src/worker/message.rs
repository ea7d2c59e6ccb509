//! One message's life: decode → route → run its handlers while renewing its
//! visibility → settle.
//!
//! Runs inside the message's span (message id, dequeue count, event type,
//! project id); every log line of the message and its handlers carries it.
//! What happens to the message afterwards is [`super::settle`]'s decision.
//! A body that is cvnotify's retry envelope is unwrapped first: handlers,
//! the decoder and the poison queue see the original body.

use super::events::{HandlerFinished, InternalEvent, NoRoute, PoisonReason, RenewFailed, Renewed};
use super::settle::{Failure, Outcome, Tracked};
use super::shared::Shared;
use crate::envelope::Envelope;
use crate::event::decode;
use crate::handler::{Delivery, Route, run_routes};
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
        let queue = self.queue.name();
        // The message's span. Its fields are every log line's context and,
        // with traces on, attributes of the OpenTelemetry span, whose name
        // and kind come from the `otel.*` fields (log lines leave those
        // out). The messaging semantic conventions' attributes of a
        // consumer's "process" span and the outcome go to the trace only.
        let span = info_span!(
            "message",
            message_id = %m.id,
            dequeue_count = m.dequeue_count,
            event_type = tracing::field::Empty,
            project_id = tracing::field::Empty,
            iteration_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            "otel.name" = %format_args!("process {queue}"),
            "otel.kind" = "consumer",
        );
        crate::telemetry::set_attributes(&span, || {
            [
                ("messaging.system", "azure_storage_queues".into()),
                ("messaging.destination.name", queue.to_owned().into()),
                ("messaging.operation.type", "process".into()),
                ("messaging.operation.name", "process".into()),
                ("messaging.message.id", m.id.clone().into()),
            ]
        });
        if let Some((trace_id, span_id)) = crate::telemetry::ids(&span) {
            span.record("trace_id", trace_id);
            span.record("span_id", span_id);
        }
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
        let tracked = self.track(&m);
        // Deliveries before this one that ended neither handled nor failed:
        // the daemon stopped (or crashed) while handling the message.
        let without_outcome = m
            .dequeue_count
            .saturating_sub(1)
            .saturating_sub(tracked.failures);
        if without_outcome >= s.max_deliveries_without_outcome {
            let detail = format!(
                "delivered {} times, {without_outcome} of them ending without an outcome (max_deliveries_without_outcome is {}); it may crash the daemon",
                m.dequeue_count, s.max_deliveries_without_outcome
            );
            self.poison(
                &m,
                &tracked,
                &m.pop_receipt,
                PoisonReason::DequeueCountExceeded,
                &detail,
                None,
            )
            .await;
            return;
        }
        let notification = match decode(tracked.body.as_bytes()) {
            Ok(n) => n,
            Err(e) => {
                let detail = format!("cannot be decoded: {e}");
                self.poison(
                    &m,
                    &tracked,
                    &m.pop_receipt,
                    PoisonReason::DecodeError,
                    &detail,
                    None,
                )
                .await;
                return;
            }
        };
        let event = &notification.event;
        // Every log line of the message carries it: an unknown type is
        // the message's own text, bounded like any outside text.
        span.record(
            "event_type",
            crate::limit::text(event.wire_type(), crate::limit::MAX_TEXT).as_ref(),
        );
        if let Some(p) = event.project_id() {
            span.record("project_id", tracing::field::display(p));
        }
        if let Some(i) = event.iteration_id() {
            span.record("iteration_id", tracing::field::display(i));
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
            trace_id: crate::telemetry::ids(&span).map(|(t, _)| t),
            model: None,
        };
        let started = Instant::now();
        let (outcome, receipt) = self.run_handlers(&m, &routes, &delivery, abort).await;
        self.settle(&m, &tracked, &receipt, outcome, started.elapsed())
            .await;
    }

    /// The original body and the failures recorded in the message.
    fn track(&self, m: &ReceivedMessage) -> Tracked {
        let now = OffsetDateTime::now_utc();
        match Envelope::open(&m.body) {
            Some(e) => Tracked {
                body: e.body,
                failures: e.failures,
                first_delivery: e.first_delivery.unwrap_or(now),
            },
            None => Tracked {
                body: m.body.clone(),
                failures: 0,
                first_delivery: now,
            },
        }
    }

    /// Runs the routed handlers (model downloads first, see
    /// [`run_routes`]), extending the message's visibility
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
        let work = run_routes(routes, delivery);
        tokio::pin!(work);

        let mut receipt = m.pop_receipt.clone();
        let renew_every = s.visibility_timeout / 2;
        let mut next_renewal = Instant::now() + renew_every;
        let mut lost = false;
        let outcome = loop {
            tokio::select! {
                results = &mut work => {
                    let mut reasons = Vec::new();
                    let mut handlers = Vec::new();
                    let mut permanent = false;
                    for (name, r, took) in &results {
                        HandlerFinished { handler: name, took: *took, ok: r.is_ok() }.emit(&self.metrics);
                        if let Err(e) = r {
                            reasons.push(format!("handler `{name}` failed: {e}"));
                            handlers.push(*name);
                            permanent |= e.is_permanent();
                        }
                    }
                    break if reasons.is_empty() {
                        Outcome::Handled
                    } else {
                        Outcome::Failed(Failure {
                            // Each handler's part is already bounded; so is
                            // the whole, whatever the number of handlers.
                            reason: crate::limit::text(&reasons.join("; "), crate::limit::MAX_TEXT).into_owned(),
                            handlers: handlers.join(", "),
                            permanent,
                        })
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
