//! The `customvision` handler: exports and publishes on training events,
//! idempotently, through the daemon and in process; retries honouring
//! `Retry-After`; permanent failures poisoned at once; the fast notice of
//! a requested export. Against real Azurite (queue and blob services) and
//! the loopback stand-in for the Custom Vision Training API
//! (`common::customvision`, written from the reference: no real Custom
//! Vision service is reachable here).

use crate::common;

use common::customvision::{CustomVision, CvOptions, Fault, handler_ctx};
use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

fn training_of(project: Uuid, iteration: Uuid) -> String {
    format!(
        r#"{{"version":"1.0","type":"Training","Content":{{"projectId":"{project}","iterationId":"{iteration}","trainingStatus":"TrainingCompleted"}}}}"#
    )
}

/// `[[handlers]]` of type customvision with `keys`.
fn cv_handler(keys: &str) -> String {
    format!("[[handlers]]\ntype = \"customvision\"\n{keys}\n")
}

/// A customvision handler with `keys`, built in process against `cv`
/// (its `[customvision]` section with `section` keys more).
fn in_process(cv: &CustomVision, section: &str, keys: &str) -> Arc<dyn Handler> {
    let text = format!(
        "[queue]\nname = \"q-x\"\nendpoint = \"http://127.0.0.1:1/devstoreaccount1\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"UseDevelopmentStorage=true\"\n{}{}",
        cv.section(section),
        cv_handler(keys)
    );
    let config = Config::from_toml(&text).unwrap();
    config.handlers[0].build(&handler_ctx(&config)).unwrap()
}

/// The error `handler` returns for the `Training` message of `iteration`,
/// which must be permanent (a retryable one fails the test).
async fn permanent_error(handler: &Arc<dyn Handler>, project: Uuid, iteration: Uuid) -> String {
    let e = handler
        .handle(&delivery_of(&training_of(project, iteration), "m1", 1))
        .await
        .expect_err("the handler should have refused the message");
    assert!(e.is_permanent(), "expected a permanent error, got: {e}");
    e.to_string()
}

/// Sends the `Training` message of `iteration` and runs a daemon once, at
/// log level info, with a customvision handler exporting to ONNX and
/// `queue_keys` in its `[queue]`: (the daemon, the message's body).
async fn export_onnx_once(
    w: &World,
    cv: &CustomVision,
    project: Uuid,
    iteration: Uuid,
    queue_keys: &str,
) -> (Daemon, String) {
    let cfg = w
        .config()
        .log_level("info")
        .queue(queue_keys)
        .extra(cv.section(""))
        .handler(cv_handler("export = [{ platform = \"ONNX\" }]"))
        .write("c.toml");
    let body = training_of(project, iteration);
    w.send_all(std::slice::from_ref(&body)).await;
    (w.daemon(&cfg).run_once().await, body)
}

const PREDICTION: &str =
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/pred";

/// Message ids with a "Message handled" record, and how often.
fn handled_ids(d: &Daemon) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in d.records() {
        if r["message"] == "Message handled" {
            let id = r["spans"][0]["message_id"]
                .as_str()
                .unwrap_or("?")
                .to_owned();
            *out.entry(id).or_default() += 1;
        }
    }
    out
}

/// Project `birds` with two exportable iterations, the older published
/// as `production`: (project, old, new).
fn production_and_a_newer(cv: &CustomVision) -> (uuid::Uuid, uuid::Uuid, uuid::Uuid) {
    let project = cv.add_project("birds");
    let old = cv.add_iteration(project, &["ONNX"], true);
    let new = cv.add_iteration(project, &["ONNX"], true);
    cv.set_published(old, "production");
    (project, old, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_training_is_exported_backed_up_downloaded_and_handed_to_a_hook_once() {
    let w = World::new().await;
    let blobs = Azurite::builder(Service::Blob).start().await;
    let blob_endpoint = format!("http://127.0.0.1:{}/devstoreaccount1", blobs.port);
    let container = create_container(&blob_endpoint, "models").await;
    let cv = CustomVision::start(CvOptions::default()).await;
    let project = cv.add_project("birds");
    let iteration = cv.add_iteration(project, &["ONNX", "CoreML"], true);
    let queue_url = format!("{}/{}", w.azurite.queue_endpoint(), w.queue);
    cv.set_storage(project, &queue_url, Some(&container));

    let models = w.path("models");
    let got = w.path("hook.txt");
    let script = w.hook(
        "on-export.sh",
        "echo \"$CVNOTIFY_PROJECT_ID $CVNOTIFY_ITERATION_ID $CVNOTIFY_MODEL_URI\" >> \"$DIR/hook.txt\"",
    );
    let cfg = w
        .config()
        .extra(cv.section(""))
        .handler(cv_handler("export = [{ platform = \"ONNX\" }]"))
        .handler(format!(
            "[[handlers]]\ntype = \"download\"\ndir = \"{}\"\nallowed_hosts = [\"127.0.0.1:{}\"]\ncontainer = \"{container}\"\n",
            models.display(),
            blobs.port
        ))
        .handler(shell_handler(&script, "events = [\"export.completed\"]"))
        .write("c.toml");
    let training = training_of(project, iteration);
    let ids = w.send_all(std::slice::from_ref(&training)).await;
    let mut d = w.daemon(&cfg).start();

    // Training → ExportIteration → backup blob + Export message → download
    // and hook.
    let stored = models.join(format!("{project} - {iteration}.ONNX"));
    d.wait_for("the model stored and the hook run", async || {
        stored.exists() && !lines(&got).is_empty()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&stored).unwrap(),
        format!("model ONNX of {iteration}"),
        "the stored model"
    );
    let hook_saw = lines(&got);
    assert_eq!(hook_saw.len(), 1, "{hook_saw:?}");
    let expected_uri = format!("{container}/{project}%20-%20{iteration}.ONNX");
    assert_eq!(
        hook_saw[0],
        format!("{project} {iteration} {expected_uri}"),
        "what the hook got"
    );
    assert_eq!(
        cv.count("POST", &format!("/iterations/{iteration}/export")),
        1,
        "{:?}",
        cv.requests()
    );
    let export_request = cv
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(
        export_request.query,
        vec![("platform".to_owned(), "ONNX".to_owned())],
        "the export request's query"
    );

    // A redelivery of the Training event: GetExports shows it Done, so no
    // second export is requested.
    let again = w.send_all(&[training]).await;
    d.wait_for("three messages handled", async || {
        handled_ids(&d).len() == 3
    })
    .await;
    let requests = |method: &str| cv.count(method, &format!("/iterations/{iteration}/export"));
    assert_eq!(requests("GET"), 2, "{:?}", cv.requests());
    assert_eq!(requests("POST"), 1, "{:?}", cv.requests());
    d.stop_ok().await;

    // Each of the three messages (two Training, one Export) handled and
    // deleted once; nothing poisoned or left; the hook ran once.
    let handled = handled_ids(&d);
    assert_eq!(handled.len(), 3, "{handled:?}");
    assert!(handled.values().all(|n| *n == 1), "{handled:?}");
    assert!(
        handled.contains_key(&ids[0]) && handled.contains_key(&again[0]),
        "{handled:?}"
    );
    d.assert_eq(
        d.records_of("Message handled").len(),
        3,
        "\"Message handled\" records",
    );
    assert_eq!(w.queued().await, 0, "messages left in the queue");
    d.assert_eq(w.poisoned().await, Vec::new(), "poisoned messages");
    assert_eq!(lines(&got).len(), 1, "the hook ran more than once");
}

/// Issue 17, finding 11: `replace` unpublished the iteration holding the
/// name and then published the new one, so between the two calls (and for
/// good if the second failed) nothing answered predictions under the name.
/// Now one PublishIteration with `overwrite=true` moves it: the name is
/// never without an iteration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_replace_moves_the_name_in_one_call_and_a_redelivery_changes_nothing() {
    let cv = CustomVision::start(CvOptions::default()).await;
    let (project, old, new) = production_and_a_newer(&cv);
    let handler = in_process(&cv, "", &replacing());
    let event = training_of(project, new);
    handler.handle(&delivery_of(&event, "m1", 1)).await.unwrap();
    assert_eq!(cv.iteration(new)["publishName"], "production", "new");
    assert_eq!(
        cv.iteration(new)["originalPublishResourceId"],
        PREDICTION,
        "new"
    );
    assert!(
        cv.iteration(old)["publishName"].is_null(),
        "the old iteration kept the name"
    );
    assert_eq!(cv.count("DELETE", "/publish"), 0, "{:?}", cv.requests());
    let publish = cv
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(
        publish.query,
        vec![
            ("publishName".to_owned(), "production".to_owned()),
            ("predictionId".to_owned(), PREDICTION.to_owned()),
            ("overwrite".to_owned(), "true".to_owned())
        ],
        "the publish request's query"
    );
    // Never a moment without an iteration under the name.
    assert_eq!(
        cv.holders_of("production"),
        vec![vec![new]],
        "who held the name, call by call"
    );
    // Redelivered: already published under the name.
    handler.handle(&delivery_of(&event, "m1", 2)).await.unwrap();
    assert_eq!(cv.count("POST", "/publish"), 1, "{:?}", cv.requests());
    assert_eq!(cv.count("DELETE", "/publish"), 0, "{:?}", cv.requests());
}

/// The `publish` keys that move `production` to the trained iteration.
fn replacing() -> String {
    format!(
        "publish = {{ name = \"production\", prediction_resource_id = \"{PREDICTION}\", replace = true }}"
    )
}

/// The fallback of finding 11: where the service refuses `overwrite`,
/// ignores it (the name is then "in use"), or answers `true` while the
/// name stays with the old iteration (read back with GetIterations), the
/// handler unpublishes the holder and publishes, as before, and says so in
/// a WARN. Through the daemon, for each of the three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_replace_falls_back_to_two_calls_when_overwrite_does_not_move_the_name() {
    use common::customvision::Overwrite;
    let w = World::new().await;
    for (mode, reason) in [
        (
            Overwrite::Rejected,
            "the service refused PublishIteration with overwrite=true: PublishIteration: the service answered 400 BadRequest",
        ),
        (
            Overwrite::Ignored,
            "the service refused PublishIteration with overwrite=true: PublishIteration: the service answered 400 BadRequestInvalidPublishName",
        ),
        (
            Overwrite::TrueButUnchanged,
            "PublishIteration with overwrite=true answered true, but GetIterations shows `production` still on iteration",
        ),
    ] {
        let cv = CustomVision::start(CvOptions {
            overwrite: mode,
            ..CvOptions::default()
        })
        .await;
        let (project, old, new) = production_and_a_newer(&cv);
        let cfg = w
            .config()
            .queue("max_dequeue_count = 1")
            .extra(cv.section(""))
            .handler(cv_handler(&replacing()))
            .write("c.toml");
        w.send_all(&[training_of(project, new)]).await;
        let tag = format!("{mode:?}");
        let d = w.daemon(&cfg).tag(&tag).run_once().await;
        d.assert_eq(w.poisoned().await, Vec::new(), format!("{tag}: poisoned"));
        assert_eq!(w.queued().await, 0, "{tag}: messages left in the queue");
        assert_eq!(cv.iteration(new)["publishName"], "production", "{tag}");
        assert!(cv.iteration(old)["publishName"].is_null(), "{tag}");
        let calls: Vec<(String, String, bool)> = cv
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/publish"))
            .map(|r| {
                let overwrite = r.query.iter().any(|(k, v)| k == "overwrite" && v == "true");
                (r.method, r.path, overwrite)
            })
            .collect();
        let path = |i: Uuid| format!("/projects/{project}/iterations/{i}/publish");
        assert_eq!(
            calls,
            vec![
                ("POST".to_owned(), path(new), true),
                ("DELETE".to_owned(), path(old), false),
                ("POST".to_owned(), path(new), false),
            ],
            "{tag}"
        );
        // The fallback has the gap the one call avoids, and says so.
        assert_eq!(
            cv.holders_of("production"),
            vec![vec![], vec![new]],
            "{tag}"
        );
        let warns: Vec<_> = d
            .records_of("Falling back to UnpublishIteration then PublishIteration; predictions under the name fail in between")
            .into_iter()
            .filter(|r| r["level"] == "WARN")
            .collect();
        d.assert(!warns.is_empty(), format!("{tag}: no WARN"));
        let warn = &warns[0];
        assert!(
            warn["reason"].as_str().unwrap().starts_with(reason),
            "{tag}: {warn}"
        );
    }
}

/// The fallback is not taken when the overwrite call failed for a reason
/// the second call would hit too (a wrong prediction resource) or for a
/// moment (the service busy): the old iteration keeps the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_replace_never_unpublishes_when_the_publish_itself_cannot_succeed() {
    let cv = CustomVision::start(CvOptions::default()).await;
    let (project, old, new) = production_and_a_newer(&cv);
    let handler = in_process(&cv, "retry_max_delay = \"1s\"", &replacing());
    let event = training_of(project, new);
    // A 400 is answered once (not retried); a 503 to each of the call's
    // max_attempts = 3.
    for (status, body, times, permanent) in [
        (
            400,
            r#"{"code":"BadRequestInvalidPublishTarget","message":"Invalid prediction resource"}"#,
            1,
            true,
        ),
        (503, r#"{"code":"ErrorUnknown","message":"Busy"}"#, 3, false),
    ] {
        cv.inject(Fault {
            method: "POST",
            path_contains: "/publish".into(),
            status,
            headers: vec![],
            body: body.into(),
            times,
        });
        let e = handler
            .handle(&delivery_of(&event, "m1", 1))
            .await
            .unwrap_err();
        assert_eq!(e.is_permanent(), permanent, "{e}");
        assert_eq!(cv.iteration(old)["publishName"], "production", "{e}");
        assert_eq!(cv.count("DELETE", "/publish"), 0, "{e}");
    }
    assert_eq!(cv.count("POST", "/publish"), 1 + 3, "{:?}", cv.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_without_replace_refuses_a_name_another_iteration_holds_permanently() {
    let cv = CustomVision::start(CvOptions::default()).await;
    let project = cv.add_project("birds");
    let old = cv.add_iteration(project, &["ONNX"], true);
    let new = cv.add_iteration(project, &["ONNX"], true);
    let free = cv.add_project("other");
    let lone = cv.add_iteration(free, &["ONNX"], true);
    cv.set_published(old, "production");
    let handler = in_process(
        &cv,
        "",
        &format!(
            "publish = {{ name = \"production\", prediction_resource_id = \"{PREDICTION}\" }}"
        ),
    );
    assert_eq!(
        permanent_error(&handler, project, new).await,
        format!(
            "publish name `production` is held by iteration {old}; set publish.replace = true to move it to iteration {new}"
        ),
        "the error"
    );
    assert_eq!(cv.iteration(old)["publishName"], "production", "old");
    assert_eq!(
        cv.count("DELETE", "/publish") + cv.count("POST", "/publish"),
        0,
        "{:?}",
        cv.requests()
    );
    // A free name is taken without replace.
    handler
        .handle(&delivery_of(&training_of(free, lone), "m2", 1))
        .await
        .unwrap();
    assert_eq!(cv.iteration(lone)["publishName"], "production", "lone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_call_waits_for_retry_after_and_then_succeeds() {
    let cv = CustomVision::start(CvOptions::default()).await;
    let project = cv.add_project("birds");
    let iteration = cv.add_iteration(project, &["ONNX"], true);
    cv.inject(Fault {
        method: "GET",
        path_contains: "/export".into(),
        status: 429,
        headers: vec![("Retry-After".into(), "2".into())],
        body: r#"{"code":"429","message":"Rate limit is exceeded. Try again in 2 seconds."}"#
            .into(),
        times: 1,
    });
    let handler = in_process(&cv, "", "export = [{ platform = \"ONNX\" }]");
    handler
        .handle(&delivery_of(&training_of(project, iteration), "m1", 1))
        .await
        .unwrap();
    let gets: Vec<SystemTime> = cv
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/export"))
        .map(|r| r.at)
        .collect();
    assert_eq!(gets.len(), 2, "{:?}", cv.requests());
    let waited = gets[1].duration_since(gets[0]).unwrap();
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After not honoured: {waited:?}"
    );
    assert_eq!(cv.count("POST", "/export"), 1, "{:?}", cv.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_the_service_refuses_is_poisoned_at_once_with_its_reason() {
    let w = World::new().await;
    let cv = CustomVision::start(CvOptions::default()).await;
    let project = cv.add_project("birds");
    // GetIteration does not list exportableTo: the service's error decides.
    let iteration = cv.add_iteration(project, &["CoreML"], false);
    let (d, body) = export_onnx_once(&w, &cv, project, iteration, "max_dequeue_count = 5").await;
    assert_eq!(w.poisoned().await, vec![body], "the poisoned body");
    assert_eq!(w.queued().await, 0, "messages left in the queue");
    let (reason, delivery) = d.poisoning();
    assert!(reason.starts_with("permanent failure: handler `customvision#0` failed: exporting to ONNX: ExportIteration: the service answered 400 BadRequestProjectUnsupportedExportPlatform"), "{reason}");
    assert!(
        reason.contains("remove the platform from `export`"),
        "{reason}"
    );
    assert_eq!(delivery, 1, "poisoned on delivery {delivery}: {reason}");
    // Not retried, in process or through the queue.
    assert_eq!(cv.count("POST", "/export"), 1, "{:?}", cv.requests());
}

/// Issue 17, finding 9: GetIteration listing 3.5 MB of `exportableTo`
/// made a 3.5 MB log line and a reason too large for the poison envelope:
/// the message went to the poison queue verbatim, its reason lost. Now the
/// reason is a few KiB, the envelope carries it, and no log line is long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_9_a_3_5_mb_exportable_to_list_gives_a_bounded_reason_the_envelope_carries() {
    let w = World::new().await;
    let cv = CustomVision::start(CvOptions::default()).await;
    let project = cv.add_project("birds");
    let platforms: Vec<String> = (0..200_000).map(|n| format!("Platform{n:08}")).collect();
    let listed: Vec<&str> = platforms.iter().map(String::as_str).collect();
    let iteration = cv.add_iteration(project, &listed, true);
    assert!(
        cv.iteration(iteration).to_string().len() > 3_500_000,
        "the stand-in's iteration is smaller than the finding's"
    );
    let (d, body) =
        export_onnx_once(&w, &cv, project, iteration, "poison_format = \"envelope\"").await;
    let poisoned = w.poisoned().await;
    d.assert_eq(poisoned.len(), 1, "poisoned messages");
    assert!(
        poisoned[0].contains("cvnotify_envelope"),
        "poisoned verbatim, its reason lost: {:.300}",
        poisoned[0]
    );
    let envelope: serde_json::Value = serde_json::from_str(&poisoned[0]).unwrap();
    assert_eq!(envelope["body"], body.as_str(), "the envelope's body");
    let reason = envelope["reason"].as_str().expect("the envelope's reason");
    assert!(
        reason.starts_with("permanent failure: handler `customvision#0` failed: iteration"),
        "{reason:.300}"
    );
    assert!(
        reason.contains("exportable only to Platform00000000"),
        "{reason:.300}"
    );
    assert!(reason.len() <= 8 * 1024, "{} bytes of reason", reason.len());
    let longest = d.logs().lines().map(str::len).max().unwrap_or(0);
    eprintln!(
        "reason {} bytes, longest log line {longest} bytes, envelope {} bytes",
        reason.len(),
        poisoned[0].len()
    );
    assert!(longest <= 16 * 1024, "a log line of {longest} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iteration_not_exportable_to_a_platform_is_refused_before_any_request() {
    let cv = CustomVision::start(CvOptions::default()).await;
    let project = cv.add_project("birds");
    let iteration = cv.add_iteration(project, &["CoreML"], true);
    let handler = in_process(
        &cv,
        "",
        "export = [{ platform = \"CoreML\" }, { platform = \"TensorFlow\", flavor = \"TensorFlowLite\" }]",
    );
    assert_eq!(
        permanent_error(&handler, project, iteration).await,
        format!(
            "iteration {iteration} cannot be exported to TensorFlow/TensorFlowLite: it is exportable only to CoreML (the project's domain decides)"
        ),
        "the error"
    );
    // CoreML was still exported; TensorFlow never requested.
    let posts: Vec<_> = cv
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(
        posts[0].query,
        vec![("platform".to_owned(), "CoreML".to_owned())],
        "the export request's query"
    );
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_notification_of_a_requested_export_is_handled_at_once_despite_a_30s_poll_interval()
 {
    let w = World::new().await;
    let cv = CustomVision::start(CvOptions {
        // Without the expectation, the back-off (100 ms doubling) would
        // next poll about 12.7 s after the Training message: 4-5 s late.
        export_delay: Duration::from_secs(7),
        ..Default::default()
    })
    .await;
    let project = cv.add_project("birds");
    let iteration = cv.add_iteration(project, &["ONNX"], true);
    let queue_url = format!("{}/{}", w.azurite.queue_endpoint(), w.queue);
    // No container: the service then sends a SAS URL of its own blob.
    cv.set_storage(project, &queue_url, None);
    let got = w.path("handled-at.txt");
    let script = w.hook("at.sh", "date +%s.%N >> \"$DIR/handled-at.txt\"");
    let cfg = w
        .config()
        .poll_intervals("100ms", "30s")
        .extra(cv.section(""))
        .handler(cv_handler("export = [{ platform = \"ONNX\" }]"))
        .handler(shell_handler(&script, "events = [\"export.completed\"]"))
        .write("c.toml");
    w.send_all(&[training_of(project, iteration)]).await;
    let mut d = w.daemon(&cfg).start();
    d.wait_for("the hook to run on the Export message", async || {
        !lines(&got).is_empty()
    })
    .await;
    let written = cv
        .written()
        .into_iter()
        .find(|x| x.kind == "Export")
        .unwrap_or_else(|| panic!("the stand-in wrote no Export message: {:?}", cv.written()));
    let arrived = written.at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let handled: f64 = lines(&got)[0].parse().unwrap();
    let latency = handled - arrived;
    eprintln!("Export message written at {arrived:.3}, handled at {handled:.3}: {latency:.3} s");
    // Target 1 s; bounded generously for a loaded machine, far below the
    // 30 s the back-off would reach without the expectation.
    d.assert(
        latency < 3.0,
        format!("handled {latency:.3} s after it arrived"),
    );
    assert!(unix_now() - handled < 60.0, "the hook's clock: {handled}");
    d.stop_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_key_from_the_environment_is_used_but_never_inherited_by_hooks() {
    let w = World::new().await;
    let cv = CustomVision::start(CvOptions::default()).await;
    let project = cv.add_project("birds");
    let iteration = cv.add_iteration(project, &["ONNX"], true);
    let script = w.hook("env.sh", "env > \"$DIR/env.txt\"");
    let cfg = w
        .config()
        .extra(format!(
            "\n[customvision]\nendpoint = \"{}\"\ntraining_key_env = \"CV_TEST_TRAINING_KEY\"\n",
            cv.endpoint()
        ))
        .handler(cv_handler("export = [{ platform = \"ONNX\" }]"))
        .handler(shell_handler(
            &script,
            "events = [\"training.*\"]\ninherit_env = true",
        ))
        .write("c.toml");
    w.send_all(&[training_of(project, iteration)]).await;
    let d = w
        .daemon(&cfg)
        .envs(&[
            ("CV_TEST_TRAINING_KEY", &cv.options.key),
            ("UNRELATED_VARIABLE", "kept"),
        ])
        .run_once()
        .await;
    // The key from the environment reached the service...
    d.assert_eq(cv.count("POST", "/export"), 1, "ExportIteration calls");
    // ...and not the hook, nor the logs.
    let env = std::fs::read_to_string(w.path("env.txt")).unwrap();
    assert!(env.contains("UNRELATED_VARIABLE=kept"), "{env}");
    assert!(!env.contains(&cv.options.key), "{env}");
    d.assert_not_logged(&cv.options.key);
}
