//! Reading a blob, behind a narrow trait: what the download handler needs
//! from storage, and nothing of the Azure SDK.
//!
//! The handler asks a [`BlobSource`] to open a URL and reads the returned
//! [`BlobStream`]; `crate::azure::AzureBlobs` implements it with the
//! daemon's credentials. Below the Azure layer and the handlers; it must not
//! import either.

use crate::error::BoxError;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use url::Url;

/// An open blob: what is known before reading it, and its bytes.
pub struct BlobStream {
    /// The blob's total size, when the service said (the total of a
    /// `Content-Range`, else `Content-Length`).
    pub total_len: Option<u64>,
    /// The MD5 the service holds for the whole blob, when it sent one.
    pub md5: Option<Vec<u8>>,
    /// The bytes, in order.
    pub body: BoxStream<'static, Result<bytes::Bytes, BlobError>>,
}

/// Why a blob could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the model blob does not exist (404)")]
    NotFound,
    #[error(
        "access to the model blob was denied (403); the identity needs 'Storage Blob Data Reader' on the container, or the SAS lacks read permission"
    )]
    Forbidden,
    /// The request could not be made or was answered with another error.
    #[error("cannot download the model")]
    Request {
        #[source]
        source: BoxError,
    },
    /// The body broke off.
    #[error("the transfer broke")]
    Transfer {
        #[source]
        source: BoxError,
    },
    /// A client for this URL cannot be built.
    #[error("cannot create the blob client")]
    Client {
        #[source]
        source: BoxError,
    },
}

/// Opens blobs by URL.
#[async_trait]
pub trait BlobSource: Send + Sync {
    /// `host` or `host:port` of the configured account's blob endpoint, the
    /// default download allow-list.
    fn default_host(&self) -> Option<String>;

    /// Starts reading the blob at `url`.
    async fn open(&self, url: &Url) -> Result<BlobStream, BlobError>;
}
