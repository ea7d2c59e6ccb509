//! `type = "log"`: one structured log record per event.
//!
//! Files: [`config`] (the `[[handlers]]` table; below the handlers, with
//! the configuration) and `handler` (the log record).

pub mod config;
mod handler;

pub use config::LogHandlerConfig;
pub use handler::LogHandler;
