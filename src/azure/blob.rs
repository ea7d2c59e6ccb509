//! [`AzureBlobs`]: [`BlobSource`] as one streaming GET through the
//! `azure_core` pipeline, with the daemon's own credential (token, account
//! key or SAS token) only when the caller asks for it.
//!
//! Why not `azure_storage_blob::BlobClient::download`: it splits the blob
//! into parallel ranged GETs sized by the total the server reports and
//! buffers them, so a server claiming a huge `Content-Range` total made it
//! allocate that much (and abort), and one 200 MiB model cost 118 MB of
//! memory. Here the body is read as it arrives and nothing is allocated
//! from a number the server sent.
//!
//! Two pipelines: `plain` has no authentication policy at all, so a request
//! [`Authority::AsGiven`] cannot carry the daemon's credential by
//! construction; `signed` adds it. Which URLs may be fetched, and with
//! which authority, is the download handler's decision. The body of an
//! error answer is never read (a hostile server could make it endless).
//! Opening is retried by [`crate::retry::run`] on 408, 429, 5xx and
//! request errors: three attempts, 0.5 s then 1 s apart, a `Retry-After`
//! of at most 5 s honoured (a longer one leaves the retry to the queue
//! rather than hold a download slot).

use super::credential::STORAGE_SCOPE;
use super::shared_key::SharedKeyPolicy;
use crate::blob::{Authority, BlobError, BlobSource, BlobStream, ContentRange};
use crate::retry::{self, Attempt, Backoff, Client, RetryError};
use crate::secret::Secret;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions, Context, Method, Pipeline, PipelineStreamOptions, Request, RetryOptions,
    Transport,
};
use base64::Engine as _;
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The Blob service version sent (the one `azure_storage_blob` uses).
const VERSION: &str = "2026-04-06";
/// Tries per open: the first and two retries.
const ATTEMPTS: u32 = 3;
/// Longest `Retry-After` honoured; a longer one fails the attempt series
/// (the queue's retry takes over) instead of holding a download slot.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How the daemon authorizes its own requests.
#[derive(Clone)]
enum Own {
    /// A pipeline policy (token or Shared Key) does.
    Policy,
    /// Its SAS token (query, without `?`) is added to the URL.
    Sas(Secret),
    /// It has nothing of its own (anonymous).
    Nothing,
}

/// Opens blobs with one streaming GET each.
#[derive(Clone)]
pub struct AzureBlobs {
    plain: Pipeline,
    signed: Pipeline,
    own: Own,
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
        let mut auth: Vec<Arc<dyn Policy>> = Vec::new();
        let own = if let Some((account, key)) = shared_key {
            auth.push(Arc::new(SharedKeyPolicy::new(account, key)));
            Own::Policy
        } else if let Some(c) = credential {
            auth.push(Arc::new(BearerTokenAuthorizationPolicy::new(
                c,
                [STORAGE_SCOPE],
            )));
            Own::Policy
        } else if let Some(sas) = sas {
            Own::Sas(Secret::new(sas))
        } else {
            Own::Nothing
        };
        let pipeline = |per_try: Vec<Arc<dyn Policy>>| {
            Pipeline::new(
                option_env!("CARGO_PKG_NAME"),
                option_env!("CARGO_PKG_VERSION"),
                ClientOptions {
                    // Retried here, where the limits are ours.
                    retry: RetryOptions::none(),
                    transport: Some(Transport::new(Arc::new(http.clone()))),
                    ..Default::default()
                },
                Vec::new(),
                per_try,
                None,
            )
        };
        Self {
            plain: pipeline(Vec::new()),
            signed: pipeline(auth),
            own,
            blob_endpoint,
        }
    }

    /// No credentials at all: only SAS URLs (and public blobs) work.
    pub fn anonymous() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .no_deflate()
            .build()
            .unwrap_or_default();
        Self::new(None, None, None, http, None)
    }

    /// One attempt: the answer's status and headers, and its body.
    async fn attempt(
        &self,
        url: &Url,
        authority: Authority,
    ) -> Result<azure_core::http::AsyncRawResponse, BlobError> {
        let (pipeline, url) = match (authority, &self.own) {
            (Authority::AsGiven, _) | (Authority::DaemonCredential, Own::Nothing) => {
                (&self.plain, url.clone())
            }
            (Authority::DaemonCredential, Own::Policy) => (&self.signed, url.clone()),
            (Authority::DaemonCredential, Own::Sas(sas)) => {
                let mut u = url.clone();
                u.set_query(Some(sas.expose()));
                (&self.plain, u)
            }
        };
        let mut request = Request::new(url, Method::Get);
        request.insert_header("x-ms-version", VERSION);
        pipeline
            .stream(
                &Context::new(),
                &mut request,
                Some(PipelineStreamOptions {
                    skip_checks: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| BlobError::Request {
                source: Box::new(e),
            })
    }
}

fn header<'a>(headers: &'a Headers, name: &'static str) -> Option<&'a str> {
    headers.get_optional_str(&HeaderName::from_static(name))
}

/// `Retry-After` in seconds (the HTTP-date form is not worth honouring for
/// a few seconds' wait).
fn retry_after(headers: &Headers) -> Option<Duration> {
    header(headers, "retry-after")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn md5_of(value: Option<&str>) -> Option<[u8; 16]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value?.trim())
        .ok()?;
    bytes.try_into().ok()
}

#[async_trait]
impl BlobSource for AzureBlobs {
    fn configured_endpoint(&self) -> Option<Url> {
        self.blob_endpoint.clone()
    }

    async fn open(&self, url: &Url, authority: Authority) -> Result<BlobStream, BlobError> {
        let policy = retry::Policy::new(
            Client::Blob,
            ATTEMPTS,
            Backoff::new(Duration::from_millis(500), Duration::from_secs(2)),
        )
        .retry_after_at_most(MAX_RETRY_AFTER, "the longest wait of a download");
        let response = retry::run(&policy, "GET", || async {
            match self.attempt(url, authority).await {
                Ok(r) => match u16::from(r.status()) {
                    status @ (408 | 429 | 500 | 502 | 503 | 504) => Attempt::Retry {
                        after: retry_after(r.headers()),
                        error: BlobError::Status { status },
                    },
                    _ => Attempt::Done(r),
                },
                Err(error) => Attempt::Retry { error, after: None },
            }
        })
        .await
        .map_err(|e| match e {
            RetryError::Permanent(e) => e,
            e => BlobError::Retried(Box::new(e)),
        })?;
        let (status, headers, body) = response.deconstruct();
        let range = match u16::from(status) {
            200 => None,
            206 => Some(
                header(&headers, "content-range")
                    .and_then(ContentRange::parse)
                    .ok_or(BlobError::Malformed(
                        "a 206 answer without a valid Content-Range",
                    ))?,
            ),
            404 => return Err(BlobError::NotFound),
            s @ (401 | 403) => return Err(BlobError::Forbidden { status: s }),
            status => return Err(BlobError::Status { status }),
        };
        let content_length = match header(&headers, "content-length") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| BlobError::Malformed("Content-Length is not a number"))?,
            ),
        };
        // A ranged answer's Content-MD5 is the range's, not the blob's.
        let md5 = md5_of(header(&headers, "x-ms-blob-content-md5")).or_else(|| {
            range
                .is_none()
                .then(|| md5_of(header(&headers, "content-md5")))
                .flatten()
        });
        let last_modified = header(&headers, "last-modified")
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .map(time::OffsetDateTime::from);
        let body = body
            .map(|chunk| {
                chunk.map_err(|e| BlobError::Transfer {
                    source: Box::new(e),
                })
            })
            .boxed();
        Ok(BlobStream {
            content_length,
            range,
            md5,
            last_modified,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_md5_must_be_16_bytes_of_base64() {
        assert_eq!(
            md5_of(Some("1B2M2Y8AsgTpgAmY7PhCfg==")).map(|m| m[0]),
            Some(0xd4)
        );
        assert_eq!(md5_of(Some("AAAA")), None);
        assert_eq!(md5_of(Some("not base64!")), None);
    }

    #[test]
    fn long_retry_after_is_not_honoured() {
        let mut h = Headers::new();
        h.insert("retry-after", "3");
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(retry_after(&h), None);
    }
}
