//! What every command does at the edge of the process: load the
//! configuration and start logging, narrow it to one queue, print an error
//! with its causes and without secrets, and build the tokio runtime. Each
//! returns or takes an exit code ([`crate::exit`]).

use crate::config::{Config, ConfigError};
use crate::error::error_chain;
use crate::exit;
use crate::logging::{self, Target};
use crate::secret::redact;
use std::path::Path;

/// Loads the configuration at `path`, starts logging to `target` and runs
/// `f` on it; exit 78 (`EX_CONFIG`) with every problem when it is invalid.
pub fn with_config(path: Option<&Path>, target: Target, f: impl FnOnce(&Config) -> i32) -> i32 {
    match Config::load(path) {
        Ok(config) => {
            logging::init(&config.log, target, None);
            f(&config)
        }
        Err(e) => config_error(&e),
    }
}

/// As [`with_config`] for the daemon: traces too, when configured, flushed
/// before the process exits.
pub fn with_traced_config(path: Option<&Path>, f: impl FnOnce(&Config) -> i32) -> i32 {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => return config_error(&e),
    };
    let (tracer, telemetry) = match crate::telemetry::init(&config.telemetry) {
        Ok(Some((tracer, telemetry))) => (Some(tracer), Some(telemetry)),
        Ok(None) => (None, None),
        Err(e) => {
            print_error(report(&e.into()));
            return exit::CONFIG;
        }
    };
    logging::init(&config.log, Target::Stdout, tracer);
    let code = f(&config);
    if let Some(t) = telemetry {
        t.shutdown();
    }
    code
}

/// Runs `f` on the configuration narrowed to the queue `--queue` names (or
/// the only one); a usage error naming the queues otherwise.
pub fn with_queue(config: &Config, name: Option<&str>, f: impl FnOnce(&Config) -> i32) -> i32 {
    match config.for_queue(name) {
        Ok(one) => f(&one),
        Err(e) => {
            print_error(e);
            exit::USAGE
        }
    }
}

fn config_error(e: &ConfigError) -> i32 {
    print_error(e);
    eprintln!("See config/cvnotify.example.toml for every key and its default.");
    exit::CONFIG
}

/// The error and its causes on one line ([`error_chain`]: as anyhow's
/// `{:#}`, without the text the Azure SDK's errors repeat).
pub fn report(e: &anyhow::Error) -> String {
    error_chain(e.as_ref())
}

/// `error: {text}` on stderr, secrets removed ([`redact`]): some causes
/// come from HTTP clients and services that put request URLs, or a key
/// they were sent, in their messages.
pub fn print_error(text: impl std::fmt::Display) {
    eprintln!("error: {}", redact(&text.to_string()));
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}
