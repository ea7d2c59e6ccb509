//! [`capped`]: the HTTP transport of every Azure SDK client the daemon
//! makes (queues, token endpoints, container listing), whose answer bodies
//! end in an error after a cap.
//!
//! The SDK collects whole bodies (a queue's XML, a token's JSON, an error
//! answer's details) into memory as they come, with no limit of its own: a
//! storage endpoint, a proxy or a token endpoint answering with an endless
//! body would have the daemon buffer it all. Here the SDK's own reqwest
//! glue sends the request, and the body stream it hands back goes through
//! [`crate::limit::Capped`]. Model downloads do not go through this: they
//! stream to a file and count against the handler's `max_size`.

use crate::limit::{CapError, Capped};
use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Transport};
use futures_util::TryStreamExt as _;
use std::sync::Arc;

/// The largest queue answer read. Receive and Peek return at most 32
/// messages of at most 64 KiB each; XML escaping makes a character at most
/// 6 bytes (`&quot;`), so the service's answer stays under 12 MiB.
pub const MAX_QUEUE_ANSWER: usize = 16 << 20;
/// The largest token endpoint answer read: a JSON object with one access
/// token (a JWT of a few KiB; tokens with many group claims stay well
/// under 64 KiB).
pub const MAX_TOKEN_ANSWER: usize = 1 << 20;
/// The largest blob service answer read by `setup` and `check`: one
/// listing page of at most 100 names (of at most 1,024 characters each)
/// with their properties is a few hundred KiB of XML.
pub const MAX_LISTING_ANSWER: usize = 4 << 20;

/// reqwest, as the SDK drives it, with answer bodies capped at `cap` bytes.
#[derive(Debug)]
struct CappedHttp {
    http: reqwest::Client,
    cap: usize,
}

#[async_trait]
impl HttpClient for CappedHttp {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let (status, headers, body) = self.http.execute_request(request).await?.deconstruct();
        let cap = self.cap;
        let body = Capped::new(body, cap).map_err(move |e| match e {
            CapError::Read(e) => e,
            // Not an I/O error: the SDK's retry policy must not read the
            // same endless answer again.
            too_large @ CapError::TooLarge { .. } => {
                azure_core::Error::new(ErrorKind::Other, too_large)
            }
        });
        Ok(AsyncRawResponse::new(status, headers, Box::pin(body)))
    }
}

/// A transport over `http` whose answers are read up to `cap` bytes.
pub fn capped(http: reqwest::Client, cap: usize) -> Transport {
    Transport::new(Arc::new(CappedHttp { http, cap }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::{Method, Url};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A server answering every request 200 with 1 MiB chunks for ever
    /// (until the client hangs up), and how many bytes it got rid of.
    async fn endless() -> (Url, Arc<std::sync::atomic::AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s = sent.clone();
        tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 4096];
            let _ = c.read(&mut head).await;
            let _ = c
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2147483648\r\n\r\n")
                .await;
            let chunk = vec![b'x'; 1 << 20];
            while c.write_all(&chunk).await.is_ok() {
                s.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        (url, sent)
    }

    #[tokio::test]
    async fn an_endless_answer_ends_in_an_error_after_the_cap() {
        let (url, sent) = endless().await;
        let client = CappedHttp {
            http: reqwest::Client::new(),
            cap: 4 << 20,
        };
        let rsp = client
            .execute_request(&Request::new(url, Method::Get))
            .await
            .unwrap();
        let e = rsp.into_body().collect().await.unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Other), "{e:?}");
        assert!(e.to_string().contains("larger than 4 MiB"), "{e}");
        // The server stopped soon after: socket buffers, not 2 GiB.
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(sent < 64 << 20, "{sent} bytes sent");
    }
}
