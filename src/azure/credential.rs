//! Entra ID credentials for the token-based auth modes, with the refresh
//! behaviour a long-running daemon needs.
//!
//! Two things are added around azure_identity:
//! - [`RefreshingCredential`] caches the token and refreshes it at the
//!   earlier of "5 minutes before expiry" (the SDK's own rule) and "half its
//!   lifetime". The SDK's fixed 5-minute window means a token living 5
//!   minutes or less is fetched again for every storage request; this keeps
//!   one fetch per half-life whatever the lifetime. A refresh that fails
//!   while the cached token is still valid keeps using it (with a WARN), so
//!   a token endpoint that blips does not fail storage calls.
//! - [`FileAssertion`] reads the federated token file on every token
//!   request. The SDK's workload identity credential re-reads it only every
//!   10 minutes, which can hand out an assertion Kubernetes already rotated.
//!
//! Every token fetched, and every federated token read, is registered
//! with [`crate::secret::register_temporary`], so no text that leaves the
//! process carries it.
//!
//! Also the scope of storage tokens and what to tell a user whose identity
//! gets none ([`credential_hint`]).

use crate::config::{AuthConfig, AuthMode, Cloud};
use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::http::ClientOptions;
use azure_core::time::{Duration, OffsetDateTime};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The scope of Azure Storage tokens.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// What to check when a token-based mode cannot get a token.
pub fn credential_hint(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::ManagedIdentity => {
            "check that this host has a managed identity (VM, App Service, Container Apps) and, for a user-assigned identity, that auth.client_id is its client id"
        }
        AuthMode::WorkloadIdentity => {
            "check AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE (the workload identity webhook sets them when the pod's service account is annotated and the pod has the label azure.workload.identity/use: \"true\")"
        }
        AuthMode::AzureCli => "run `az login` as the user running cvnotify",
        AuthMode::Sas => "check auth.sas_token: it may have expired or lack permissions",
        AuthMode::ConnectionString => "check auth.connection_string",
    }
}

/// Caches a token and refreshes it at half-life (at most 5 minutes early).
#[derive(Debug)]
pub struct RefreshingCredential {
    inner: Arc<dyn TokenCredential>,
    /// The token, when it was fetched, and the scopes it is for.
    cached: Mutex<Option<(AccessToken, OffsetDateTime, Vec<String>)>>,
}

impl RefreshingCredential {
    pub fn new(inner: Arc<dyn TokenCredential>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            cached: Mutex::new(None),
        })
    }

    fn refresh_at(token: &AccessToken, fetched: OffsetDateTime) -> OffsetDateTime {
        let lifetime: Duration = token.expires_on - fetched;
        let half: Duration = lifetime / 2i32;
        let early = half.clamp(Duration::ZERO, Duration::minutes(5));
        token.expires_on - early
    }
}

#[async_trait]
impl TokenCredential for RefreshingCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        // One refresh at a time; the others wait and take its result.
        let mut cached = self.cached.lock().await;
        let now = OffsetDateTime::now_utc();
        let same_scopes = |s: &Vec<String>| s.iter().map(String::as_str).eq(scopes.iter().copied());
        if let Some((token, fetched, s)) = cached.as_ref()
            && same_scopes(s)
            && now < Self::refresh_at(token, *fetched)
        {
            return Ok(token.clone());
        }
        match self.inner.get_token(scopes, options).await {
            Ok(token) => {
                // Removed from every text that leaves the process from now on.
                crate::secret::register_temporary(token.token.secret());
                tracing::debug!(
                    expires_in_s = (token.expires_on - now).whole_seconds(),
                    "Got a new token"
                );
                *cached = Some((
                    token.clone(),
                    now,
                    scopes.iter().map(|s| s.to_string()).collect(),
                ));
                Ok(token)
            }
            Err(e) => match cached.as_ref() {
                Some((token, _, s)) if same_scopes(s) && now < token.expires_on => {
                    tracing::warn!(
                        error = %crate::error::error_chain(&e),
                        expires_in_s = (token.expires_on - now).whole_seconds(),
                        "Refreshing the token failed; using the current one while it is valid"
                    );
                    Ok(token.clone())
                }
                _ => Err(e),
            },
        }
    }
}

/// A federated token read from a file at every token request.
#[derive(Debug)]
pub struct FileAssertion {
    path: PathBuf,
}

#[async_trait]
impl azure_identity::ClientAssertion for FileAssertion {
    async fn secret(
        &self,
        _: Option<azure_core::http::ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        tokio::fs::read_to_string(&self.path)
            .await
            .map(|s| {
                let s = s.trim().to_owned();
                crate::secret::register_temporary(&s);
                s
            })
            .map_err(|e| {
                azure_core::Error::with_error(
                    azure_core::error::ErrorKind::Credential,
                    e,
                    format!(
                        "cannot read the federated token file {}",
                        self.path.display()
                    ),
                )
            })
    }
}

/// The SDK's cloud setting for token requests. `public` stays unset so that
/// `AZURE_AUTHORITY_HOST` (set by the workload identity webhook in sovereign
/// clouds and by tests) is honoured; setting it would override the variable.
fn cloud_configuration(
    cloud: Cloud,
    authority_host: Option<&url::Url>,
) -> Option<Arc<azure_core::cloud::CloudConfiguration>> {
    use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
    match (cloud, authority_host) {
        (_, Some(host)) => {
            let mut custom = CustomConfiguration::default();
            custom.authority_host = host.as_str().trim_end_matches('/').to_owned();
            Some(Arc::new(CloudConfiguration::Custom(custom)))
        }
        (Cloud::Public | Cloud::Custom, None) => None,
        (Cloud::UsGovernment, None) => Some(Arc::new(CloudConfiguration::AzureGovernment)),
        (Cloud::China, None) => Some(Arc::new(CloudConfiguration::AzureChina)),
    }
}

/// The Entra ID credential for a token-based auth mode, wrapped in
/// [`RefreshingCredential`]. `transport` carries the extra trusted CAs.
pub fn token_credential(
    auth: &AuthConfig,
    cloud: Cloud,
    transport: Option<azure_core::http::Transport>,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    let client_options = || ClientOptions {
        retry: azure_core::http::RetryOptions::exponential(
            azure_core::http::ExponentialRetryOptions {
                initial_delay: Duration::milliseconds(200),
                max_retries: 2,
                max_total_elapsed: Duration::seconds(10),
                max_delay: Duration::seconds(2),
            },
        ),
        transport: transport.clone(),
        cloud: cloud_configuration(cloud, auth.authority_host.as_ref()),
        ..Default::default()
    };
    let inner: Arc<dyn TokenCredential> = match auth.mode {
        AuthMode::ManagedIdentity => {
            let options = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: auth
                    .client_id
                    .clone()
                    .map(azure_identity::UserAssignedId::ClientId),
                client_options: client_options(),
            };
            azure_identity::ManagedIdentityCredential::new(Some(options))?
        }
        AuthMode::WorkloadIdentity => {
            let env = |name: &str| {
                std::env::var(name).map_err(|_| {
                    azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Credential,
                        format!("{name} is not set"),
                    )
                })
            };
            let client_id = match &auth.client_id {
                Some(id) => id.clone(),
                None => env("AZURE_CLIENT_ID")?,
            };
            let path = PathBuf::from(env("AZURE_FEDERATED_TOKEN_FILE")?);
            azure_identity::ClientAssertionCredential::new(
                env("AZURE_TENANT_ID")?,
                client_id,
                FileAssertion { path },
                Some(azure_identity::ClientAssertionCredentialOptions {
                    client_options: client_options(),
                }),
            )?
        }
        AuthMode::AzureCli => azure_identity::AzureCliCredential::new(None)?,
        AuthMode::Sas | AuthMode::ConnectionString => {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "this auth mode does not use tokens",
            ));
        }
    };
    Ok(RefreshingCredential::new(inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        lifetime: Duration,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl TokenCredential for Counting {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "down",
                ));
            }
            Ok(AccessToken::new(
                "t",
                OffsetDateTime::now_utc() + self.lifetime,
            ))
        }
    }

    fn counting(lifetime: Duration) -> Arc<Counting> {
        Arc::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime,
            fail: Default::default(),
        })
    }

    #[test]
    fn clouds_map_to_their_authority_hosts() {
        use azure_core::cloud::CloudConfiguration as C;
        assert!(
            cloud_configuration(Cloud::Public, None).is_none(),
            "public must leave AZURE_AUTHORITY_HOST in force"
        );
        assert!(matches!(
            cloud_configuration(Cloud::UsGovernment, None).as_deref(),
            Some(C::AzureGovernment)
        ));
        assert!(matches!(
            cloud_configuration(Cloud::China, None).as_deref(),
            Some(C::AzureChina)
        ));
        let host = url::Url::parse("https://login.example.test/").unwrap();
        match cloud_configuration(Cloud::Custom, Some(&host)).as_deref() {
            Some(C::Custom(c)) => assert_eq!(c.authority_host, "https://login.example.test"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Cloud::UsGovernment.storage_suffix(),
            Some("core.usgovcloudapi.net")
        );
        assert_eq!(Cloud::China.storage_suffix(), Some("core.chinacloudapi.cn"));
        assert_eq!(Cloud::Public.storage_suffix(), Some("core.windows.net"));
    }

    #[tokio::test]
    async fn short_lived_tokens_are_reused_until_half_life() {
        let inner = counting(Duration::seconds(60));
        let c = RefreshingCredential::new(inner.clone());
        for _ in 0..100 {
            c.get_token(&["s"], None).await.unwrap();
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn refresh_point() {
        let now = OffsetDateTime::now_utc();
        let t = |secs| AccessToken::new("t", now + Duration::seconds(secs));
        // 60 s token: refreshed after 30 s; 1 h token: 5 min before expiry.
        assert_eq!(
            RefreshingCredential::refresh_at(&t(60), now),
            now + Duration::seconds(30)
        );
        assert_eq!(
            RefreshingCredential::refresh_at(&t(3600), now),
            now + Duration::seconds(3300)
        );
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_valid_token() {
        let inner = counting(Duration::seconds(2));
        let c = RefreshingCredential::new(inner.clone());
        c.get_token(&["s"], None).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        inner.fail.store(true, Ordering::SeqCst);
        // Past half-life, refresh fails, the token is still valid: used.
        assert!(c.get_token(&["s"], None).await.is_ok());
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        // Expired and the endpoint is down: an error.
        assert!(c.get_token(&["s"], None).await.is_err());
    }
}
