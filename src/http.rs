//! The optional HTTP listener: `/healthz`, `/readyz`, `/metrics`.
//!
//! hyper's HTTP/1 server directly: three fixed routes do not need a
//! framework. Queue lengths are read from queue properties when
//! `/metrics` is scraped, at most every 30 s, so an unscraped daemon makes
//! no extra storage requests. Reads metrics and queues; records nothing.

use crate::metrics::{Metrics, QueueLabel};
use crate::queue::Queue;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the routes read.
pub struct HttpState {
    metrics: Arc<Metrics>,
    /// `/readyz` fails when no queue call succeeded for this long.
    ready_window: Duration,
    queue: Arc<dyn Queue>,
    poison: Arc<dyn Queue>,
    /// When queue lengths were last read (Unix ms), so that scrapes read
    /// them at most every [`LENGTH_REFRESH`].
    lengths_refreshed_ms: AtomicU64,
}

impl HttpState {
    pub fn new(
        metrics: Arc<Metrics>,
        ready_window: Duration,
        queue: Arc<dyn Queue>,
        poison: Arc<dyn Queue>,
    ) -> Self {
        Self {
            metrics,
            ready_window,
            queue,
            poison,
            lengths_refreshed_ms: AtomicU64::new(0),
        }
    }
}

const LENGTH_REFRESH: Duration = Duration::from_secs(30);

impl HttpState {
    async fn refresh_lengths(&self) {
        let now = crate::metrics::now_ms();
        let last = self.lengths_refreshed_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < LENGTH_REFRESH.as_millis() as u64
            || self
                .lengths_refreshed_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for (label, q) in [("main", &self.queue), ("poison", &self.poison)] {
            match tokio::time::timeout(Duration::from_secs(5), q.approximate_length()).await {
                Ok(Ok(n)) => {
                    self.metrics
                        .queue_length
                        .get_or_create(&QueueLabel { queue: label })
                        .set(n as i64);
                }
                Ok(Err(crate::queue::QueueError::QueueNotFound { .. })) => {
                    self.metrics
                        .queue_length
                        .get_or_create(&QueueLabel { queue: label })
                        .set(0);
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, queue = label, "Cannot read the queue length")
                }
                Err(_) => tracing::debug!(queue = label, "Reading the queue length timed out"),
            }
        }
    }

    async fn route(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(body)))
                .expect("static response parts")
        };
        if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => match self.metrics.ready(self.ready_window) {
                Ok(()) => text(StatusCode::OK, "ready\n".into()),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            "/metrics" => {
                self.refresh_lengths().await;
                Response::builder()
                    .header(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(Full::new(Bytes::from(self.metrics.encode())))
                    .expect("static response parts")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "routes: /healthz /readyz /metrics\n".into(),
            ),
        }
    }
}

/// Connections served at once; more wait in the kernel's accept backlog,
/// costing the daemon no file descriptor (hooks need those).
const MAX_CONNECTIONS: usize = 32;
/// A client must send a whole request head within this long, and an idle
/// keep-alive connection is closed after it: half-open and idle
/// connections cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head read (hyper's minimum is 8 KiB); larger gets 431.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Serves until `stop` is cancelled. Bounded: at most [`MAX_CONNECTIONS`]
/// connections, each closed when its request head is not complete within
/// [`HEADER_READ_TIMEOUT`], when idle that long, and after
/// [`CONNECTION_LIFETIME`] in any case. It serves no secret and has no
/// authentication: health and counters only.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut accept_errors = 0u64;
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: back off, and
                    // say so once in a while rather than 10 times a second.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(error = %e, count = accept_errors, "Accepting an HTTP connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(state.route(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
            tokio::pin!(lifetime);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = &mut lifetime => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            drop(permit);
        });
    }
}
