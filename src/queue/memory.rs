//! An in-memory [`Queue`] with the storage service's visibility rules, for
//! unit tests of the poll loop (with `tokio::time::pause`). Integration tests
//! use Azurite; this is never a stand-in for it there.

use super::types::{
    Expiry, Operation, PeekedMessage, Queue, QueueError, ReceivedMessage, SentMessage,
};
use async_trait::async_trait;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
struct Stored {
    id: String,
    body: String,
    dequeue_count: u32,
    visible_at: Instant,
    pop_receipt: Option<String>,
    expiry: Expiry,
}

/// A queue held in memory.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    name: String,
    messages: Mutex<Vec<Stored>>,
    next: AtomicU64,
    /// Calls made, for assertions on polling behaviour.
    pub receive_calls: AtomicU64,
    pub update_calls: AtomicU64,
    pub delete_calls: AtomicU64,
    /// Errors the next deletes return, in turn, before deletes work again.
    failing_deletes: Mutex<Vec<QueueError>>,
}

impl MemoryQueue {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The next deletes fail with `errors`, one each, in turn.
    pub fn fail_deletes(&self, errors: Vec<QueueError>) {
        *self.failing_deletes.lock().unwrap() = errors;
    }

    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Bodies of all messages, visible or not.
    pub fn bodies(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.body.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seconds until message `id` is visible (0 if visible now).
    pub fn invisible_for(&self, id: &str) -> Option<Duration> {
        let now = Instant::now();
        self.messages
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.visible_at.saturating_duration_since(now))
    }

    fn check<'a>(
        messages: &'a mut [Stored],
        op: Operation,
        id: &str,
        pop_receipt: &str,
    ) -> Result<&'a mut Stored, QueueError> {
        let m = messages
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or(QueueError::MessageNotFound { op })?;
        if m.pop_receipt.as_deref() != Some(pop_receipt) {
            return Err(QueueError::PopReceiptMismatch { op });
        }
        Ok(m)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn receive(
        &self,
        max: u8,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.receive_calls.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut out = Vec::new();
        let mut messages = self.messages.lock().unwrap();
        for m in messages.iter_mut().filter(|m| m.visible_at <= now) {
            if out.len() >= max as usize {
                break;
            }
            m.dequeue_count += 1;
            m.visible_at = now + visibility;
            let receipt = format!("r{}", self.next.fetch_add(1, Ordering::Relaxed));
            m.pop_receipt = Some(receipt.clone());
            out.push(ReceivedMessage {
                id: m.id.clone(),
                pop_receipt: receipt,
                dequeue_count: m.dequeue_count,
                body: m.body.clone(),
                inserted_at: None,
            });
        }
        Ok(out)
    }

    async fn delete(&self, id: &str, pop_receipt: &str) -> Result<(), QueueError> {
        self.delete_calls.fetch_add(1, Ordering::Relaxed);
        {
            let mut failing = self.failing_deletes.lock().unwrap();
            if !failing.is_empty() {
                return Err(failing.remove(0));
            }
        }
        let mut messages = self.messages.lock().unwrap();
        Self::check(&mut messages, Operation::Delete, id, pop_receipt)?;
        messages.retain(|m| m.id != id);
        Ok(())
    }

    async fn update_visibility(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<String, QueueError> {
        self.update_calls.fetch_add(1, Ordering::Relaxed);
        let receipt = self.next_id("r");
        let mut messages = self.messages.lock().unwrap();
        let m = Self::check(&mut messages, Operation::Update, id, pop_receipt)?;
        m.visible_at = Instant::now() + visibility;
        m.pop_receipt = Some(receipt.clone());
        Ok(receipt)
    }

    async fn update_body(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
        body: &str,
    ) -> Result<String, QueueError> {
        let receipt = self.update_visibility(id, pop_receipt, visibility).await?;
        let mut messages = self.messages.lock().unwrap();
        if let Some(m) = messages.iter_mut().find(|m| m.id == id) {
            m.body = body.to_owned();
        }
        Ok(receipt)
    }

    async fn send(&self, body: &str, expiry: Expiry) -> Result<SentMessage, QueueError> {
        let id = self.next_id("m");
        let receipt = self.next_id("r");
        self.messages.lock().unwrap().push(Stored {
            id: id.clone(),
            body: body.to_owned(),
            dequeue_count: 0,
            visible_at: Instant::now(),
            pop_receipt: Some(receipt.clone()),
            expiry,
        });
        Ok(SentMessage {
            id,
            pop_receipt: receipt,
        })
    }

    async fn create_if_missing(&self) -> Result<(), QueueError> {
        Ok(())
    }

    async fn peek(&self, max: u8) -> Result<Vec<PeekedMessage>, QueueError> {
        let now = Instant::now();
        Ok(self
            .messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.visible_at <= now)
            .take(max as usize)
            .map(|m| PeekedMessage {
                id: m.id.clone(),
                dequeue_count: m.dequeue_count,
                body: m.body.clone(),
                inserted_at: None,
                expires_at: match m.expiry {
                    Expiry::Never => Some(time::macros::datetime!(9999-12-31 23:59:59 UTC)),
                    Expiry::ServiceDefault => None,
                },
            })
            .collect())
    }

    async fn approximate_length(&self) -> Result<u64, QueueError> {
        Ok(self.len() as u64)
    }
}
