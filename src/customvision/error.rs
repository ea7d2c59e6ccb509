//! Training API errors: which call failed, what the service said, and what
//! to do about it.
//!
//! The spec documents no HTTP status per `CustomVisionError` code, so the
//! classification here goes by code first and status second; the hints
//! are written from the code names and the Custom Vision docs.

use crate::error::trust_hint;
use crate::retry::RetryError;
use std::fmt;

/// A Training API operation, named as the spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    GetProject,
    CreateProject,
    UpdateProject,
    GetIterations,
    GetIteration,
    ExportIteration,
    GetExports,
    PublishIteration,
    UnpublishIteration,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How the client authenticated (decides the hint for a refused credential).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    TrainingKey,
    EntraId,
}

/// A failed Training API call.
#[derive(Debug, thiserror::Error)]
pub enum CvError {
    /// The service answered with an error (a `CustomVisionError` code when
    /// it sent one).
    #[error(
        "{op}: the service answered {status}{}: {message}{}",
        code_part(code),
        hint_part(hint)
    )]
    Service {
        op: Op,
        status: u16,
        code: Option<String>,
        message: String,
        hint: &'static str,
    },
    /// 401, or 403 without a Custom Vision code: the credential itself.
    #[error(
        "{op}: the service refused the credential ({status}{}): {message}; {hint}",
        code_part(code)
    )]
    Unauthorized {
        op: Op,
        status: u16,
        code: Option<String>,
        message: String,
        hint: &'static str,
    },
    /// Throttled or failing after every attempt, or asked to wait longer
    /// than `retry_max_delay`: the last attempt's error is the source.
    #[error(transparent)]
    Retried(Box<RetryError<CvError>>),
    /// No answer: connection refused, TLS, timeout.
    #[error("{op}: cannot reach {endpoint}{}", trust_hint(source, "tls.ca_file"))]
    Transport {
        op: Op,
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// No Entra ID token for Custom Vision.
    #[error(
        "{op}: cannot get an Entra ID token for Custom Vision{}",
        trust_hint(source, "tls.ca_file")
    )]
    Token {
        op: Op,
        #[source]
        source: azure_core::Error,
    },
    /// The credential's token cannot be sent.
    #[error("{op}: the Entra ID token for Custom Vision is not a valid header value")]
    BadToken { op: Op },
    /// A success answer that is not the JSON the API describes.
    #[error("{op}: unexpected answer: not the JSON the API describes")]
    Json {
        op: Op,
        #[source]
        source: serde_json::Error,
    },
    /// A success answer cvnotify cannot read.
    #[error("{op}: unexpected answer: {detail}")]
    Unexpected { op: Op, detail: String },
}

fn code_part(code: &Option<String>) -> String {
    code.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
}

fn hint_part(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("; {hint}")
    }
}

/// Codes after which retrying the same request cannot succeed: the
/// iteration cannot be exported that way, or the request names something
/// that does not exist. A missing role or a wrong key is not among them:
/// an operator can fix those while the message waits.
const PERMANENT: &[&str] = &[
    "BadRequestExportValidationFailed",
    "BadRequestExportPlatformNotSupportedForAdvancedTraining",
    "BadRequestProjectUnsupportedExportPlatform",
    "ErrorExporterInvalidPlatform",
    "ErrorExporterInvalidFeaturizer",
    "ErrorExporterInvalidClassifier",
    "BadRequestIterationIsNotTrained",
    "BadRequestIterationValidationFailed",
    "BadRequestInvalidPublishName",
    "BadRequestInvalidPublishTarget",
    "BadRequestInvalidIds",
    "NotFoundIteration",
];

/// What to do about a `CustomVisionError` code.
pub fn hint_for(code: &str) -> &'static str {
    match code {
        "NotFoundProject" | "NotFound" => {
            "check the project id (customvision.ai → the project → settings) and that customvision.endpoint is the training resource that holds it"
        }
        "NotFoundIteration" => {
            "the iteration does not exist in this project (deleted, or the notification names another project)"
        }
        "BadRequestIterationIsNotTrained" => {
            "the iteration has not finished training; export and publish need a trained iteration"
        }
        "BadRequestExportValidationFailed"
        | "BadRequestProjectUnsupportedExportPlatform"
        | "ErrorExporterInvalidPlatform"
        | "ErrorExporterInvalidFeaturizer"
        | "ErrorExporterInvalidClassifier"
        | "BadRequestExportPlatformNotSupportedForAdvancedTraining" => {
            "this iteration cannot be exported that way: exports need a project on a compact domain (and Regular training for some platforms); remove the platform from `export`, or change the project's domain and train again"
        }
        "BadRequestExportAlreadyInProgress" => {
            "an export of this platform is already running; its Export notification follows"
        }
        "BadRequestExportWhileTraining" => "the project is training; the request is retried later",
        "BadRequestInvalidPublishName" => {
            "publish.name is not valid, or another iteration holds it (set publish.replace = true to move it)"
        }
        "BadRequestInvalidPublishTarget" => {
            "publish.prediction_resource_id must be the full Azure resource id of a Custom Vision prediction resource in the same region and subscription as the training resource"
        }
        "BadRequestIterationIsPublished" => {
            "the iteration is already published (under another name, or to another prediction resource); unpublish it first"
        }
        "BadRequestIterationNotPublished" => "the iteration is not published",
        "BadRequestProjectName" | "BadRequestProjectNameNotUnique" => "choose another project name",
        "BadRequestExceededQuota"
        | "BadRequestExceedProjectLimit"
        | "BadRequestExceedIterationPerProjectLimit"
        | "BadRequestNotLimitedTrial" => {
            "a limit of the resource's pricing tier is reached (F0 allows fewer projects and iterations); delete old projects or iterations, or change the tier"
        }
        c if c.starts_with("Forbidden") => {
            "the credential may not do this: a training key may do everything on its resource; an Entra ID identity needs a Custom Vision role on the resource (Cognitive Services Custom Vision Contributor; Trainer or Deployment for export and publish)"
        }
        _ => "",
    }
}

/// What to check when the credential is refused.
pub fn unauthorized_hint(kind: AuthKind) -> &'static str {
    match kind {
        AuthKind::TrainingKey => {
            "check customvision.training_key: it must be KEY 1 or KEY 2 of the *training* resource (Azure portal → the resource → Keys and Endpoint), and customvision.endpoint that same resource's endpoint"
        }
        AuthKind::EntraId => {
            "Entra ID on the Training API needs the resource's custom-subdomain endpoint and a Custom Vision role for the identity (not confirmed by Microsoft's Custom Vision docs; a training key is the documented way): assign 'Cognitive Services Custom Vision Contributor' on the resource, or set customvision.training_key"
        }
    }
}

impl CvError {
    /// The `CustomVisionError` code, if the service sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CvError::Service { code, .. } | CvError::Unauthorized { code, .. } => code.as_deref(),
            CvError::Retried(r) => r.last().and_then(CvError::code),
            _ => None,
        }
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            CvError::Service { status, .. } | CvError::Unauthorized { status, .. } => Some(*status),
            CvError::Retried(r) => r.last().and_then(CvError::status),
            _ => None,
        }
    }

    /// Whether repeating the request can never succeed (see [`PERMANENT`]).
    pub fn is_permanent(&self) -> bool {
        matches!(self, CvError::Service { .. })
            && self.code().is_some_and(|c| PERMANENT.contains(&c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_read_as_one_line_with_their_hint() {
        let e = CvError::Service {
            op: Op::ExportIteration,
            status: 400,
            code: Some("BadRequestProjectUnsupportedExportPlatform".into()),
            message: "Unsupported export platform".into(),
            hint: hint_for("BadRequestProjectUnsupportedExportPlatform"),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("ExportIteration: the service answered 400 BadRequestProjectUnsupportedExportPlatform: Unsupported export platform; this iteration cannot be exported"),
            "{text}"
        );
        assert!(e.is_permanent());
        let throttled = CvError::Retried(Box::new(RetryError::GaveUp {
            attempts: 5,
            last: CvError::Service {
                op: Op::GetExports,
                status: 429,
                code: None,
                message: "Rate limit".into(),
                hint: "",
            },
        }));
        assert!(!throttled.is_permanent());
        assert_eq!(throttled.status(), Some(429));
        assert!(hint_for("ForbiddenUserResource").contains("Custom Vision role"));
    }
}
