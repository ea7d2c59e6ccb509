//! The optional HTTP listener: `/healthz`, `/readyz`, `/metrics`.
//!
//! hyper's HTTP/1 server directly: three fixed routes do not need a
//! framework. Queue lengths are read from queue properties when
//! `/metrics` is scraped, at most every 30 s, so an unscraped daemon makes
//! no extra storage requests. Reads metrics and queues; records nothing.

use crate::metrics::{Metrics, MetricsRegistry, RoleLabel};
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

/// What the routes read about one queue.
pub struct QueueHealth {
    pub name: String,
    pub metrics: Arc<Metrics>,
    /// `/readyz` fails when no call to this queue succeeded for this long.
    pub ready_window: Duration,
    pub queue: Arc<dyn Queue>,
    pub poison: Arc<dyn Queue>,
}

/// What the routes read.
pub struct HttpState {
    registry: Arc<MetricsRegistry>,
    /// In configuration order.
    queues: Vec<QueueHealth>,
    /// When queue lengths were last read (Unix ms), so that scrapes read
    /// them at most every [`LENGTH_REFRESH`].
    lengths_refreshed_ms: AtomicU64,
}

impl HttpState {
    pub fn new(registry: Arc<MetricsRegistry>, queues: Vec<QueueHealth>) -> Self {
        Self {
            registry,
            queues,
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
        for h in &self.queues {
            for (role, q) in [("main", &h.queue), ("poison", &h.poison)] {
                let gauge = || h.metrics.queue_length.get_or_create(&RoleLabel { role });
                match tokio::time::timeout(Duration::from_secs(5), q.approximate_length()).await {
                    Ok(Ok(n)) => {
                        gauge().set(n as i64);
                    }
                    Ok(Err(crate::queue::QueueError::QueueNotFound { .. })) => {
                        gauge().set(0);
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, queue = q.name(), "Cannot read the queue length")
                    }
                    Err(_) => {
                        tracing::debug!(queue = q.name(), "Reading the queue length timed out")
                    }
                }
            }
        }
    }

    /// `/readyz`: one line per queue (`<name>: ready` or `<name>: not
    /// ready: <why>`); 503 when any queue is not ready.
    fn readiness(&self) -> (StatusCode, String) {
        let mut body = String::new();
        let mut all_ready = true;
        for h in &self.queues {
            match h.metrics.ready(h.ready_window) {
                Ok(()) => body.push_str(&format!("{}: ready\n", h.name)),
                Err(why) => {
                    all_ready = false;
                    body.push_str(&format!("{}: not ready: {why}\n", h.name));
                }
            }
        }
        if all_ready {
            (StatusCode::OK, format!("ready\n{body}"))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready\n{body}"),
            )
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
            "/readyz" => {
                let (status, body) = self.readiness();
                text(status, body)
            }
            "/metrics" => {
                self.refresh_lengths().await;
                Response::builder()
                    .header(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(Full::new(Bytes::from(self.registry.encode())))
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
