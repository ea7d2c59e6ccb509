//! Routing Event Grid events end to end: real Azurite, the real `cvnotify`
//! binary, real shell hooks. Messages are written the way an Event Grid
//! subscription with a `storagequeue` endpoint delivers them (one event per
//! message, base64 or plain JSON, Event Grid schema), so the test goes
//! through the decoder, the `events` grammar and the subject filter
//! together.

use crate::common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

fn base64(event: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(event.to_string())
}

/// `Microsoft.Storage.BlobCreated` for `path` in container `models`.
fn blob_created(path: &str) -> Value {
    json!({
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.Storage/storageAccounts/mystorageaccount",
        "subject": format!("/blobServices/default/containers/models/blobs/{path}"),
        "eventType": "Microsoft.Storage.BlobCreated",
        "id": uuid::Uuid::new_v4().to_string(),
        "data": {
            "api": "PutBlob",
            "clientRequestId": uuid::Uuid::new_v4().to_string(),
            "requestId": uuid::Uuid::new_v4().to_string(),
            "eTag": "0x8DC1A2B3C4D5E6F",
            "contentType": "application/octet-stream",
            "contentLength": 524288,
            "blobType": "BlockBlob",
            "url": format!("https://mystorageaccount.blob.core.windows.net/models/{path}"),
            "sequencer": "00000000000000000000000000017F2A0000000000A1B2C3",
            "storageDiagnostics": { "batchId": uuid::Uuid::new_v4().to_string() }
        },
        "dataVersion": "",
        "metadataVersion": "1",
        "eventTime": "2026-12-02T12:00:00.0000000Z"
    })
}

/// `Microsoft.MachineLearningServices.RunStatusChanged` with `status`.
fn run_status_changed(status: &str) -> Value {
    let run = format!("AutoML_{}", uuid::Uuid::new_v4().simple());
    json!({
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/my-workspace",
        "subject": format!("experiments/0fa9dfaa-cba3-4fa7-b590-23e48548f5c1/runs/{run}"),
        "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
        "id": uuid::Uuid::new_v4().to_string(),
        "data": {
            "experimentId": "0fa9dfaa-cba3-4fa7-b590-23e48548f5c1",
            "experimentName": "automl-birds",
            "runId": run,
            "runType": "automl",
            "runTags": {},
            "runProperties": {},
            "runStatus": status
        },
        "dataVersion": "2",
        "metadataVersion": "1",
        "eventTime": "2026-12-02T12:00:00.0000000Z"
    })
}

/// A hook that records the message id of each run, and keeps the event it
/// got on stdin beside it.
fn recording_hook(w: &World) -> std::path::PathBuf {
    w.hook(
        "hook.sh",
        "cat > \"$DIR/event-$CVNOTIFY_MESSAGE_ID.json\"\necho \"$CVNOTIFY_MESSAGE_ID\" >> \"$DIR/runs.txt\"",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_ends_with_routes_only_matching_blobs() {
    let w = World::new().await;
    let hook = recording_hook(&w);
    let onnx = blob_created("birds/v3/model.onnx");
    let txt = blob_created("birds/v3/labels.txt");
    let ids = w.send_all(&[base64(&onnx), base64(&txt)]).await;
    let cfg = w
        .config()
        .handler(shell_handler(
            &hook,
            "events = [\"blob_created\"]\nsubject_ends_with = \".onnx\"",
        ))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;

    let runs = lines(&w.path("runs.txt"));
    d.assert_eq(
        &runs,
        &vec![ids[0].clone()],
        "the hook ran for the .onnx blob only",
    );
    let got: Value = serde_json::from_str(
        &std::fs::read_to_string(w.path(&format!("event-{}.json", ids[0]))).unwrap(),
    )
    .unwrap();
    d.assert(
        got.to_string().contains("birds/v3/model.onnx"),
        format!("the hook's event names the .onnx blob: {got}"),
    );
    // The .txt event went to no handler: deleted, not poisoned.
    d.assert_eq(&w.queued().await, &0, "messages left in the queue");
    d.assert_eq(
        &w.poisoned().await,
        &Vec::<String>::new(),
        "poisoned messages",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_status_changed_failed_routes_a_failed_run_but_not_a_completed_one() {
    let w = World::new().await;
    let hook = recording_hook(&w);
    // Azure ML's run statuses arrive in any case; the filter ignores it.
    let failed = run_status_changed("failed");
    let completed = run_status_changed("Completed");
    let ids = w.send_all(&[failed.to_string(), base64(&completed)]).await;
    let cfg = w
        .config()
        .handler(shell_handler(
            &hook,
            "events = [\"run_status_changed.Failed\"]",
        ))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;

    let runs = lines(&w.path("runs.txt"));
    d.assert_eq(
        &runs,
        &vec![ids[0].clone()],
        "the hook ran for the failed run only",
    );
    let got = std::fs::read_to_string(w.path(&format!("event-{}.json", ids[0]))).unwrap();
    let run_id = failed["data"]["runId"].as_str().unwrap();
    d.assert(
        got.contains(run_id),
        format!("the hook's event is the failed run {run_id}: {got}"),
    );
    d.assert_eq(&w.queued().await, &0, "messages left in the queue");
    d.assert_eq(
        &w.poisoned().await,
        &Vec::<String>::new(),
        "poisoned messages",
    );
}
