//! Bounds on what comes from outside the daemon: response bodies read with
//! a byte cap ([`Capped`], [`read`]), and text cut to a few KiB ([`text`])
//! before it becomes a log field, a failure reason or an envelope field.
//!
//! A leaf: imports nothing from the crate. Every client reads its answers
//! through [`Capped`]: the Training API, the OTLP exporter, the webhook, and
//! the Azure SDK's transport (queue, token endpoints, container listing;
//! [`crate::azure`] wraps it into an `azure_core` HTTP client). Each picks a
//! cap that the real service never reaches; a peer that sends more makes
//! that one call fail, never the daemon run out of memory.
//!
//! Why hand-written: `http-body-util`'s `Limited` caps an `http_body::Body`
//! (what reqwest's body is), but the Azure SDK hands its transport's bodies
//! over as a `futures` stream with its own error type, and `Limited` drops
//! what it read when the cap trips, where the Training API keeps the first
//! 64 KiB of an error answer for its message. One small stream adapter
//! serves every client alike; nothing in tokio-util or futures counts bytes
//! across chunks.

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The longest text from outside (an error chain, a failure reason, a
/// service's message) put into one log field or envelope field: a few
/// lines, enough for any real error, small beside the queue's 64 KiB
/// message limit so that a poison envelope always has room for its reason.
pub const MAX_TEXT: usize = 4 * 1024;

/// A body longer than its cap: the rest was not read.
#[derive(Debug, thiserror::Error)]
pub enum CapError<E> {
    #[error("the answer is larger than {}, the most this client reads", human(*cap))]
    TooLarge { cap: usize },
    #[error(transparent)]
    Read(E),
}

/// `cap` as "64 KiB" / "16 MiB".
fn human(cap: usize) -> String {
    if cap >= 1 << 20 && cap.is_multiple_of(1 << 20) {
        format!("{} MiB", cap >> 20)
    } else if cap >= 1 << 10 && cap.is_multiple_of(1 << 10) {
        format!("{} KiB", cap >> 10)
    } else {
        format!("{cap} bytes")
    }
}

/// A body stream that passes on at most `cap` bytes: the first `cap` bytes
/// of a longer body, then [`CapError::TooLarge`] and the end. Nothing is
/// read after that; dropping the underlying response closes its connection.
pub struct Capped<S> {
    inner: Pin<Box<S>>,
    /// Bytes that may still pass.
    left: usize,
    cap: usize,
    /// The cap was reached by a longer body: the error is due.
    over: bool,
    done: bool,
}

impl<S> Capped<S> {
    pub fn new(inner: S, cap: usize) -> Self {
        Self {
            inner: Box::pin(inner),
            left: cap,
            cap,
            over: false,
            done: false,
        }
    }
}

impl<S, E> Stream for Capped<S>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    type Item = Result<Bytes, CapError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.over {
            self.done = true;
            return Poll::Ready(Some(Err(CapError::TooLarge { cap: self.cap })));
        }
        let item = match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        Poll::Ready(match item {
            None => {
                self.done = true;
                None
            }
            Some(Err(e)) => {
                self.done = true;
                Some(Err(CapError::Read(e)))
            }
            Some(Ok(chunk)) if chunk.len() > self.left => {
                // What still fits, then the error on the next poll.
                let fits = chunk.slice(..self.left);
                self.left = 0;
                self.over = true;
                Some(Ok(fits))
            }
            Some(Ok(chunk)) => {
                self.left -= chunk.len();
                Some(Ok(chunk))
            }
        })
    }
}

/// A body read up to a cap.
#[derive(Debug)]
pub struct Read {
    /// The body, or its first `cap` bytes.
    pub bytes: Bytes,
    /// False when the body was longer than the cap (the rest was not read).
    pub complete: bool,
}

/// Reads `body` (a stream of chunks, such as reqwest's
/// `Response::bytes_stream`) to its end, or to `cap` bytes when it is
/// longer. Memory stays within twice the cap however long the body.
pub async fn read<S, E>(body: S, cap: usize) -> Result<Read, E>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    use futures_util::StreamExt as _;
    let mut body = Capped::new(body, cap);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => buf.extend_from_slice(&c),
            Err(CapError::TooLarge { .. }) => {
                return Ok(Read {
                    bytes: buf.freeze(),
                    complete: false,
                });
            }
            Err(CapError::Read(e)) => return Err(e),
        }
    }
    Ok(Read {
        bytes: buf.freeze(),
        complete: true,
    })
}

/// `text` cut to at most `max` bytes (at a character boundary), saying how
/// much was cut: for log fields and reasons built from outside text.
pub fn text(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let shown = prefix(text, max);
    std::borrow::Cow::Owned(format!(
        "{shown}... ({} more bytes not shown)",
        text.len() - shown.len()
    ))
}

/// The longest start of `text` of at most `max` bytes that ends at a
/// character boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    fn chunks(sizes: &[usize]) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        let v: Vec<_> = sizes
            .iter()
            .map(|n| Ok(Bytes::from(vec![b'x'; *n])))
            .collect();
        futures_util::stream::iter(v)
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let r = read(chunks(&[3, 4, 3]), 10).await.unwrap();
        assert_eq!((r.bytes.len(), r.complete), (10, true));
        let r = read(chunks(&[]), 10).await.unwrap();
        assert_eq!((r.bytes.len(), r.complete), (0, true));
    }

    #[tokio::test]
    async fn a_longer_body_gives_its_first_bytes_and_is_not_read_further() {
        let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = polled.clone();
        // Endless: 1 KiB chunks for ever.
        let endless = futures_util::stream::repeat_with(move || {
            p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1024]))
        });
        let r = read(endless, 10_000).await.unwrap();
        assert_eq!((r.bytes.len(), r.complete), (10_000, false));
        assert_eq!(polled.load(std::sync::atomic::Ordering::Relaxed), 10);
    }

    #[tokio::test]
    async fn the_stream_ends_in_an_error_after_the_cap() {
        let items: Vec<_> = Capped::new(chunks(&[6, 6]), 8).collect().await;
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap().len(), 6);
        assert_eq!(items[1].as_ref().unwrap().len(), 2);
        let e = items[2].as_ref().unwrap_err();
        assert!(matches!(e, CapError::TooLarge { cap: 8 }));
        let items: Vec<_> = Capped::new(chunks(&[4, 4]), 8).collect().await;
        assert!(items.iter().all(Result::is_ok), "exactly the cap is fine");
        let e = CapError::<std::io::Error>::TooLarge { cap: 16 << 20 };
        assert_eq!(
            e.to_string(),
            "the answer is larger than 16 MiB, the most this client reads"
        );
    }

    #[test]
    fn text_is_cut_at_a_character_boundary_and_says_so() {
        assert_eq!(text("short", 10), "short");
        let long = "é".repeat(100);
        let cut = text(&long, 11);
        assert_eq!(cut, "ééééé... (190 more bytes not shown)");
        assert_eq!(prefix(&long, 3), "é");
        assert_eq!(prefix("abc", 3), "abc");
    }
}
