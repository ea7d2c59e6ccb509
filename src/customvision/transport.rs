//! [`Transport`]: one Training API call with its attempts, over `reqwest`.
//!
//! reqwest rather than `azure_core`'s pipeline: the pipeline's retry policy
//! cannot be told to honour `Retry-After` with the project's back-off and
//! attempt limits, and the API is eight plain JSON calls. Requests carry
//! the `Training-Key` header, or an Entra ID bearer token for
//! `https://cognitiveservices.azure.com/.default`.
//!
//! Each call is retried by [`crate::retry::run`] on 408, 429, 5xx,
//! timeouts and connection errors, waiting `Retry-After` when the service
//! sends one (up to `retry_max_delay`) and the back-off of
//! [`crate::retry::Backoff`] otherwise. Answers are read up to a size
//! limit; redirects are not followed (the key would go along). The key and
//! tokens never appear in errors or logs.

use super::error::{AuthKind, CvError, Op, hint_for, unauthorized_hint};
use super::model::ErrorBody;
use crate::retry::{Attempt, Backoff, Client, Policy, RetryError, parse_retry_after};
use crate::secret::Secret;
use azure_core::credentials::TokenCredential;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The scope of Entra ID tokens for Azure AI services.
pub const COGNITIVE_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// The largest answer read from a success (GetIterations of a project at
/// its iteration limit is a few KiB).
pub(super) const MAX_BODY: usize = 4 << 20;
/// The largest error answer read; the rest is ignored.
const MAX_ERROR_BODY: usize = 64 << 10;
/// The most characters of a service's error message kept.
const MAX_MESSAGE: usize = 500;

/// How requests are authenticated.
#[derive(Clone)]
pub enum Credential {
    /// The `Training-Key` header.
    Key(Secret),
    /// A bearer token for [`COGNITIVE_SCOPE`].
    Token(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Key(_) => f.write_str("Credential::Key(***)"),
            Credential::Token(_) => f.write_str("Credential::Token"),
        }
    }
}

/// Tuning of the attempts of one call.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

/// The resource's base URL, the HTTP client, the credential and the retry
/// settings: what every call needs.
#[derive(Clone)]
pub(super) struct Transport {
    /// `{endpoint}/customvision/v3.3/training/`.
    pub(super) base: Url,
    pub(super) http: reqwest::Client,
    pub(super) credential: Credential,
    pub(super) retry: RetrySettings,
}

impl Transport {
    /// How requests are authenticated.
    pub(super) fn auth_kind(&self) -> AuthKind {
        match self.credential {
            Credential::Key(_) => AuthKind::TrainingKey,
            Credential::Token(_) => AuthKind::EntraId,
        }
    }

    pub(super) async fn json<T: DeserializeOwned>(
        &self,
        op: Op,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<T, CvError> {
        let bytes = self.call(op, method, path, query, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| CvError::Json { op, source })
    }

    fn url(&self, path: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked to be a base in new")
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// One call with its attempts; the answer's body on success.
    pub(super) async fn call(
        &self,
        op: Op,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<bytes::Bytes, CvError> {
        let url = self.url(path, query);
        let policy = Policy::new(
            Client::CustomVision,
            self.retry.max_attempts,
            Backoff::new(self.retry.initial_delay, self.retry.max_delay).with_jitter(0.5),
        )
        .retry_after_at_most(self.retry.max_delay, "customvision.retry_max_delay");
        let operation = op.to_string();
        crate::retry::run(&policy, &operation, || {
            self.attempt(op, &method, &url, body.as_ref())
        })
        .await
        .map_err(|e| match e {
            RetryError::Permanent(e) => e,
            e => CvError::Retried(Box::new(e)),
        })
    }

    async fn attempt(
        &self,
        op: Op,
        method: &Method,
        url: &Url,
        body: Option<&serde_json::Value>,
    ) -> Attempt<bytes::Bytes, CvError> {
        let mut request = self.http.request(method.clone(), url.clone());
        match &self.credential {
            Credential::Key(k) => {
                let Ok(mut v) = HeaderValue::from_str(k.expose()) else {
                    return Attempt::Permanent(CvError::Unauthorized {
                        op,
                        status: 0,
                        code: None,
                        message: "the training key holds characters a header cannot carry".into(),
                        hint: unauthorized_hint(AuthKind::TrainingKey),
                    });
                };
                v.set_sensitive(true);
                request = request.header("Training-Key", v);
            }
            Credential::Token(c) => match c.get_token(&[COGNITIVE_SCOPE], None).await {
                Ok(t) => {
                    let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", t.token.secret()))
                    else {
                        return Attempt::Permanent(CvError::BadToken { op });
                    };
                    v.set_sensitive(true);
                    request = request.header(reqwest::header::AUTHORIZATION, v);
                }
                Err(source) => {
                    return Attempt::Retry {
                        error: CvError::Token { op, source },
                        after: None,
                    };
                }
            },
        }
        if let Some(b) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(b).expect("JSON values serialize"));
        } else if *method == Method::POST {
            // The API's POSTs take their arguments as query parameters;
            // some front ends want a length on a POST all the same.
            request = request.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        let rsp = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    error: CvError::Transport {
                        op,
                        endpoint: endpoint_of(url),
                        source: e.without_url(),
                    },
                    after: None,
                };
            }
        };
        let status = rsp.status();
        let after = rsp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if status.is_success() {
            return match crate::limit::read(rsp.bytes_stream(), MAX_BODY).await {
                Ok(r) if r.complete => Attempt::Done(r.bytes),
                Ok(_) => Attempt::Permanent(CvError::Unexpected {
                    op,
                    detail: format!("the answer is larger than {} MiB", MAX_BODY >> 20),
                }),
                Err(e) => Attempt::Retry {
                    error: CvError::Transport {
                        op,
                        endpoint: endpoint_of(url),
                        source: e.without_url(),
                    },
                    after: None,
                },
            };
        }
        let body = crate::limit::read(rsp.bytes_stream(), MAX_ERROR_BODY)
            .await
            .map(|r| r.bytes)
            .unwrap_or_default();
        let error = self.error_from(op, status, &body);
        // A project that is training again refuses exports for a while.
        let retry = matches!(status.as_u16(), 408 | 429)
            || status.is_server_error()
            || error.code() == Some("BadRequestExportWhileTraining");
        if retry {
            Attempt::Retry { error, after }
        } else {
            Attempt::Permanent(error)
        }
    }

    /// The error an answer with `status` and `body` stands for.
    fn error_from(&self, op: Op, status: StatusCode, body: &[u8]) -> CvError {
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let (code, message) = parsed.parts();
        // The service's text goes into logs: no secret (a key it echoes;
        // removed before the cut, which could split it), no control
        // characters (they could rewrite a terminal), and not more than a
        // few lines of it.
        let clean = |t: String| -> String {
            crate::secret::redact(&t)
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_MESSAGE)
                .collect()
        };
        let code = code.map(clean);
        let message = message.map(clean);
        let message = message.unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text: String = crate::secret::redact(&text)
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_MESSAGE)
                .collect();
            if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else {
                text
            }
        });
        // Azure AI services' gateway answers 401 (and 403 for a disabled
        // key) before Custom Vision sees the request; its "codes" are
        // numbers, not CustomVisionError codes.
        let cv_code = code
            .as_deref()
            .filter(|c| !c.chars().all(|d| d.is_ascii_digit()));
        if status == StatusCode::UNAUTHORIZED
            || (status == StatusCode::FORBIDDEN && cv_code.is_none())
        {
            return CvError::Unauthorized {
                op,
                status: status.as_u16(),
                code,
                message,
                hint: unauthorized_hint(self.auth_kind()),
            };
        }
        CvError::Service {
            op,
            status: status.as_u16(),
            hint: cv_code.map(hint_for).unwrap_or(""),
            code,
            message,
        }
    }
}

/// Scheme, host and port: what may appear in messages.
fn endpoint_of(url: &Url) -> String {
    match url.port() {
        Some(p) => format!(
            "{}://{}:{p}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
    }
}
