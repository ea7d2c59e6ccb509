//! Semantic rules of the configuration: ranges, combinations, modes.
//!
//! Runs after the structural parse, on a complete [`Config`] with defaults
//! in place, and records every problem in [`Issues`]. Pure: no file system,
//! no network (`check --config-only` runs exactly this).

use super::connection_string::ConnectionString;
use super::handlers::HandlerConfig;
use super::issues::Issues;
use super::schema::{AuthConfig, AuthMode, Cloud, Config, QueueConfig};
use std::time::Duration;

impl Config {
    pub(super) fn validate(&self, issues: &mut Issues) {
        validate_queue(&self.queue, issues);
        validate_auth(&self.auth, &self.queue, issues);
        let t = &self.telemetry;
        if let Some(ep) = &t.otlp_endpoint
            && !matches!(ep.scheme(), "http" | "https")
        {
            issues.push("telemetry.otlp_endpoint", "must be an http or https URL");
        }
        if !(1..=1_000_000).contains(&t.max_queue_size) {
            issues.push("telemetry.max_queue_size", "allowed: 1 to 1000000");
        }
        if t.export_timeout.is_zero() {
            issues.push("telemetry.export_timeout", "must be greater than 0");
        }
        self.validate_customvision(issues);
        if self.shutdown_timeout.is_zero() {
            issues.push("shutdown_timeout", "must be greater than 0");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            issues.push(
                "log.level",
                format!("not a valid filter ({e}); examples: info, debug, cvnotify=debug,warn"),
            );
        }
    }
}

fn validate_queue(q: &QueueConfig, issues: &mut Issues) {
    match &q.name {
        None => issues.push(
            "queue.name",
            "missing; set the name of the queue Custom Vision writes to",
        ),
        Some(name) => {
            if let Err(e) = validate_queue_name(name) {
                issues.push("queue.name", e.to_string());
            }
        }
    }
    if let Some(p) = &q.poison_queue
        && let Err(e) = validate_queue_name(p)
    {
        issues.push("queue.poison_queue", e.to_string());
    } else if q.poison_queue.is_none()
        && let Some(name) = &q.name
        && name.len() > 56
    {
        issues.push(
            "queue.name",
            "longer than 56 characters, so `{name}-poison` exceeds 63; set queue.poison_queue",
        );
    }
    if !(1..=32).contains(&q.batch_size) {
        issues.push(
            "queue.batch_size",
            format!("{} is out of range; allowed: 1 to 32", q.batch_size),
        );
    }
    if q.max_concurrency == 0 || q.max_concurrency > 10_000 {
        issues.push("queue.max_concurrency", "allowed: 1 to 10000");
    }
    let week = Duration::from_secs(7 * 24 * 3600);
    if q.visibility_timeout < Duration::from_secs(2) || q.visibility_timeout > week {
        issues.push("queue.visibility_timeout", "allowed: 2s to 7days");
    } else if q.visibility_timeout.subsec_nanos() != 0 {
        issues.push(
            "queue.visibility_timeout",
            "must be whole seconds (the service counts seconds)",
        );
    }
    if q.min_poll_interval.is_zero() {
        issues.push("queue.min_poll_interval", "must be greater than 0");
    }
    if q.min_poll_interval > q.max_poll_interval {
        issues.push(
            "queue.max_poll_interval",
            "must not be less than queue.min_poll_interval",
        );
    }
    if q.max_dequeue_count == 0 {
        issues.push("queue.max_dequeue_count", "must be at least 1");
    }
    if q.max_deliveries_without_outcome == 0 {
        issues.push("queue.max_deliveries_without_outcome", "must be at least 1");
    }
    if q.retry_base_delay > q.retry_max_delay {
        issues.push(
            "queue.retry_max_delay",
            "must not be less than queue.retry_base_delay",
        );
    }
    if q.retry_max_delay > week {
        issues.push("queue.retry_max_delay", "allowed: at most 7days");
    }
    if q.request_timeout < Duration::from_secs(1) {
        issues.push("queue.request_timeout", "must be at least 1s");
    }
    if q.cloud == Cloud::Custom && q.endpoint.is_none() {
        issues.push("queue.endpoint", "required when queue.cloud = \"custom\"");
    }
    if let Some(ep) = &q.endpoint
        && !matches!(ep.scheme(), "http" | "https")
    {
        issues.push("queue.endpoint", "must be an http or https URL");
    }
    if let Some(ep) = &q.endpoint
        && ep.query().is_some()
    {
        issues.push(
            "queue.endpoint",
            "must not carry a query; put a SAS token in auth.sas_token",
        );
    }
}

fn validate_auth(a: &AuthConfig, q: &QueueConfig, issues: &mut Issues) {
    match a.mode {
        AuthMode::ConnectionString => match &a.connection_string {
            None => issues.push(
                "auth.connection_string",
                "required when auth.mode = \"connection_string\" (UseDevelopmentStorage=true for Azurite)",
            ),
            Some(cs) => {
                if let Err(e) = ConnectionString::parse(cs.expose()) {
                    issues.push("auth.connection_string", e.to_string());
                }
            }
        },
        AuthMode::Sas => {
            match &a.sas_token {
                None => issues.push("auth.sas_token", "required when auth.mode = \"sas\""),
                Some(t) if !t.expose().contains("sig=") => {
                    issues.push("auth.sas_token", "does not look like a SAS token (no `sig=`)")
                }
                _ => {}
            }
            if q.account.is_none() && q.endpoint.is_none() {
                issues.push("queue.account", "set queue.account or queue.endpoint");
            }
        }
        mode => {
            if q.account.is_none() && q.endpoint.is_none() {
                issues.push("queue.account", "set queue.account or queue.endpoint");
            }
            if let Some(ep) = &q.endpoint
                && ep.scheme() != "https"
            {
                issues.push(
                    "queue.endpoint",
                    format!("must use https with auth.mode = \"{}\" (tokens are never sent in clear text)", mode.as_str()),
                );
            }
        }
    }
    if a.connection_string.is_some() && a.mode != AuthMode::ConnectionString {
        issues.push(
            "auth.connection_string",
            format!(
                "set, but auth.mode is \"{}\"; set auth.mode = \"connection_string\" or remove it",
                a.mode.as_str()
            ),
        );
    }
    if a.sas_token.is_some() && a.mode != AuthMode::Sas {
        issues.push(
            "auth.sas_token",
            format!(
                "set, but auth.mode is \"{}\"; set auth.mode = \"sas\" or remove it",
                a.mode.as_str()
            ),
        );
    }
    if let Some(h) = &a.authority_host
        && h.scheme() != "https"
    {
        issues.push("auth.authority_host", "must be an https URL");
    }
    if a.client_id.is_some()
        && !matches!(
            a.mode,
            AuthMode::ManagedIdentity | AuthMode::WorkloadIdentity
        )
    {
        issues.push(
            "auth.client_id",
            "only used with auth.mode = \"managed_identity\" or \"workload_identity\"",
        );
    }
}

impl Config {
    /// `[customvision]`, and that a `customvision` handler has it.
    fn validate_customvision(&self, issues: &mut Issues) {
        if let Some(cv) = &self.customvision {
            cv.validate(self.auth.mode.as_str(), self.auth.mode.uses_token(), issues);
        }
        for (i, h) in self.handlers.iter().enumerate() {
            if matches!(h, HandlerConfig::CustomVision(_)) && self.customvision.is_none() {
                issues.push(
                    "customvision",
                    format!("missing: handlers[{i}] (type = \"customvision\") needs the [customvision] section (endpoint and training key)"),
                );
            }
        }
    }
}

/// Queue naming rules of Azure Storage, checked here so that a typo is a
/// config error rather than a 400 at the first request.
/// A queue name the service would refuse.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a valid queue name: 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit"
)]
struct InvalidQueueName(String);

fn validate_queue_name(name: &str) -> Result<(), InvalidQueueName> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !(3..=63).contains(&name.len())
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return Err(InvalidQueueName(name.to_owned()));
    }
    Ok(())
}
