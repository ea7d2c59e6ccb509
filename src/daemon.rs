//! Wiring the configuration into a running [`Worker`].

use crate::config::Config;
use crate::handler::Router;
use crate::queue::Queue;
use crate::queue::azure::Connector;
use crate::worker::{Settings, Summary, Worker};
use anyhow::Context as _;
use std::future::Future;
use std::sync::Arc;

/// Why the daemon could not start; maps to an exit code in `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The credential could not get a token (exit 69, EX_UNAVAILABLE).
    #[error("{0}")]
    Credential(String),
    /// Anything else that prevents start-up.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Runs the daemon until `shutdown` completes (or the queue is drained with
/// `once`).
pub async fn run(
    config: &Config,
    once: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, StartError> {
    let connector =
        Connector::from_config(config).context("Failed to set up the storage client")?;
    let ctx = crate::handler::BuildContext {
        blobs: connector.blob_access().map_err(anyhow::Error::from)?,
    };
    let router = Router::build(&config.effective_handlers(), &ctx)?;
    connector
        .verify_credential(config.auth.startup_timeout)
        .await
        .map_err(StartError::Credential)?;
    let queue: Arc<dyn Queue> = Arc::new(
        connector
            .queue(config.queue_name())
            .map_err(anyhow::Error::from)?,
    );
    let poison: Arc<dyn Queue> = Arc::new(
        connector
            .queue(&config.poison_queue_name())
            .map_err(anyhow::Error::from)?,
    );
    tracing::info!(
        endpoint = %connector.endpoint(),
        auth = connector.mode().as_str(),
        poison_queue = poison.name(),
        "Starting"
    );
    let worker = Worker::new(
        queue,
        poison,
        Arc::new(router),
        Settings::from_config(config, once),
    );
    Ok(worker.run(shutdown).await.map_err(anyhow::Error::from)?)
}

/// Completes on SIGTERM or SIGINT: the production shutdown future.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "Shutting down");
}
