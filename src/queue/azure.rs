//! [`Queue`] over the official `azure_storage_queue` client.
//!
//! [`Connector`] turns the configuration into clients: it resolves the
//! endpoint (account + cloud, connection string, or `queue.endpoint`), picks
//! the authentication (token credential, Shared Key policy, or SAS query) and
//! builds one HTTP transport with the request timeout, shared by the main
//! queue and the poison queue.

use super::{Operation, PeekedMessage, Queue, QueueError, ReceivedMessage, SentMessage};
use crate::auth::{self, ConnectionString, SharedKeyPolicy};
use crate::config::{AuthMode, Config};
use crate::redact::redact_text;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::headers::HeaderName;
use azure_core::http::policies::Policy;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_storage_queue::models::{
    QueueClientPeekMessagesOptions, QueueClientReceiveMessagesOptions, QueueMessage,
};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

const POP_RECEIPT: HeaderName = HeaderName::from_static("x-ms-popreceipt");

/// Builds queue clients that share one transport and one credential.
#[derive(Clone)]
pub struct Connector {
    /// `tls.ca_file`, for the blob client.
    ca_file: Option<std::path::PathBuf>,
    endpoint: Url,
    mode: AuthMode,
    /// The account key, in connection-string mode (for blob clients).
    shared_key: Option<(String, crate::config::Secret)>,
    /// The account's blob endpoint, where one can be derived.
    blob_endpoint: Option<Url>,
    /// SAS query (without `?`) appended to every queue URL, in `sas` mode.
    sas: Option<String>,
    credential: Option<Arc<dyn TokenCredential>>,
    options: QueueClientOptions,
}

/// The configuration cannot produce a client (bad endpoint, credential that
/// cannot be constructed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

impl Connector {
    pub fn from_config(config: &Config) -> Result<Self, ConnectError> {
        let q = &config.queue;
        let mode = config.auth.mode;
        let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
        let mut sas = None;
        let mut credential = None;
        let mut endpoint = q.endpoint.clone();
        let mut shared_key = None;
        let mut blob_endpoint = q
            .account
            .as_ref()
            .zip(q.cloud.storage_suffix())
            .and_then(|(a, s)| Url::parse(&format!("https://{a}.blob.{s}")).ok());
        match mode {
            AuthMode::ConnectionString => {
                let cs = config.auth.connection_string.as_ref().ok_or_else(|| {
                    ConnectError(
                        "auth.connection_string is required in connection_string mode".into(),
                    )
                })?;
                let cs = ConnectionString::parse(cs.expose())
                    .map_err(|e| ConnectError(format!("auth.connection_string: {e}")))?;
                endpoint.get_or_insert(cs.queue_endpoint.clone());
                blob_endpoint = Some(cs.blob_endpoint.clone());
                match (&cs.key, &cs.sas) {
                    (Some(key), _) => {
                        shared_key = Some((cs.account.clone(), key.clone()));
                        per_try.push(Arc::new(SharedKeyPolicy::new(
                            cs.account.clone(),
                            key.clone(),
                        )))
                    }
                    (None, Some(token)) => {
                        sas = Some(token.expose().trim_start_matches('?').to_owned())
                    }
                    (None, None) => unreachable!("ConnectionString::parse requires one"),
                }
            }
            AuthMode::Sas => {
                let token =
                    config.auth.sas_token.as_ref().ok_or_else(|| {
                        ConnectError("auth.sas_token is required in sas mode".into())
                    })?;
                sas = Some(token.expose().trim_start_matches('?').to_owned());
            }
            AuthMode::ManagedIdentity | AuthMode::WorkloadIdentity | AuthMode::AzureCli => {
                // Token requests get the same trust (tls.ca_file) as storage.
                let token_http = trusted_client(
                    config,
                    reqwest::Client::builder().timeout(Duration::from_secs(30)),
                )?;
                let transport = Transport::new(Arc::new(token_http));
                credential = Some(
                    crate::credential::token_credential(&config.auth, q.cloud, Some(transport))
                        .map_err(|e| {
                            ConnectError(format!(
                                "cannot set up auth.mode = \"{}\": {}; {}",
                                mode.as_str(),
                                redact_text(&e.to_string()),
                                auth::credential_hint(mode)
                            ))
                        })?,
                );
            }
        }
        let endpoint = match endpoint {
            Some(e) => e,
            None => {
                let account = q
                    .account
                    .as_deref()
                    .ok_or_else(|| ConnectError("set queue.account or queue.endpoint".into()))?;
                let suffix = q.cloud.storage_suffix().ok_or_else(|| {
                    ConnectError("queue.endpoint is required with queue.cloud = \"custom\"".into())
                })?;
                Url::parse(&format!("https://{account}.queue.{suffix}"))
                    .map_err(|e| ConnectError(format!("queue.account: {e}")))?
            }
        };

        let http = trusted_client(
            config,
            reqwest::Client::builder()
                .timeout(q.request_timeout)
                .connect_timeout(Duration::from_secs(10).min(q.request_timeout))
                // Storage never redirects; following one could leak credentials.
                .redirect(reqwest::redirect::Policy::none()),
        )?;
        let options = QueueClientOptions {
            client_options: ClientOptions {
                per_try_policies: per_try,
                // A few quick retries inside a call smooth over a dropped
                // connection; longer outages are the poll loop's business,
                // which backs off and logs.
                retry: RetryOptions::exponential(ExponentialRetryOptions {
                    initial_delay: azure_core::time::Duration::milliseconds(200),
                    max_retries: 2,
                    max_total_elapsed: azure_core::time::Duration::seconds(
                        (q.request_timeout.as_secs() as i64 * 3).max(10),
                    ),
                    max_delay: azure_core::time::Duration::seconds(2),
                }),
                transport: Some(Transport::new(Arc::new(http))),
                ..Default::default()
            },
            ..Default::default()
        };
        Ok(Self {
            ca_file: config.tls.ca_file.clone(),
            endpoint,
            mode,
            shared_key,
            blob_endpoint,
            sas,
            credential,
            options,
        })
    }

    /// The queue service endpoint in use (no credentials in it).
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// What blob downloads need: the same credential, key or SAS.
    pub fn blob_access(&self) -> Result<BlobAccess, ConnectError> {
        // No overall timeout: a model may take minutes; a stalled transfer
        // is caught by the read timeout and the handler's own limit.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &self.ca_file {
            builder = crate::tls::add_ca_file(builder, ca)
                .map_err(|e| ConnectError(format!("tls.ca_file: {e:#}")))?;
        }
        let http = builder
            .build()
            .map_err(|e| ConnectError(format!("cannot build the HTTP client: {e}")))?;
        Ok(BlobAccess {
            credential: self.credential.clone(),
            shared_key: self.shared_key.clone(),
            sas: self.sas.clone(),
            http,
            blob_endpoint: self.blob_endpoint.clone(),
        })
    }

    /// A client for queue `name`.
    pub fn queue(&self, name: &str) -> Result<AzureQueue, ConnectError> {
        let mut url = self.endpoint.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| ConnectError(format!("{} cannot be a base URL", self.endpoint)))?;
            segments.pop_if_empty().push(name);
        }
        if let Some(sas) = &self.sas {
            url.set_query(Some(sas));
        }
        let client = QueueClient::new(url, self.credential.clone(), Some(self.options.clone()))
            .map_err(|e| {
                ConnectError(format!(
                    "cannot create the queue client: {}",
                    redact_text(&e.to_string())
                ))
            })?;
        Ok(AzureQueue {
            client,
            name: name.to_owned(),
        })
    }

    /// Gets a first token, so that a broken identity is reported at start-up
    /// instead of as a storage error. Retries with back-off (token endpoints
    /// can be slow to come up) until `limit`, then reports the last error.
    /// A no-op for key and SAS modes.
    pub async fn verify_credential(&self, limit: Duration) -> Result<(), String> {
        let Some(credential) = &self.credential else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + limit;
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0u32;
        let mut last_error: Option<String> = None;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let error = match tokio::time::timeout(
                remaining,
                credential.get_token(&[auth::STORAGE_SCOPE], None),
            )
            .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => error_chain(&e),
                // Cut short by the deadline: the previous error says more.
                Err(_) => last_error
                    .take()
                    .unwrap_or_else(|| "no answer from the token endpoint".to_owned()),
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                let error = crate::tls::with_trust_hint(error, "tls.ca_file");
                return Err(format!(
                    "auth.mode = \"{}\" could not get a token ({attempt} attempts in {}): {error}; {}",
                    self.mode.as_str(),
                    humantime::format_duration(limit),
                    auth::credential_hint(self.mode)
                ));
            }
            tracing::warn!(auth = self.mode.as_str(), attempt, error = %error, "Could not get a token yet; retrying");
            last_error = Some(error);
            tokio::time::sleep(delay.min(remaining)).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// A reqwest client trusting `tls.ca_file` in addition to the system roots.
fn trusted_client(
    config: &Config,
    mut builder: reqwest::ClientBuilder,
) -> Result<reqwest::Client, ConnectError> {
    if let Some(ca) = &config.tls.ca_file {
        builder = crate::tls::add_ca_file(builder, ca)
            .map_err(|e| ConnectError(format!("tls.ca_file: {e:#}")))?;
    }
    builder
        .build()
        .map_err(|e| ConnectError(format!("cannot build the HTTP client: {e}")))
}

/// One Azure Storage queue.
pub struct AzureQueue {
    client: QueueClient,
    name: String,
}

fn secs(d: Duration) -> i32 {
    d.as_secs().min(i32::MAX as u64) as i32
}

/// The error and its sources, secrets redacted (reqwest puts the request
/// URL, which may carry a SAS signature, into its errors).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    redact_text(&out)
}

impl AzureQueue {
    fn classify(&self, op: Operation, e: azure_core::Error) -> QueueError {
        match e.kind() {
            ErrorKind::HttpResponse {
                status, error_code, ..
            } => {
                let status = u16::from(*status);
                let code = error_code.clone().unwrap_or_default();
                match (status, code.as_str()) {
                    (404, "QueueNotFound") => QueueError::QueueNotFound {
                        op,
                        queue: self.name.clone(),
                    },
                    (404, _) if matches!(op, Operation::Delete | Operation::Update) => {
                        QueueError::MessageNotFound { op }
                    }
                    (404, _) => QueueError::QueueNotFound {
                        op,
                        queue: self.name.clone(),
                    },
                    (400, "PopReceiptMismatch") => QueueError::PopReceiptMismatch { op },
                    // Storage answers 403 both for a missing role and for a
                    // credential it does not accept (an expired token, a bad
                    // key or SAS signature); only the first is about roles.
                    (403, "AuthenticationFailed") => QueueError::Unauthenticated {
                        op,
                        message: "the service did not accept the credential (AuthenticationFailed: an expired or invalid token, key or SAS)".into(),
                    },
                    (403, _) => QueueError::Forbidden {
                        op,
                        code: if code.is_empty() {
                            "HTTP 403".into()
                        } else {
                            code
                        },
                    },
                    (401, _) => QueueError::Unauthenticated {
                        op,
                        message: format!("HTTP 401 {code}"),
                    },
                    (408 | 429 | 500..=599, _) => QueueError::Transient {
                        op,
                        message: format!("HTTP {status} {code}").trim_end().to_owned(),
                    },
                    _ => QueueError::Other {
                        op,
                        message: format!("HTTP {status} {code}").trim_end().to_owned(),
                    },
                }
            }
            ErrorKind::Connection | ErrorKind::Io => QueueError::Transient {
                op,
                message: crate::tls::with_trust_hint(error_chain(&e), "tls.ca_file"),
            },
            ErrorKind::Credential => QueueError::Unauthenticated {
                op,
                message: error_chain(&e),
            },
            _ => QueueError::Other {
                op,
                message: error_chain(&e),
            },
        }
    }
}

#[async_trait]
impl Queue for AzureQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn receive(
        &self,
        max: u8,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let op = Operation::Receive;
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(max.clamp(1, 32) as i32),
            visibility_timeout: Some(secs(visibility)),
            ..Default::default()
        };
        let rsp = self
            .client
            .receive_messages(Some(options))
            .await
            .map_err(|e| self.classify(op, e))?;
        let items = rsp.into_model().map_err(|e| self.classify(op, e))?.items;
        Ok(items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(ReceivedMessage {
                    id: m.message_id?,
                    pop_receipt: m.pop_receipt?,
                    dequeue_count: m.dequeue_count.unwrap_or(1).clamp(0, u32::MAX as i64) as u32,
                    body: m.message_text.unwrap_or_default(),
                    inserted_at: m.insertion_time,
                })
            })
            .collect())
    }

    async fn delete(&self, id: &str, pop_receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message(id, pop_receipt, None)
            .await
            .map(|_| ())
            .map_err(|e| self.classify(Operation::Delete, e))
    }

    async fn update_visibility(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<String, QueueError> {
        let op = Operation::Update;
        let rsp = self
            .client
            .update_message(id, pop_receipt, secs(visibility), None)
            .await
            .map_err(|e| self.classify(op, e))?;
        rsp.headers()
            .get_optional_string(&POP_RECEIPT)
            .ok_or_else(|| QueueError::Other {
                op,
                message: "the response has no x-ms-popreceipt header".into(),
            })
    }

    async fn send(&self, body: &str) -> Result<SentMessage, QueueError> {
        let op = Operation::Send;
        let message = QueueMessage {
            message_text: Some(body.to_owned()),
        };
        let content = message.try_into().map_err(|e| self.classify(op, e))?;
        let rsp = self
            .client
            .send_message(content, None)
            .await
            .map_err(|e| self.classify(op, e))?;
        let sent = rsp
            .into_model()
            .and_then(|m| m.into_message())
            .map_err(|e| self.classify(op, e))?;
        Ok(SentMessage {
            id: sent.message_id.unwrap_or_default(),
            pop_receipt: sent.pop_receipt.unwrap_or_default(),
        })
    }

    async fn create_if_missing(&self) -> Result<(), QueueError> {
        match self.client.create(None).await {
            Ok(_) => Ok(()),
            // 409 QueueAlreadyExists: it exists with other metadata; fine.
            Err(e) if e.http_status().map(u16::from) == Some(409) => Ok(()),
            Err(e) => Err(self.classify(Operation::Create, e)),
        }
    }

    async fn peek(&self, max: u8) -> Result<Vec<PeekedMessage>, QueueError> {
        let op = Operation::Peek;
        let options = QueueClientPeekMessagesOptions {
            number_of_messages: Some(max.clamp(1, 32) as i32),
            ..Default::default()
        };
        let rsp = self
            .client
            .peek_messages(Some(options))
            .await
            .map_err(|e| self.classify(op, e))?;
        let items = rsp.into_model().map_err(|e| self.classify(op, e))?.items;
        Ok(items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(PeekedMessage {
                    id: m.message_id?,
                    dequeue_count: m.dequeue_count.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
                    body: m.message_text.unwrap_or_default(),
                    inserted_at: m.insertion_time,
                })
            })
            .collect())
    }

    async fn approximate_length(&self) -> Result<u64, QueueError> {
        use azure_storage_queue::models::QueueClientGetPropertiesResultHeaders as _;
        let op = Operation::Properties;
        let rsp = self
            .client
            .get_properties(None)
            .await
            .map_err(|e| self.classify(op, e))?;
        let n = rsp
            .approximate_messages_count()
            .map_err(|e| self.classify(op, e))?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}

/// Creates blob clients with the daemon's credentials (for downloads).
#[derive(Clone)]
pub struct BlobAccess {
    credential: Option<Arc<dyn TokenCredential>>,
    shared_key: Option<(String, crate::config::Secret)>,
    sas: Option<String>,
    http: reqwest::Client,
    blob_endpoint: Option<Url>,
}

impl BlobAccess {
    /// No credentials at all: only SAS URLs (and public blobs) work.
    pub fn anonymous() -> Self {
        Self {
            credential: None,
            shared_key: None,
            sas: None,
            http: reqwest::Client::new(),
            blob_endpoint: None,
        }
    }

    /// `host` or `host:port` of the account's blob endpoint.
    pub fn default_host(&self) -> Option<String> {
        let u = self.blob_endpoint.as_ref()?;
        let host = u.host_str()?.to_ascii_lowercase();
        Some(match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        })
    }

    /// A client for the blob at `url`. A URL that carries a SAS is used as
    /// is; otherwise the daemon's own credential (token, account key, or
    /// its SAS token) authorizes the request.
    pub fn blob_client(&self, url: &Url) -> Result<azure_storage_blob::BlobClient, ConnectError> {
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
            ConnectError(format!(
                "cannot create the blob client: {}",
                redact_text(&e.to_string())
            ))
        })
    }
}
