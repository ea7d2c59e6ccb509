//! The daemon end to end: real Azurite, real `cvnotify` processes, real
//! shell hooks.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::collections::{BTreeSet, HashSet};

use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_handled_exactly_once_by_a_shell_hook() {
    let w = World::new().await;
    let out = w.path("handled.txt");
    let script = hook(
        &w,
        "hook.sh",
        &format!(
            "cat > /dev/null\nprintf '%s %s %s\\n' \"$CVNOTIFY_MESSAGE_ID\" \"$CVNOTIFY_EVENT_TYPE\" \"$CVNOTIFY_STATUS\" >> {}",
            out.display()
        ),
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
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    let status = d
        .wait_timeout(LIMIT)
        .await
        .expect("run --once did not finish");
    assert!(status.success(), "exit {status:?}\n{}", d.logs());

    let handled = lines(&out);
    let handled_ids: Vec<&str> = handled
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let unique: HashSet<&str> = handled_ids.iter().copied().collect();
    assert_eq!(handled_ids.len(), 20, "{handled:?}");
    assert_eq!(
        unique,
        ids.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    assert_eq!(
        handled
            .iter()
            .filter(|l| l.ends_with("Training TrainingFailed"))
            .count(),
        10
    );
    assert_eq!(World::length(&w.main_queue()).await, 0);
    assert!(World::peek_all(&w.poison_queue()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hook_is_retried_with_growing_delay_then_poisoned_verbatim() {
    let w = World::new().await;
    let calls = w.path("calls.txt");
    let script = hook(
        &w,
        "fail.sh",
        &format!(
            "echo \"$CVNOTIFY_DEQUEUE_COUNT $(date +%s.%N)\" >> {}\necho 'hook says no' >&2\nexit 3",
            calls.display()
        ),
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
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    let poison = w.poison_queue();
    assert!(
        eventually(LIMIT, async || !World::peek_all(&poison).await.is_empty()).await,
        "never poisoned\n{}",
        d.logs()
    );
    d.signal(Signal::SIGTERM);
    let status = d.wait_timeout(LIMIT).await.expect("no exit after SIGTERM");
    assert!(status.success(), "{status:?}");

    let calls: Vec<(u32, f64)> = lines(&calls)
        .iter()
        .map(|l| {
            let (n, t) = l.split_once(' ').unwrap();
            (n.parse().unwrap(), t.parse().unwrap())
        })
        .collect();
    assert_eq!(calls.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    // retry_base_delay 1s: hidden >= 1 s after the first failure, >= 2 s
    // after the second (lower bounds only: the machine may be slow).
    assert!(calls[1].1 - calls[0].1 >= 1.0, "{calls:?}");
    assert!(calls[2].1 - calls[1].1 >= 2.0, "{calls:?}");
    assert_eq!(World::peek_all(&poison).await, vec![body]);
    assert_eq!(World::length(&w.main_queue()).await, 0);
    let logs = d.logs();
    assert!(
        logs.contains("Moved the message to the poison queue"),
        "{logs}"
    );
    assert!(
        logs.contains("failed on delivery 3 of max_dequeue_count 3"),
        "{logs}"
    );
    assert!(logs.contains("hook says no"), "hook stderr not logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_goes_to_poison_at_once_while_good_ones_are_handled() {
    let w = World::new().await;
    let out = w.path("handled.txt");
    let script = hook(
        &w,
        "ok.sh",
        &format!("echo \"$CVNOTIFY_MESSAGE_ID\" >> {}", out.display()),
    );
    let bad = "{\"type\": \"Training\", \"Content\": {\"projectId\": \"not-a-guid\"}}".to_owned();
    let ids = w
        .send_all(&[
            training("TrainingCompleted"),
            bad.clone(),
            training("TrainingFailed"),
        ])
        .await;
    let cfg = w
        .config()
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    assert!(
        d.wait_timeout(LIMIT).await.unwrap().success(),
        "{}",
        d.logs()
    );
    let handled: BTreeSet<String> = lines(&out).into_iter().collect();
    assert_eq!(handled, BTreeSet::from([ids[0].clone(), ids[2].clone()]));
    assert_eq!(World::peek_all(&w.poison_queue()).await, vec![bad]);
    assert_eq!(World::length(&w.main_queue()).await, 0);
    let poisoned: Vec<_> = d
        .records()
        .into_iter()
        .filter(|r| r["message"] == "Moved the message to the poison queue")
        .collect();
    assert_eq!(poisoned.len(), 1);
    let reason = poisoned[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("`Content.projectId`: not a GUID"),
        "{reason}"
    );
    assert_eq!(
        poisoned[0]["spans"][0]["dequeue_count"], 1,
        "{:?}",
        poisoned[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_a_message_whose_hook_outlives_the_shutdown_timeout() {
    let w = World::new().await;
    let started = w.path("started");
    let done = w.path("done");
    let script = hook(
        &w,
        "slow.sh",
        &format!(
            "echo $$ > {}\nsleep 30\necho done >> {}",
            started.display(),
            done.display()
        ),
    );
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w
        .config()
        .shutdown_timeout("1s")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    assert!(
        eventually(LIMIT, async || started.exists()).await,
        "{}",
        d.logs()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hook_pid: i32 = std::fs::read_to_string(&started)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_timeout(Duration::from_secs(20))
        .await
        .expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert!(!done.exists(), "the hook should have been stopped");
    // The hook's whole process group (sh and its sleep) is gone.
    assert_eq!(
        live_members_of_group(hook_pid),
        Vec::<i32>::new(),
        "hook process group still alive"
    );
    // Visible again at once for another instance, not after 5 minutes.
    let q = w.main_queue();
    assert!(
        eventually(Duration::from_secs(3), async || World::peek_all(&q)
            .await
            .len()
            == 1)
        .await,
        "message not released"
    );
    assert!(d.logs().contains("Released the message back to the queue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_short_hook_finish_and_deletes_its_message() {
    let w = World::new().await;
    let started = w.path("started");
    let done = w.path("done");
    let script = hook(
        &w,
        "short.sh",
        &format!(
            "touch {}\nsleep 2\necho done >> {}",
            started.display(),
            done.display()
        ),
    );
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w
        .config()
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    assert!(
        eventually(LIMIT, async || started.exists()).await,
        "{}",
        d.logs()
    );
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_timeout(Duration::from_secs(20))
        .await
        .expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert_eq!(lines(&done).len(), 1);
    assert_eq!(World::length(&w.main_queue()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_running_past_half_the_visibility_timeout_is_not_delivered_twice() {
    let w = World::new().await;
    let calls = w.path("calls.txt");
    let script = hook(
        &w,
        "long.sh",
        &format!(
            "echo \"$CVNOTIFY_MESSAGE_ID\" >> {}\nsleep 9",
            calls.display()
        ),
    );
    w.send_all(&[training("TrainingCompleted")]).await;
    // 4 s visibility against 9 s of work: without renewal the second
    // consumer would receive the message after 4 s.
    let cfg = w
        .config()
        .queue("visibility_timeout = \"4s\"")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut a = Daemon::start(&cfg, &["run"], w.dir.path(), "a");
    let mut b = Daemon::start(&cfg, &["run"], w.dir.path(), "b");
    let q = w.main_queue();
    assert!(
        eventually(Duration::from_secs(40), async || World::length(&q).await
            == 0)
        .await,
        "not handled\n{}\n{}",
        a.logs(),
        b.logs()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.signal(Signal::SIGTERM);
    b.signal(Signal::SIGTERM);
    assert!(a.wait_timeout(LIMIT).await.unwrap().success());
    assert!(b.wait_timeout(LIMIT).await.unwrap().success());
    assert_eq!(lines(&calls).len(), 1, "delivered more than once");
    let logs = a.logs() + &b.logs();
    assert!(
        logs.matches("Extended the message's visibility").count() >= 2,
        "{logs}"
    );
}

/// Sends three events and drains them with `run --once` under `config`.
async fn drains_with(w: &World, config: &str) {
    let out = w.path("handled.txt");
    let script = hook(
        w,
        "ok.sh",
        &format!("echo \"$CVNOTIFY_MESSAGE_ID\" >> {}", out.display()),
    );
    let ids = w
        .send_all(&[
            training("TrainingCompleted"),
            training("TrainingFailed"),
            training("TrainingCompleted"),
        ])
        .await;
    let cfg = w.write_config(
        "auth.toml",
        &format!("{config}\n{}", shell_handler(&script, "")),
    );
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "auth");
    let status = d.wait_timeout(LIMIT).await.expect("did not finish");
    assert!(status.success(), "{status:?}\n{}", d.logs());
    let handled: BTreeSet<String> = lines(&out).into_iter().collect();
    assert_eq!(handled, ids.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(World::length(&w.main_queue()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_key_with_development_storage() {
    let w = World::new().await;
    let cfg = w.config().render();
    assert!(cfg.contains("UseDevelopmentStorage=true"));
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
    let out = cli().config(&bad).arg("check").assert_exit(1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL"), "{text}");
    assert!(!text.contains(&wrong_key), "the key was printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_only_to_the_handlers_whose_filter_matches() {
    let w = World::new().await;
    let a = w.path("a.txt");
    let b = w.path("b.txt");
    let ha = hook(
        &w,
        "a.sh",
        &format!(
            "echo \"$CVNOTIFY_EVENT_TYPE $CVNOTIFY_STATUS\" >> {}",
            a.display()
        ),
    );
    let hb = hook(
        &w,
        "b.sh",
        &format!(
            "echo \"$CVNOTIFY_EVENT_TYPE $CVNOTIFY_STATUS\" >> {}",
            b.display()
        ),
    );
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
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    assert!(
        d.wait_timeout(LIMIT).await.unwrap().success(),
        "{}",
        d.logs()
    );
    assert_eq!(lines(&a), vec!["Training TrainingFailed"]);
    let mut got_b = lines(&b);
    got_b.sort();
    assert_eq!(got_b, vec!["ConnectionTest ", "Export ExportCompleted"]);
    assert_eq!(World::length(&w.main_queue()).await, 0);
    assert!(d.logs().contains("No handler takes this event"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let w = World::new().await;
    let seen = w.path("seen.txt");
    // The hook echoes the model URI to stdout, which the daemon logs.
    let script = hook(
        &w,
        "echo.sh",
        &format!(
            "echo \"uri=$CVNOTIFY_MODEL_URI\"\necho \"$CVNOTIFY_MODEL_URI\" > {}",
            seen.display()
        ),
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
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    assert!(
        d.wait_timeout(LIMIT).await.unwrap().success(),
        "{}",
        d.logs()
    );
    // The hook got the real URI; the logs got neither signature.
    assert_eq!(lines(&seen), vec![model_uri]);
    let logs = d.logs();
    assert!(logs.contains("Hook output"), "hook output not logged");
    assert!(logs.contains("REDACTED"), "{logs}");
    for secret in [model_sig, &sas_sig, DEV_KEY] {
        assert!(!logs.contains(secret), "{secret} leaked:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_is_retried_with_backoff_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let queue = "q-outage";
    let (out, handler) = recording_hook(dir.path());
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[queue]\nname = \"{queue}\"\nendpoint = \"http://127.0.0.1:{port}/devstoreaccount1\"\nmax_poll_interval = \"500ms\"\nrequest_timeout = \"2s\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"UseDevelopmentStorage=true\"\n[log]\nformat = \"json\"\n{handler}"
        ),
    )
    .unwrap();
    // Nothing listens on the port yet.
    let mut d = Daemon::start(&cfg, &["run"], dir.path(), "d");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon exited:\n{}",
        d.logs()
    );
    let warnings: Vec<serde_json::Value> = d
        .records()
        .into_iter()
        .filter(|r| r["message"] == "Receiving from the queue failed; retrying")
        .collect();
    assert!(warnings.iter().all(|r| r["level"] == "WARN"));
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
    assert!(
        eventually(Duration::from_secs(40), async || lines(&out)
            == vec![id.clone()])
        .await,
        "not handled after the outage\n{}",
        d.logs()
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_timeout(LIMIT).await.unwrap().success());
    drop(azurite);
}

#[test]
fn a_credential_without_a_token_fails_start_up_naming_the_mode() {
    // App Service managed identity pointed at a closed loopback port: no
    // request leaves the machine.
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[queue]\nname = \"q-x\"\nendpoint = \"https://127.0.0.1:9/devstoreaccount1\"\n[auth]\nmode = \"managed_identity\"\nstartup_timeout = \"3s\"\n",
    )
    .unwrap();
    let out = cli()
        .config(&cfg)
        .args(["run", "--once"])
        .env(
            "IDENTITY_ENDPOINT",
            format!("http://127.0.0.1:{closed}/msi/token"),
        )
        .env("IDENTITY_HEADER", "test")
        .env_remove("MSI_ENDPOINT")
        .assert_exit(69);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.mode = \"managed_identity\" could not get a token"),
        "{err}"
    );
    assert!(err.contains("auth.client_id"), "no hint: {err}");
    assert!(err.contains("attempts in 3s"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_hook_gets_the_event_on_stdin_and_in_its_environment() {
    let w = World::new().await;
    let work = w.path("work");
    std::fs::create_dir(&work).unwrap();
    let script = hook(
        &w,
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
    let mut d = Daemon::start_with_env(
        &cfg,
        &["run", "--once"],
        w.dir.path(),
        "d",
        &[(
            "CVNOTIFY__AUTH__CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        )],
    );
    assert!(
        d.wait_timeout(LIMIT).await.unwrap().success(),
        "{}",
        d.logs()
    );

    assert_eq!(
        std::fs::read_to_string(work.join("pwd.txt"))
            .unwrap()
            .trim(),
        work.to_str().unwrap()
    );
    let env = std::fs::read_to_string(work.join("env.txt")).unwrap();
    assert_eq!(
        env,
        format!(
            "Export|8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c|0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f|ExportCompleted|{uri}|{id}|1|x y $(z)|unset"
        )
    );
    let stdin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("stdin.json")).unwrap()).unwrap();
    assert_eq!(stdin["type"], "Export");
    assert_eq!(stdin["project_id"], "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c");
    assert_eq!(stdin["status"], "ExportCompleted");
    assert_eq!(stdin["model_uri"], uri);
    assert_eq!(stdin["message_id"], id.as_str());
    assert_eq!(stdin["dequeue_count"], 1);
    assert!(stdin["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        stdin["raw"]["Content"]["projectId"],
        "8A1C2C4E-5B57-4A8E-9F3C-1D2E3F4A5B6C"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_hook_past_its_timeout_is_killed_and_counts_as_a_failure() {
    let w = World::new().await;
    let pids = w.path("pids.txt");
    let script = hook(
        &w,
        "hang.sh",
        &format!("echo $$ >> {}\nsleep 30 &\nsleep 30", pids.display()),
    );
    let body = training("TrainingCompleted");
    w.send_all(std::slice::from_ref(&body)).await;
    let cfg = w
        .config()
        .queue("max_dequeue_count = 1")
        .handler(shell_handler(&script, "timeout = \"1s\""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    let poison = w.poison_queue();
    assert!(
        eventually(LIMIT, async || !World::peek_all(&poison).await.is_empty()).await,
        "{}",
        d.logs()
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_timeout(LIMIT).await.unwrap().success());
    assert!(
        d.logs().contains("timed out after 1s and was killed"),
        "{}",
        d.logs()
    );
    // Both the hook and the sleep it put in the background are gone.
    let pgid: i32 = lines(&pids)[0].parse().unwrap();
    assert_eq!(live_members_of_group(pgid), Vec::<i32>::new());
    assert_eq!(World::peek_all(&poison).await, vec![body]);
}

/// Regression: the hook-output reader once held a span guard across
/// `.await`, so log lines of one message carried the spans of others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_output_lines_carry_only_their_own_message_span() {
    let w = World::new().await;
    let script = hook(
        &w,
        "echo.sh",
        "echo \"id=$CVNOTIFY_MESSAGE_ID\"\nsleep 0.2\necho \"id=$CVNOTIFY_MESSAGE_ID\" >&2",
    );
    let bodies: Vec<String> = (0..12).map(|_| training("TrainingCompleted")).collect();
    w.send_all(&bodies).await;
    let cfg = w
        .config()
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    assert!(
        d.wait_timeout(LIMIT).await.unwrap().success(),
        "{}",
        d.logs()
    );
    let outputs: Vec<serde_json::Value> = d
        .records()
        .into_iter()
        .filter(|r| r["message"] == "Hook output")
        .collect();
    assert_eq!(outputs.len(), 24);
    for r in &outputs {
        let spans = r["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2, "{r}");
        assert_eq!(spans[0]["name"], "message");
        assert_eq!(spans[1]["name"], "handler");
        let printed = r["output"].as_str().unwrap().trim_start_matches("id=");
        assert_eq!(spans[0]["message_id"].as_str().unwrap(), printed, "{r}");
    }
}
