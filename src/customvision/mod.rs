//! The Custom Vision Training API (v3.3): the calls `setup`, `check` and
//! the `customvision` handler make, with retries, and errors that say what
//! to do.
//!
//! At the layer of [`crate::azure`] (it reuses its Entra ID credentials);
//! below handlers and commands. Files: `model` (the JSON shapes), `error`
//! (operations, errors, hints), `transport` (one call with its attempts:
//! the credential, retries, size limits) and `client` ([`TrainingClient`]:
//! one method per endpoint, built from the configuration). Nothing here
//! decides what to do with a notification.

mod client;
mod error;
mod model;
mod transport;

pub use client::{ClientBuildError, TrainingClient};
pub use error::{AuthKind, CvError, Op};
pub use model::{Export, Iteration, Project, ProjectSettings, StorageUris};
pub use transport::{COGNITIVE_SCOPE, Credential, RetrySettings};
