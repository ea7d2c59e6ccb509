//! `type = "customvision"`: when a training completes, export the new
//! iteration for the configured platforms and publish it.
//!
//! Files: [`config`] (the `[[handlers]]` table and its validation; below
//! the handlers, with the configuration) and `handler` (the exports and
//! the publish, idempotent).

pub mod config;
mod handler;

pub use config::{CustomVisionHandlerConfig, ExportTarget, PublishConfig};
pub use handler::{CustomVisionHandler, NoCustomVision, StepError, StepErrors};
