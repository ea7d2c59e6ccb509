//! Everything that talks to Azure Storage: the [`Connector`] that turns the
//! `[queue]`, `[auth]` and `[tls]` sections into clients, the queue client
//! implementing [`crate::queue::Queue`], blob access implementing
//! [`crate::blob::BlobSource`], container listing for `setup`, the Shared
//! Key policy, the Entra ID credentials, and the HTTP transport whose
//! answers are read up to a cap.
//!
//! Above the configuration and the `queue`/`blob` traits; below handlers and
//! the worker, which see only those traits. Nothing here decides what to do
//! with a message.

mod blob;
mod connector;
mod container;
mod credential;
mod queue;
mod shared_key;
mod transport;

pub use blob::AzureBlobs;
pub use connector::{ConnectError, Connector, TokenError};
pub use container::{AzureContainer, ContainerError};
pub use credential::{STORAGE_SCOPE, credential_hint, token_credential};
pub use queue::AzureQueue;
pub use shared_key::SharedKeyPolicy;
pub use transport::{
    MAX_LISTING_ANSWER, MAX_QUEUE_ANSWER, MAX_TOKEN_ANSWER, capped as capped_transport,
};
