//! [`AzureBlobs`]: [`BlobSource`] over the official `azure_storage_blob`
//! client, with the daemon's own credential, key or SAS for URLs that carry
//! no SAS of their own.
//!
//! Which URLs may be fetched at all is the download handler's decision; this
//! file only opens what it is asked to.

use super::shared_key::SharedKeyPolicy;
use crate::blob::{BlobError, BlobSource, BlobStream};
use crate::secret::Secret;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::policies::Policy;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use futures_util::StreamExt as _;
use std::sync::Arc;
use url::Url;

/// Opens blobs with the daemon's credentials.
#[derive(Clone)]
pub struct AzureBlobs {
    credential: Option<Arc<dyn TokenCredential>>,
    shared_key: Option<(String, Secret)>,
    sas: Option<String>,
    http: reqwest::Client,
    blob_endpoint: Option<Url>,
}

impl AzureBlobs {
    pub(super) fn new(
        credential: Option<Arc<dyn TokenCredential>>,
        shared_key: Option<(String, Secret)>,
        sas: Option<String>,
        http: reqwest::Client,
        blob_endpoint: Option<Url>,
    ) -> Self {
        Self {
            credential,
            shared_key,
            sas,
            http,
            blob_endpoint,
        }
    }

    /// No credentials at all: only SAS URLs (and public blobs) work.
    pub fn anonymous() -> Self {
        Self::new(None, None, None, reqwest::Client::new(), None)
    }

    /// A client for the blob at `url`. A URL that carries a SAS is used as
    /// is; otherwise the daemon's own credential (token, account key, or
    /// its SAS token) authorizes the request.
    fn client(&self, url: &Url) -> Result<azure_storage_blob::BlobClient, BlobError> {
        let has_sas = url.query_pairs().any(|(k, _)| k == "sig");
        let mut url = url.clone();
        let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
        let mut credential = None;
        if !has_sas {
            if let Some((account, key)) = &self.shared_key {
                per_try.push(Arc::new(SharedKeyPolicy::new(account.clone(), key.clone())));
            } else if let Some(c) = &self.credential {
                credential = Some(c.clone());
            } else if let Some(sas) = &self.sas {
                url.set_query(Some(sas));
            }
        }
        let options = azure_storage_blob::BlobClientOptions {
            client_options: ClientOptions {
                per_try_policies: per_try,
                retry: RetryOptions::exponential(ExponentialRetryOptions {
                    initial_delay: azure_core::time::Duration::milliseconds(500),
                    max_retries: 3,
                    max_total_elapsed: azure_core::time::Duration::seconds(60),
                    max_delay: azure_core::time::Duration::seconds(5),
                }),
                transport: Some(Transport::new(Arc::new(self.http.clone()))),
                ..Default::default()
            },
            ..Default::default()
        };
        azure_storage_blob::BlobClient::new(url, credential, Some(options)).map_err(|e| {
            BlobError::Client {
                source: Box::new(e),
            }
        })
    }
}

/// Total size from `Content-Range: bytes a-b/TOTAL`.
fn total_from_content_range(headers: &Headers) -> Option<u64> {
    let v = headers.get_optional_str(&HeaderName::from_static("content-range"))?;
    v.rsplit_once('/')?.1.trim().parse().ok()
}

#[async_trait]
impl BlobSource for AzureBlobs {
    fn default_host(&self) -> Option<String> {
        let u = self.blob_endpoint.as_ref()?;
        let host = u.host_str()?.to_ascii_lowercase();
        Some(match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        })
    }

    async fn open(&self, url: &Url) -> Result<BlobStream, BlobError> {
        let client = self.client(url)?;
        let result =
            client
                .download(None)
                .await
                .map_err(|e| match e.http_status().map(u16::from) {
                    Some(404) => BlobError::NotFound,
                    Some(403) => BlobError::Forbidden,
                    _ => BlobError::Request {
                        source: Box::new(e),
                    },
                })?;
        let range_total = total_from_content_range(&result.headers);
        let total_len = range_total.or(result.properties.content_length);
        // A ranged answer's Content-MD5 is the range's, not the blob's.
        let md5 = result.properties.blob_content_md5.clone().or_else(|| {
            result
                .properties
                .content_md5
                .clone()
                .filter(|_| range_total.is_none())
        });
        let body = result
            .body
            .map(|chunk| {
                chunk.map_err(|e| BlobError::Transfer {
                    source: Box::new(e),
                })
            })
            .boxed();
        Ok(BlobStream {
            total_len,
            md5,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_total() {
        let mut h = Headers::new();
        h.insert("content-range", "bytes 0-4194303/52428800");
        assert_eq!(total_from_content_range(&h), Some(52428800));
    }
}
