//! [`TrainingClient`]: the Training API v3.3 calls cvnotify makes, over
//! `reqwest`.
//!
//! reqwest rather than `azure_core`'s pipeline: the pipeline's retry policy
//! cannot be told to honour `Retry-After` with the project's back-off and
//! attempt limits, and the API is eight plain JSON calls. Requests go to
//! `{endpoint}/customvision/v3.3/training/...` (the spec's lower case)
//! with the `Training-Key` header, or with an Entra ID bearer token for
//! `https://cognitiveservices.azure.com/.default`.
//!
//! Each call is retried on 408, 429, 5xx, timeouts and connection errors,
//! waiting `Retry-After` when the service sends one and the back-off of
//! [`crate::retry::Backoff`] otherwise. Answers are read up to a size
//! limit; redirects are not followed (the key would go along). The key and
//! tokens never appear in errors or logs.

use super::error::{AuthKind, CvError, Op, hint_for, unauthorized_hint};
use super::model::{ErrorBody, Export, Iteration, Project, StorageUris};
use crate::config::{AuthConfig, Cloud, CustomVisionConfig, TlsConfig};
use crate::error::{error_chain, with_trust_hint};
use crate::retry::{Backoff, parse_retry_after};
use crate::secret::{Secret, SourceError};
use azure_core::credentials::TokenCredential;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;
use uuid::Uuid;

/// The scope of Entra ID tokens for Azure AI services.
pub const COGNITIVE_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// The largest answer read from a success (GetIterations of a project at
/// its iteration limit is a few KiB).
const MAX_BODY: usize = 4 << 20;
/// The largest error answer read; the rest is ignored.
const MAX_ERROR_BODY: usize = 64 << 10;
/// The most characters of a service's error message kept.
const MAX_MESSAGE: usize = 500;
/// The first retry delay when the service gives no `Retry-After`.
const INITIAL_RETRY_DELAY: Duration = Duration::from_secs(1);

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

/// The client cannot be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("customvision.training_key_env: the environment variable {0} is not set")]
    KeyEnv(String),
    #[error("customvision.training_key_file {}", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the customvision training key is empty")]
    EmptyKey,
    #[error("cannot set up the Entra ID credential for Custom Vision (auth.mode = \"{mode}\")")]
    Credential {
        mode: &'static str,
        #[source]
        source: azure_core::Error,
    },
    #[error("tls.ca_file")]
    CaFile(#[source] crate::tls::CaFileError),
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    #[error("customvision.endpoint {0} cannot be a base URL")]
    Endpoint(Url),
}

/// Tuning of the attempts of one call.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

/// The Training API of one Custom Vision resource.
#[derive(Clone)]
pub struct TrainingClient {
    /// `{endpoint}/customvision/v3.3/training/`.
    base: Url,
    http: reqwest::Client,
    credential: Credential,
    retry: RetrySettings,
}

impl std::fmt::Debug for TrainingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingClient")
            .field("base", &self.base.as_str())
            .field("credential", &self.credential)
            .finish()
    }
}

impl TrainingClient {
    /// From `[customvision]`: the training key it names, or the daemon's
    /// Entra ID credential (`[auth]`, `queue.cloud`) with its own token
    /// cache (a cache shared with storage tokens would swap scopes on every
    /// call). `tls.ca_file` is trusted for both.
    pub fn from_config(
        cv: &CustomVisionConfig,
        auth: &AuthConfig,
        cloud: Cloud,
        tls: &TlsConfig,
    ) -> Result<Self, ClientBuildError> {
        let key = crate::secret::load(
            cv.training_key.as_ref(),
            cv.training_key_env.as_deref(),
            cv.training_key_file.as_deref(),
        )
        .map_err(|e| match e {
            SourceError::EnvNotSet(var) => ClientBuildError::KeyEnv(var),
            SourceError::File { path, source } => ClientBuildError::KeyFile { path, source },
        })?
        .map(|k| k.expose().trim().to_owned());
        let credential = match key {
            Some(k) if k.is_empty() => return Err(ClientBuildError::EmptyKey),
            Some(k) => Credential::Key(Secret::new(k)),
            None => {
                let mut token_http = reqwest::Client::builder().timeout(Duration::from_secs(30));
                if let Some(ca) = &tls.ca_file {
                    token_http = crate::tls::add_ca_file(token_http, ca)
                        .map_err(ClientBuildError::CaFile)?;
                }
                let transport = crate::azure::capped_transport(
                    token_http.build().map_err(ClientBuildError::Http)?,
                    crate::azure::MAX_TOKEN_ANSWER,
                );
                Credential::Token(
                    crate::azure::token_credential(auth, cloud, Some(transport)).map_err(
                        |source| ClientBuildError::Credential {
                            mode: auth.mode.as_str(),
                            source,
                        },
                    )?,
                )
            }
        };
        let retry = RetrySettings {
            max_attempts: cv.max_attempts,
            initial_delay: INITIAL_RETRY_DELAY,
            max_delay: cv.retry_max_delay,
        };
        Self::new(
            &cv.endpoint,
            credential,
            cv.request_timeout,
            retry,
            tls.ca_file.as_deref(),
        )
    }

    /// A client for the resource at `endpoint`.
    pub fn new(
        endpoint: &Url,
        credential: Credential,
        request_timeout: Duration,
        retry: RetrySettings,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, ClientBuildError> {
        let mut base = endpoint.clone();
        base.set_query(None);
        base.set_fragment(None);
        base.path_segments_mut()
            .map_err(|_| ClientBuildError::Endpoint(endpoint.clone()))?
            .pop_if_empty()
            .extend(["customvision", "v3.3", "training", ""]);
        let mut builder = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            // A redirect would carry the training key to another URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cvnotify/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca_file {
            builder = crate::tls::add_ca_file(builder, ca).map_err(ClientBuildError::CaFile)?;
        }
        Ok(Self {
            base,
            http: builder.build().map_err(ClientBuildError::Http)?,
            credential,
            retry,
        })
    }

    /// `{endpoint}/customvision/v3.3/training/` (no secrets in it).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// How requests are authenticated.
    pub fn auth_kind(&self) -> AuthKind {
        match self.credential {
            Credential::Key(_) => AuthKind::TrainingKey,
            Credential::Token(_) => AuthKind::EntraId,
        }
    }

    /// GetProject.
    pub async fn get_project(&self, project: Uuid) -> Result<Project, CvError> {
        let p = project.to_string();
        self.json(Op::GetProject, Method::GET, &["projects", &p], &[], None)
            .await
    }

    /// CreateProject named `name`, with the storage URIs as query
    /// parameters (the storage guide's form) or as the v3.4-preview
    /// `CreateProjectOptions` body (`as_body`).
    pub async fn create_project(
        &self,
        name: &str,
        uris: &StorageUris,
        as_body: bool,
    ) -> Result<Project, CvError> {
        let mut query = vec![("name", name.to_owned())];
        let body = if as_body {
            Some(uris.create_options())
        } else {
            query.extend(uris.query());
            None
        };
        self.json(Op::CreateProject, Method::POST, &["projects"], &query, body)
            .await
    }

    /// UpdateProject with `body` (a whole project) and optional query
    /// parameters.
    pub async fn update_project(
        &self,
        project: Uuid,
        body: serde_json::Value,
        query: &[(&str, String)],
    ) -> Result<Project, CvError> {
        let p = project.to_string();
        self.json(
            Op::UpdateProject,
            Method::PATCH,
            &["projects", &p],
            query,
            Some(body),
        )
        .await
    }

    /// GetIterations.
    pub async fn get_iterations(&self, project: Uuid) -> Result<Vec<Iteration>, CvError> {
        let p = project.to_string();
        self.json(
            Op::GetIterations,
            Method::GET,
            &["projects", &p, "iterations"],
            &[],
            None,
        )
        .await
    }

    /// GetIteration.
    pub async fn get_iteration(
        &self,
        project: Uuid,
        iteration: Uuid,
    ) -> Result<Iteration, CvError> {
        let (p, i) = (project.to_string(), iteration.to_string());
        self.json(
            Op::GetIteration,
            Method::GET,
            &["projects", &p, "iterations", &i],
            &[],
            None,
        )
        .await
    }

    /// ExportIteration to `platform` (and `flavor`).
    pub async fn export_iteration(
        &self,
        project: Uuid,
        iteration: Uuid,
        platform: &str,
        flavor: Option<&str>,
    ) -> Result<Export, CvError> {
        let (p, i) = (project.to_string(), iteration.to_string());
        let mut query = vec![("platform", platform.to_owned())];
        if let Some(f) = flavor {
            query.push(("flavor", f.to_owned()));
        }
        self.json(
            Op::ExportIteration,
            Method::POST,
            &["projects", &p, "iterations", &i, "export"],
            &query,
            None,
        )
        .await
    }

    /// GetExports.
    pub async fn get_exports(
        &self,
        project: Uuid,
        iteration: Uuid,
    ) -> Result<Vec<Export>, CvError> {
        let (p, i) = (project.to_string(), iteration.to_string());
        self.json(
            Op::GetExports,
            Method::GET,
            &["projects", &p, "iterations", &i, "export"],
            &[],
            None,
        )
        .await
    }

    /// PublishIteration as `name` to the prediction resource
    /// `prediction_id` (its full Azure resource id); with `overwrite`, the
    /// spec's `overwrite=true` ("Whether to overwrite the published model
    /// with the given name").
    pub async fn publish_iteration(
        &self,
        project: Uuid,
        iteration: Uuid,
        name: &str,
        prediction_id: &str,
        overwrite: bool,
    ) -> Result<bool, CvError> {
        let (p, i) = (project.to_string(), iteration.to_string());
        let mut query = vec![
            ("publishName", name.to_owned()),
            ("predictionId", prediction_id.to_owned()),
        ];
        if overwrite {
            query.push(("overwrite", "true".to_owned()));
        }
        self.json(
            Op::PublishIteration,
            Method::POST,
            &["projects", &p, "iterations", &i, "publish"],
            &query,
            None,
        )
        .await
    }

    /// UnpublishIteration.
    pub async fn unpublish_iteration(&self, project: Uuid, iteration: Uuid) -> Result<(), CvError> {
        let (p, i) = (project.to_string(), iteration.to_string());
        self.call(
            Op::UnpublishIteration,
            Method::DELETE,
            &["projects", &p, "iterations", &i, "publish"],
            &[],
            None,
        )
        .await
        .map(|_| ())
    }

    async fn json<T: DeserializeOwned>(
        &self,
        op: Op,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<T, CvError> {
        let bytes = self.call(op, method, path, query, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| CvError::Unexpected {
            op,
            detail: format!("not the JSON the API describes ({e})"),
        })
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
    async fn call(
        &self,
        op: Op,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<bytes::Bytes, CvError> {
        let url = self.url(path, query);
        let mut backoff =
            Backoff::new(self.retry.initial_delay, self.retry.max_delay).with_jitter(0.5);
        let max = self.retry.max_attempts.max(1);
        for attempt in 1..=max {
            let (error, after) = match self.attempt(op, &method, &url, body.as_ref()).await {
                Attempt::Done(bytes) => return Ok(bytes),
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry { error, after } => (error, after),
            };
            if attempt == max {
                return Err(CvError::GaveUp {
                    op,
                    attempts: max,
                    last: Box::new(error),
                });
            }
            let delay = match after {
                Some(a) if a > self.retry.max_delay => {
                    return Err(CvError::RetryAfterTooLong {
                        op,
                        after: a,
                        last: Box::new(error),
                    });
                }
                Some(a) => a,
                None => backoff.next_delay(),
            };
            tracing::warn!(
                operation = %op,
                attempt,
                max_attempts = max,
                retry_in_ms = delay.as_millis() as u64,
                error = %error,
                "Training API call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
        unreachable!("the loop returns on its last attempt")
    }

    async fn attempt(
        &self,
        op: Op,
        method: &Method,
        url: &Url,
        body: Option<&serde_json::Value>,
    ) -> Attempt {
        let mut request = self.http.request(method.clone(), url.clone());
        match &self.credential {
            Credential::Key(k) => {
                let Ok(mut v) = HeaderValue::from_str(k.expose()) else {
                    return Attempt::Fatal(CvError::Unauthorized {
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
                        return Attempt::Fatal(CvError::Token {
                            op,
                            detail: "the token is not a valid header value".into(),
                        });
                    };
                    v.set_sensitive(true);
                    request = request.header(reqwest::header::AUTHORIZATION, v);
                }
                Err(e) => {
                    return Attempt::Retry {
                        error: CvError::Token {
                            op,
                            detail: with_trust_hint(error_chain(&e), "tls.ca_file"),
                        },
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
                        detail: with_trust_hint(error_chain(&e.without_url()), "tls.ca_file"),
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
                Ok(_) => Attempt::Fatal(CvError::Unexpected {
                    op,
                    detail: format!("the answer is larger than {} MiB", MAX_BODY >> 20),
                }),
                Err(e) => Attempt::Retry {
                    error: CvError::Transport {
                        op,
                        endpoint: endpoint_of(url),
                        detail: error_chain(&e.without_url()),
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
            Attempt::Fatal(error)
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

enum Attempt {
    Done(bytes::Bytes),
    Retry {
        error: CvError,
        after: Option<Duration>,
    },
    Fatal(CvError),
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

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::credentials::{AccessToken, TokenRequestOptions};
    use wiremock::matchers::{header, header_exists, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const P: &str = "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c";
    const I: &str = "0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f";

    fn client(server: &MockServer, credential: Credential, attempts: u32) -> TrainingClient {
        TrainingClient::new(
            &Url::parse(&server.uri()).unwrap(),
            credential,
            Duration::from_secs(5),
            RetrySettings {
                max_attempts: attempts,
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(3),
            },
            None,
        )
        .unwrap()
    }

    fn key() -> Credential {
        Credential::Key(Secret::new("s3cr3t-training-key"))
    }

    fn id(s: &str) -> Uuid {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn requests_use_the_spec_paths_and_the_training_key_header() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("/customvision/v3.3/training/projects/{P}/iterations/{I}/export")))
            .and(query_param("platform", "TensorFlow"))
            .and(query_param("flavor", "TensorFlowLite"))
            .and(header("Training-Key", "s3cr3t-training-key"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
                {"platform": "TensorFlow", "flavor": "TensorFlowLite", "status": "Exporting", "downloadUri": "", "newerVersionAvailable": false}
            )))
            .expect(1)
            .mount(&server)
            .await;
        let e = client(&server, key(), 1)
            .export_iteration(id(P), id(I), "TensorFlow", Some("TensorFlowLite"))
            .await
            .unwrap();
        assert_eq!(e.status, "Exporting");
    }

    #[tokio::test]
    async fn throttling_waits_for_retry_after_then_succeeds() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("Retry-After", "1")
                    .set_body_string("Rate limit is exceeded. Try again in 1 seconds."),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([])))
            .mount(&server)
            .await;
        let started = std::time::Instant::now();
        let exports = client(&server, key(), 3)
            .get_exports(id(P), id(I))
            .await
            .unwrap();
        assert!(exports.is_empty());
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "Retry-After ignored: {:?}",
            started.elapsed()
        );
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_limit_ends_the_attempts() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "120"))
            .mount(&server)
            .await;
        let e = client(&server, key(), 5)
            .get_project(id(P))
            .await
            .unwrap_err();
        assert!(matches!(e, CvError::RetryAfterTooLong { .. }), "{e}");
        assert!(e.to_string().contains("retry after 120s"), "{e}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn errors_carry_the_code_and_what_to_do_and_never_the_key() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(format!("/customvision/v3.3/training/projects/{P}")))
            .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!(
                {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}}
            )))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!(
                "/customvision/v3.3/training/projects/{P}/iterations/{I}"
            )))
            .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!(
                {"code": "NotFoundIteration", "message": "Invalid iteration"}
            )))
            .mount(&server)
            .await;
        let c = client(&server, key(), 3);
        let e = c.get_project(id(P)).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(
                "GetProject: the service refused the credential (401 401): Access denied"
            ),
            "{text}"
        );
        assert!(text.contains("check customvision.training_key"), "{text}");
        let e = c.get_iteration(id(P), id(I)).await.unwrap_err();
        assert_eq!(e.code(), Some("NotFoundIteration"));
        assert!(e.is_permanent());
        for shown in [format!("{e}"), format!("{e:?}"), format!("{c:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
        // Not retried: one request each.
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    #[derive(Debug)]
    struct FixedToken;

    #[async_trait::async_trait]
    impl TokenCredential for FixedToken {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            assert_eq!(scopes, [COGNITIVE_SCOPE]);
            Ok(AccessToken::new(
                "entra-token",
                azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
            ))
        }
    }

    #[tokio::test]
    async fn entra_id_sends_a_bearer_token_for_the_cognitive_services_scope() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(header("Authorization", "Bearer entra-token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
                {"id": P, "name": "birds", "settings": {}}
            )))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(header_exists("Training-Key"))
            .respond_with(ResponseTemplate::new(400))
            .expect(0)
            .mount(&server)
            .await;
        let p = client(&server, Credential::Token(Arc::new(FixedToken)), 1)
            .get_project(id(P))
            .await
            .unwrap();
        assert_eq!(p.name, "birds");
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused_without_reading_it_all() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b' '; MAX_BODY + 1]))
            .mount(&server)
            .await;
        let e = client(&server, key(), 1)
            .get_iterations(id(P))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than 4 MiB"), "{e}");
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_so_the_key_stays_with_the_endpoint() {
        let elsewhere = MockServer::start().await;
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(307)
                    .insert_header("Location", format!("{}/steal", elsewhere.uri())),
            )
            .mount(&server)
            .await;
        let e = client(&server, key(), 3)
            .get_project(id(P))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(307), "{e}");
        assert!(elsewhere.received_requests().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_hostile_error_message_is_cut_and_stripped_of_control_characters() {
        let server = MockServer::start().await;
        let message = format!("\u{1b}]0;pwned\u{7}\u{1b}[2J{}", "x".repeat(5_000));
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(400).set_body_json(
                serde_json::json!({"code": "BadRequest\u{1b}[31m", "message": message}),
            ))
            .mount(&server)
            .await;
        let e = client(&server, key(), 1)
            .get_project(id(P))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.len() < 1_200, "{} bytes", text.len());
    }
}
