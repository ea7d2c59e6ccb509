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

use super::{Delivery, Handler, HandlerError};
use crate::config::Issues;
use crate::event::{Event, ExportStatus};
use crate::queue::azure::{BlobAccess, error_chain};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use md5::Digest as _;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use url::Url;
use uuid::Uuid;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadConfig {
    /// Name used in logs; default `download#<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Which events this handler gets; only completed exports download
    /// anything, others succeed at once.
    #[serde(default = "completed_exports")]
    pub events: Vec<String>,
    /// Where models are stored. Created if missing.
    pub dir: PathBuf,
    /// Keep only the newest N models of each project (by file time).
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Hosts (`host` or `host:port`, `*.suffix` for a domain) models may be
    /// fetched from. Default: the configured storage account's blob host.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Limit for one whole download.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn completed_exports() -> Vec<String> {
    vec!["export.completed".into()]
}
fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

impl DownloadConfig {
    pub(crate) fn validate(&self, path: &str, issues: &mut Issues) {
        if self.dir.as_os_str().is_empty() {
            issues.push(format!("{path}.dir"), "must name a directory");
        }
        if self.keep_last == Some(0) {
            issues.push(
                format!("{path}.keep_last"),
                "must be at least 1 (omit it to keep all)",
            );
        }
        for h in &self.allowed_hosts {
            if h.is_empty() || h.contains('/') || h.contains("://") {
                issues.push(
                    format!("{path}.allowed_hosts"),
                    format!("`{h}` is not a host (examples: acct.blob.core.windows.net, 127.0.0.1:10000, *.blob.core.windows.net)"),
                );
            }
        }
        if self.timeout.is_zero() {
            issues.push(format!("{path}.timeout"), "must be greater than 0");
        }
    }
}

pub struct DownloadHandler {
    config: DownloadConfig,
    allowed: Vec<String>,
    blobs: BlobAccess,
}

impl DownloadHandler {
    pub fn new(config: &DownloadConfig, blobs: BlobAccess) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| anyhow::anyhow!("cannot create dir {}: {e}", config.dir.display()))?;
        let mut allowed: Vec<String> = config
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if allowed.is_empty() {
            match blobs.default_host() {
                Some(h) => allowed.push(h),
                None => anyhow::bail!(
                    "allowed_hosts is empty and no storage account is configured to derive it from; list the blob hosts models come from"
                ),
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
fn platform_of(url: &Url) -> Result<String, String> {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    let name = percent_decode(last);
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 16 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| format!("cannot tell the platform from the blob name `{name}` (expected `... .ONNX`, `.zip`, ...)"))?;
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

/// Total size from `Content-Range: bytes a-b/TOTAL`.
fn total_from_content_range(headers: &azure_core::http::headers::Headers) -> Option<u64> {
    let v = headers.get_optional_str(&azure_core::http::headers::HeaderName::from_static(
        "content-range",
    ))?;
    v.rsplit_once('/')?.1.trim().parse().ok()
}

impl DownloadHandler {
    async fn download(&self, url: &Url, project: Uuid, iteration: Uuid) -> Result<(), String> {
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
            if sha256_of(&final_path).await.map_err(|e| e.to_string())? == expected {
                tracing::info!(file = %final_path.display(), "The model is already downloaded");
                return Ok(());
            }
            tracing::warn!(file = %final_path.display(), "The stored model does not match its .sha256; downloading it again");
        }

        let partial = dir.join(format!(".{file_name}.{}.partial", Uuid::new_v4().simple()));
        let mut guard = PartialFile(Some(partial.clone()));
        let client = self.blobs.blob_client(url).map_err(|e| e.to_string())?;
        let result = client.download(None).await.map_err(|e| {
            match e.http_status().map(u16::from) {
                Some(404) => "the model blob does not exist (404)".to_owned(),
                Some(403) => "access to the model blob was denied (403); the identity needs 'Storage Blob Data Reader' on the container, or the SAS lacks read permission".to_owned(),
                _ => format!("cannot download the model: {}", error_chain(&e)),
            }
        })?;
        let expected_len =
            total_from_content_range(&result.headers).or(result.properties.content_length);
        let expected_md5 = result.properties.blob_content_md5.clone().or_else(|| {
            result
                .properties
                .content_md5
                .clone()
                .filter(|_| total_from_content_range(&result.headers).is_none())
        });

        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        let mut sha = sha2::Sha256::new();
        let mut md5 = md5::Md5::new();
        let mut written = 0u64;
        let mut body = result.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                format!(
                    "the transfer broke after {written} bytes: {}",
                    error_chain(&e)
                )
            })?;
            sha.update(&chunk);
            md5.update(&chunk);
            written += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
        }
        file.sync_all().await.map_err(|e| e.to_string())?;
        drop(file);
        if let Some(len) = expected_len
            && len != written
        {
            return Err(format!("the transfer ended after {written} of {len} bytes"));
        }
        if let Some(md5_expected) = expected_md5
            && md5.finalize().as_slice() != md5_expected.as_slice()
        {
            return Err("the downloaded model does not match the blob's Content-MD5".into());
        }
        let digest = hex(&sha.finalize());
        let sha_partial = dir.join(format!(".{file_name}.sha256.partial"));
        tokio::fs::write(&sha_partial, format!("{digest}  {file_name}\n"))
            .await
            .map_err(|e| e.to_string())?;
        tokio::fs::rename(&sha_partial, &sha_path)
            .await
            .map_err(|e| e.to_string())?;
        tokio::fs::rename(&partial, &final_path)
            .await
            .map_err(|e| e.to_string())?;
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
        let url =
            Url::parse(uri).map_err(|e| HandlerError(format!("modelUri is not a URL: {e}")))?;
        if !self.host_allowed(&url) {
            return Err(HandlerError(format!(
                "refusing to download from {}: not in allowed_hosts ({})",
                url.host_str().unwrap_or("?"),
                self.allowed.join(", ")
            )));
        }
        match tokio::time::timeout(
            self.config.timeout,
            self.download(&url, *project_id, *iteration_id),
        )
        .await
        {
            Ok(r) => r.map_err(HandlerError),
            Err(_) => Err(HandlerError(format!(
                "the download did not finish within {}",
                humantime::format_duration(self.config.timeout)
            ))),
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

    #[test]
    fn content_range_total() {
        let mut h = azure_core::http::headers::Headers::new();
        h.insert("content-range", "bytes 0-4194303/52428800");
        assert_eq!(total_from_content_range(&h), Some(52428800));
    }
}
