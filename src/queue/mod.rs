//! The storage queue, behind a narrow trait.
//!
//! The poll loop only needs to receive, delete, change visibility and send;
//! [`Queue`] is exactly that, so the loop can be unit-tested with
//! [`memory::MemoryQueue`] while the integration tests and production use
//! `crate::azure::AzureQueue`. Below the Azure layer: it must not import it.

pub mod memory;
mod types;

pub use types::{
    Cause, Expiry, Operation, PeekedMessage, Queue, QueueError, ReceivedMessage, SentMessage,
};
