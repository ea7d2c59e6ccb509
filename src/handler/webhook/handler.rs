//! `type = "webhook"`: POSTs each event as signed JSON.
//!
//! Signing follows the Standard Webhooks specification (v1): `webhook-id` is
//! the queue message id, stable across every retry and redelivery so that
//! receivers can de-duplicate; `webhook-timestamp` is fresh per attempt; and
//! `webhook-signature` is `v1,` + base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))
//! where the key is the base64 part of the `whsec_` secret.
//!
//! Only 2xx is success. 408, 429, 5xx, timeouts and connection errors are
//! retried in process by [`crate::retry::run`] (exponential back-off with
//! jitter, `Retry-After` honoured up to `retry_max_delay`) up to
//! `max_attempts`; any other status fails at once. Redirects
//! are not followed: a receiver that moved must be reconfigured, and a
//! redirect must not carry the signed event elsewhere.

use super::config::{WebhookConfig, WebhookSecretError, webhook_key};
use crate::error::trust_hint;
use crate::handler::types::{Delivery, Handler, HandlerError};
use crate::retry::{Attempt, Backoff, Client, Policy, RetryError, parse_retry_after};
use crate::secret::SourceError;
use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// A webhook handler that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookBuildError {
    #[error(transparent)]
    SecretSource(#[from] SourceError),
    #[error("the webhook secret {0}")]
    Secret(WebhookSecretError),
    #[error("ca_file")]
    CaFile(#[source] crate::tls::CaFileError),
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    #[error("header {0}: value is not valid")]
    HeaderValue(String),
    #[error("header {0}: not a valid name")]
    HeaderName(String),
}

/// Why one attempt failed. A delivery that failed is a
/// [`RetryError`] over these: a [`WebhookError::Rejected`] as it is, the
/// others once the attempts or a `Retry-After` ended the series.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// An answer retrying in process cannot change (other 4xx, 3xx); with
    /// `permanent`, one listed in `permanent_statuses`, which the queue
    /// does not retry either.
    #[error("{target} answered {status}{hint}; not retried")]
    Rejected {
        target: String,
        status: reqwest::StatusCode,
        hint: &'static str,
        permanent: bool,
    },
    #[error("{target} answered {status}")]
    Status {
        target: String,
        status: reqwest::StatusCode,
    },
    #[error("no answer from {target} within {timeout}")]
    Timeout {
        target: String,
        timeout: humantime::Duration,
    },
    #[error("cannot connect to {target}{}", trust_hint(source, "ca_file"))]
    Connect {
        target: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {target} failed")]
    Request {
        target: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Standard Webhooks v1 signer.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    /// From `whsec_<base64>` (the prefix is optional, as in the reference
    /// libraries).
    pub fn new(secret: &str) -> Result<Self, WebhookSecretError> {
        Ok(Self {
            key: webhook_key(secret)?,
        })
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

pub struct WebhookHandler {
    config: WebhookConfig,
    client: reqwest::Client,
    signer: Option<Signer>,
    headers: reqwest::header::HeaderMap,
    /// `max_attempts`, the back-off from `retry_initial_delay` to
    /// `retry_max_delay` (50-100 % of each nominal delay), and a
    /// `Retry-After` up to `retry_max_delay`.
    retry: Policy,
}

impl WebhookHandler {
    /// `default_ca_file` (`tls.ca_file`) applies when the handler has none.
    pub fn new(
        config: &WebhookConfig,
        default_ca_file: Option<&std::path::Path>,
    ) -> Result<Self, WebhookBuildError> {
        let secret = crate::secret::load(
            "secret",
            config.secret.as_ref(),
            config.secret_env.as_deref(),
            config.secret_file.as_deref(),
        )?;
        let signer = secret
            .map(|s| Signer::new(s.expose()).map_err(WebhookBuildError::Secret))
            .transpose()?;
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cvnotify/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = config.ca_file.as_deref().or(default_ca_file) {
            builder = crate::tls::add_ca_file(builder, ca).map_err(WebhookBuildError::CaFile)?;
        }
        let client = builder.build().map_err(WebhookBuildError::Http)?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &config.headers {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| WebhookBuildError::HeaderName(k.clone()))?,
                reqwest::header::HeaderValue::from_str(v)
                    .map_err(|_| WebhookBuildError::HeaderValue(k.clone()))?,
            );
        }
        let retry = Policy::new(
            Client::Webhook,
            config.max_attempts,
            Backoff::new(config.retry_initial_delay, config.retry_max_delay).with_jitter(0.5),
        )
        .retry_after_at_most(config.retry_max_delay, "retry_max_delay");
        Ok(Self {
            config: config.clone(),
            client,
            signer,
            headers,
            retry,
        })
    }

    /// Scheme and host of the URL: safe to log.
    fn target(&self) -> String {
        let u = &self.config.url;
        match u.port() {
            Some(p) => format!("{}://{}:{p}", u.scheme(), u.host_str().unwrap_or_default()),
            None => format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default()),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date ([`parse_retry_after`]).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

#[async_trait]
impl Handler for WebhookHandler {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        self.deliver(d).await.map_err(|e| match e {
            RetryError::Permanent(
                e @ WebhookError::Rejected {
                    permanent: true, ..
                },
            ) => HandlerError::permanent(e),
            RetryError::Permanent(e) => HandlerError::new(e),
            e => HandlerError::new(e),
        })
    }
}

impl WebhookHandler {
    /// One attempt: 2xx delivered; 408, 429, 5xx and transport errors may
    /// succeed later; anything else will not.
    async fn attempt(&self, d: &Delivery, body: &[u8], target: &str) -> Attempt<(), WebhookError> {
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut request = self
            .client
            .post(self.config.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", d.id().as_ref())
            .header("webhook-timestamp", timestamp.to_string());
        // The handler span's trace context, so the receiver's spans join
        // the message's trace.
        if let Some(traceparent) = crate::telemetry::traceparent(&tracing::Span::current()) {
            request = request.header("traceparent", traceparent);
        }
        if let Some(signer) = &self.signer {
            request = request.header("webhook-signature", signer.sign(&d.id(), timestamp, body));
        }
        let target = target.to_owned();
        match request.body(body.to_vec()).send().await {
            Ok(rsp) => {
                // Only the status and Retry-After matter: the body is never
                // read (dropping the answer closes its connection), so a
                // receiver answering without end costs nothing.
                let status = rsp.status();
                if status.is_success() {
                    Attempt::Done(())
                } else if self.config.permanent_statuses.contains(&status.as_u16()) {
                    Attempt::Permanent(WebhookError::Rejected {
                        target,
                        status,
                        hint: " (listed in permanent_statuses)",
                        permanent: true,
                    })
                } else if matches!(status.as_u16(), 408 | 429) || status.is_server_error() {
                    Attempt::Retry {
                        after: retry_after(rsp.headers()),
                        error: WebhookError::Status { target, status },
                    }
                } else {
                    let hint = if status.is_redirection() {
                        " (redirects are not followed; configure the final URL)"
                    } else {
                        ""
                    };
                    Attempt::Permanent(WebhookError::Rejected {
                        target,
                        status,
                        hint,
                        permanent: false,
                    })
                }
            }
            Err(e) => {
                let error = if e.is_timeout() {
                    WebhookError::Timeout {
                        target,
                        timeout: self.config.timeout.into(),
                    }
                } else if e.is_connect() {
                    WebhookError::Connect {
                        target,
                        source: e.without_url(),
                    }
                } else {
                    WebhookError::Request {
                        target,
                        source: e.without_url(),
                    }
                };
                Attempt::Retry { error, after: None }
            }
        }
    }

    async fn deliver(&self, d: &Delivery) -> Result<(), RetryError<WebhookError>> {
        let body = serde_json::to_vec(&d.payload()).expect("JSON values serialize");
        let target = self.target();
        let mut attempts = 0u32;
        crate::retry::run(&self.retry, &target, || {
            attempts += 1;
            self.attempt(d, &body, &target)
        })
        .await?;
        tracing::debug!(attempt = attempts, target = %target, "Webhook delivered");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification.
    #[test]
    fn signer_matches_the_specification_test_vector() {
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signer.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // The prefix is optional, as in the reference libraries.
        assert_eq!(
            Signer::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .sign(
                    "msg_p5jXN8AQM9LWM0D4loKWxJek",
                    1614265330,
                    br#"{"test": 2432232314}"#
                ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_rejected_without_echoing_them() {
        let e = Signer::new("whsec_not base64!").err().unwrap();
        assert!(!e.to_string().contains("not base64!"), "{e}");
        assert!(Signer::new("whsec_").is_err());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            reqwest::header::RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(110) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
