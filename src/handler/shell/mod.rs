//! `type = "shell"`: runs a program for each event.
//!
//! Files: [`config`] (the `[[handlers]]` table and its validation; below
//! the handlers, with the configuration) and `handler` (running the
//! program).

pub mod config;
mod handler;

pub use config::ShellConfig;
pub use handler::{CREDENTIAL_VARIABLES, ShellError, ShellHandler};
