//! The optional HTTP listener: `/healthz`, `/readyz`, `/metrics`.
//!
//! hyper's HTTP/1 server directly: three fixed routes do not need a
//! framework. Queue lengths are read from queue properties when
//! `/metrics` is scraped, at most every 30 s, so an unscraped daemon makes
//! no extra storage requests. Reads metrics and queues; records nothing.

use crate::metrics::{Metrics, MetricsRegistry};
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
                match tokio::time::timeout(Duration::from_secs(5), q.approximate_length()).await {
                    Ok(Ok(n)) => h.metrics.set_queue_length(role, n as i64),
                    Ok(Err(crate::queue::QueueError::QueueNotFound { .. })) => {
                        h.metrics.set_queue_length(role, 0)
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %crate::error::error_chain(&e), queue = q.name(), "Cannot read the queue length")
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
/// Slots kept for new clients: once fewer than this are free, idle
/// keep-alive connections are closed and every answer carries
/// `Connection: close`, so that a probe never waits behind clients that
/// merely keep their connections open ([`Open::slots_short`]).
const RESERVED_SLOTS: usize = 4;
/// While every slot is taken, idle connections are asked to close this
/// often (a probe in the backlog then gets a slot within this long).
const RECLAIM_INTERVAL: Duration = Duration::from_millis(250);
/// A new connection whose request head has not come within this long may
/// be closed when slots are short (a real client sends it at once; the
/// kernel holds it even before the connection is accepted).
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(500);
/// Requests served on one connection before it is closed.
const MAX_REQUESTS_PER_CONNECTION: u32 = 100;
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
/// [`HEADER_READ_TIMEOUT`], when idle that long, after
/// [`MAX_REQUESTS_PER_CONNECTION`] requests, and after
/// [`CONNECTION_LIFETIME`] in any case. A new client is answered whatever
/// the others do: probes (`/healthz`, `/readyz`) get `Connection: close`,
/// and when fewer than [`RESERVED_SLOTS`] slots are free, idle connections
/// are closed and answers close theirs (see [`Open`]). It serves no
/// secret and has no authentication: health and counters only.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let open = Open::default();
    let (reclaim, _) = tokio::sync::watch::channel(0u64);
    let ask_idle_to_close = || reclaim.send_modify(|round| *round = round.wrapping_add(1));
    let mut accept_errors = 0u64;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            // Full: until a slot frees, keep asking idle connections to
            // close, so that a client waiting in the backlog gets one.
            Err(_) => loop {
                ask_idle_to_close();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    p = slots.clone().acquire_owned() => break p.expect("the semaphore is never closed"),
                    _ = tokio::time::sleep(RECLAIM_INTERVAL) => {}
                }
            },
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
        let slot = open.take(permit);
        // Slots are short: idle connections make room.
        if open.slots_short() {
            ask_idle_to_close();
        }
        // Subscribed after that request to close: this connection is new.
        let reclaim = reclaim.subscribe();
        tokio::spawn(serve_connection(
            stream,
            state.clone(),
            open.clone(),
            reclaim,
            stop.clone(),
            slot,
        ));
    }
}

/// The number of open connections (counted apart from the semaphore,
/// whose free permits also depend on whether the accept loop already holds
/// one for the next client).
#[derive(Clone, Default)]
struct Open(Arc<std::sync::atomic::AtomicUsize>);

impl Open {
    /// Counts a connection until the [`Slot`] is dropped.
    fn take(&self, permit: tokio::sync::OwnedSemaphorePermit) -> Slot {
        self.0.fetch_add(1, Ordering::Relaxed);
        Slot {
            open: self.clone(),
            _permit: permit,
        }
    }

    /// Fewer than [`RESERVED_SLOTS`] slots are free.
    fn slots_short(&self) -> bool {
        MAX_CONNECTIONS.saturating_sub(self.0.load(Ordering::Relaxed)) < RESERVED_SLOTS
    }
}

/// One connection's place: its semaphore permit and its count in [`Open`].
struct Slot {
    open: Open,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether the answer to the `n`-th request of a connection closes it:
/// probes open a connection per probe, and the others close theirs when
/// slots are short or they have asked enough.
fn closes_connection(path: &str, slots_short: bool, n: u32) -> bool {
    matches!(path, "/healthz" | "/readyz") || slots_short || n >= MAX_REQUESTS_PER_CONNECTION
}

/// One connection, holding its `slot` until it ends: closed at
/// [`CONNECTION_LIFETIME`], at shutdown, or when asked through `reclaim`
/// while it is idle between requests (or still without a request after
/// [`FIRST_REQUEST_GRACE`]).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    state: Arc<HttpState>,
    open: Open,
    mut reclaim: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
    slot: Slot,
) {
    let opened = tokio::time::Instant::now();
    let served = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = served.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        let close = closes_connection(req.uri().path(), open.slots_short(), n);
        async move {
            let mut response = state.route(req).await;
            if close {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
    tokio::pin!(lifetime);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = &mut lifetime => break,
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                break;
            }
            changed = reclaim.changed(), if !closing => {
                if changed.is_err() {
                    closing = true;
                } else if served.load(Ordering::Relaxed) > 0 {
                    // Closes it at once when idle between requests, else
                    // after the answer in progress.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                } else if opened.elapsed() >= FIRST_REQUEST_GRACE {
                    // Connected long ago and not a single request yet.
                    break;
                }
            }
        }
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn listening() -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HttpState::new(Arc::new(MetricsRegistry::new()), Vec::new()));
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, state, stop.clone()));
        (addr, stop)
    }

    /// Sends `GET path` on `s` and reads the answer's head (the bodies
    /// here are a few bytes and come with it).
    async fn get(s: &mut tokio::net::TcpStream, path: &str) -> String {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase()
    }

    #[tokio::test]
    async fn probes_close_their_connection_and_metrics_keep_theirs() {
        let (addr, stop) = listening().await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = get(&mut s, "/metrics").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        for probe in ["/healthz", "/readyz"] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = get(&mut s, probe).await;
            assert!(head.contains("connection: close"), "{probe}: {head}");
            // And it is closed.
            assert_eq!(s.read(&mut [0u8; 16]).await.unwrap(), 0, "{probe}");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn a_connection_is_closed_after_its_request_limit() {
        let (addr, stop) = listening().await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        for n in 1..MAX_REQUESTS_PER_CONNECTION {
            let head = get(&mut s, "/metrics").await;
            assert!(!head.contains("connection: close"), "request {n}: {head}");
        }
        let head = get(&mut s, "/metrics").await;
        assert!(head.contains("connection: close"), "{head}");
        assert_eq!(s.read(&mut [0u8; 16]).await.unwrap(), 0);
        stop.cancel();
    }

    #[test]
    fn which_answers_close_their_connection() {
        assert!(closes_connection("/healthz", false, 1));
        assert!(closes_connection("/readyz", false, 1));
        assert!(!closes_connection("/metrics", false, 1));
        assert!(closes_connection("/metrics", true, 1));
        assert!(!closes_connection("/metrics", false, 99));
        assert!(closes_connection(
            "/metrics",
            false,
            MAX_REQUESTS_PER_CONNECTION
        ));
        let open = Open::default();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut slots: Vec<Slot> = (0..MAX_CONNECTIONS - RESERVED_SLOTS)
            .map(|_| open.take(semaphore.clone().try_acquire_owned().unwrap()))
            .collect();
        assert!(!open.slots_short(), "{RESERVED_SLOTS} slots are free");
        slots.push(open.take(semaphore.clone().try_acquire_owned().unwrap()));
        assert!(open.slots_short());
        slots.pop();
        assert!(!open.slots_short(), "a closed connection frees its slot");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_slots_short_idle_connections_are_closed_at_once() {
        let (addr, stop) = listening().await;
        // Keep-alive connections that were answered once and now idle.
        let room = MAX_CONNECTIONS - RESERVED_SLOTS;
        let mut idle = Vec::new();
        for i in 0..room {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = get(&mut s, "/metrics").await;
            assert!(head.starts_with("http/1.1 200"), "{i}: {head}");
            assert!(!head.contains("connection: close"), "{i}: {head}");
            idle.push(s);
        }
        // One more leaves fewer than RESERVED_SLOTS free: the idle ones
        // are closed at once, well before the 5 s idle timeout.
        let started = std::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = get(&mut s, "/metrics").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        for (i, s) in idle.iter_mut().enumerate() {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut [0u8; 16]))
                .await
                .expect("an idle connection was left open");
            assert!(matches!(n, Ok(0) | Err(_)), "connection {i}: {n:?}");
        }
        assert!(
            started.elapsed() < HEADER_READ_TIMEOUT,
            "closed only by the idle timeout, after {:?}",
            started.elapsed()
        );
        stop.cancel();
    }
}
