//! `type = "log"`: one structured log record per event.
//!
//! Files: [`handler`] (the handler).

mod handler;

pub use handler::LogHandler;
