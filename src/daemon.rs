//! Wiring the configuration into a running [`Worker`]: clients, handlers,
//! the credential check, the optional HTTP listener; and the signal future
//! used in production.
//!
//! The top of the library: it may import any layer below, and nothing
//! imports it but `main`.

use crate::azure::{ConnectError, Connector, TokenError};
use crate::config::{Config, QueueSpec};
use crate::customvision::{ClientBuildError, TrainingClient};
use crate::handler::{BuildContext, BuildError, Router};
use crate::metrics::{Metrics, MetricsRegistry};
use crate::notice::ExpectedExports;
use crate::queue::Queue;
use crate::worker::{Recorder, Settings, Summary, Worker, WorkerError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

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

/// One queue, wired: its clients, its router and its settings.
struct Wired {
    spec: QueueSpec,
    queue: Arc<dyn Queue>,
    poison: Arc<dyn Queue>,
    router: Router,
}

/// What every queue's handlers share: the Custom Vision client and the
/// expected-export signal (an export requested through one queue's handler
/// may be announced on any queue).
struct Common {
    customvision: Option<Arc<TrainingClient>>,
    expected_exports: Arc<ExpectedExports>,
}

/// Builds one queue's clients and handlers and checks its credential.
async fn wire(spec: QueueSpec, config: &Config, common: &Common) -> Result<Wired, StartError> {
    let connector = Connector::new(&spec.queue, &spec.auth, &config.tls)?;
    let ctx = BuildContext {
        blobs: Arc::new(connector.blobs()?),
        ca_file: config.tls.ca_file.clone(),
        secret_env: config.secret_env_names(),
        customvision: common.customvision.clone(),
        expected_exports: common.expected_exports.clone(),
    };
    let router = Router::build(&spec.handlers, &ctx)?;
    connector
        .verify_credential(spec.auth.startup_timeout)
        .await?;
    let queue: Arc<dyn Queue> = Arc::new(connector.queue(spec.name())?);
    let poison: Arc<dyn Queue> = Arc::new(connector.queue(&spec.poison_name())?);
    tracing::info!(
        queue = spec.name(),
        endpoint = %connector.endpoint(),
        auth = connector.mode().as_str(),
        poison_queue = poison.name(),
        "Starting"
    );
    Ok(Wired {
        spec,
        queue,
        poison,
        router,
    })
}

/// Each queue's cap on messages handled at once, out of the process-wide
/// bound `max` shared by `k` queues: a busy queue leaves every other queue
/// `reserve = max(1, max / 2k)` slots, so a flood on one cannot starve the
/// others, while a queue alone may still use most of the bound.
pub fn per_queue_cap(max: usize, k: usize) -> usize {
    if k <= 1 {
        return max;
    }
    let reserve = (max / (2 * k)).max(1);
    max.saturating_sub(reserve * (k - 1)).max(1)
}

/// Runs the daemon until `shutdown` completes (or every queue is drained
/// with `once`): one poll loop per queue, one shared concurrency limit.
pub async fn run(
    config: &Config,
    once: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, StartError> {
    let specs = config.effective_queues();
    // The Custom Vision client uses the top-level [auth], in the cloud of
    // the (first) queue.
    let cloud = specs.first().map(|s| s.queue.cloud).unwrap_or_default();
    let common = Common {
        customvision: config
            .customvision
            .as_ref()
            .map(|cv| {
                TrainingClient::from_config(cv, &config.auth, cloud, &config.tls).map(Arc::new)
            })
            .transpose()?,
        expected_exports: Arc::new(ExpectedExports::new()),
    };
    let mut wired = Vec::with_capacity(specs.len());
    for spec in specs {
        wired.push(wire(spec, config, &common).await?);
    }
    crate::reaper::spawn_if_pid1();
    let mut registry = MetricsRegistry::new();
    // Each queue's health, and its worker's counters beside it.
    let metrics: Vec<(Arc<Metrics>, Arc<Recorder>)> = wired
        .iter()
        .map(|w| {
            let health = Arc::new(Metrics::new());
            let recorder = Arc::new(Recorder::new(health.clone()));
            registry.add_queue(w.spec.name(), &health, recorder.as_ref());
            health.set_started();
            (health, recorder)
        })
        .collect();
    let registry = Arc::new(registry);
    let stop_http = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = config.http.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        let health = wired
            .iter()
            .zip(&metrics)
            .map(|(w, (m, _))| crate::http::QueueHealth {
                name: w.spec.name().to_owned(),
                metrics: m.clone(),
                // Ready while a queue call succeeded within a few poll
                // intervals.
                ready_window: (w.spec.queue.max_poll_interval * 3 + w.spec.queue.request_timeout)
                    .max(std::time::Duration::from_secs(30)),
                queue: w.queue.clone(),
                poison: w.poison.clone(),
            })
            .collect();
        let state = Arc::new(crate::http::HttpState::new(registry.clone(), health));
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(listen = %bound, "Serving /healthz, /readyz and /metrics");
        tokio::spawn(crate::http::serve(listener, state, stop_http.clone()));
    }
    let _stop_http = stop_http.drop_guard();

    let k = wired.len();
    let max = config.process_max_concurrency();
    let process_limit = (k > 1).then(|| Arc::new(Semaphore::new(max)));
    let cap = per_queue_cap(max, k);
    // One shutdown for every loop.
    let stop = tokio_util::sync::CancellationToken::new();
    let runs = wired.into_iter().zip(metrics).map(|(w, (_, recorder))| {
        let mut settings = Settings::new(&w.spec.queue, config.shutdown_timeout, once);
        if k > 1 {
            settings.max_concurrency = settings.max_concurrency.min(cap);
        }
        let mut worker = Worker::new(w.queue, w.poison, Arc::new(w.router), settings, recorder)
            .with_expected_exports(common.expected_exports.clone());
        if let Some(limit) = &process_limit {
            worker = worker.with_process_limit(limit.clone());
        }
        worker.run(stop.clone().cancelled_owned())
    });
    let all = futures_util::future::join_all(runs);
    tokio::pin!(all);
    tokio::pin!(shutdown);
    let results = tokio::select! {
        r = &mut all => r,
        _ = &mut shutdown => {
            stop.cancel();
            all.await
        }
    };
    let mut summaries = Vec::with_capacity(results.len());
    for r in results {
        summaries.push(r?);
    }
    Ok(summaries.into_iter().sum())
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

#[cfg(test)]
mod tests {
    use super::per_queue_cap;

    #[test]
    fn each_queue_leaves_the_others_a_reserve() {
        assert_eq!(per_queue_cap(32, 1), 32);
        // reserve 8: a busy queue leaves 8 to the other.
        assert_eq!(per_queue_cap(32, 2), 24);
        // reserve 2 for each of the 3 others.
        assert_eq!(per_queue_cap(16, 4), 10);
        // Small bounds: at least one slot each.
        assert_eq!(per_queue_cap(2, 2), 1);
        assert_eq!(per_queue_cap(3, 3), 1);
    }
}
