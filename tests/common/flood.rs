//! A hostile HTTP peer on loopback: every request gets a status of the
//! test's choosing and a body that does not end, written until the client
//! hangs up, [`MAX_BYTES`] are out, or [`MAX_TIME`] passes (so the test
//! stays quick and a client that reads everything is seen reading far
//! more than any cap). It stands for a collector, a storage or token
//! endpoint, a Training API, a webhook receiver or a blob server (or a
//! proxy in front of one) gone wrong.
//!
//! Its answers are held back until [`Flood::open`]: the daemon then waits
//! on its first request, fully started, and a test can take its idle
//! memory before the flood begins.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The most body bytes one answer writes: far above every cap of the
/// daemon (16 MiB at most), so a client that buffers what it gets shows it
/// in its memory.
pub const MAX_BYTES: u64 = 256 << 20;
/// The longest one answer goes on.
pub const MAX_TIME: Duration = Duration::from_secs(20);

/// What every answer is.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// Sent as `Content-Length` (never honoured in full); without it the
    /// body runs until the connection closes.
    pub content_length: Option<u64>,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// `status` with `Content-Length: 2 GiB`.
    pub fn declaring_2_gib(status: u16) -> Self {
        Answer {
            status,
            content_length: Some(2 << 30),
            headers: Vec::new(),
        }
    }

    /// `status` with no length: the body ends when the connection does.
    pub fn endless(status: u16) -> Self {
        Answer {
            status,
            content_length: None,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The running peer; stopped when dropped.
pub struct Flood {
    pub port: u16,
    /// Request heads read.
    requests: Arc<AtomicU64>,
    /// Answers that ended (the client hung up, or a limit was reached).
    finished: Arc<AtomicU64>,
    /// Body bytes written, over all answers.
    sent: Arc<AtomicU64>,
    open: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Flood {
    /// Answers nothing before [`Flood::open`].
    pub async fn start(answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (requests, finished, sent): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) =
            Default::default();
        let (gate, _) = tokio::sync::watch::channel(false);
        let (r, f, s, g) = (
            Arc::clone(&requests),
            Arc::clone(&finished),
            Arc::clone(&sent),
            gate.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (r, f, s, answer) = (r.clone(), f.clone(), s.clone(), answer.clone());
                let mut gate = g.subscribe();
                tokio::spawn(async move {
                    if super::read_http_request(&mut conn).await.is_none() {
                        return;
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    if gate.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    flood(&mut conn, &answer, &s).await;
                    f.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Flood {
            port,
            requests,
            finished,
            sent,
            open: gate,
            task,
        }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Lets held and later answers go.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::SeqCst)
    }

    /// Body bytes written so far (what the kernel took, not what the
    /// client read).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

async fn flood(conn: &mut tokio::net::TcpStream, answer: &Answer, sent: &AtomicU64) {
    let mut head = format!("HTTP/1.1 {} Flood\r\n", answer.status);
    match answer.content_length {
        Some(n) => head.push_str(&format!("content-length: {n}\r\n")),
        None => head.push_str("connection: close\r\n"),
    }
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if conn.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![b'x'; 1 << 20];
    let started = Instant::now();
    let mut written = 0u64;
    while written < MAX_BYTES && started.elapsed() < MAX_TIME {
        match tokio::time::timeout(Duration::from_secs(1), conn.write_all(&chunk)).await {
            Ok(Ok(())) => {
                written += chunk.len() as u64;
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            Ok(Err(_)) => return,
            // The client stopped reading without hanging up: try until
            // MAX_TIME.
            Err(_) => {}
        }
    }
}
