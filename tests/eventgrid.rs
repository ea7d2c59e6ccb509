//! Event Grid and CloudEvents messages (Azure Machine Learning, Blob
//! Storage, any other type) end to end through the daemon on Azurite:
//! decoded by shape, one handler run per event of an array, one settle per
//! message, malformed ones poisoned with the field named.

use crate::common;

use common::eventgrid::{b64, blob_subject, cloud_event, event_grid};
use common::*;
use serde_json::{Value, json};

const WS: &str =
    "/subscriptions/s/resourceGroups/ml/providers/Microsoft.MachineLearningServices/workspaces/ws";
const STORAGE: &str =
    "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct";

fn blob_created(container: &str, blob: &str) -> Value {
    event_grid(
        "Microsoft.Storage.BlobCreated",
        STORAGE,
        &blob_subject(container, blob),
        json!({"api": "PutBlockList", "eTag": "\"0x8D4BCC2E4835CD0\"",
               "contentType": "application/octet-stream", "contentLength": 1024,
               "blobType": "BlockBlob", "sequencer": "0000000000000442",
               "url": format!("https://acct.blob.core.windows.net/{container}/{blob}?sv=1&sig=secret")}),
    )
}

/// A hook appending one line per run to `runs.txt`: the event's type,
/// subject and message id.
fn recording_hook(w: &World) -> std::path::PathBuf {
    w.hook(
        "record.sh",
        "cat > /dev/null\necho \"$CVNOTIFY_EVENT_TYPE|$CVNOTIFY_SUBJECT|$CVNOTIFY_MESSAGE_ID\" >> \"$DIR/runs.txt\"",
    )
}

/// `cvnotify send --type model-registered --schema cloudevents` enqueues a
/// CloudEvents `ModelRegistered`; a webhook's body carries `model_name`
/// and `model_version`, with the original event under `raw`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudevents_model_registered_reaches_the_webhook_with_its_model() {
    let w = World::new().await;
    let receiver = receiver(200).await;
    let cfg = w
        .config()
        .handler(format!(
            "[[handlers]]\ntype = \"webhook\"\nurl = \"{}/hook\"\nevents = [\"*\"]\n",
            receiver.uri()
        ))
        .write("c.toml");
    let sent = cli()
        .config(&cfg)
        .args([
            "send",
            "--type",
            "model-registered",
            "--schema",
            "cloudevents",
        ])
        .args([
            "--model-name",
            "sign-detector",
            "--model-version",
            "3",
            "--base64",
        ])
        .run();
    sent.assert_success();
    let id = sent.stdout().trim().to_owned();
    let d = w.daemon(&cfg).run_once().await;
    let reqs = receiver.received_requests().await.unwrap();
    d.assert_eq(reqs.len(), 1, "webhook requests");
    let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    d.assert_eq(&body["type"], &json!("model_registered"), "type");
    d.assert_eq(&body["model_name"], &json!("sign-detector"), "model_name");
    d.assert_eq(&body["model_version"], &json!("3"), "model_version");
    d.assert_eq(
        &body["subject"],
        &json!("models/sign-detector:3"),
        "subject",
    );
    d.assert_eq(&body["schema"], &json!("cloudevents"), "schema");
    d.assert_eq(&body["raw"]["specversion"], &json!("1.0"), "raw");
    d.assert_eq(&body["message_id"], &json!(id), "message_id");
    let webhook_id = reqs[0].headers.get("webhook-id").unwrap().to_str().unwrap();
    d.assert_eq(
        webhook_id,
        id.as_str(),
        "a lone event keeps the message's id",
    );
    assert_eq!(w.queued().await, 0, "messages left in the queue");
}

/// Three events in one message: three runs of the handler in order, each
/// with its own delivery id, and one delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_of_three_events_runs_the_handlers_three_times_and_deletes_once() {
    let w = World::new().await;
    let receiver = receiver(200).await;
    let script = recording_hook(&w);
    let array = json!([
        blob_created("models", "automl/model.onnx"),
        cloud_event(
            "Microsoft.MachineLearningServices.RunStatusChanged",
            WS,
            "experiments/e/runs/r",
            json!({"runId": "r", "runStatus": "Failed", "runType": null})
        ),
        event_grid(
            "Microsoft.MachineLearningServices.ModelDeployed",
            WS,
            "endpoints/svc",
            json!({"ServiceName": "svc", "ModelIds": "m:1,m:2"})
        ),
    ]);
    let id = w.send_all(&[b64(&array)]).await.remove(0);
    let cfg = w
        .config()
        .handler(shell_handler(&script, "events = [\"*\"]"))
        .handler(format!(
            "[[handlers]]\ntype = \"webhook\"\nurl = \"{}/hook\"\nevents = [\"*\"]\n",
            receiver.uri()
        ))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    d.assert_eq(
        lines(&w.path("runs.txt")),
        vec![
            format!(
                "blob_created|/blobServices/default/containers/models/blobs/automl/model.onnx|{id}"
            ),
            format!("run_status_changed|experiments/e/runs/r|{id}"),
            format!("model_deployed|endpoints/svc|{id}"),
        ],
        "one hook run per event, in order",
    );
    let ids: Vec<String> = receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.headers
                .get("webhook-id")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    d.assert_eq(
        ids,
        vec![format!("{id}.0"), format!("{id}.1"), format!("{id}.2")],
        "webhook ids",
    );
    d.assert_eq(d.count_logged("\"Message handled\""), 1, "messages handled");
    // Each event's lines carry it: the `event` span with its index.
    let done = d.log_lines_with("Handler succeeded");
    d.assert_eq(done.len(), 6, "handler lines");
    for (i, line) in done.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        let event = v["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "event"))
            .unwrap_or_else(|| panic!("no event span in {line}"));
        d.assert_eq(&event["index"], &json!(i / 2), "the event span's index");
    }
    assert_eq!(w.queued().await, 0, "messages left in the queue");
    assert!(w.poisoned().await.is_empty(), "nothing poisoned");
}

/// A handler failing on the second event of an array fails the message:
/// it is retried whole (the first event's handlers run again: they must be
/// idempotent) and poisoned at `max_dequeue_count`; the third never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_on_one_event_of_an_array_retries_and_poisons_the_whole_message() {
    let w = World::new().await;
    let script = w.hook(
        "fail.sh",
        "cat > /dev/null\necho \"$CVNOTIFY_DEQUEUE_COUNT $CVNOTIFY_EVENT_TYPE\" >> \"$DIR/runs.txt\"\n[ \"$CVNOTIFY_EVENT_TYPE\" = run_completed ] && exit 1\nexit 0",
    );
    let array = json!([
        blob_created("models", "m.onnx"),
        event_grid(
            "Microsoft.MachineLearningServices.RunCompleted",
            WS,
            "experiments/e/runs/r",
            json!({})
        ),
        blob_created("models", "n.onnx"),
    ]);
    w.send_all(&[array.to_string()]).await;
    let cfg = w
        .config()
        .queue("max_dequeue_count = 2\npoison_format = \"envelope\"")
        .handler(shell_handler(&script, "events = [\"*\"]"))
        .write("c.toml");
    let mut d = w.daemon(&cfg).start();
    w.wait_poisoned(&d, 1).await;
    d.stop().await;
    d.assert_eq(
        lines(&w.path("runs.txt")),
        [
            "1 blob_created",
            "1 run_completed",
            "2 blob_created",
            "2 run_completed",
        ]
        .map(str::to_owned)
        .to_vec(),
        "runs",
    );
    cli()
        .config(&cfg)
        .args(["poison", "list"])
        .run()
        .assert_success()
        .assert_stdout_shows("Microsoft.Storage.BlobCreated subject=/blobServices/default/containers/models/blobs/m.onnx; Microsoft.MachineLearningServices.RunCompleted")
        .assert_stdout_shows("failed on delivery 2 of max_dequeue_count 2");
}

/// An Event Grid type cvnotify does not know reaches a handler listening
/// to `unknown`, with its type as sent and its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_event_grid_type_reaches_a_handler_listening_to_unknown() {
    let w = World::new().await;
    let script = w.hook(
        "unknown.sh",
        "cat > \"$DIR/stdin.json\"\nprintf '%s|%s|%s' \"$CVNOTIFY_EVENT_TYPE\" \"$CVNOTIFY_DATA\" \"$CVNOTIFY_SCHEMA\" > \"$DIR/env.txt\"",
    );
    let other = w.hook("other.sh", "touch \"$DIR/other-ran\"");
    let event = event_grid(
        "Microsoft.Resources.ResourceWriteSuccess",
        "/subscriptions/s",
        "/subscriptions/s/resourceGroups/g",
        json!({"status": "Succeeded"}),
    );
    w.send_all(&[event.to_string()]).await;
    let cfg = w
        .config()
        .handler(shell_handler(&script, "events = [\"unknown\"]"))
        .handler(shell_handler(&other, "events = [\"training\", \"export\"]"))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    let env = std::fs::read_to_string(w.path("env.txt")).unwrap_or_default();
    d.assert_eq(
        env.as_str(),
        r#"Microsoft.Resources.ResourceWriteSuccess|{"status":"Succeeded"}|eventgrid"#,
        "the hook's environment",
    );
    let stdin: Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("stdin.json")).unwrap()).unwrap();
    d.assert_eq(&stdin["raw"], &event, "the original event under raw");
    d.assert(
        !w.path("other-ran").exists(),
        "a training/export handler ran",
    );
    assert_eq!(w.queued().await, 0, "messages left in the queue");
}

/// Malformed Event Grid events are poisoned at once, each with the field
/// and the problem in its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_poisoned_with_the_field_named() {
    let w = World::new().await;
    let script = recording_hook(&w);
    let mut no_type = blob_created("c", "m");
    no_type.as_object_mut().unwrap().remove("eventType");
    let mut bad_url = blob_created("c", "m");
    bad_url["data"]["url"] = json!("file:///etc/passwd");
    let bodies = [
        no_type.to_string(),
        b64(&event_grid(
            "Microsoft.MachineLearningServices.ModelRegistered",
            WS,
            "models/m:1",
            json!("not an object"),
        )),
        bad_url.to_string(),
        json!([blob_created("c", "m"), {"specversion": "1.0", "id": "x"}]).to_string(),
    ];
    w.send_all(&bodies).await;
    let cfg = w
        .config()
        .queue("poison_format = \"envelope\"")
        .handler(shell_handler(&script, "events = [\"*\"]"))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    d.assert_eq(w.poisoned().await.len(), 4, "poisoned");
    d.assert(!w.path("runs.txt").exists(), "a handler ran");
    cli()
        .config(&cfg)
        .args(["poison", "list"])
        .run()
        .assert_success()
        .assert_stdout_shows("`eventType`: missing")
        .assert_stdout_shows("`data`: expected an object, found a string")
        .assert_stdout_shows("`data.url`: scheme `file` is not allowed")
        .assert_stdout_shows("`[1].type`: missing");
}

/// A base64 Event Grid `BlobCreated` (Azurite's path-style URL, no blob
/// subject) is decoded and handled; the hook's environment has the
/// documented variables, and a `ModelRegistered` its model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base64_blob_created_reaches_the_hook_with_its_variables() {
    let w = World::new().await;
    let script = w.hook(
        "env.sh",
        "cat > /dev/null\nprintf '%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s\\n' \"$CVNOTIFY_EVENT_TYPE\" \"$CVNOTIFY_EVENT_ID\" \"$CVNOTIFY_SOURCE\" \"$CVNOTIFY_SUBJECT\" \"$CVNOTIFY_SCHEMA\" \"$CVNOTIFY_BLOB_URL\" \"$CVNOTIFY_CONTAINER\" \"$CVNOTIFY_BLOB\" \"$CVNOTIFY_ETAG\" \"$CVNOTIFY_MODEL_NAME\" \"$CVNOTIFY_MODEL_VERSION\" >> \"$DIR/env.txt\"",
    );
    let url = "http://127.0.0.1:10000/devstoreaccount1/models/run%201/model.onnx";
    let blob = event_grid(
        "Microsoft.Storage.BlobCreated",
        STORAGE,
        "storage-event",
        json!({"url": url, "eTag": "\"0x1\"", "contentLength": 3}),
    );
    let model = event_grid(
        "Microsoft.MachineLearningServices.ModelRegistered",
        WS,
        "models/m:4",
        json!({"ModelName": "m", "ModelVersion": 4}),
    );
    w.send_all(&[b64(&blob), b64(&model)]).await;
    let cfg = w
        .config()
        .handler(shell_handler(&script, "events = [\"*\"]"))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    let mut got = lines(&w.path("env.txt"));
    got.sort();
    d.assert_eq(
        got,
        vec![
            format!(
                "blob_created|{}|{STORAGE}|storage-event|eventgrid|{url}|models|run 1/model.onnx|0x1||",
                blob["id"].as_str().unwrap()
            ),
            format!(
                "model_registered|{}|{WS}|models/m:4|eventgrid|||||m|4",
                model["id"].as_str().unwrap()
            ),
        ],
        "the hooks' environment",
    );
    assert_eq!(w.queued().await, 0, "messages left in the queue");
}

/// `cvnotify decode` shows every event of an array.
#[test]
fn decode_shows_every_event_of_an_array() {
    let array = json!([
        blob_created("models", "m.onnx"),
        cloud_event(
            "Microsoft.MachineLearningServices.ModelRegistered",
            WS,
            "models/m:1",
            json!({"modelName": "m", "modelVersion": 1})
        ),
    ]);
    let out = cli()
        .args(["decode", "-"])
        .stdin_bytes(b64(&array))
        .stdout();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"][0]["type"], "blob_created", "{v}");
    assert_eq!(v["events"][0]["container"], "models", "{v}");
    assert_eq!(v["events"][1]["type"], "model_registered", "{v}");
    assert_eq!(v["events"][1]["model_version"], "1", "{v}");
    assert_eq!(v["events"][1]["schema"], "cloudevents", "{v}");
}

/// With traces on, an Event Grid event's span carries the CloudEvents
/// semantic conventions' attributes: the message span for a lone event,
/// one `event {i}` child per element of an array, whose handler spans are
/// its children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_spans_carry_the_cloudevents_attributes() {
    use crate::traces::{attributes, spans};
    let w = World::new().await;
    let collector = collector(200).await;
    let script = w.hook("ok.sh", "cat > /dev/null");
    let lone = cloud_event(
        "Microsoft.MachineLearningServices.ModelRegistered",
        WS,
        "models/m:1",
        json!({"modelName": "m", "modelVersion": 1}),
    );
    let array = json!([blob_created("c", "a.onnx"), blob_created("c", "b.onnx")]);
    let ids = w.send_all(&[lone.to_string(), array.to_string()]).await;
    let cfg = w
        .config()
        .log_level("info")
        .handler(shell_handler(
            &script,
            "name = \"deploy\"\nevents = [\"*\"]",
        ))
        .extra(format!(
            "[telemetry]\notlp_endpoint = \"{}\"\n",
            collector.uri()
        ))
        .write("c.toml");
    w.daemon(&cfg).run_once().await;
    let spans = spans(&collector).await;
    let message = |id: &str| {
        spans
            .iter()
            .find(|s| {
                attributes(s)
                    .get("messaging.message.id")
                    .map(String::as_str)
                    == Some(id)
            })
            .unwrap_or_else(|| panic!("no span of message {id}"))
    };
    let attrs = attributes(message(&ids[0]));
    assert_eq!(
        attrs["cloudevents.event_id"],
        lone["id"].as_str().unwrap(),
        "{attrs:?}"
    );
    assert_eq!(
        attrs["cloudevents.event_type"], "Microsoft.MachineLearningServices.ModelRegistered",
        "{attrs:?}"
    );
    assert_eq!(
        attrs["cloudevents.event_subject"], "models/m:1",
        "{attrs:?}"
    );
    assert_eq!(attrs["event_type"], "model_registered", "{attrs:?}");
    let parent = message(&ids[1]);
    assert!(
        !attributes(parent).contains_key("cloudevents.event_id"),
        "the array's message span names no event"
    );
    for i in 0..2 {
        let event = spans
            .iter()
            .find(|s| s.parent_span_id == parent.span_id && s.name == format!("event {i}"))
            .unwrap_or_else(|| panic!("no span `event {i}`"));
        let attrs = attributes(event);
        assert_eq!(
            attrs["cloudevents.event_id"],
            array[i]["id"].as_str().unwrap()
        );
        assert_eq!(
            attrs["cloudevents.event_type"],
            "Microsoft.Storage.BlobCreated"
        );
        assert_eq!(
            attrs["cloudevents.event_subject"],
            array[i]["subject"].as_str().unwrap()
        );
        assert_eq!(attrs["index"], i.to_string(), "{attrs:?}");
        assert!(
            spans
                .iter()
                .any(|s| s.parent_span_id == event.span_id && s.name == "handler deploy"),
            "the handler span of event {i} is its child"
        );
    }
}
