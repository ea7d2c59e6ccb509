//! `type = "download"`: keeps a local copy of every exported model.
//!
//! On `Export` + `ExportCompleted` the blob at `modelUri` is stored in `dir`
//! as `{projectId} - {iterationId}.{platform}`, the naming Custom Vision uses
//! in its backup container, where the platform is the extension of the blob
//! name. The file name is built only from the two parsed GUIDs and a checked
//! extension, so nothing in the URL can steer a write outside `dir`.
//!
//! The blob is streamed to a hidden partial file in `dir`, its length (and
//! MD5, when the service sends one) checked, a `.sha256` file written, and
//! only then renamed into place: a partial file never carries the final
//! name. A redelivered event whose file is present and matches its `.sha256`
//! succeeds without downloading again.

use super::types::{Delivery, Handler, HandlerError};
use crate::blob::{BlobError, BlobSource};
use crate::config::DownloadConfig;
use crate::event::{Event, ExportStatus};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use md5::Digest as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use url::Url;
use uuid::Uuid;

/// Why a model was not stored.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot create dir {}", .0.display())]
    CreateDir(PathBuf, #[source] std::io::Error),
    #[error(
        "allowed_hosts is empty and no storage account is configured to derive it from; list the blob hosts models come from"
    )]
    NoAllowedHosts,
    #[error("modelUri is not a URL")]
    NotAUrl(#[source] url::ParseError),
    #[error("refusing to download from {host}: not in allowed_hosts ({allowed})")]
    HostNotAllowed { host: String, allowed: String },
    #[error(
        "cannot tell the platform from the blob name `{0}` (expected `... .ONNX`, `.zip`, ...)"
    )]
    Platform(String),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("the transfer broke after {written} bytes")]
    Broken {
        written: u64,
        #[source]
        source: BlobError,
    },
    #[error("the transfer ended after {written} of {expected} bytes")]
    Short { written: u64, expected: u64 },
    #[error("the downloaded model does not match the blob's Content-MD5")]
    Md5Mismatch,
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

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError {
    let path = path.to_owned();
    move |source| DownloadError::Io { what, path, source }
}

pub struct DownloadHandler {
    config: DownloadConfig,
    allowed: Vec<String>,
    blobs: Arc<dyn BlobSource>,
}

impl DownloadHandler {
    pub fn new(config: &DownloadConfig, blobs: Arc<dyn BlobSource>) -> Result<Self, DownloadError> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| DownloadError::CreateDir(config.dir.clone(), e))?;
        let mut allowed: Vec<String> = config
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if allowed.is_empty() {
            match blobs.default_host() {
                Some(h) => allowed.push(h),
                None => return Err(DownloadError::NoAllowedHosts),
            }
        }
        Ok(Self {
            config: config.clone(),
            allowed,
            blobs,
        })
    }

    fn host_allowed(&self, url: &Url) -> bool {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let with_port = url.port().map(|p| format!("{host}:{p}"));
        self.allowed.iter().any(|a| {
            if let Some(suffix) = a.strip_prefix("*.") {
                url.port().is_none() && host.ends_with(&format!(".{suffix}"))
            } else {
                *a == host && url.port().is_none() || Some(a) == with_port.as_ref()
            }
        })
    }
}

/// The platform: the extension of the blob name, letters and digits only.
fn platform_of(url: &Url) -> Result<String, DownloadError> {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    let name = percent_decode(last);
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 16 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| DownloadError::Platform(name.clone()))?;
    Ok(ext.to_owned())
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Removes the partial file unless disarmed (covers errors and the handler
/// being dropped at shutdown).
struct PartialFile(Option<PathBuf>);

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn sha256_of(path: &Path) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path).await?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl DownloadHandler {
    async fn download(
        &self,
        url: &Url,
        project: Uuid,
        iteration: Uuid,
    ) -> Result<(), DownloadError> {
        let platform = platform_of(url)?;
        let file_name = format!("{project} - {iteration}.{platform}");
        let dir = &self.config.dir;
        let final_path = dir.join(&file_name);
        let sha_path = dir.join(format!("{file_name}.sha256"));

        if let (Ok(expected), true) = (
            tokio::fs::read_to_string(&sha_path).await,
            final_path.exists(),
        ) {
            let expected = expected
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            if sha256_of(&final_path)
                .await
                .map_err(io("read", &final_path))?
                == expected
            {
                tracing::info!(file = %final_path.display(), "The model is already downloaded");
                return Ok(());
            }
            tracing::warn!(file = %final_path.display(), "The stored model does not match its .sha256; downloading it again");
        }

        let partial = dir.join(format!(".{file_name}.{}.partial", Uuid::new_v4().simple()));
        let mut guard = PartialFile(Some(partial.clone()));
        let blob = self.blobs.open(url).await?;
        let expected_len = blob.total_len;
        let expected_md5 = blob.md5;

        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(io("create", &partial))?;
        let mut sha = sha2::Sha256::new();
        let mut md5 = md5::Md5::new();
        let mut written = 0u64;
        let mut body = blob.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| DownloadError::Broken { written, source })?;
            sha.update(&chunk);
            md5.update(&chunk);
            written += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(io("write", &partial))?;
        }
        file.sync_all().await.map_err(io("sync", &partial))?;
        drop(file);
        if let Some(len) = expected_len
            && len != written
        {
            return Err(DownloadError::Short {
                written,
                expected: len,
            });
        }
        if let Some(md5_expected) = expected_md5
            && md5.finalize().as_slice() != md5_expected.as_slice()
        {
            return Err(DownloadError::Md5Mismatch);
        }
        let digest = hex(&sha.finalize());
        let sha_partial = dir.join(format!(".{file_name}.sha256.partial"));
        tokio::fs::write(&sha_partial, format!("{digest}  {file_name}\n"))
            .await
            .map_err(io("write", &sha_partial))?;
        tokio::fs::rename(&sha_partial, &sha_path)
            .await
            .map_err(io("rename", &sha_partial))?;
        tokio::fs::rename(&partial, &final_path)
            .await
            .map_err(io("rename", &partial))?;
        guard.0 = None;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        tracing::info!(file = %final_path.display(), bytes = written, sha256 = %digest, "Model downloaded");
        if let Some(keep) = self.config.keep_last {
            self.prune(project, keep as usize);
        }
        Ok(())
    }

    /// Removes all but the newest `keep` models of `project`.
    fn prune(&self, project: Uuid, keep: usize) {
        let prefix = format!("{project} - ");
        let Ok(entries) = std::fs::read_dir(&self.config.dir) else {
            return;
        };
        let mut models: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name.starts_with(&prefix) && !name.ends_with(".sha256"))
                    .then(|| Some((e.metadata().ok()?.modified().ok()?, e.path())))?
            })
            .collect();
        models.sort_by(|a, b| b.cmp(a));
        for (_, path) in models.into_iter().skip(keep) {
            let _ = std::fs::remove_file(&path);
            let mut sha = path.clone().into_os_string();
            sha.push(".sha256");
            let _ = std::fs::remove_file(sha);
            tracing::info!(file = %path.display(), keep_last = keep, "Removed an older model");
        }
    }
}

#[async_trait]
impl Handler for DownloadHandler {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        self.store(d).await.map_err(HandlerError::new)
    }
}

impl DownloadHandler {
    async fn store(&self, d: &Delivery) -> Result<(), DownloadError> {
        let Event::Export {
            project_id,
            iteration_id,
            status: ExportStatus::Completed,
            model_uri: Some(uri),
        } = &d.notification.event
        else {
            tracing::debug!("Nothing to download for this event");
            return Ok(());
        };
        let url = Url::parse(uri).map_err(DownloadError::NotAUrl)?;
        if !self.host_allowed(&url) {
            return Err(DownloadError::HostNotAllowed {
                host: url.host_str().unwrap_or("?").to_owned(),
                allowed: self.allowed.join(", "),
            });
        }
        match tokio::time::timeout(
            self.config.timeout,
            self.download(&url, *project_id, *iteration_id),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(DownloadError::Timeout(self.config.timeout.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_is_the_blob_extension() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            platform_of(&u(
                "https://a.blob.core.windows.net/c/8a1c%20-%200f9e.ONNX?sig=x"
            ))
            .unwrap(),
            "ONNX"
        );
        assert_eq!(
            platform_of(&u("https://a.blob.core.windows.net/c/p%20-%20i.TensorFlow")).unwrap(),
            "TensorFlow"
        );
        assert!(platform_of(&u("https://a.blob.core.windows.net/c/noext")).is_err());
        assert!(platform_of(&u("https://a.blob.core.windows.net/c/x.on%2Fnx")).is_err());
        assert!(
            platform_of(&u(
                "https://a.blob.core.windows.net/c/..%2F..%2Fetc%2Fpasswd"
            ))
            .is_err()
        );
    }
}
