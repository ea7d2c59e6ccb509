//! The storage URIs setup (and `check`) works with: the backup container a
//! configuration names, whether two URIs name the same queue or container,
//! and how a URI is shown.

use crate::config::{Config, HandlerConfig};
use crate::secret::{printable, redact_url};
use url::Url;

/// The backup container of this configuration: the first download
/// handler's (first) `container`.
pub fn backup_container(config: &Config) -> Option<Url> {
    config.handlers.iter().find_map(|h| match h {
        HandlerConfig::Download(d) => d.container.first().cloned(),
        _ => None,
    })
}

/// Whether two storage URLs name the same queue or container: scheme,
/// host and port compared case-insensitively, the path without a trailing
/// slash, any query (a SAS) ignored.
pub fn same_uri(a: &str, b: &str) -> bool {
    match (Url::parse(a.trim()), Url::parse(b.trim())) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str().map(str::to_ascii_lowercase)
                    == b.host_str().map(str::to_ascii_lowercase)
                && a.port_or_known_default() == b.port_or_known_default()
                && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        }
        _ => a.trim() == b.trim(),
    }
}

/// A URI as the output shows it: without its query (a SAS), escaped (it
/// may come from GetProject).
pub fn show(v: Option<&str>) -> String {
    v.map_or("(not set)".into(), |v| printable(&redact_url(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_compare_without_case_slash_or_sas() {
        assert!(same_uri(
            "https://Acct.queue.core.windows.net/q/",
            "https://acct.queue.core.windows.net/q"
        ));
        assert!(same_uri(
            "https://acct.blob.core.windows.net/models?sv=1&sig=x",
            "https://acct.blob.core.windows.net/models"
        ));
        assert!(!same_uri(
            "https://acct.queue.core.windows.net/q",
            "https://acct.queue.core.windows.net/other"
        ));
        assert!(!same_uri(
            "https://acct.queue.core.windows.net/Q",
            "https://acct.queue.core.windows.net/q"
        ));
    }
}
