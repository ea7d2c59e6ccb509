//! The Training API v3.3's JSON shapes that cvnotify reads and writes
//! (`Project`, `ProjectSettings`, `Iteration`, `Export`, `CustomVisionError`).
//!
//! Every field is optional on reading (the spec marks most read-only and
//! the service may omit them), and fields cvnotify does not know are kept
//! (`other`), because UpdateProject takes a *whole* project: a field lost
//! on the way through would be cleared on the service.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A project (`GetProject`, `CreateProject`, `UpdateProject`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub settings: ProjectSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Fields cvnotify does not use (`created`, `thumbnailUri`, ...).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A project's settings, with the two storage fields of the storage
/// integration guide (absent from the v3.3 spec; read-only in v3.4-preview).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_model_container_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_queue_uri: Option<String>,
    /// `domainId`, `classificationType`, `targetExportPlatforms`, ...
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Settings the spec marks read-only; left out of an UpdateProject body,
/// as the storage guide's example body leaves them out.
const READ_ONLY_SETTINGS: [&str; 2] = ["useNegativeSet", "detectionParameters"];

impl Project {
    /// The UpdateProject body the storage guide shows: `name`,
    /// `description`, `settings` (with `settings_uris` applied) and
    /// `status`, everything else of the project as it was read.
    pub fn update_body(&self, uris: &StorageUris) -> Value {
        let mut settings = self.settings.clone();
        for k in READ_ONLY_SETTINGS {
            settings.other.remove(k);
        }
        if let Some(q) = &uris.notification_queue_uri {
            settings.notification_queue_uri = Some(q.clone());
        }
        if let Some(c) = &uris.export_model_container_uri {
            settings.export_model_container_uri = Some(c.clone());
        }
        let mut body = Map::new();
        body.insert("name".into(), Value::String(self.name.clone()));
        body.insert(
            "description".into(),
            self.description.clone().map_or(Value::Null, Value::String),
        );
        body.insert(
            "settings".into(),
            serde_json::to_value(&settings).expect("settings serialize"),
        );
        if let Some(s) = &self.status {
            body.insert("status".into(), Value::String(s.clone()));
        }
        Value::Object(body)
    }
}

/// The two storage URIs setup writes; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageUris {
    pub notification_queue_uri: Option<String>,
    pub export_model_container_uri: Option<String>,
}

impl StorageUris {
    /// As query parameters (the storage guide's CreateProject form).
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(c) = &self.export_model_container_uri {
            q.push(("exportModelContainerUri", c.clone()));
        }
        if let Some(n) = &self.notification_queue_uri {
            q.push(("notificationQueueUri", n.clone()));
        }
        q
    }

    /// As the v3.4-preview `CreateProjectOptions` JSON body.
    pub fn create_options(&self) -> Value {
        let mut m = Map::new();
        if let Some(c) = &self.export_model_container_uri {
            m.insert("exportModelContainerUri".into(), Value::String(c.clone()));
        }
        if let Some(n) = &self.notification_queue_uri {
            m.insert("notificationQueueUri".into(), Value::String(n.clone()));
        }
        Value::Object(m)
    }
}

/// An iteration (`GetIteration`, `GetIterations`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Iteration {
    pub id: Uuid,
    #[serde(default)]
    pub name: String,
    /// `Completed` once trained (other values are not documented).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub exportable: Option<bool>,
    #[serde(default)]
    pub exportable_to: Option<Vec<String>>,
    /// The name it is published under, if any.
    #[serde(default)]
    pub publish_name: Option<String>,
    #[serde(default)]
    pub original_publish_resource_id: Option<String>,
}

impl Iteration {
    /// The publish name, treating an empty string as none.
    pub fn published_as(&self) -> Option<&str> {
        self.publish_name.as_deref().filter(|n| !n.is_empty())
    }
}

/// An export of an iteration (`ExportIteration`, `GetExports`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Export {
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub flavor: Option<String>,
    /// `Exporting`, `Failed` or `Done`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub download_uri: Option<String>,
    #[serde(default)]
    pub newer_version_available: Option<bool>,
}

impl Export {
    /// Whether this is an export of `platform` with `flavor` (no flavor
    /// matches only an export without one). Case-insensitive: the spec's
    /// enums are strings the service echoes.
    pub fn is_of(&self, platform: &str, flavor: Option<&str>) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        same(&self.platform, platform)
            && match (self.flavor.as_deref().filter(|f| !f.is_empty()), flavor) {
                (None, None) => true,
                (Some(a), Some(b)) => same(a, b),
                _ => false,
            }
    }
}

/// The error body. The spec's `CustomVisionError` is `{code, message}`;
/// Azure AI services' gateway answers authentication failures as
/// `{"error": {code, message}}` (not in the spec): both are read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error: Option<Box<ErrorBody>>,
}

impl ErrorBody {
    /// `(code, message)` from either form.
    pub fn parts(&self) -> (Option<String>, Option<String>) {
        match &self.error {
            Some(inner) if self.code.is_none() && self.message.is_none() => {
                (inner.code.clone(), inner.message.clone())
            }
            _ => (self.code.clone(), self.message.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn update_body_keeps_unknown_fields_and_sets_the_uris() {
        let p: Project = serde_json::from_value(json!({
            "id": "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c",
            "name": "birds", "description": null,
            "settings": {"domainId": "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31", "classificationType": "Multiclass",
                "targetExportPlatforms": ["CoreML"], "useNegativeSet": true, "detectionParameters": "x",
                "imageProcessingSettings": {"augmentationMethods": {}}, "futureSetting": 3},
            "created": "2024-01-01T00:00:00Z", "status": "Succeeded"
        }))
        .unwrap();
        let body = p.update_body(&StorageUris {
            notification_queue_uri: Some("https://a.queue.core.windows.net/q".into()),
            export_model_container_uri: None,
        });
        assert_eq!(
            body,
            json!({"name": "birds", "description": null, "status": "Succeeded", "settings": {
                "domainId": "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31", "classificationType": "Multiclass",
                "targetExportPlatforms": ["CoreML"], "imageProcessingSettings": {"augmentationMethods": {}},
                "futureSetting": 3, "notificationQueueUri": "https://a.queue.core.windows.net/q"}})
        );
    }

    #[test]
    fn both_error_shapes_are_read() {
        let a: ErrorBody =
            serde_json::from_str(r#"{"code":"NotFoundProject","message":"no"}"#).unwrap();
        assert_eq!(
            a.parts(),
            (Some("NotFoundProject".into()), Some("no".into()))
        );
        let b: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"401","message":"Access denied"}}"#).unwrap();
        assert_eq!(
            b.parts(),
            (Some("401".into()), Some("Access denied".into()))
        );
    }

    #[test]
    fn exports_match_on_platform_and_flavor() {
        let e = Export {
            platform: "ONNX".into(),
            flavor: None,
            ..Default::default()
        };
        assert!(e.is_of("ONNX", None));
        assert!(e.is_of("onnx", None));
        assert!(!e.is_of("ONNX", Some("ONNX12")));
        let e = Export {
            platform: "TensorFlow".into(),
            flavor: Some("TensorFlowLite".into()),
            ..Default::default()
        };
        assert!(e.is_of("TensorFlow", Some("TensorFlowLite")));
        assert!(!e.is_of("TensorFlow", None));
        assert!(!e.is_of("TensorFlow", Some("TensorFlowNormal")));
    }
}
