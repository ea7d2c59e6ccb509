//! [`Shared`]: what the poll loop and every message task share.

use super::events::{InternalEvent, Recorder, UpdateDenied};
use super::settings::Settings;
use crate::handler::Router;
use crate::queue::{Queue, QueueError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::OnceCell;

pub(super) struct Shared {
    pub queue: Arc<dyn Queue>,
    pub poison: Arc<dyn Queue>,
    /// The poison queue was created (or found to exist) once.
    pub poison_ready: OnceCell<()>,
    /// Update Message was denied (an identity with only the Message
    /// Processor role): renewal and retry delays are skipped from then on.
    pub update_denied: AtomicBool,
    pub router: Arc<Router>,
    pub settings: Settings,
    /// Where every outcome is recorded (through `events`).
    pub metrics: Arc<Recorder>,
}

impl Shared {
    pub fn update_is_denied(&self) -> bool {
        self.update_denied.load(Ordering::Relaxed)
    }

    /// Update Message is forbidden: say so once, then work without it.
    pub fn update_forbidden(&self, error: &QueueError) {
        let first = !self.update_denied.swap(true, Ordering::Relaxed);
        UpdateDenied { error, first }.emit(&self.metrics);
    }
}
