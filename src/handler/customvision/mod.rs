//! `type = "customvision"`: when a training completes, export the new
//! iteration for the configured platforms and publish it.
//!
//! Files: [`handler`] (the handler).

mod handler;

pub use handler::{CustomVisionHandler, NoCustomVision, StepError, StepErrors};
