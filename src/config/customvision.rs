//! `[customvision]`: the Custom Vision training resource that `setup`,
//! `check` and the `customvision` handler talk to, and the export platforms
//! and flavors of the Training API v3.3.
//!
//! Pure, like the rest of `config/`: the training key is resolved (from
//! `training_key_env` or `training_key_file`) when the client is built, not
//! here. The `customvision` handler's table lives with the other handler
//! tables in [`super::handlers`]; the platform/flavor rules it is validated
//! with live here.

use super::formats::HumanDuration;
use super::issues::Issues;
use crate::secret::Secret;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;
use uuid::Uuid;

/// `[customvision]`: the Custom Vision training resource.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomVisionConfig {
    /// The training resource's endpoint, as the Azure portal shows it under
    /// "Keys and Endpoint": `https://<name>.cognitiveservices.azure.com`
    /// (custom subdomain) or `https://<region>.api.cognitive.microsoft.com`.
    /// Without the `/customvision/v3.3/training` path. Required.
    pub endpoint: Url,
    /// The resource's training key (KEY 1 or KEY 2). Prefer
    /// `training_key_env` or `training_key_file`. Never logged. Without any
    /// of the three, the daemon's own Entra ID credential is used.
    #[serde(default)]
    pub training_key: Option<Secret>,
    /// Name of an environment variable holding the training key.
    #[serde(default)]
    pub training_key_env: Option<String>,
    /// File holding the training key (trailing white space ignored).
    #[serde(default)]
    pub training_key_file: Option<PathBuf>,
    /// Ids of the projects this daemon serves: `check` verifies that each
    /// can be read and that its storage settings point at this daemon's
    /// queue (and backup container). Default: none.
    #[serde(default)]
    pub projects: Vec<Uuid>,
    /// Timeout of one Training API request.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub request_timeout: Duration,
    /// Attempts per Training API call: 429, 5xx, timeouts and connection
    /// errors are retried with exponential back-off, honouring `Retry-After`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Longest wait between two attempts. A `Retry-After` beyond it ends
    /// the attempts (a handler's message is then retried by the queue).
    #[serde(default = "default_retry_max_delay", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub retry_max_delay: Duration,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> u32 {
    5
}
fn default_retry_max_delay() -> Duration {
    Duration::from_secs(60)
}

/// The Training API's export platforms (v3.3) and the flavors each takes.
/// `OpenVino` exists only in v3.4-preview.
pub const EXPORT_PLATFORMS: &[(&str, &[&str])] = &[
    ("CoreML", &[]),
    ("TensorFlow", &["TensorFlowNormal", "TensorFlowLite"]),
    ("DockerFile", &["Linux", "Windows", "ARM"]),
    ("ONNX", &["ONNX10", "ONNX12"]),
    ("VAIDK", &[]),
];

/// Why a platform/flavor pair is not one the Training API v3.3 accepts.
pub fn check_export_target(platform: &str, flavor: Option<&str>) -> Result<(), String> {
    let names = || {
        EXPORT_PLATFORMS
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((canonical, flavors)) = EXPORT_PLATFORMS
        .iter()
        .find(|(p, _)| p.eq_ignore_ascii_case(platform))
    else {
        if platform.eq_ignore_ascii_case("OpenVino") {
            return Err(
                "`OpenVino` exists only in the Training API v3.4-preview; cvnotify uses v3.3"
                    .into(),
            );
        }
        return Err(format!(
            "unknown platform `{platform}`; allowed: {}",
            names()
        ));
    };
    if *canonical != platform {
        return Err(format!(
            "`{platform}`: write it as the API does, `{canonical}`"
        ));
    }
    match flavor {
        None => Ok(()),
        Some(f) if flavors.is_empty() => Err(format!(
            "`{platform}` takes no flavor (`{f}` given); remove `flavor`"
        )),
        Some(f) if flavors.contains(&f) => Ok(()),
        Some(f) => Err(format!(
            "`{f}` is not a flavor of `{platform}`; allowed: {}",
            flavors.join(", ")
        )),
    }
}

impl CustomVisionConfig {
    /// Whether a training key is configured (else Entra ID is used).
    pub fn has_key(&self) -> bool {
        self.training_key.is_some()
            || self.training_key_env.is_some()
            || self.training_key_file.is_some()
    }

    /// Semantic rules of `[customvision]`, given the daemon's `auth.mode`
    /// (its name, and whether it gets Entra ID tokens).
    pub(super) fn validate(&self, auth_mode: &str, uses_token: bool, issues: &mut Issues) {
        let ep = &self.endpoint;
        let loopback = match ep.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        // One issue per key: the collector keeps the first of a path.
        let mut problems: Vec<&str> = Vec::new();
        match ep.scheme() {
            "https" => {}
            // A training key or token in clear text only to this machine.
            "http" if loopback => {}
            "http" => problems.push(
                "must use https (the training key or token would travel in clear text); plain http is allowed only on loopback",
            ),
            _ => problems.push("must be an https URL"),
        }
        if ep.query().is_some() || ep.fragment().is_some() {
            problems.push("must not carry a query or fragment");
        }
        if ep
            .path()
            .trim_matches('/')
            .to_ascii_lowercase()
            .contains("customvision")
        {
            problems.push(
                "give the resource's endpoint only (https://<name>.cognitiveservices.azure.com), without /customvision/v3.3/training",
            );
        }
        if !self.has_key()
            && uses_token
            && ep.host_str().is_some_and(|h| {
                h.to_ascii_lowercase()
                    .ends_with(".api.cognitive.microsoft.com")
            })
        {
            problems.push(
                "Entra ID authentication needs the resource's custom-subdomain endpoint (https://<name>.cognitiveservices.azure.com), not the regional one; or set a training key",
            );
        }
        if !problems.is_empty() {
            issues.push("customvision.endpoint", problems.join("; "));
        }
        let sources = [
            self.training_key.is_some(),
            self.training_key_env.is_some(),
            self.training_key_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            issues.push(
                "customvision.training_key",
                "set only one of training_key, training_key_env, training_key_file",
            );
        } else if let Some(k) = &self.training_key
            && k.expose().trim().is_empty()
        {
            issues.push("customvision.training_key", "is empty");
        }
        if !self.has_key() && !uses_token {
            issues.push(
                "customvision.training_key",
                format!(
                    "missing: set training_key, training_key_env or training_key_file, or use an Entra ID auth.mode (managed_identity, workload_identity, azure_cli; auth.mode is \"{auth_mode}\")"
                ),
            );
        }
        if !(1..=20).contains(&self.max_attempts) {
            issues.push("customvision.max_attempts", "allowed: 1 to 20");
        }
        if self.request_timeout.is_zero() {
            issues.push("customvision.request_timeout", "must be greater than 0");
        }
        if self.retry_max_delay < Duration::from_secs(1) {
            issues.push("customvision.retry_max_delay", "must be at least 1s");
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.projects {
            if !seen.insert(p) {
                issues.push("customvision.projects", format!("{p} is listed twice"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_flavor_pairs_follow_the_v33_table() {
        assert!(check_export_target("ONNX", None).is_ok());
        assert!(check_export_target("ONNX", Some("ONNX12")).is_ok());
        assert!(check_export_target("TensorFlow", Some("TensorFlowLite")).is_ok());
        assert!(check_export_target("DockerFile", Some("ARM")).is_ok());
        assert!(check_export_target("CoreML", None).is_ok());
        assert!(check_export_target("VAIDK", None).is_ok());
        let e = check_export_target("ONNX", Some("TensorFlowLite")).unwrap_err();
        assert!(e.contains("allowed: ONNX10, ONNX12"), "{e}");
        let e = check_export_target("CoreML", Some("Linux")).unwrap_err();
        assert!(e.contains("takes no flavor"), "{e}");
        let e = check_export_target("onnx", None).unwrap_err();
        assert!(e.contains("`ONNX`"), "{e}");
        let e = check_export_target("OpenVino", None).unwrap_err();
        assert!(e.contains("v3.4-preview"), "{e}");
        let e = check_export_target("Keras", None).unwrap_err();
        assert!(
            e.contains("allowed: CoreML, TensorFlow, DockerFile, ONNX, VAIDK"),
            "{e}"
        );
    }

    fn errors(toml: &str) -> Vec<String> {
        crate::config::Config::from_toml(toml)
            .unwrap_err()
            .0
            .into_iter()
            .map(|i| i.to_string())
            .collect()
    }

    const BASE: &str = "[queue]\nname = \"q-x\"\naccount = \"acct\"\n";

    #[test]
    fn a_handler_with_bad_exports_reports_every_problem_at_once() {
        let errs = errors(&format!(
            r#"{BASE}
            [customvision]
            endpoint = "https://cv.cognitiveservices.azure.com"
            training_key = "k"
            [[handlers]]
            type = "customvision"
            export = [{{ platform = "ONNX", flavor = "TensorFlowLite" }}, {{ platform = "CoreML", flavor = "Linux" }}, {{ platform = "Keras" }}, {{ platform = "ONNX" }}, {{ platform = "ONNX" }}]
            publish = {{ name = "production", prediction_resource_id = "my-prediction" }}
            "#
        ));
        let joined = errors_text(&errs);
        assert!(joined.contains("handlers[0].export[0]: `TensorFlowLite` is not a flavor of `ONNX`; allowed: ONNX10, ONNX12"), "{joined}");
        assert!(
            joined.contains("handlers[0].export[1]: `CoreML` takes no flavor"),
            "{joined}"
        );
        assert!(
            joined.contains("handlers[0].export[2]: unknown platform `Keras`"),
            "{joined}"
        );
        assert!(
            joined.contains("handlers[0].export[4]: ONNX is listed twice"),
            "{joined}"
        );
        assert!(joined.contains("handlers[0].publish.prediction_resource_id: must be the prediction resource's full Azure resource id"), "{joined}");
        assert_eq!(errs.len(), 5, "{joined}");
    }

    fn errors_text(e: &[String]) -> String {
        e.join("\n")
    }

    #[test]
    fn a_valid_handler_gets_its_defaults() {
        let c = crate::config::Config::from_toml(&format!(
            r#"{BASE}
            [customvision]
            endpoint = "https://cv.cognitiveservices.azure.com"
            training_key_env = "CV_KEY"
            projects = ["8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c"]
            [[handlers]]
            type = "customvision"
            export = [{{ platform = "ONNX" }}, {{ platform = "TensorFlow", flavor = "TensorFlowLite" }}]
            "#
        ))
        .unwrap();
        let cv = c.customvision.as_ref().unwrap();
        assert_eq!(cv.max_attempts, 5);
        assert_eq!(cv.projects.len(), 1);
        let crate::config::HandlerConfig::CustomVision(h) = &c.handlers[0] else {
            panic!("{:?}", c.handlers[0]);
        };
        assert_eq!(h.export_wait, Duration::from_secs(900));
        assert_eq!(h.export[1].to_string(), "TensorFlow/TensorFlowLite");
        assert!(h.publish.is_none());
        assert_eq!(c.handlers[0].display_name(0), "customvision#0");
    }

    #[test]
    fn credentials_and_endpoints_are_checked() {
        // No [customvision] for a customvision handler; nothing to do.
        let errs = errors(&format!("{BASE}[[handlers]]\ntype = \"customvision\"\n"));
        assert!(errs.iter().any(|e| e.starts_with("customvision: missing: handlers[0] (type = \"customvision\") needs the [customvision] section")), "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("handlers[0]: nothing to do")),
            "{errs:?}"
        );
        // Two key sources; http off loopback; the API path given.
        let errs = errors(&format!(
            "{BASE}[customvision]\nendpoint = \"http://cv.example.com/customvision/v3.3/training\"\ntraining_key = \"k\"\ntraining_key_file = \"/k\"\n"
        ));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("customvision.training_key: set only one")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("customvision.endpoint: must use https")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("without /customvision/v3.3/training")),
            "{errs:?}"
        );
        // No key with a key-based storage mode; a regional endpoint with Entra ID.
        let errs = errors(
            "[queue]\nname = \"q-x\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"UseDevelopmentStorage=true\"\n[customvision]\nendpoint = \"https://cv.cognitiveservices.azure.com\"\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("customvision.training_key: missing")),
            "{errs:?}"
        );
        let errs = errors(&format!(
            "{BASE}[customvision]\nendpoint = \"https://westeurope.api.cognitive.microsoft.com\"\n"
        ));
        assert!(
            errs.iter().any(|e| e.contains("custom-subdomain endpoint")),
            "{errs:?}"
        );
        // Loopback http with a key is fine (tests, local proxies).
        crate::config::Config::from_toml(&format!(
            "{BASE}[customvision]\nendpoint = \"http://127.0.0.1:8080\"\ntraining_key = \"k\"\n"
        ))
        .unwrap();
    }

    #[test]
    fn the_training_key_is_not_in_debug_output() {
        let c = crate::config::Config::from_toml(&format!(
            "{BASE}[customvision]\nendpoint = \"https://cv.cognitiveservices.azure.com\"\ntraining_key = \"0123456789abcdef-training-key\"\n"
        ))
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("0123456789abcdef"), "{dbg}");
    }
}
