//! Wiring the configuration into a running [`Worker`]: clients, handlers,
//! the credential check, the optional HTTP listener; and the signal future
//! used in production.
//!
//! The top of the library: it may import any layer below, and nothing
//! imports it but `main`.

use crate::azure::{ConnectError, Connector, TokenError};
use crate::config::Config;
use crate::customvision::{ClientBuildError, TrainingClient};
use crate::handler::{BuildContext, BuildError, Router};
use crate::metrics::Metrics;
use crate::notice::ExpectedExports;
use crate::queue::Queue;
use crate::worker::{Settings, Summary, Worker, WorkerError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why the daemon could not start (or stopped with an error); maps to an
/// exit code in `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The credential could not get a token (exit 69, EX_UNAVAILABLE).
    #[error(transparent)]
    Credential(#[from] TokenError),
    #[error("Failed to set up the storage client")]
    Connect(#[from] ConnectError),
    #[error("Failed to set up the Custom Vision client")]
    CustomVision(#[from] ClientBuildError),
    #[error(transparent)]
    Handler(#[from] BuildError),
    #[error("Failed to listen on http.listen = {addr}; is the port in use?")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// Runs the daemon until `shutdown` completes (or the queue is drained with
/// `once`).
pub async fn run(
    config: &Config,
    once: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, StartError> {
    let connector = Connector::new(&config.queue, &config.auth, &config.tls)?;
    let expected_exports = Arc::new(ExpectedExports::new());
    let customvision = config
        .customvision
        .as_ref()
        .map(|cv| {
            TrainingClient::from_config(cv, &config.auth, config.queue.cloud, &config.tls)
                .map(Arc::new)
        })
        .transpose()?;
    let ctx = BuildContext {
        blobs: Arc::new(connector.blobs()?),
        ca_file: config.tls.ca_file.clone(),
        secret_env: config.secret_env_names(),
        customvision,
        expected_exports: expected_exports.clone(),
    };
    let router = Router::build(&config.effective_handlers(), &ctx)?;
    connector
        .verify_credential(config.auth.startup_timeout)
        .await?;
    let queue: Arc<dyn Queue> = Arc::new(connector.queue(config.queue_name())?);
    let poison: Arc<dyn Queue> = Arc::new(connector.queue(&config.poison_queue_name())?);
    tracing::info!(
        endpoint = %connector.endpoint(),
        auth = connector.mode().as_str(),
        poison_queue = poison.name(),
        "Starting"
    );
    crate::reaper::spawn_if_pid1();
    let metrics = Arc::new(Metrics::new());
    metrics.set_started();
    let stop_http = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = config.http.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        // Ready while a queue call succeeded within a few poll intervals.
        let ready_window = (config.queue.max_poll_interval * 3 + config.queue.request_timeout)
            .max(std::time::Duration::from_secs(30));
        let state = Arc::new(crate::http::HttpState::new(
            metrics.clone(),
            ready_window,
            queue.clone(),
            poison.clone(),
        ));
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(listen = %bound, "Serving /healthz, /readyz and /metrics");
        tokio::spawn(crate::http::serve(listener, state, stop_http.clone()));
    }
    let _stop_http = stop_http.drop_guard();
    let settings = Settings::new(&config.queue, config.shutdown_timeout, once);
    let worker = Worker::new(queue, poison, Arc::new(router), settings, metrics)
        .with_expected_exports(expected_exports);
    Ok(worker.run(shutdown).await?)
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
