//! [`TrainingClient`]: the Training API v3.3 calls cvnotify makes, one
//! method per endpoint, and how a client is built from `[customvision]`.
//! Requests go to `{endpoint}/customvision/v3.3/training/...` (the spec's
//! lower case) through [`super::transport::Transport`], which sends them
//! with their attempts.

use super::error::{AuthKind, CvError, Op};
use super::model::{Export, Iteration, Project, StorageUris};
use super::transport::{Credential, RetrySettings, Transport};
use crate::config::{AuthConfig, Cloud, CustomVisionConfig, TlsConfig};
use crate::secret::{Secret, SourceError};
use reqwest::Method;
use std::time::Duration;
use url::Url;
use uuid::Uuid;

/// The first retry delay when the service gives no `Retry-After`.
const INITIAL_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The client cannot be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error(transparent)]
    Key(#[from] SourceError),
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

/// The Training API of one Custom Vision resource.
#[derive(Clone)]
pub struct TrainingClient {
    transport: Transport,
}

impl std::fmt::Debug for TrainingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingClient")
            .field("base", &self.transport.base.as_str())
            .field("credential", &self.transport.credential)
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
            "customvision.training_key",
            cv.training_key.as_ref(),
            cv.training_key_env.as_deref(),
            cv.training_key_file.as_deref(),
        )?
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
            transport: Transport {
                base,
                http: builder.build().map_err(ClientBuildError::Http)?,
                credential,
                retry,
            },
        })
    }

    /// `{endpoint}/customvision/v3.3/training/` (no secrets in it).
    pub fn base_url(&self) -> &Url {
        &self.transport.base
    }

    /// How requests are authenticated.
    pub fn auth_kind(&self) -> AuthKind {
        self.transport.auth_kind()
    }

    /// GetProject.
    pub async fn get_project(&self, project: Uuid) -> Result<Project, CvError> {
        let p = project.to_string();
        self.transport
            .json(Op::GetProject, Method::GET, &["projects", &p], &[], None)
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
        self.transport
            .json(Op::CreateProject, Method::POST, &["projects"], &query, body)
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
        self.transport
            .json(
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
        self.transport
            .json(
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
        self.transport
            .json(
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
        self.transport
            .json(
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
        self.transport
            .json(
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
        self.transport
            .json(
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
        self.transport
            .call(
                Op::UnpublishIteration,
                Method::DELETE,
                &["projects", &p, "iterations", &i, "publish"],
                &[],
                None,
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::super::transport::{COGNITIVE_SCOPE, MAX_BODY};
    use super::*;
    use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
    use std::sync::Arc;
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
        assert!(
            matches!(&e, CvError::Retried(r) if matches!(**r, crate::retry::RetryError::RetryAfterTooLong { .. })),
            "{e}"
        );
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
