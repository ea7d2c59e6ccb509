//! Handlers and routing.
//!
//! A handler is configured as one `[[handlers]]` table; each type has its
//! own module here, `<type>/handler.rs` with the handler itself beside
//! `<type>/config.rs` with its table (pure, a layer below: the
//! configuration's, named in [`crate::config::handlers`]). [`Router`] holds the built handlers with their
//! event filters and picks the ones an event goes to. This layer must not
//! know about queues or Azure: storage reaches it only as the
//! [`crate::blob::BlobSource`] trait in [`BuildContext`], and the Custom
//! Vision Training API as the client the context carries.

pub mod customvision;
pub mod download;
pub mod log;
mod router;
pub mod shell;
mod types;
pub mod webhook;

pub use router::{BuildError, BuildHandler, Finished, Route, Router, run_routes};
pub use types::{BuildContext, Delivery, Handler, HandlerError, StoredModel};
