//! Routing Event Grid events end to end: real Azurite, the real `cvnotify`
//! binary, real shell hooks. Messages are written the way an Event Grid
//! subscription with a `storagequeue` endpoint delivers them (one event per
//! message, base64 or plain JSON, Event Grid schema), so the test goes
//! through the decoder, the `events` grammar and the subject filter
//! together.

use crate::common;

use common::eventgrid::{self, b64, event_grid};
use common::*;
use serde_json::{Value, json};

const STORAGE: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.Storage/storageAccounts/mystorageaccount";

/// `Microsoft.Storage.BlobCreated` for `path` in container `models`.
fn blob_created(path: &str) -> Value {
    let url = format!("https://mystorageaccount.blob.core.windows.net/models/{path}");
    eventgrid::blob_created(
        STORAGE,
        &url,
        ("models", path),
        (
            "0x8DC1A2B3C4D5E6F",
            "00000000000000000000000000017F2A0000000000A1B2C3",
        ),
    )
}

/// `Microsoft.MachineLearningServices.RunStatusChanged` with `status`.
fn run_status_changed(status: &str) -> Value {
    let run = format!("AutoML_{}", uuid::Uuid::new_v4().simple());
    let experiment = "0fa9dfaa-cba3-4fa7-b590-23e48548f5c1";
    event_grid(
        "Microsoft.MachineLearningServices.RunStatusChanged",
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/my-workspace",
        &format!("experiments/{experiment}/runs/{run}"),
        json!({
            "experimentId": experiment,
            "experimentName": "automl-birds",
            "runId": run,
            "runType": "automl",
            "runTags": {},
            "runProperties": {},
            "runStatus": status
        }),
    )
}

/// A hook that records the message id of each run, and keeps the event it
/// got on stdin beside it.
fn recording_hook(w: &World) -> std::path::PathBuf {
    w.hook(
        "hook.sh",
        "cat > \"$DIR/event-$CVNOTIFY_MESSAGE_ID.json\"\necho \"$CVNOTIFY_MESSAGE_ID\" >> \"$DIR/runs.txt\"",
    )
}

/// Sends `bodies`, drains them once with the recording hook under the
/// handler keys `keys`, and checks that the hook ran for the first message
/// only (`what`) and that every message left the queue, none poisoned (the
/// others went to no handler: deleted). The event the hook got, as text.
async fn only_the_first_is_routed(w: &World, bodies: &[String], keys: &str, what: &str) -> String {
    let hook = recording_hook(w);
    let ids = w.send_all(bodies).await;
    let cfg = w
        .config()
        .handler(shell_handler(&hook, keys))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    let runs = lines(&w.path("runs.txt"));
    d.assert_eq(&runs, &vec![ids[0].clone()], what);
    d.assert_eq(&w.queued().await, &0, "messages left in the queue");
    d.assert_eq(
        &w.poisoned().await,
        &Vec::<String>::new(),
        "poisoned messages",
    );
    std::fs::read_to_string(w.path(&format!("event-{}.json", ids[0]))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_ends_with_routes_only_matching_blobs() {
    let w = World::new().await;
    let onnx = blob_created("birds/v3/model.onnx");
    let txt = blob_created("birds/v3/labels.txt");
    let got = only_the_first_is_routed(
        &w,
        &[b64(&onnx), b64(&txt)],
        "events = [\"blob_created\"]\nsubject_ends_with = \".onnx\"",
        "the hook ran for the .onnx blob only",
    )
    .await;
    let got: Value = serde_json::from_str(&got).unwrap();
    assert!(
        got.to_string().contains("birds/v3/model.onnx"),
        "the hook's event names the .onnx blob: {got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_status_changed_failed_routes_a_failed_run_but_not_a_completed_one() {
    let w = World::new().await;
    // Azure ML's run statuses arrive in any case; the filter ignores it.
    let failed = run_status_changed("failed");
    let completed = run_status_changed("Completed");
    let got = only_the_first_is_routed(
        &w,
        &[failed.to_string(), b64(&completed)],
        "events = [\"run_status_changed.Failed\"]",
        "the hook ran for the failed run only",
    )
    .await;
    let run_id = failed["data"]["runId"].as_str().unwrap();
    assert!(
        got.contains(run_id),
        "the hook's event is the failed run {run_id}: {got}"
    );
}
