//! Reading a blob, behind a narrow trait: what the download handler needs
//! from storage, and nothing of the Azure SDK.
//!
//! The handler asks a [`BlobSource`] to open a URL with a given
//! [`Authority`] and reads the returned [`BlobStream`] as it arrives;
//! `crate::azure::AzureBlobs` implements it with one streaming GET. Which
//! URL may carry the daemon's own credential is the handler's decision (only
//! blobs inside a configured container); this trait only carries it out.
//! Below the Azure layer and the handlers; it must not import either.

use crate::error::BoxError;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use time::OffsetDateTime;
use url::Url;

/// Whose authority a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// The URL exactly as given (its own SAS, or nothing): nothing of the
    /// daemon's is added to the request.
    AsGiven,
    /// The daemon's own credential (token, account key, or its SAS token).
    DaemonCredential,
}

/// `Content-Range: bytes first-last/total` of a partial answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    /// The whole blob's size, as the server claims it.
    pub total: u64,
}

impl ContentRange {
    /// Parses the header value; `None` when it is not `bytes a-b/n` with
    /// `a <= b < n` (an unknown total, `*`, is not accepted either).
    pub fn parse(value: &str) -> Option<Self> {
        let rest = value.trim().strip_prefix("bytes ")?;
        let (range, total) = rest.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let parse = |s: &str| -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let (first, last, total) = (parse(first)?, parse(last)?, parse(total)?);
        (first <= last && last < total).then_some(Self { first, last, total })
    }
}

/// An open blob: what the answer's headers said, and its bytes.
pub struct BlobStream {
    /// `Content-Length` of this answer.
    pub content_length: Option<u64>,
    /// `Content-Range`, when the server answered 206.
    pub range: Option<ContentRange>,
    /// The MD5 the service holds for the whole blob, when it sent one.
    pub md5: Option<[u8; 16]>,
    /// `Last-Modified` of the blob.
    pub last_modified: Option<OffsetDateTime>,
    /// The bytes, in order, as they arrive (nothing is read ahead beyond
    /// the transport's own buffer).
    pub body: BoxStream<'static, Result<bytes::Bytes, BlobError>>,
}

/// Why a blob could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the model blob does not exist (404)")]
    NotFound,
    #[error(
        "access to the model blob was denied ({status}); the identity needs 'Storage Blob Data Reader' on the container, or the SAS lacks read permission or has expired"
    )]
    Forbidden { status: u16 },
    /// Another status; the body of such an answer is never read.
    #[error("the blob server answered {status}")]
    Status { status: u16 },
    /// An answer that makes no sense (a malformed `Content-Range`, ...).
    #[error("the blob server's answer is malformed: {0}")]
    Malformed(&'static str),
    /// The request could not be made.
    #[error("cannot download the model")]
    Request {
        #[source]
        source: BoxError,
    },
    /// Opening failed on every attempt, or the server asked for a longer
    /// pause than a download waits: the last attempt's error is the source.
    #[error(transparent)]
    Retried(Box<crate::retry::RetryError<BlobError>>),
    /// The body broke off.
    #[error("the transfer broke")]
    Transfer {
        #[source]
        source: BoxError,
    },
}

/// Opens blobs by URL.
#[async_trait]
pub trait BlobSource: Send + Sync {
    /// The blob service endpoint the configuration names (the account's, or
    /// the connection string's `BlobEndpoint`): its host is the default
    /// download allow-list, and plain `http` is acceptable on it (Azurite).
    fn configured_endpoint(&self) -> Option<Url>;

    /// Starts reading the whole blob at `url` with one GET.
    async fn open(&self, url: &Url, authority: Authority) -> Result<BlobStream, BlobError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_needs_a_known_total_beyond_the_range() {
        assert_eq!(
            ContentRange::parse("bytes 0-4194303/52428800"),
            Some(ContentRange {
                first: 0,
                last: 4194303,
                total: 52428800
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 0-0/1152921504606846976").map(|r| r.total),
            Some(1152921504606846976)
        );
        for bad in [
            "bytes 0-9/*",
            "bytes 5-1/10",
            "bytes 0-10/10",
            "bytes -1-2/10",
            "bytes 0-1/99999999999999999999999",
            "items 0-1/10",
            "bytes 0-1",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }
}
