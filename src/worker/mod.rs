//! The worker: the poll loop over one queue and each message's lifecycle.
//!
//! Guarantees (see "Delivery guarantees" in the README):
//! - A message is deleted only after every handler it was routed to
//!   succeeded; a failure leaves it in the queue, hidden for a delay that
//!   grows with its dequeue count.
//! - A message that failed on its `max_dequeue_count`-th delivery, or that
//!   cannot be decoded, is copied verbatim to the poison queue and only then
//!   deleted.
//! - Receiving never asks for more messages than free handler slots: a slow
//!   handler slows polling instead of piling messages up invisibly.
//! - While a handler runs, the message's visibility is extended every half
//!   visibility timeout, so no other consumer receives it meanwhile.
//!
//! Files, in the order a message meets them: [`poll`] (capacity, receive,
//! back-off, shutdown), `lifecycle` (one message's life: decode → route →
//! handlers with renewal → settle), `disposition` (the one decision of its
//! fate, a pure function), `settle` (applies it: every change to a
//! received message in the queue), `events` (one typed internal event per
//! outcome: log line, metrics and the span's outcome; the counters, which
//! only it can write), `heartbeat` (systemd), `settings`.
//! Sees the queue only through [`crate::queue::Queue`] and handlers only
//! through [`crate::handler::Router`].

mod disposition;
mod events;
mod heartbeat;
mod lifecycle;
pub mod poll;
mod settings;
mod settle;

pub use events::{Recorder, Summary};
pub use poll::{Worker, WorkerError};
pub use settings::Settings;
