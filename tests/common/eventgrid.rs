//! Event Grid and CloudEvents events as the tests send them: built from the
//! schemas' documented fields, and base64-encoded as Event Grid puts them
//! on a queue.

use base64::Engine as _;
use serde_json::{Value, json};

/// An event in the Event Grid schema.
pub fn event_grid(ty: &str, topic: &str, subject: &str, data: Value) -> Value {
    json!({"id": uuid::Uuid::new_v4(), "topic": topic, "subject": subject, "eventType": ty,
           "eventTime": "2026-11-21T06:01:11.737Z", "data": data,
           "dataVersion": "1", "metadataVersion": "1"})
}

/// An event in the CloudEvents 1.0 schema (structured JSON).
pub fn cloud_event(ty: &str, source: &str, subject: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": uuid::Uuid::new_v4(), "source": source,
           "subject": subject, "type": ty, "time": "2026-11-21T06:01:11.737Z", "data": data})
}

/// The subject Blob Storage writes for `blob` in `container`.
pub fn blob_subject(container: &str, blob: &str) -> String {
    format!("/blobServices/default/containers/{container}/blobs/{blob}")
}

/// `Microsoft.Storage.BlobCreated` in the Event Grid schema for the blob
/// at `url`, whose subject names `container` and `blob` (the name as it
/// is), with the `data` fields the docs show.
pub fn blob_created(
    topic: &str,
    url: &str,
    (container, blob): (&str, &str),
    (etag, sequencer): (&str, &str),
) -> Value {
    event_grid(
        "Microsoft.Storage.BlobCreated",
        topic,
        &blob_subject(container, blob),
        json!({
            "api": "PutBlob",
            "clientRequestId": uuid::Uuid::new_v4().to_string(),
            "requestId": uuid::Uuid::new_v4().to_string(),
            "eTag": etag,
            "contentType": "application/octet-stream",
            "contentLength": 1024,
            "blobType": "BlockBlob",
            "url": url,
            "sequencer": sequencer,
            "storageDiagnostics": {"batchId": uuid::Uuid::new_v4().to_string()}
        }),
    )
}

/// `event` as Event Grid puts it on a queue: base64 of its JSON.
pub fn b64(event: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(event.to_string())
}
