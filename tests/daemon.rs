//! The daemon end to end: real Azurite, real `cvnotify` processes, real
//! shell hooks.

use crate::common;

use common::*;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_handled_exactly_once_by_a_shell_hook() {
    let w = World::new().await;
    let script = w.hook(
        "hook.sh",
        "cat > /dev/null\nprintf '%s %s %s\\n' \"$CVNOTIFY_MESSAGE_ID\" \"$CVNOTIFY_EVENT_TYPE\" \"$CVNOTIFY_STATUS\" >> \"$DIR/handled.txt\"",
    );
    let bodies: Vec<String> = (0..20)
        .map(|i| {
            training(if i % 2 == 0 {
                "TrainingCompleted"
            } else {
                "TrainingFailed"
            })
        })
        .collect();
    let ids = w.send_all(&bodies).await;
    let cfg = w
        .config()
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    w.daemon(&cfg).run_once().await;

    let handled = lines(&w.path("handled.txt"));
    let handled_ids: Vec<&str> = handled
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let unique: HashSet<&str> = handled_ids.iter().copied().collect();
    assert_eq!(handled_ids.len(), 20, "{handled:?}");
    assert_eq!(
        unique,
        ids.iter().map(String::as_str).collect::<HashSet<_>>(),
        "the hook got other ids than were sent"
    );
    assert_eq!(
        handled
            .iter()
            .filter(|l| l.ends_with("Training TrainingFailed"))
            .count(),
        10,
        "{handled:?}"
    );
    assert_eq!(w.queued().await, 0, "messages left in the queue");
    assert!(w.poisoned().await.is_empty(), "{:?}", w.poisoned().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hook_is_retried_with_growing_delay_then_poisoned_verbatim() {
    let w = World::new().await;
    let script = w.hook(
        "fail.sh",
        "echo \"$CVNOTIFY_DEQUEUE_COUNT $(date +%s.%N)\" >> \"$DIR/calls.txt\"\necho 'hook says no' >&2\nexit 3",
    );
    // The reference guide's own layout: odd spacing and newlines must come
    // out of the poison queue byte for byte.
    let body = "{\n\"version\": \"1.0\" ,\n\"type\": \"Training\",\n\"Content\":\n    {\n    \"projectId\": \"00000000-0000-0000-0000-000000000000\",\n    \"iterationId\": \"00000000-0000-0000-0000-000000000000\",\n    \"trainingStatus\": \"TrainingFailed\"\n    }\n}".to_owned();
    w.send_all(std::slice::from_ref(&body)).await;
    let cfg = w
        .config()
        .queue("max_dequeue_count = 3")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut d = w.daemon(&cfg).start();
    w.wait_poisoned(&d, 1).await;
    d.stop_ok().await;

    let calls: Vec<(u32, f64)> = lines(&w.path("calls.txt"))
        .iter()
        .map(|l| {
            let (n, t) = l.split_once(' ').unwrap();
            (n.parse().unwrap(), t.parse().unwrap())
        })
        .collect();
    assert_eq!(
        calls.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "the deliveries the hook saw: {calls:?}"
    );
    // retry_base_delay 1s: hidden >= 1 s after the first failure, >= 2 s
    // after the second (lower bounds only: the machine may be slow).
    assert!(calls[1].1 - calls[0].1 >= 1.0, "{calls:?}");
    assert!(calls[2].1 - calls[1].1 >= 2.0, "{calls:?}");
    assert_eq!(w.poisoned().await, vec![body], "the poisoned body");
    assert_eq!(w.queued().await, 0, "messages left in the queue");
    d.assert_logged("Moved the message to the poison queue");
    d.assert_logged("failed on delivery 3 of max_dequeue_count 3");
    d.assert_logged("hook says no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_goes_to_poison_at_once_while_good_ones_are_handled() {
    let w = World::new().await;
    let (out, handler) = recording_hook(w.dir.path());
    let bad = "{\"type\": \"Training\", \"Content\": {\"projectId\": \"not-a-guid\"}}".to_owned();
    let ids = w
        .send_all(&[
            training("TrainingCompleted"),
            bad.clone(),
            training("TrainingFailed"),
        ])
        .await;
    let cfg = w.config().handler(handler).write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    let handled: BTreeSet<String> = lines(&out).into_iter().collect();
    assert_eq!(
        handled,
        BTreeSet::from([ids[0].clone(), ids[2].clone()]),
        "the hook got other ids than the two good ones"
    );
    assert_eq!(w.poisoned().await, vec![bad], "the poisoned body");
    assert_eq!(w.queued().await, 0, "messages left in the queue");
    let (reason, delivery) = d.poisoning();
    assert!(
        reason.contains("`Content.projectId`: not a GUID"),
        "{reason}"
    );
    assert_eq!(delivery, 1, "poisoned on delivery {delivery}: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_a_message_whose_hook_outlives_the_shutdown_timeout() {
    let w = World::new().await;
    let slow = w.marked_hook("slow.sh", "sleep 30");
    let (mut d, run) = w
        .start_with_running_hook(&slow, w.config().shutdown_timeout("1s"))
        .await;
    // Its record is written before the sleep: the hook runs, and its pid
    // (the leader of its process group) is whole.
    let status = d.stop_within(Duration::from_secs(20)).await;
    d.assert_eq(status.code(), Some(0), "the exit code after SIGTERM");
    assert!(slow.ends().is_empty(), "the hook should have been stopped");
    // The hook's whole process group (sh and its sleep) is gone.
    assert_eq!(
        live_members_of_group(run.pid),
        Vec::<i32>::new(),
        "hook process group still alive"
    );
    // Visible again at once for another instance, not after 5 minutes.
    let q = w.main_queue();
    d.wait_for_within(
        Duration::from_secs(3),
        "the message to be visible again",
        async || World::peek_all(&q).await.len() == 1,
    )
    .await;
    d.assert_logged("Released the message back to the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_short_hook_finish_and_deletes_its_message() {
    let w = World::new().await;
    let short = w.marked_hook("short.sh", "sleep 2");
    let (mut d, _) = w.start_with_running_hook(&short, w.config()).await;
    let status = d.stop_within(Duration::from_secs(20)).await;
    d.assert_eq(status.code(), Some(0), "the exit code after SIGTERM");
    assert_eq!(short.ends().len(), 1, "the hook did not finish");
    assert_eq!(w.queued().await, 0, "the message was not deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_running_past_half_the_visibility_timeout_is_not_delivered_twice() {
    let w = World::new().await;
    let long = w.marked_hook("long.sh", "sleep 9");
    w.send_all(&[training("TrainingCompleted")]).await;
    // 4 s visibility against 9 s of work: without renewal the second
    // consumer would receive the message after 4 s.
    let cfg = w
        .config()
        .queue("visibility_timeout = \"4s\"")
        .handler(long.handler(""))
        .write("c.toml");
    let mut a = w.daemon(&cfg).tag("a").start();
    let mut b = w.daemon(&cfg).tag("b").start();
    if !eventually(Duration::from_secs(40), async || w.queued().await == 0).await {
        fail_with("not handled", &[&a, &b]);
    }
    // Once both stopped, every run either of them started is recorded.
    a.stop_ok().await;
    b.stop_ok().await;
    assert_eq!(long.starts().len(), 1, "delivered more than once");
    let extended = a.count_logged("Extended the message's visibility")
        + b.count_logged("Extended the message's visibility");
    if extended < 2 {
        fail_with(&format!("{extended} visibility extensions"), &[&a, &b]);
    }
}

/// Sends three events and drains them with `run --once` under `config`.
async fn drains_with(w: &World, config: &str) {
    let (out, handler) = recording_hook(w.dir.path());
    let ids = w
        .send_all(&[
            training("TrainingCompleted"),
            training("TrainingFailed"),
            training("TrainingCompleted"),
        ])
        .await;
    let cfg = w.write_config("auth.toml", &format!("{config}\n{handler}"));
    w.daemon(&cfg).tag("auth").run_once().await;
    let handled: BTreeSet<String> = lines(&out).into_iter().collect();
    assert_eq!(
        handled,
        ids.into_iter().collect::<BTreeSet<_>>(),
        "the hook got other ids than were sent"
    );
    assert_eq!(w.queued().await, 0, "messages left in the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_key_with_development_storage() {
    let w = World::new().await;
    let cfg = w.config().render();
    assert!(cfg.contains("UseDevelopmentStorage=true"), "{cfg}");
    drains_with(&w, &cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_key_with_an_explicit_connection_string() {
    let w = World::new().await;
    let cfg = format!(
        "[queue]\nname = \"{}\"\nmax_poll_interval = \"500ms\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};QueueEndpoint={};\"\n[log]\nformat = \"json\"\n",
        w.queue,
        w.azurite.queue_endpoint()
    );
    drains_with(&w, &cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_token() {
    let w = World::new().await;
    let cfg = format!(
        "[queue]\nname = \"{}\"\nendpoint = \"{}\"\nmax_poll_interval = \"500ms\"\n[auth]\nmode = \"sas\"\nsas_token = \"{}\"\n[log]\nformat = \"json\"\n",
        w.queue,
        w.azurite.queue_endpoint(),
        account_sas("raup")
    );
    drains_with(&w, &cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_with_a_good_key_and_names_the_failure_with_a_wrong_one() {
    let w = World::new().await;
    w.send_all(&[]).await;
    let good = w.config().write("good.toml");
    let text = cli().config(&good).arg("check").stdout();
    for name in [
        "config", "token", "queue", "receive", "update", "delete", "poison",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(name)),
            "{name}: {text}"
        );
    }

    let wrong_key = "AAAA".repeat(22);
    let bad = w
        .config()
        .connection_string(&format!(
            "AccountName=devstoreaccount1;AccountKey={wrong_key};QueueEndpoint={}",
            w.azurite.queue_endpoint()
        ))
        .write("bad.toml");
    cli()
        .config(&bad)
        .arg("check")
        .run()
        .assert_code(1)
        .assert_stdout_shows("FAIL")
        .assert_hides(&wrong_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_only_to_the_handlers_whose_filter_matches() {
    let w = World::new().await;
    let record =
        |to: &str| format!("echo \"$CVNOTIFY_EVENT_TYPE $CVNOTIFY_STATUS\" >> \"$DIR/{to}\"");
    let ha = w.hook("a.sh", &record("a.txt"));
    let hb = w.hook("b.sh", &record("b.txt"));
    let export = r#"{"version":"1.0","type":"Export","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportCompleted","modelUri":"https://a.blob.core.windows.net/m/x.onnx"}}"#;
    let ct = r#"{"version":"1.0","type":"ConnectionTest","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c"}}"#;
    w.send_all(&[
        training("TrainingCompleted"),
        training("TrainingFailed"),
        export.to_owned(),
        ct.to_owned(),
    ])
    .await;
    let cfg = w
        .config()
        .handler(shell_handler(&ha, "events = [\"training.failed\"]"))
        .handler(shell_handler(
            &hb,
            "events = [\"export.*\", \"connection_test\"]",
        ))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    assert_eq!(
        lines(&w.path("a.txt")),
        vec!["Training TrainingFailed"],
        "what handler a (training.failed) got"
    );
    let mut got_b = lines(&w.path("b.txt"));
    got_b.sort();
    assert_eq!(
        got_b,
        vec!["ConnectionTest ", "Export ExportCompleted"],
        "what handler b (export.*, connection_test) got"
    );
    assert_eq!(w.queued().await, 0, "messages left in the queue");
    d.assert_logged("No handler takes this event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let w = World::new().await;
    // The hook echoes the model URI to stdout, which the daemon logs.
    let script = w.hook(
        "echo.sh",
        "echo \"uri=$CVNOTIFY_MODEL_URI\"\necho \"$CVNOTIFY_MODEL_URI\" > \"$DIR/seen.txt\"",
    );
    let model_sig = "ModelSigValue0123456789abcdef%3D";
    let model_uri = format!(
        "https://acct.blob.core.windows.net/models/p%20-%20i.ONNX?sv=2022-11-02&sr=b&sig={model_sig}"
    );
    let export = format!(
        r#"{{"version":"1.0","type":"Export","Content":{{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportCompleted","modelUri":"{model_uri}"}}}}"#
    );
    w.send_all(&[export]).await;
    let sas = account_sas("raup");
    let sas_sig = sas.split("sig=").nth(1).unwrap().to_owned();
    let cfg = format!(
        "[queue]\nname = \"{}\"\nendpoint = \"{}\"\n[auth]\nmode = \"sas\"\nsas_token = \"{sas}\"\n[log]\nformat = \"json\"\nlevel = \"trace\"\n[[handlers]]\ntype = \"log\"\n{}",
        w.queue,
        w.azurite.queue_endpoint(),
        shell_handler(&script, "")
    );
    let cfg = w.write_config("c.toml", &cfg);
    let d = w.daemon(&cfg).run_once().await;
    // The hook got the real URI; the logs got neither signature.
    assert_eq!(
        lines(&w.path("seen.txt")),
        vec![model_uri],
        "the model URI the hook got"
    );
    d.assert_logged("Hook output");
    d.assert_logged("REDACTED");
    for secret in [model_sig, &sas_sig, DEV_KEY] {
        d.assert_not_logged(secret);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_is_retried_with_backoff_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let queue = "q-outage";
    let (out, handler) = recording_hook(dir.path());
    let cfg = write_file(
        dir.path(),
        "c.toml",
        &format!(
            "[queue]\nname = \"{queue}\"\nendpoint = \"http://127.0.0.1:{port}/devstoreaccount1\"\nmax_poll_interval = \"500ms\"\nrequest_timeout = \"2s\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"UseDevelopmentStorage=true\"\n[log]\nformat = \"json\"\n{handler}"
        ),
    );
    // Nothing listens on the port yet.
    let mut d = Daemon::start(&cfg, &["run"], dir.path(), "d");
    tokio::time::sleep(Duration::from_secs(8)).await;
    d.assert_running("while storage was unreachable");
    let warnings = d.records_of("Receiving from the queue failed; retrying");
    assert!(
        warnings.iter().all(|r| r["level"] == "WARN"),
        "{warnings:?}"
    );
    // Back-off 1, 2, 4 s...: a handful of attempts in 8 s, not a busy loop.
    assert!(
        (2..=6).contains(&warnings.len()),
        "{} attempts in 8 s",
        warnings.len()
    );
    let delays: Vec<u64> = warnings
        .iter()
        .map(|r| r["retry_in_ms"].as_u64().unwrap())
        .collect();
    assert!(
        delays.windows(2).all(|p| p[1] >= p[0]),
        "back-off not growing: {delays:?}"
    );

    let azurite = Azurite::builder(Service::Queue).port(port).start().await;
    let q = queue_client(&std::fs::read_to_string(&cfg).unwrap(), queue);
    q.create_if_missing().await.unwrap();
    let id = q
        .send(&training("TrainingCompleted"), Expiry::ServiceDefault)
        .await
        .unwrap()
        .id;
    d.wait_for_within(
        Duration::from_secs(40),
        "the message sent after the outage to be handled",
        async || lines(&out) == vec![id.clone()],
    )
    .await;
    d.stop_ok().await;
    drop(azurite);
}

#[test]
fn a_credential_without_a_token_fails_start_up_naming_the_mode() {
    // App Service managed identity pointed at a closed loopback port: no
    // request leaves the machine.
    let closed = free_port();
    let (_dir, cfg) = temp_config(
        "[queue]\nname = \"q-x\"\nendpoint = \"https://127.0.0.1:9/devstoreaccount1\"\n[auth]\nmode = \"managed_identity\"\nstartup_timeout = \"3s\"\n",
    );
    cli()
        .config(&cfg)
        .args(["run", "--once"])
        .env(
            "IDENTITY_ENDPOINT",
            format!("http://127.0.0.1:{closed}/msi/token"),
        )
        .env("IDENTITY_HEADER", "test")
        .env_remove("MSI_ENDPOINT")
        .run()
        .assert_code(69)
        .assert_stderr_shows("auth.mode = \"managed_identity\" could not get a token")
        .assert_stderr_shows("auth.client_id")
        .assert_stderr_shows("attempts in 3s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_hook_gets_the_event_on_stdin_and_in_its_environment() {
    let w = World::new().await;
    let work = w.path("work");
    std::fs::create_dir(&work).unwrap();
    let script = w.hook(
        "dump.sh",
        "cat > stdin.json\npwd > pwd.txt\nprintf '%s|%s|%s|%s|%s|%s|%s|%s|%s' \"$CVNOTIFY_EVENT_TYPE\" \"$CVNOTIFY_PROJECT_ID\" \"$CVNOTIFY_ITERATION_ID\" \"$CVNOTIFY_STATUS\" \"$CVNOTIFY_MODEL_URI\" \"$CVNOTIFY_MESSAGE_ID\" \"$CVNOTIFY_DEQUEUE_COUNT\" \"$EXTRA\" \"${CVNOTIFY__AUTH__CONNECTION_STRING-unset}\" > env.txt",
    );
    let uri = "https://acct.blob.core.windows.net/models/p.ONNX?sv=1&sig=abc";
    let body = format!(
        r#"{{"version":"1.0","type":"Export","Content":{{"projectId":"8A1C2C4E-5B57-4A8E-9F3C-1D2E3F4A5B6C","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportCompleted","modelUri":"{uri}"}}}}"#
    );
    let id = w.send_all(&[body]).await.remove(0);
    let extra = format!(
        "working_dir = \"{}\"\nenv = {{ EXTRA = \"x y $(z)\" }}",
        work.display()
    );
    let cfg = w
        .config()
        .handler(shell_handler(&script, &extra))
        .write("c.toml");
    // A secret-bearing override in the daemon's environment must not reach
    // the hook.
    w.daemon(&cfg)
        .envs(&[(
            "CVNOTIFY__AUTH__CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        )])
        .run_once()
        .await;

    let read = |name: &str| std::fs::read_to_string(work.join(name)).unwrap();
    assert_eq!(
        read("pwd.txt").trim(),
        work.to_str().unwrap(),
        "the hook's working directory"
    );
    assert_eq!(
        read("env.txt"),
        format!(
            "Export|8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c|0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f|ExportCompleted|{uri}|{id}|1|x y $(z)|unset"
        ),
        "the hook's environment"
    );
    let stdin: serde_json::Value = serde_json::from_str(&read("stdin.json")).unwrap();
    assert_eq!(stdin["type"], "Export", "{stdin}");
    assert_eq!(
        stdin["project_id"], "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c",
        "{stdin}"
    );
    assert_eq!(stdin["status"], "ExportCompleted", "{stdin}");
    assert_eq!(stdin["model_uri"], uri, "{stdin}");
    assert_eq!(stdin["message_id"], id.as_str(), "{stdin}");
    assert_eq!(stdin["dequeue_count"], 1, "{stdin}");
    assert!(
        stdin["received_at"].as_str().unwrap().ends_with('Z'),
        "{stdin}"
    );
    assert_eq!(
        stdin["raw"]["Content"]["projectId"], "8A1C2C4E-5B57-4A8E-9F3C-1D2E3F4A5B6C",
        "{stdin}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_hook_past_its_timeout_is_killed_and_counts_as_a_failure() {
    let w = World::new().await;
    let hang = w.marked_hook("hang.sh", "sleep 30 &\nsleep 30");
    let body = training("TrainingCompleted");
    w.send_all(std::slice::from_ref(&body)).await;
    let cfg = w
        .config()
        .queue("max_dequeue_count = 1")
        .handler(hang.handler("timeout = \"1s\""))
        .write("c.toml");
    let mut d = w.daemon(&cfg).start();
    w.wait_poisoned(&d, 1).await;
    d.stop_ok().await;
    d.assert_logged("timed out after 1s and was killed");
    // Both the hook and the sleep it put in the background are gone.
    let pgid = hang.starts()[0].pid;
    assert_eq!(
        live_members_of_group(pgid),
        Vec::<i32>::new(),
        "hook process group still alive"
    );
    assert_eq!(w.poisoned().await, vec![body], "the poisoned body");
}

/// Regression: the hook-output reader once held a span guard across
/// `.await`, so log lines of one message carried the spans of others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_output_lines_carry_only_their_own_message_span() {
    let w = World::new().await;
    let script = w.hook(
        "echo.sh",
        "echo \"id=$CVNOTIFY_MESSAGE_ID\"\nsleep 0.2\necho \"id=$CVNOTIFY_MESSAGE_ID\" >&2",
    );
    let bodies: Vec<String> = (0..12).map(|_| training("TrainingCompleted")).collect();
    w.send_all(&bodies).await;
    let cfg = w
        .config()
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    let outputs = d.records_of("Hook output");
    d.assert_eq(outputs.len(), 24, "Hook output records of 12 messages");
    for r in &outputs {
        let spans = r["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2, "{r}");
        assert_eq!(spans[0]["name"], "message", "{r}");
        assert_eq!(spans[1]["name"], "handler", "{r}");
        let printed = r["output"].as_str().unwrap().trim_start_matches("id=");
        assert_eq!(spans[0]["message_id"].as_str().unwrap(), printed, "{r}");
    }
}
