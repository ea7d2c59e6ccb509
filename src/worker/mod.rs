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
//! Files: [`poll`] (receive, capacity, back-off, shutdown), `message`
//! (decode → route → handlers with renewal), `settle` (the outcome's one
//! mapping to delete, release or poison), `events` (one typed event per
//! outcome: log line + metric), `heartbeat` (systemd), `settings`, `shared`.
//! Sees the queue only through [`crate::queue::Queue`] and handlers only
//! through [`crate::handler::Router`].

mod events;
mod heartbeat;
mod message;
pub mod poll;
mod settings;
mod settle;
mod shared;

pub use events::{Recorder, Summary};
pub use poll::{Worker, WorkerError};
pub use settings::Settings;
