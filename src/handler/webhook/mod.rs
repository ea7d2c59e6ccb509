//! `type = "webhook"`: POSTs each event as signed JSON.
//!
//! Files: [`config`] (the `[[handlers]]` table and its validation; below
//! the handlers, with the configuration) and `handler` (signing and
//! delivery).

pub mod config;
mod handler;

pub use config::WebhookConfig;
pub use handler::{Signer, WebhookBuildError, WebhookError, WebhookHandler};
