//! [`Lifecycle`]: one message's life, from the poll loop handing it over
//! to its settle: decode → for each of its events (one, or an Event Grid
//! array's): route → run its handlers, all while renewing the message's
//! visibility → [`disposition`] → [`Settler::apply`], once per message.
//!
//! Runs inside the message's span (message id, dequeue count, event type,
//! project id); every log line of the message and its handlers carries it.
//! Each event of an array has a child span of its own ([`event_span`]).
//! A body that is cvnotify's retry envelope is unwrapped first: handlers,
//! the decoder and the poison queue see the original body. What happens
//! to the message afterwards is decided once, by [`disposition`], and
//! applied once, by the [`Settler`].

use super::disposition::{Disposition, Failure, Outcome, disposition};
use super::events::{EventReceived, EventUnrouted, HandlerFinished, InternalEvent, Recorder};
use super::settings::Settings;
use super::settle::{Message, Settler};
use crate::error::error_chain;
use crate::event::{Notification, decode};
use crate::handler::{Delivery, Finished, Router, run_routes};
use crate::queue::{Queue, ReceivedMessage};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, info_span};

/// What every message of one queue goes through, shared by the poll loop
/// and each message's task.
pub(super) struct Lifecycle {
    /// Every change to a received message in the queue goes through it.
    settler: Settler,
    router: Arc<Router>,
    settings: Settings,
    /// Where every outcome is recorded (through `events`).
    metrics: Arc<Recorder>,
}

impl Lifecycle {
    pub fn new(
        settler: Settler,
        router: Arc<Router>,
        settings: Settings,
        metrics: Arc<Recorder>,
    ) -> Self {
        Lifecycle {
            settler,
            router,
            settings,
            metrics,
        }
    }

    pub fn queue(&self) -> &dyn Queue {
        self.settler.queue()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Recorder {
        &self.metrics
    }

    /// Handles one received message to the end, unless `abort` fires first
    /// (shutdown timeout), in which case it is released.
    pub async fn run(&self, m: ReceivedMessage, abort: CancellationToken) {
        let (span, trace_id) = span(self.queue().name(), &m);
        self.live(Message::open(m), abort, span.clone(), trace_id)
            .instrument(span)
            .await
    }

    /// Hands back a message received as the loop stopped, unhandled.
    pub async fn hand_back(&self, m: ReceivedMessage) {
        self.settler
            .apply(&Message::open(m), Disposition::Release)
            .await
    }

    async fn live(
        &self,
        mut m: Message,
        abort: CancellationToken,
        span: Span,
        trace_id: Option<String>,
    ) {
        let s = &self.settings;
        let outcome = match m.facts(self.settler.update_is_denied()).unfinished(s) {
            Some(without_outcome) => Outcome::Unfinished { without_outcome },
            None => self.handle(&mut m, abort, &span, trace_id).await,
        };
        // Read again: a renewal may have found Update Message denied.
        let facts = m.facts(self.settler.update_is_denied());
        self.settler
            .apply(&m, disposition(outcome, &facts, s))
            .await;
    }

    /// Decodes, then routes and runs the handlers of each event of the
    /// message in turn (see [`Lifecycle::run_events`]), extending the
    /// message's visibility every half visibility timeout meanwhile, for
    /// all its events together.
    async fn handle(
        &self,
        m: &mut Message,
        abort: CancellationToken,
        span: &Span,
        trace_id: Option<String>,
    ) -> Outcome {
        let events = match decode(m.body.as_bytes()) {
            Ok(n) => n,
            Err(e) => return Outcome::Undecodable(e),
        };
        let received = Received {
            message_id: m.id.clone(),
            dequeue_count: m.dequeue_count,
            inserted_at: m.inserted_at,
            trace_id,
        };
        let work = self.run_events(events, received, span);
        tokio::pin!(work);
        let visibility = self.settings.visibility_timeout;
        let renew_every = visibility / 2;
        let mut next_renewal = Instant::now() + renew_every;
        let mut held = true;
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = sleep_until(next_renewal), if held && !self.settler.update_is_denied() => {
                    held = self.settler.renew(m, visibility).await;
                    next_renewal += renew_every;
                }
                _ = abort.cancelled() => return Outcome::Aborted,
            }
        }
    }

    /// Routes and runs the handlers of each event in turn (model downloads
    /// first, see [`run_routes`]), each inside its span ([`event_span`]),
    /// stopping at the first event whose handlers fail: the message has
    /// one outcome for all its events. It is deleted only when every event
    /// was handled (or had no handler); a failure retries or poisons the
    /// whole message, and a retry runs every event again, so handlers of
    /// an array's events must be idempotent, as for any retry.
    async fn run_events(
        &self,
        events: Vec<Notification>,
        received: Received,
        span: &Span,
    ) -> Outcome {
        let started = Instant::now();
        let mut handled = false;
        for notification in events {
            let event_span = event_span(span, &notification);
            EventReceived {
                kind: notification.event.kind(),
            }
            .emit(&self.metrics);
            let routes = self.router.route(&notification);
            if routes.is_empty() {
                if notification.index.is_some() {
                    event_span.in_scope(|| EventUnrouted.emit(&self.metrics));
                }
                continue;
            }
            let delivery = Delivery {
                message_id: received.message_id.clone(),
                dequeue_count: received.dequeue_count,
                inserted_at: received.inserted_at,
                received_at: OffsetDateTime::now_utc(),
                notification,
                trace_id: received.trace_id.clone(),
                model: None,
            };
            let results = run_routes(&routes, &delivery)
                .instrument(event_span.clone())
                .await;
            // Inside the event's span: the handlers' lines name the event.
            match event_span.in_scope(|| self.outcome(&results, started.elapsed())) {
                Outcome::Handled { .. } => handled = true,
                failed => return failed,
            }
        }
        if handled {
            Outcome::Handled {
                took: started.elapsed(),
            }
        } else {
            Outcome::NoRoute
        }
    }

    /// What the handlers' `results` make of the delivery.
    fn outcome(&self, results: &[Finished<'_>], took: Duration) -> Outcome {
        let mut reasons = Vec::new();
        let mut handlers = Vec::new();
        let mut permanent = false;
        for (name, r, took) in results {
            HandlerFinished {
                handler: name,
                took: *took,
                ok: r.is_ok(),
            }
            .emit(&self.metrics);
            if let Err(e) = r {
                reasons.push(format!("handler `{name}` failed: {}", error_chain(e)));
                handlers.push(*name);
                permanent |= e.is_permanent();
            }
        }
        if reasons.is_empty() {
            return Outcome::Handled { took };
        }
        let failure = Failure {
            // Each handler's part is already bounded; so is the whole,
            // whatever the number of handlers.
            reason: crate::limit::text(&reasons.join("; "), crate::limit::MAX_TEXT).into_owned(),
            handlers: handlers.join(", "),
            permanent,
        };
        Outcome::Failed { failure, took }
    }
}

/// What the message brings to each of its events' deliveries.
struct Received {
    message_id: String,
    dequeue_count: u32,
    inserted_at: Option<OffsetDateTime>,
    trace_id: Option<String>,
}

/// The span of one event of the message: the message's own for a message
/// that is one event (its fields recorded there, as always); for each
/// event of an array a child `event` span, with the element's `index` and
/// the event's fields, so that every line of that event's handlers names
/// it (the message span then names no event). With traces on, the span
/// gets the CloudEvents semantic conventions' `cloudevents.event_id`,
/// `cloudevents.event_type` and `cloudevents.event_subject` (an Event Grid
/// event's; traces only, like the `messaging.*` attributes).
fn event_span(message: &Span, n: &Notification) -> Span {
    let span = match n.index {
        None => message.clone(),
        Some(index) => tracing::info_span!(
            parent: message,
            "event",
            index,
            event_type = tracing::field::Empty,
            project_id = tracing::field::Empty,
            iteration_id = tracing::field::Empty,
            subject = tracing::field::Empty,
            "otel.name" = %format_args!("event {index}"),
        ),
    };
    n.event.view().record_context(&span);
    if let Some(g) = n.event.grid() {
        let e = &g.envelope;
        // Outside text, cut as in every span.
        let bounded = |s: &str| crate::limit::text(s, crate::limit::MAX_TEXT).into_owned();
        crate::telemetry::set_attributes(&span, || {
            let mut attributes = vec![
                ("cloudevents.event_id", bounded(&e.id).into()),
                ("cloudevents.event_type", bounded(&e.event_type).into()),
            ];
            if let Some(subject) = &e.subject {
                attributes.push(("cloudevents.event_subject", bounded(subject).into()));
            }
            attributes
        });
    }
    span
}

/// The message's span. Its fields are every log line's context and, with
/// traces on, attributes of the OpenTelemetry span, whose name and kind
/// come from the `otel.*` fields (log lines leave those out). The
/// messaging semantic conventions' attributes of a consumer's "process"
/// span and the outcome go to the trace only. Returned with its trace id
/// (hex), when traces are on.
fn span(queue: &str, m: &ReceivedMessage) -> (Span, Option<String>) {
    let span = info_span!(
        "message",
        queue = %queue,
        message_id = %m.id,
        dequeue_count = m.dequeue_count,
        event_type = tracing::field::Empty,
        project_id = tracing::field::Empty,
        iteration_id = tracing::field::Empty,
        subject = tracing::field::Empty,
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
    // Read once per message: the delivery's trace_id (for hooks and
    // webhooks) is this span's.
    let ids = crate::telemetry::ids(&span);
    if let Some((trace_id, span_id)) = &ids {
        span.record("trace_id", trace_id);
        span.record("span_id", span_id);
    }
    (span, ids.map(|(trace_id, _)| trace_id))
}
