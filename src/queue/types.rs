//! The [`Queue`] trait, its message types and the classification of
//! storage errors: which ones are transient, which are "the message is
//! gone", and which need an operator (missing role).
//!
//! Knows no Azure type: the SDK is behind `crate::azure`, which maps its
//! errors into [`QueueError`], keeping the SDK's error as the source
//! ([`Cause::Client`]).

use crate::error::trust_hint;
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A message as received; `pop_receipt` is what delete and update need.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub id: String,
    pub pop_receipt: String,
    /// 1 on the first delivery.
    pub dequeue_count: u32,
    /// The message text exactly as stored.
    pub body: String,
    pub inserted_at: Option<time::OffsetDateTime>,
}

/// A message just sent; the pop receipt allows deleting it straight away.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub id: String,
    pub pop_receipt: String,
}

/// A message as peeked (no pop receipt: it stays where it is).
#[derive(Debug, Clone)]
pub struct PeekedMessage {
    pub id: String,
    pub dequeue_count: u32,
    pub body: String,
    pub inserted_at: Option<time::OffsetDateTime>,
    /// When the service deletes it (year 9999 for "never").
    pub expires_at: Option<time::OffsetDateTime>,
}

/// How long a sent message lives in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The service's default: 7 days. What Custom Vision's own messages get.
    ServiceDefault,
    /// Never expires (time-to-live -1): poisoned and replayed messages wait
    /// for an operator however long that takes.
    Never,
}

/// The queue operations cvnotify performs.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// The queue's name, for logs.
    fn name(&self) -> &str;

    /// Receives up to `max` (1-32) messages, hidden for `visibility`.
    async fn receive(
        &self,
        max: u8,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Deletes a received message.
    async fn delete(&self, id: &str, pop_receipt: &str) -> Result<(), QueueError>;

    /// Hides a received message for `visibility` from now (0 = visible at
    /// once) and returns the new pop receipt, which replaces the old one.
    async fn update_visibility(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<String, QueueError>;

    /// As [`Queue::update_visibility`], also replacing the message's text
    /// with `body` (cvnotify's retry envelope).
    async fn update_body(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
        body: &str,
    ) -> Result<String, QueueError>;

    /// Enqueues `body` verbatim, living as long as `expiry` says.
    async fn send(&self, body: &str, expiry: Expiry) -> Result<SentMessage, QueueError>;

    /// Creates the queue unless it exists.
    async fn create_if_missing(&self) -> Result<(), QueueError>;

    /// Looks at up to `max` (1-32) messages without receiving them.
    async fn peek(&self, max: u8) -> Result<Vec<PeekedMessage>, QueueError>;

    /// The approximate number of messages (queue properties).
    async fn approximate_length(&self) -> Result<u64, QueueError>;
}

/// The storage operation that failed, with the role that grants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Receive,
    Delete,
    Update,
    Send,
    Create,
    Peek,
    Properties,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 7] = [
        Operation::Receive,
        Operation::Delete,
        Operation::Update,
        Operation::Send,
        Operation::Create,
        Operation::Peek,
        Operation::Properties,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Receive => "receive messages",
            Operation::Delete => "delete a message",
            Operation::Update => "update a message",
            Operation::Send => "send a message",
            Operation::Create => "create the queue",
            Operation::Peek => "peek messages",
            Operation::Properties => "read queue properties",
        }
    }

    /// The built-in Azure role that allows this operation.
    pub fn role_hint(self) -> &'static str {
        match self {
            Operation::Receive | Operation::Delete => {
                "the identity needs the 'Storage Queue Data Message Processor' (or 'Storage Queue Data Contributor') role on the queue"
            }
            Operation::Peek | Operation::Properties => {
                "the identity needs the 'Storage Queue Data Reader' (or 'Storage Queue Data Contributor') role on the queue"
            }
            Operation::Update | Operation::Send | Operation::Create => {
                "the identity needs the 'Storage Queue Data Contributor' role on the queue and its poison queue"
            }
        }
    }
}

impl Operation {
    /// A short name for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Operation::Receive => "receive",
            Operation::Delete => "delete",
            Operation::Update => "update",
            Operation::Send => "send",
            Operation::Create => "create",
            Operation::Peek => "peek",
            Operation::Properties => "properties",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failed storage call met, kept as the source of its
/// [`QueueError`]: the service's answer, or the client's own error. Clone,
/// because one failure may be reported to several waiters (the poison
/// queue's creation).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Cause {
    /// The service answered `status`, with its error code when it sent
    /// one. The answer's body is not kept: the code says it, and the body
    /// is XML of unbounded length.
    #[error("HTTP {status}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status { status: u16, code: Option<String> },
    /// 403 `AuthenticationFailed`: the credential itself was refused.
    #[error(
        "the service did not accept the credential (AuthenticationFailed: an expired or invalid token, key or SAS)"
    )]
    CredentialRefused,
    /// The answer lacks what the protocol promises.
    #[error("{0}")]
    Malformed(&'static str),
    /// The client's own error: no answer (connection, TLS, timeout), no
    /// token, or an answer it could not read.
    #[error(transparent)]
    Client(Arc<dyn std::error::Error + Send + Sync>),
}

impl Cause {
    /// The client's error `e`, kept whole.
    pub fn client(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause::Client(Arc::new(e))
    }
}

/// A failed storage call, classified by what the caller should do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The queue itself does not exist.
    #[error(
        "cannot {op} on queue `{queue}`: the queue does not exist; check queue.name and queue.account/endpoint (Custom Vision's notificationQueueUri names the queue)"
    )]
    QueueNotFound { op: Operation, queue: String },
    /// The message was deleted or its visibility expired and someone else
    /// took it: nothing to do for this consumer.
    #[error("cannot {op}: the message no longer exists")]
    MessageNotFound { op: Operation },
    /// Another consumer received the message since (its pop receipt changed).
    #[error(
        "cannot {op}: the pop receipt no longer matches (another consumer received the message)"
    )]
    PopReceiptMismatch { op: Operation },
    /// 403: the identity lacks a role or the SAS a permission.
    #[error("cannot {op}: access denied ({code}); {}", op.role_hint())]
    Forbidden { op: Operation, code: String },
    /// 401 or a token that could not be obtained.
    #[error(
        "cannot {op}: authentication failed{}",
        trust_hint(source, "tls.ca_file")
    )]
    Unauthenticated {
        op: Operation,
        #[source]
        source: Cause,
    },
    /// Refused or reset connections, timeouts, 408, 429, 5xx: retry later.
    #[error("cannot {op}{}", trust_hint(source, "tls.ca_file"))]
    Transient {
        op: Operation,
        #[source]
        source: Cause,
    },
    /// Anything else (4xx the daemon did not expect, malformed responses).
    #[error("cannot {op}{}", trust_hint(source, "tls.ca_file"))]
    Other {
        op: Operation,
        #[source]
        source: Cause,
    },
}

impl QueueError {
    /// Whether retrying the same call later may succeed without a change of
    /// configuration.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            QueueError::Transient { .. } | QueueError::Unauthenticated { .. }
        )
    }

    /// The message is no longer ours (deleted, expired, or taken by another
    /// consumer): log it, do not treat it as a failure.
    pub fn is_message_gone(&self) -> bool {
        matches!(
            self,
            QueueError::MessageNotFound { .. } | QueueError::PopReceiptMismatch { .. }
        )
    }

    /// The operation that failed.
    pub fn op(&self) -> Operation {
        match self {
            QueueError::QueueNotFound { op, .. }
            | QueueError::MessageNotFound { op }
            | QueueError::PopReceiptMismatch { op }
            | QueueError::Forbidden { op, .. }
            | QueueError::Unauthenticated { op, .. }
            | QueueError::Transient { op, .. }
            | QueueError::Other { op, .. } => *op,
        }
    }

    /// Every value [`QueueError::kind`] returns.
    pub const KINDS: [&'static str; 7] = [
        "queue_not_found",
        "message_not_found",
        "pop_receipt_mismatch",
        "forbidden",
        "unauthenticated",
        "transient",
        "other",
    ];

    /// A short label for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            QueueError::QueueNotFound { .. } => "queue_not_found",
            QueueError::MessageNotFound { .. } => "message_not_found",
            QueueError::PopReceiptMismatch { .. } => "pop_receipt_mismatch",
            QueueError::Forbidden { .. } => "forbidden",
            QueueError::Unauthenticated { .. } => "unauthenticated",
            QueueError::Transient { .. } => "transient",
            QueueError::Other { .. } => "other",
        }
    }
}
