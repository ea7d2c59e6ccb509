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
        ca_file: config.tls.ca_file.clone(),
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
    crate::reaper::spawn_if_pid1();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    metrics.set_started();
    let stop_http = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = config.http.listen {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("Failed to listen on http.listen = {addr}; is the port in use?")
        })?;
        // Ready while a queue call succeeded within a few poll intervals.
        let ready_window = (config.queue.max_poll_interval * 3 + config.queue.request_timeout)
            .max(std::time::Duration::from_secs(30));
        let state = Arc::new(crate::http::HttpState {
            metrics: metrics.clone(),
            ready_window,
            queue: queue.clone(),
            poison: poison.clone(),
        });
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(listen = %bound, "Serving /healthz, /readyz and /metrics");
        tokio::spawn(crate::http::serve(listener, state, stop_http.clone()));
    }
    let _stop_http = stop_http.drop_guard();
    let worker = Worker::new(
        queue,
        poison,
        Arc::new(router),
        Settings::from_config(config, once),
    )
    .with_metrics(metrics);
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
