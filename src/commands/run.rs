//! `cvnotify run [--once]`: the daemon, with traces when configured; exit
//! 69 (`EX_UNAVAILABLE`) when the credential gets no token at start-up.

use super::edge::{print_error, runtime, with_traced_config};
use crate::config::Config;
use crate::daemon::{self, StartError};
use crate::error::error_chain;
use crate::exit;
use std::path::Path;

/// Runs the command with the configuration at `config`; the exit code.
pub fn exec(config: Option<&Path>, once: bool) -> i32 {
    with_traced_config(config, |c| run(c, once))
}

fn run(config: &Config, once: bool) -> i32 {
    let result = runtime().block_on(daemon::run(config, once, daemon::shutdown_signal()));
    match result {
        Ok(_) => exit::OK,
        Err(e) => {
            let code = match e {
                StartError::Credential(_) => exit::UNAVAILABLE,
                _ => exit::FAILURE,
            };
            let e = error_chain(&e);
            tracing::error!(error = %e, "Cannot start");
            print_error(e);
            code
        }
    }
}
