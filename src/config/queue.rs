//! `[queue]`, and the keys of each `[[queues]]` entry: the storage queue
//! Custom Vision writes to and how it is consumed, with their defaults.
//! Only shapes, as in [`super::schema`], which holds the whole file.

use super::formats::{HumanDuration, string_enum};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;
use url::Url;

/// `[queue]`, and each `[[queues]]` entry: the storage queue Custom Vision
/// writes to and how it is consumed.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Name of the queue Custom Vision writes to. Required.
    pub name: Option<String>,
    /// Storage account name; the endpoint is then
    /// `https://{account}.queue.{cloud suffix}`.
    pub account: Option<String>,
    /// Queue service endpoint, overriding `account` and the connection
    /// string's endpoint (Azurite, private endpoints, custom clouds).
    pub endpoint: Option<Url>,
    /// Which Azure cloud the account lives in.
    pub cloud: Cloud,
    /// Where messages that cannot be handled go. Default: `{name}-poison`.
    pub poison_queue: Option<String>,
    /// Messages asked for per receive call (1-32).
    pub batch_size: u8,
    /// How long a received message stays invisible to other consumers; it is
    /// renewed while a handler still runs.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub visibility_timeout: Duration,
    /// Messages handled at once; receiving never asks for more than this
    /// leaves free.
    pub max_concurrency: usize,
    /// Poll interval after the first empty receive.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub min_poll_interval: Duration,
    /// The interval empty receives back off to.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub max_poll_interval: Duration,
    /// Failed deliveries before a message is moved to the poison queue.
    /// Deliveries that end without an outcome (a shutdown, a restart, a
    /// crash) do not count.
    pub max_dequeue_count: u32,
    /// Deliveries that ended without an outcome (the daemon stopped or
    /// crashed while handling the message) before the message is moved to
    /// the poison queue anyway: a message that crashes the daemon every
    /// time must not keep it down. Keep it above the number of restarts a
    /// slow message may see (rolling deployments).
    pub max_deliveries_without_outcome: u32,
    /// What the poison queue gets: `verbatim` (the original body, byte for
    /// byte) or `envelope` (a JSON document holding the original body, the
    /// reason, the handler, the dequeue count, first and last delivery
    /// times and the original message id). `poison replay` restores the
    /// original body from either.
    pub poison_format: PoisonFormat,
    /// Delay before a failed message is visible again, doubled per delivery.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub retry_base_delay: Duration,
    /// Upper bound of that delay.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub retry_max_delay: Duration,
    /// Timeout of one storage request.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub request_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name: None,
            account: None,
            endpoint: None,
            cloud: Cloud::Public,
            poison_queue: None,
            batch_size: 16,
            visibility_timeout: Duration::from_secs(300),
            max_concurrency: 32,
            min_poll_interval: Duration::from_millis(100),
            max_poll_interval: Duration::from_secs(10),
            max_dequeue_count: 5,
            max_deliveries_without_outcome: 10,
            poison_format: PoisonFormat::Verbatim,
            retry_base_delay: Duration::from_secs(10),
            retry_max_delay: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
        }
    }
}

string_enum!(Cloud { Public => "public", UsGovernment => "us_government", China => "china", Custom => "custom" });

string_enum!(PoisonFormat { Verbatim => "verbatim", Envelope => "envelope" });

/// `queue.poison_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoisonFormat {
    #[default]
    Verbatim,
    Envelope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cloud {
    #[default]
    Public,
    UsGovernment,
    China,
    /// Any other cloud: `queue.endpoint` is then required.
    Custom,
}

impl Cloud {
    /// The storage endpoint suffix.
    pub fn storage_suffix(self) -> Option<&'static str> {
        match self {
            Cloud::Public => Some("core.windows.net"),
            Cloud::UsGovernment => Some("core.usgovcloudapi.net"),
            Cloud::China => Some("core.chinacloudapi.cn"),
            Cloud::Custom => None,
        }
    }
}
