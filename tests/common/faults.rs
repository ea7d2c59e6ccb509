//! A fault-injecting HTTP proxy on loopback, between the daemon and Azurite.
//!
//! It serves one request per connection (answering `connection: close`),
//! forwards it to the upstream, and for a configurable share of requests
//! answers 503 ServerBusy, 500, answers only after a delay longer than the
//! client's timeout, or resets the connection without answering. Written
//! here because the fault kinds are storage-specific (ServerBusy bodies) and
//! small.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Shares of requests (per mille) that get each fault.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub server_busy: u32,
    pub internal_error: u32,
    pub slow: u32,
    pub reset: u32,
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub forwarded: AtomicU64,
    pub server_busy: AtomicU64,
    pub internal_error: AtomicU64,
    pub slow: AtomicU64,
    pub reset: AtomicU64,
}

pub struct FaultProxy {
    pub port: u16,
    pub counts: Arc<Counts>,
    faults: Arc<std::sync::Mutex<Faults>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream_port: u16, faults: Faults, slow_for: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let faults = Arc::new(std::sync::Mutex::new(faults));
        let (c, f) = (counts.clone(), faults.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (c, f) = (c.clone(), f.clone());
                tokio::spawn(async move {
                    let current = *f.lock().unwrap();
                    let _ = serve(conn, upstream_port, &c, current, slow_for).await;
                });
            }
        });
        FaultProxy {
            port,
            counts,
            faults,
            task,
        }
    }

    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request, keeping its raw bytes (head and body) to forward.
async fn read_request(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let (head, body) = super::read_http_request(conn).await?;
    let mut raw = head.into_bytes();
    raw.extend_from_slice(b"\r\n\r\n");
    raw.extend_from_slice(&body);
    Some(raw)
}

/// Rewrites the request to close the upstream connection after one answer.
fn with_connection_close(req: &[u8]) -> Vec<u8> {
    let end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&req[..end]);
    let mut out = String::new();
    for line in head.split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("connection: close\r\n\r\n");
    let mut v = out.into_bytes();
    v.extend_from_slice(&req[end + 4..]);
    v
}

fn error_response(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>Injected by the test proxy.</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nx-ms-error-code: {code}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(
    mut conn: TcpStream,
    upstream: u16,
    counts: &Counts,
    faults: Faults,
    slow_for: Duration,
) -> std::io::Result<()> {
    let Some(req) = read_request(&mut conn).await else {
        return Ok(());
    };
    counts.requests.fetch_add(1, Ordering::Relaxed);
    let roll = fastrand::u32(0..1000);
    let mut edge = faults.server_busy;
    if roll < edge {
        counts.server_busy.fetch_add(1, Ordering::Relaxed);
        return conn
            .write_all(&error_response("503 Server Busy", "ServerBusy"))
            .await;
    }
    edge += faults.internal_error;
    if roll < edge {
        counts.internal_error.fetch_add(1, Ordering::Relaxed);
        return conn
            .write_all(&error_response(
                "500 Internal Server Error",
                "InternalError",
            ))
            .await;
    }
    edge += faults.reset;
    if roll < edge {
        counts.reset.fetch_add(1, Ordering::Relaxed);
        // Close without answering; with SO_LINGER 0 the peer sees a reset.
        // (Deprecated because a non-zero linger blocks on drop; zero does not.)
        #[allow(deprecated)]
        let _ = conn.set_linger(Some(Duration::ZERO));
        drop(conn);
        return Ok(());
    }
    edge += faults.slow;
    let slow = roll < edge;
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
    up.write_all(&with_connection_close(&req)).await?;
    let mut rsp = Vec::new();
    up.read_to_end(&mut rsp).await?;
    counts.forwarded.fetch_add(1, Ordering::Relaxed);
    if slow {
        // The request took effect upstream, but the answer comes too late.
        counts.slow.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(slow_for).await;
    }
    conn.write_all(&rsp).await
}
