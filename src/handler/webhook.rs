//! `type = "webhook"`: POSTs each event as signed JSON.
//!
//! Signing follows the Standard Webhooks specification (v1): `webhook-id` is
//! the queue message id, stable across every retry and redelivery so that
//! receivers can de-duplicate; `webhook-timestamp` is fresh per attempt; and
//! `webhook-signature` is `v1,` + base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))
//! where the key is the base64 part of the `whsec_` secret.
//!
//! Only 2xx is success. 408, 429, 5xx, timeouts and connection errors are
//! retried in process (exponential back-off with jitter, `Retry-After`
//! honoured) up to `max_attempts`; any other status fails at once. Redirects
//! are not followed: a receiver that moved must be reconfigured, and a
//! redirect must not carry the signed event elsewhere.

use super::{Delivery, Handler, HandlerError};
use crate::config::{Issues, Secret, StringMap};
use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name used in logs; default `webhook#<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Which events this handler gets (see the routing grammar).
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Where to POST. Only its scheme and host are ever logged (webhook
    /// URLs often carry a token in their path).
    pub url: Url,
    /// Extra request headers.
    #[serde(default)]
    pub headers: StringMap,
    /// Timeout of one attempt.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Signing secret, `whsec_<base64>`. Prefer `secret_env` or `secret_file`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the secret (trailing white space ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Attempts per delivery before the handler fails (the message then
    /// goes back to the queue).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    #[serde(default = "default_initial_delay", with = "humantime_serde")]
    pub retry_initial_delay: Duration,
    /// Longest wait between attempts. A `Retry-After` longer than this
    /// fails the attempt series instead (the queue's retry delay takes over).
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// PEM bundle of extra trusted CAs (a private CA); added to the system
    /// roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}
fn default_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_attempts() -> u32 {
    5
}
fn default_initial_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_max_delay() -> Duration {
    Duration::from_secs(30)
}

/// Headers this handler sets itself.
const RESERVED: [&str; 5] = [
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-length",
];

impl WebhookConfig {
    pub(crate) fn validate(&self, path: &str, issues: &mut Issues) {
        if !matches!(self.url.scheme(), "http" | "https") {
            issues.push(format!("{path}.url"), "must be an http or https URL");
        }
        let sources = [
            self.secret.is_some(),
            self.secret_env.is_some(),
            self.secret_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            issues.push(
                format!("{path}.secret"),
                "set only one of secret, secret_env, secret_file",
            );
        }
        if let Some(s) = &self.secret
            && let Err(e) = Signer::new(s.expose())
        {
            issues.push(format!("{path}.secret"), e);
        }
        if !(1..=20).contains(&self.max_attempts) {
            issues.push(format!("{path}.max_attempts"), "allowed: 1 to 20");
        }
        if self.timeout.is_zero() {
            issues.push(format!("{path}.timeout"), "must be greater than 0");
        }
        if self.retry_initial_delay > self.retry_max_delay {
            issues.push(
                format!("{path}.retry_max_delay"),
                "must not be less than retry_initial_delay",
            );
        }
        for k in self.headers.keys() {
            let lower = k.to_ascii_lowercase();
            if RESERVED.contains(&lower.as_str()) {
                issues.push(
                    format!("{path}.headers"),
                    format!("`{k}` is set by cvnotify"),
                );
            } else if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                issues.push(
                    format!("{path}.headers"),
                    format!("`{k}` is not a valid header name"),
                );
            }
        }
    }
}

/// Standard Webhooks v1 signer.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    /// From `whsec_<base64>` (the prefix is optional, as in the reference
    /// libraries).
    pub fn new(secret: &str) -> Result<Self, String> {
        let b64 = secret
            .trim()
            .strip_prefix("whsec_")
            .unwrap_or(secret.trim());
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| {
                "not a `whsec_<base64>` secret (the part after whsec_ must be base64)".to_owned()
            })?;
        if key.is_empty() {
            return Err("is empty".into());
        }
        Ok(Self { key })
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
}

impl WebhookHandler {
    /// `default_ca_file` (`tls.ca_file`) applies when the handler has none.
    pub fn new(
        config: &WebhookConfig,
        default_ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let secret = match (&config.secret, &config.secret_env, &config.secret_file) {
            (Some(s), _, _) => Some(s.expose().to_owned()),
            (_, Some(var), _) => Some(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("secret_env: the environment variable {var} is not set")
            })?),
            (_, _, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("secret_file {}: {e}", file.display()))?
                    .trim()
                    .to_owned(),
            ),
            _ => None,
        };
        let signer = secret
            .map(|s| Signer::new(&s).map_err(|e| anyhow::anyhow!("the webhook secret {e}")))
            .transpose()?;
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cvnotify/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = config.ca_file.as_deref().or(default_ca_file) {
            builder = crate::tls::add_ca_file(builder, ca)?;
        }
        let client = builder.build()?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &config.headers {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes())?,
                reqwest::header::HeaderValue::from_str(v)
                    .map_err(|_| anyhow::anyhow!("header {k}: value is not valid"))?,
            );
        }
        Ok(Self {
            config: config.clone(),
            client,
            signer,
            headers,
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

    /// The delay before attempt `attempt + 1`: exponential with jitter
    /// (50-100 % of the nominal value), capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let nominal = self
            .config
            .retry_initial_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
            .min(self.config.retry_max_delay);
        nominal.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// An attempt's result.
enum Attempt {
    Delivered,
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Fatal(String),
}

#[async_trait]
impl Handler for WebhookHandler {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let body = serde_json::to_vec(&d.payload()).expect("JSON values serialize");
        let target = self.target();
        let max = self.config.max_attempts;
        for attempt in 1..=max {
            let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut request = self
                .client
                .post(self.config.url.clone())
                .headers(self.headers.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("webhook-id", &d.message_id)
                .header("webhook-timestamp", timestamp.to_string());
            if let Some(signer) = &self.signer {
                request = request.header(
                    "webhook-signature",
                    signer.sign(&d.message_id, timestamp, &body),
                );
            }
            let outcome = match request.body(body.clone()).send().await {
                Ok(rsp) => {
                    let status = rsp.status();
                    if status.is_success() {
                        Attempt::Delivered
                    } else if matches!(status.as_u16(), 408 | 429) || status.is_server_error() {
                        Attempt::Retry {
                            reason: format!("{target} answered {status}"),
                            after: retry_after(rsp.headers()),
                        }
                    } else {
                        let hint = if status.is_redirection() {
                            " (redirects are not followed; configure the final URL)"
                        } else {
                            ""
                        };
                        Attempt::Fatal(format!("{target} answered {status}{hint}"))
                    }
                }
                Err(e) => {
                    let what = if e.is_timeout() {
                        format!(
                            "no answer from {target} within {}",
                            humantime::format_duration(self.config.timeout)
                        )
                    } else if e.is_connect() {
                        let chain = crate::queue::azure::error_chain(&e.without_url());
                        crate::tls::with_trust_hint(
                            format!("cannot connect to {target}: {chain}"),
                            "ca_file",
                        )
                    } else {
                        format!(
                            "request to {target} failed: {}",
                            crate::queue::azure::error_chain(&e.without_url())
                        )
                    };
                    Attempt::Retry {
                        reason: what,
                        after: None,
                    }
                }
            };
            match outcome {
                Attempt::Delivered => {
                    tracing::debug!(attempt, target = %target, "Webhook delivered");
                    return Ok(());
                }
                Attempt::Fatal(reason) => {
                    return Err(HandlerError(format!("{reason}; not retried")));
                }
                Attempt::Retry { reason, after } => {
                    if attempt == max {
                        return Err(HandlerError(format!(
                            "{reason}; gave up after {max} attempts"
                        )));
                    }
                    let delay = match after {
                        Some(a) if a > self.config.retry_max_delay => {
                            return Err(HandlerError(format!(
                                "{reason}; Retry-After {}s exceeds retry_max_delay, leaving it to the queue's retry",
                                a.as_secs()
                            )));
                        }
                        Some(a) => a,
                        None => self.backoff(attempt),
                    };
                    tracing::warn!(attempt, max_attempts = max, retry_in_ms = delay.as_millis() as u64, error = %reason, "Webhook attempt failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        unreachable!("the loop returns on its last attempt")
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
        assert!(!e.contains("not base64!"), "{e}");
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
