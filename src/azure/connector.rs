//! [`Connector`]: the storage configuration turned into clients.
//!
//! It resolves the endpoint (account + cloud, connection string, or
//! `queue.endpoint`), picks the authentication (token credential, Shared Key
//! policy, or SAS query) and builds one HTTP transport with the request
//! timeout and a cap on answers, shared by the main queue and the poison
//! queue; blob access for
//! downloads gets the same credential. It takes the config sections it
//! needs (`[queue]`, `[auth]`, `[tls]`), not the whole configuration.

use super::blob::AzureBlobs;
use super::container::AzureContainer;
use super::credential::{STORAGE_SCOPE, credential_hint, token_credential};
use super::queue::AzureQueue;
use super::shared_key::SharedKeyPolicy;
use super::transport::{MAX_LISTING_ANSWER, MAX_QUEUE_ANSWER, MAX_TOKEN_ANSWER, capped};
use crate::config::{
    AuthConfig, AuthMode, ConnectionString, ConnectionStringError, QueueConfig, TlsConfig,
};
use crate::error::trust_hint;
use crate::retry::{self, Attempt, Backoff, Client, RetryError};
use crate::secret::Secret;
use crate::tls::CaFileError;
use azure_core::credentials::TokenCredential;
use azure_core::http::policies::Policy;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Builds queue clients that share one transport and one credential.
#[derive(Clone)]
pub struct Connector {
    /// `tls.ca_file`, for the blob client.
    ca_file: Option<std::path::PathBuf>,
    endpoint: Url,
    mode: AuthMode,
    /// The account key, in connection-string mode (for blob clients).
    shared_key: Option<(String, Secret)>,
    /// The account's blob endpoint, where one can be derived.
    blob_endpoint: Option<Url>,
    /// SAS query (without `?`) appended to every queue URL, in `sas` mode.
    sas: Option<String>,
    credential: Option<Arc<dyn TokenCredential>>,
    options: QueueClientOptions,
}

/// The configuration cannot produce a client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A setting the mode needs is absent (validation normally catches it).
    #[error("{0}")]
    Missing(&'static str),
    #[error("auth.connection_string")]
    ConnectionString(#[source] ConnectionStringError),
    #[error("cannot set up auth.mode = \"{}\" ({})", mode.as_str(), credential_hint(*mode))]
    Credential {
        mode: AuthMode,
        #[source]
        source: azure_core::Error,
    },
    #[error("queue.account does not make a valid endpoint")]
    Endpoint(#[source] url::ParseError),
    #[error("{0} cannot be a base URL")]
    NotABase(Url),
    #[error("tls.ca_file")]
    CaFile(#[source] CaFileError),
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    #[error("cannot create the storage client")]
    QueueClient(#[source] azure_core::Error),
}

/// The credential could not get a first token within the start-up limit;
/// the source says how many attempts were made and what the last one met.
#[derive(Debug, thiserror::Error)]
#[error(
    "auth.mode = \"{mode}\" could not get a token{}; {hint}",
    trust_hint(source, "tls.ca_file")
)]
pub struct TokenError {
    mode: &'static str,
    hint: &'static str,
    #[source]
    source: RetryError<azure_core::Error>,
}

impl Connector {
    pub fn new(q: &QueueConfig, auth: &AuthConfig, tls: &TlsConfig) -> Result<Self, ConnectError> {
        let mode = auth.mode;
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
                let cs = auth
                    .connection_string
                    .as_ref()
                    .ok_or(ConnectError::Missing(
                        "auth.connection_string is required in connection_string mode",
                    ))?;
                let cs =
                    ConnectionString::parse(cs.expose()).map_err(ConnectError::ConnectionString)?;
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
                let token = auth.sas_token.as_ref().ok_or(ConnectError::Missing(
                    "auth.sas_token is required in sas mode",
                ))?;
                sas = Some(token.expose().trim_start_matches('?').to_owned());
            }
            AuthMode::ManagedIdentity | AuthMode::WorkloadIdentity | AuthMode::AzureCli => {
                // Token requests get the same trust (tls.ca_file) as storage.
                let token_http = trusted_client(
                    tls,
                    reqwest::Client::builder().timeout(Duration::from_secs(30)),
                )?;
                let transport = capped(token_http, MAX_TOKEN_ANSWER);
                credential = Some(
                    token_credential(auth, q.cloud, Some(transport))
                        .map_err(|source| ConnectError::Credential { mode, source })?,
                );
            }
        }
        let endpoint = match endpoint {
            Some(e) => e,
            None => {
                let account = q
                    .account
                    .as_deref()
                    .ok_or(ConnectError::Missing("set queue.account or queue.endpoint"))?;
                let suffix = q.cloud.storage_suffix().ok_or(ConnectError::Missing(
                    "queue.endpoint is required with queue.cloud = \"custom\"",
                ))?;
                Url::parse(&format!("https://{account}.queue.{suffix}"))
                    .map_err(ConnectError::Endpoint)?
            }
        };

        let http = trusted_client(
            tls,
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
                transport: Some(capped(http, MAX_QUEUE_ANSWER)),
                ..Default::default()
            },
            ..Default::default()
        };
        Ok(Self {
            ca_file: tls.ca_file.clone(),
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

    /// What blob downloads need: the same credential, key or SAS (used
    /// only where the download handler asks for it).
    pub fn blobs(&self) -> Result<AzureBlobs, ConnectError> {
        // No overall timeout: a model may take minutes; a stalled transfer
        // is caught by the read timeout and the handler's own limit.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            // Models are stored byte for byte; a Content-Encoding must not
            // turn a small answer into a large one in memory.
            .no_gzip()
            .no_deflate();
        if let Some(ca) = &self.ca_file {
            builder = crate::tls::add_ca_file(builder, ca).map_err(ConnectError::CaFile)?;
        }
        let http = builder.build().map_err(ConnectError::Http)?;
        Ok(AzureBlobs::new(
            self.credential.clone(),
            self.shared_key.clone(),
            self.sas.clone(),
            http,
            self.blob_endpoint.clone(),
        ))
    }

    /// The URL of queue `name` (no SAS: what Custom Vision's
    /// `notificationQueueUri` holds).
    pub fn queue_url(&self, name: &str) -> Result<Url, ConnectError> {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|_| ConnectError::NotABase(self.endpoint.clone()))?
            .pop_if_empty()
            .push(name);
        Ok(url)
    }

    /// A client for the blob container at `url`, with the same credential,
    /// key or SAS as blob downloads.
    pub fn container(&self, url: &Url) -> Result<AzureContainer, ConnectError> {
        let mut url = url.clone();
        url.set_query(None);
        let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
        if let Some((account, key)) = &self.shared_key {
            per_try.push(Arc::new(SharedKeyPolicy::new(account.clone(), key.clone())));
        } else if let Some(sas) = &self.sas {
            url.set_query(Some(sas));
        }
        let credential = if self.shared_key.is_none() {
            self.credential.clone()
        } else {
            None
        };
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &self.ca_file {
            builder = crate::tls::add_ca_file(builder, ca).map_err(ConnectError::CaFile)?;
        }
        let options = azure_storage_blob::BlobContainerClientOptions {
            client_options: ClientOptions {
                per_try_policies: per_try,
                retry: self.options.client_options.retry.clone(),
                transport: Some(capped(
                    builder.build().map_err(ConnectError::Http)?,
                    MAX_LISTING_ANSWER,
                )),
                ..Default::default()
            },
            ..Default::default()
        };
        azure_storage_blob::BlobContainerClient::new(url, credential, Some(options))
            .map(AzureContainer::new)
            .map_err(ConnectError::QueueClient)
    }

    /// A client for queue `name`.
    pub fn queue(&self, name: &str) -> Result<AzureQueue, ConnectError> {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|_| ConnectError::NotABase(self.endpoint.clone()))?
            .pop_if_empty()
            .push(name);
        if let Some(sas) = &self.sas {
            url.set_query(Some(sas));
        }
        let client = QueueClient::new(url, self.credential.clone(), Some(self.options.clone()))
            .map_err(ConnectError::QueueClient)?;
        Ok(AzureQueue::new(client, name.to_owned()))
    }

    /// Gets a first token, so that a broken identity is reported at start-up
    /// instead of as a storage error. Retries with back-off (token endpoints
    /// can be slow to come up) until `limit`, then reports the last error.
    /// A no-op for key and SAS modes.
    pub async fn verify_credential(&self, limit: Duration) -> Result<(), TokenError> {
        let Some(credential) = &self.credential else {
            return Ok(());
        };
        let policy = retry::Policy::for_time(
            Client::Token,
            limit,
            Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
        );
        retry::run(&policy, self.mode.as_str(), || async {
            match credential.get_token(&[STORAGE_SCOPE], None).await {
                Ok(_) => Attempt::Done(()),
                Err(error) => Attempt::Retry { error, after: None },
            }
        })
        .await
        .map_err(|source| TokenError {
            mode: self.mode.as_str(),
            hint: credential_hint(self.mode),
            source,
        })
    }
}

/// A reqwest client trusting `tls.ca_file` in addition to the system roots.
fn trusted_client(
    tls: &TlsConfig,
    mut builder: reqwest::ClientBuilder,
) -> Result<reqwest::Client, ConnectError> {
    if let Some(ca) = &tls.ca_file {
        builder = crate::tls::add_ca_file(builder, ca).map_err(ConnectError::CaFile)?;
    }
    builder.build().map_err(ConnectError::Http)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn connector(toml: &str) -> Connector {
        let c = Config::from_toml(toml).unwrap();
        Connector::new(&c.queue, &c.auth, &c.tls).unwrap()
    }

    #[test]
    fn sovereign_cloud_endpoints() {
        for (cloud, host) in [
            (
                "us_government",
                "https://acct.queue.core.usgovcloudapi.net/",
            ),
            ("china", "https://acct.queue.core.chinacloudapi.cn/"),
            ("public", "https://acct.queue.core.windows.net/"),
        ] {
            let c = connector(&format!(
                "[queue]\nname = \"q-x\"\naccount = \"acct\"\ncloud = \"{cloud}\"\n"
            ));
            assert_eq!(c.endpoint().as_str(), host);
        }
        let errs =
            Config::from_toml("[queue]\nname = \"q-x\"\naccount = \"acct\"\ncloud = \"custom\"\n")
                .unwrap_err()
                .0;
        assert!(
            errs.iter()
                .any(|e| e.to_string().starts_with("queue.endpoint: required")),
            "{errs:?}"
        );
        let c = connector(
            "[queue]\nname = \"q-x\"\ncloud = \"custom\"\nendpoint = \"https://acct.queue.example.test\"\n[auth]\nauthority_host = \"https://login.example.test\"\n",
        );
        assert_eq!(c.endpoint().as_str(), "https://acct.queue.example.test/");
    }
}
