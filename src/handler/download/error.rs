//! [`DownloadError`]: why a model was not stored. Messages never carry a
//! URL's query (a SAS).

use super::archive::ArchiveError;
use super::name::NameError;
use super::place::PathError;
use crate::blob::{BlobError, ContentRange};
use std::path::{Path, PathBuf};

/// Why a model was not stored.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot create dir {}", .0.display())]
    CreateDir(PathBuf, #[source] std::io::Error),
    #[error(
        "allowed_hosts is empty and neither a storage account nor a container is configured to derive it from; list the blob hosts models come from"
    )]
    NoAllowedHosts,
    #[error("modelUri is not a URL")]
    NotAUrl(#[source] url::ParseError),
    #[error("refusing to download from {host}: not in allowed_hosts ({allowed})")]
    HostNotAllowed { host: String, allowed: String },
    #[error(
        "refusing a plain http model URL on {host}: models are fetched over https, http only from an endpoint the configuration names (container, connection string)"
    )]
    Insecure { host: String },
    #[error("refusing a model URL with a user name or password in it")]
    UserInfo,
    #[error("{}", untrusted(.containers))]
    Untrusted { containers: String },
    #[error(
        "refusing a model URL inside the container with a query that is not a SAS; only the blob itself is fetched with the daemon's credential"
    )]
    QueryInContainer,
    #[error(
        "refusing the blob event for {url}: the blob is outside every configured container ({containers}); the daemon's credential is used only inside them, and nothing was requested"
    )]
    BlobOutside { url: String, containers: String },
    #[error(transparent)]
    BlobPath(#[from] PathError),
    #[error(
        "refusing the blob event: its subject names the blob `{subject}` but its url names `{url}`"
    )]
    BlobMismatch { subject: String, url: String },
    #[error(
        "refusing to store the blob {url} at {}: {what}; two blobs that map to one file are not stored over each other (give each container its own handler and dir)",
        path.display()
    )]
    Clash {
        url: String,
        path: PathBuf,
        what: String,
    },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(
        "the model is {size} bytes ({how}), more than max_size ({max}); raise max_size if it is genuine"
    )]
    TooLarge {
        size: u64,
        how: &'static str,
        max: bytesize::ByteSize,
    },
    #[error(
        "the server answered with bytes {}-{} of {} to a request for the whole blob",
        .0.first, .0.last, .0.total
    )]
    Partial(ContentRange),
    #[error("the transfer broke after {written} bytes")]
    Broken {
        written: u64,
        #[source]
        source: BlobError,
    },
    #[error("the transfer ended after {written} of {expected} bytes")]
    Short { written: u64, expected: u64 },
    #[error("the server sent more than the {expected} bytes it announced")]
    Long { expected: u64 },
    #[error("the downloaded model does not match the blob's Content-MD5")]
    Md5Mismatch,
    /// The archive's bytes are refused ([`ArchiveError::is_permanent`]).
    #[error("the model is not a usable archive")]
    Archive(#[source] ArchiveError),
    /// Checking or unpacking it failed on this machine (a full disk...).
    #[error("cannot check or unpack the archive")]
    Unpack(#[source] ArchiveError),
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the download did not finish within {0}")]
    Timeout(humantime::Duration),
}

impl DownloadError {
    /// An archive error, by whose fault it is: the bytes' ([`Self::Archive`])
    /// or the machine's ([`Self::Unpack`]).
    pub fn archive(e: ArchiveError) -> Self {
        if e.is_permanent() {
            DownloadError::Archive(e)
        } else {
            DownloadError::Unpack(e)
        }
    }

    /// Whether retrying cannot help: the URL was refused by the
    /// configuration, or the model's bytes make it unacceptable (too large,
    /// a bad archive). The message is then poisoned at once. I/O errors of
    /// the machine (a full disk, a quota, too many open files, a device
    /// error) are not: they can pass, so the delivery is retried.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DownloadError::NotAUrl(_)
                | DownloadError::HostNotAllowed { .. }
                | DownloadError::Insecure { .. }
                | DownloadError::UserInfo
                | DownloadError::Untrusted { .. }
                | DownloadError::QueryInContainer
                | DownloadError::Name(_)
                | DownloadError::BlobOutside { .. }
                | DownloadError::BlobPath(_)
                | DownloadError::BlobMismatch { .. }
                | DownloadError::Clash { .. }
                | DownloadError::TooLarge { .. }
                | DownloadError::Archive(_)
        )
    }
}

fn untrusted(containers: &str) -> String {
    if containers.is_empty() {
        "refusing a model URL without a SAS: no `container` is configured, so only URLs carrying their own SAS are fetched (set `container` to the project's backup container to fetch its blobs with the daemon's credential)".to_owned()
    } else {
        format!(
            "refusing a model URL without a SAS outside the configured container ({containers}): the daemon's credential is used only inside it"
        )
    }
}

/// An I/O error on `path`, for `map_err`.
pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError {
    let path = path.to_owned();
    move |source| DownloadError::Io { what, path, source }
}
