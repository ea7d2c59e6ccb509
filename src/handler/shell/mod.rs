//! `type = "shell"`: runs a program for each event.
//!
//! Files: [`handler`] (the handler).

mod handler;

pub use handler::{CREDENTIAL_VARIABLES, ShellError, ShellHandler};
