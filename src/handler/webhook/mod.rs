//! `type = "webhook"`: POSTs each event as signed JSON.
//!
//! Files: [`handler`] (the handler).

mod handler;

pub use handler::{AttemptError, Signer, WebhookBuildError, WebhookError, WebhookHandler};
