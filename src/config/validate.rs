//! Semantic rules of the configuration: ranges, combinations, modes.
//!
//! Runs after the structural parse, on a complete [`Config`] with defaults
//! in place, and records every problem in [`Issues`]. Pure: no file system,
//! no network (`check --config-only` runs exactly this).

use super::connection_string::ConnectionString;
use super::handlers::HandlerConfig;
use super::issues::Issues;
use super::queue::{Cloud, QueueConfig};
use super::schema::{AuthConfig, AuthMode, Config};
use std::time::Duration;

impl Config {
    pub(super) fn validate(&self, issues: &mut Issues) {
        if self.queues.is_empty() {
            validate_queue(&self.queue, "queue", issues);
            validate_auth(&self.auth, "auth", &self.queue, "queue", issues);
            if self.max_concurrency.is_some() {
                issues.push(
                    "max_concurrency",
                    "only used with [[queues]]; with [queue], set queue.max_concurrency",
                );
            }
        } else {
            self.validate_queues(issues);
        }
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

impl Config {
    /// `[[queues]]`: each entry as a `[queue]` (with its own or the
    /// top-level `auth`), unique names, a process-wide bound that leaves
    /// every queue at least one slot.
    fn validate_queues(&self, issues: &mut Issues) {
        let mut names = std::collections::HashMap::new();
        let mut poison_names = std::collections::HashMap::new();
        for (i, e) in self.queues.iter().enumerate() {
            let p = format!("queues[{i}]");
            validate_queue(&e.queue, &p, issues);
            match &e.auth {
                Some(a) => validate_auth(a, &format!("{p}.auth"), &e.queue, &p, issues),
                None => validate_auth(&self.auth, "auth", &e.queue, &p, issues),
            }
            if let Some(name) = &e.queue.name
                && let Some(first) = names.insert(name.clone(), i)
            {
                issues.push(
                    format!("{p}.name"),
                    format!("`{name}` is also queues[{first}].name; queue names must be unique (they name the queue in metrics and --queue)"),
                );
            }
            // The same poison queue name in the same account would mix two
            // queues' poison; in different accounts it is only confusing,
            // and refusing it is simpler than comparing endpoints.
            if let Some(name) = &e.queue.name {
                let poison = e
                    .queue
                    .poison_queue
                    .clone()
                    .unwrap_or_else(|| format!("{name}-poison"));
                if let Some(first) = poison_names.insert(poison.clone(), i) {
                    issues.push(
                        format!("{p}.poison_queue"),
                        format!("`{poison}` is also the poison queue of queues[{first}]; give each queue its own"),
                    );
                }
            }
        }
        let max = self.process_max_concurrency();
        if max == 0 || max > 10_000 {
            issues.push("max_concurrency", "allowed: 1 to 10000");
        } else if max < self.queues.len() {
            issues.push(
                "max_concurrency",
                format!(
                    "{max} is less than the number of queues ({}); each queue needs at least one slot",
                    self.queues.len()
                ),
            );
        }
    }
}

fn validate_queue(q: &QueueConfig, p: &str, issues: &mut Issues) {
    match &q.name {
        None => issues.push(
            format!("{p}.name"),
            "missing; set the name of the queue Custom Vision writes to",
        ),
        Some(name) => {
            if let Err(e) = validate_queue_name(name) {
                issues.push(format!("{p}.name"), e.to_string());
            }
        }
    }
    if let Some(p) = &q.poison_queue
        && let Err(e) = validate_queue_name(p)
    {
        issues.push(format!("{p}.poison_queue"), e.to_string());
    } else if q.poison_queue.is_none()
        && let Some(name) = &q.name
        && name.len() > 56
    {
        issues.push(
            format!("{p}.name"),
            "longer than 56 characters, so `{name}-poison` exceeds 63; set queue.poison_queue",
        );
    }
    if !(1..=32).contains(&q.batch_size) {
        issues.push(
            format!("{p}.batch_size"),
            format!("{} is out of range; allowed: 1 to 32", q.batch_size),
        );
    }
    if q.max_concurrency == 0 || q.max_concurrency > 10_000 {
        issues.push(format!("{p}.max_concurrency"), "allowed: 1 to 10000");
    }
    let week = Duration::from_secs(7 * 24 * 3600);
    if q.visibility_timeout < Duration::from_secs(2) || q.visibility_timeout > week {
        issues.push(format!("{p}.visibility_timeout"), "allowed: 2s to 7days");
    } else if q.visibility_timeout.subsec_nanos() != 0 {
        issues.push(
            format!("{p}.visibility_timeout"),
            "must be whole seconds (the service counts seconds)",
        );
    }
    if q.min_poll_interval.is_zero() {
        issues.push(format!("{p}.min_poll_interval"), "must be greater than 0");
    }
    if q.min_poll_interval > q.max_poll_interval {
        issues.push(
            format!("{p}.max_poll_interval"),
            "must not be less than queue.min_poll_interval",
        );
    }
    if q.max_dequeue_count == 0 {
        issues.push(format!("{p}.max_dequeue_count"), "must be at least 1");
    }
    if q.max_deliveries_without_outcome == 0 {
        issues.push(
            format!("{p}.max_deliveries_without_outcome"),
            "must be at least 1",
        );
    }
    if q.retry_base_delay > q.retry_max_delay {
        issues.push(
            format!("{p}.retry_max_delay"),
            "must not be less than queue.retry_base_delay",
        );
    }
    if q.retry_max_delay > week {
        issues.push(format!("{p}.retry_max_delay"), "allowed: at most 7days");
    }
    if q.request_timeout < Duration::from_secs(1) {
        issues.push(format!("{p}.request_timeout"), "must be at least 1s");
    }
    if q.cloud == Cloud::Custom && q.endpoint.is_none() {
        issues.push(
            format!("{p}.endpoint"),
            "required when queue.cloud = \"custom\"",
        );
    }
    if let Some(ep) = &q.endpoint
        && !matches!(ep.scheme(), "http" | "https")
    {
        issues.push(format!("{p}.endpoint"), "must be an http or https URL");
    }
    if let Some(ep) = &q.endpoint
        && ep.query().is_some()
    {
        issues.push(
            format!("{p}.endpoint"),
            "must not carry a query; put a SAS token in auth.sas_token",
        );
    }
}

fn validate_auth(a: &AuthConfig, ap: &str, q: &QueueConfig, p: &str, issues: &mut Issues) {
    match a.mode {
        AuthMode::ConnectionString => match &a.connection_string {
            None => issues.push(format!("{ap}.connection_string"),
                "required when auth.mode = \"connection_string\" (UseDevelopmentStorage=true for Azurite)",
            ),
            Some(cs) => {
                if let Err(e) = ConnectionString::parse(cs.expose()) {
                    issues.push(format!("{ap}.connection_string"), e.to_string());
                }
            }
        },
        AuthMode::Sas => {
            match &a.sas_token {
                None => issues.push(format!("{ap}.sas_token"), "required when auth.mode = \"sas\""),
                Some(t) if !t.expose().contains("sig=") => {
                    issues.push(format!("{ap}.sas_token"), "does not look like a SAS token (no `sig=`)")
                }
                _ => {}
            }
            if q.account.is_none() && q.endpoint.is_none() {
                issues.push(format!("{p}.account"), format!("set {p}.account or {p}.endpoint"));
            }
        }
        mode => {
            if q.account.is_none() && q.endpoint.is_none() {
                issues.push(format!("{p}.account"), format!("set {p}.account or {p}.endpoint"));
            }
            if let Some(ep) = &q.endpoint
                && ep.scheme() != "https"
            {
                issues.push(format!("{p}.endpoint"),
                    format!("must use https with auth.mode = \"{}\" (tokens are never sent in clear text)", mode.as_str()),
                );
            }
        }
    }
    if a.connection_string.is_some() && a.mode != AuthMode::ConnectionString {
        issues.push(
            format!("{ap}.connection_string"),
            format!(
                "set, but auth.mode is \"{}\"; set auth.mode = \"connection_string\" or remove it",
                a.mode.as_str()
            ),
        );
    }
    if a.sas_token.is_some() && a.mode != AuthMode::Sas {
        issues.push(
            format!("{ap}.sas_token"),
            format!(
                "set, but auth.mode is \"{}\"; set auth.mode = \"sas\" or remove it",
                a.mode.as_str()
            ),
        );
    }
    if let Some(h) = &a.authority_host
        && h.scheme() != "https"
    {
        issues.push(format!("{ap}.authority_host"), "must be an https URL");
    }
    if a.client_id.is_some()
        && !matches!(
            a.mode,
            AuthMode::ManagedIdentity | AuthMode::WorkloadIdentity
        )
    {
        issues.push(
            format!("{ap}.client_id"),
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
