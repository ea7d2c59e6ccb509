//! The `[[handlers]]` table of `type = "webhook"`: its keys, their
//! defaults and its validation, including the format of the signing secret.
//! Pure; below the handlers, with the configuration (layer 2), which names
//! it in [`crate::config::HandlerConfig`].

use crate::config::formats::HumanDuration;
use crate::config::handler_table::{HandlerTable, StringMap, all_events, shared_keys};
use crate::config::issues::Issues;
use crate::filter::EventFilter;
use crate::secret::Secret;
use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// `type = "webhook"`: POSTs each event as signed JSON.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name used in logs; default `webhook#<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Which events this handler gets (see the routing grammar).
    #[serde(default = "all_events")]
    pub events: EventFilter,
    /// Only events whose subject begins with this text (Event Grid's
    /// `subjectBeginsWith`: a plain prefix, no wildcards), e.g.
    /// `/blobServices/default/containers/models/blobs/birds/`. Events
    /// without a subject (Custom Vision's) then never match. Default: any.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub subject_begins_with: Option<String>,
    /// Only events whose subject ends with this text (Event Grid's
    /// `subjectEndsWith`), e.g. `.onnx`. Events without a subject (Custom
    /// Vision's) then never match. Default: any.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub subject_ends_with: Option<String>,
    /// Compare `subject_begins_with` / `subject_ends_with` in the subject's
    /// exact case (Event Grid's `isSubjectCaseSensitive`); by default case
    /// is ignored, as Event Grid does.
    #[serde(default)]
    pub subject_case_sensitive: bool,
    /// Where to POST. Only its scheme and host are ever logged (webhook
    /// URLs often carry a token in their path).
    pub url: Url,
    /// Extra request headers. Their values are treated as secrets
    /// (registered with [`crate::secret`] when the configuration loads).
    #[serde(default)]
    pub headers: StringMap,
    /// Timeout of one attempt.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
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
    #[schemars(with = "HumanDuration")]
    pub retry_initial_delay: Duration,
    /// Longest wait between attempts. A `Retry-After` longer than this
    /// fails the attempt series instead (the queue's retry delay takes over).
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub retry_max_delay: Duration,
    /// PEM bundle of extra trusted CAs (a private CA); added to the system
    /// roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Answers that retrying cannot fix: the message goes to the poison
    /// queue at once, with the status as the reason. Other 4xx (and 3xx)
    /// fail the delivery and are retried through the queue; 408, 429 and 5xx
    /// are retried in process first. `[]` turns this off.
    #[serde(default = "default_permanent_statuses")]
    pub permanent_statuses: Vec<u16>,
}

fn default_permanent_statuses() -> Vec<u16> {
    vec![400, 401, 403, 404, 410, 422]
}

/// Shows where, not what: the URL's query and path may carry tokens, and
/// header values credentials.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut url = self.url.clone();
        url.set_path("/...");
        url.set_query(None);
        url.set_fragment(None);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("events", &self.events)
            .field("subject_begins_with", &self.subject_begins_with)
            .field("subject_ends_with", &self.subject_ends_with)
            .field("subject_case_sensitive", &self.subject_case_sensitive)
            .field("url", &url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("secret", &self.secret)
            .field("secret_env", &self.secret_env)
            .field("secret_file", &self.secret_file)
            .field("max_attempts", &self.max_attempts)
            .field("ca_file", &self.ca_file)
            .field("permanent_statuses", &self.permanent_statuses)
            .finish_non_exhaustive()
    }
}

fn default_webhook_timeout() -> Duration {
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

/// Headers the webhook handler sets itself.
pub const RESERVED_WEBHOOK_HEADERS: [&str; 5] = [
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-length",
];

/// A signing secret that is not `whsec_<base64>`. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSecretError {
    #[error("not a `whsec_<base64>` secret (the part after whsec_ must be base64)")]
    NotBase64,
    #[error("is empty")]
    Empty,
}

/// The HMAC key of a Standard Webhooks secret, `whsec_<base64>` (the prefix
/// is optional, as in the reference libraries).
pub fn webhook_key(secret: &str) -> Result<Vec<u8>, WebhookSecretError> {
    let b64 = secret
        .trim()
        .strip_prefix("whsec_")
        .unwrap_or(secret.trim());
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| WebhookSecretError::NotBase64)?;
    if key.is_empty() {
        return Err(WebhookSecretError::Empty);
    }
    Ok(key)
}

impl HandlerTable for WebhookConfig {
    shared_keys!();
    fn validate(&self, path: &str, issues: &mut Issues) {
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
            && let Err(e) = webhook_key(s.expose())
        {
            issues.push(format!("{path}.secret"), e.to_string());
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
        for status in &self.permanent_statuses {
            if !(300..=599).contains(status) || matches!(status, 408 | 429) {
                issues.push(
                    format!("{path}.permanent_statuses"),
                    format!("{status} cannot be a permanent failure; allowed: 300 to 599 except 408 and 429"),
                );
            }
        }
        for k in self.headers.keys() {
            let lower = k.to_ascii_lowercase();
            if RESERVED_WEBHOOK_HEADERS.contains(&lower.as_str()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secrets_are_checked_without_echoing_them() {
        let e = webhook_key("whsec_not base64!").unwrap_err();
        assert!(!e.to_string().contains("not base64!"), "{e}");
        assert_eq!(webhook_key("whsec_"), Err(WebhookSecretError::Empty));
        assert!(webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    }
}
