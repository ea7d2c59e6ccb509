//! The daemon end to end: real Azurite, real `cvnotify` processes, real
//! shell hooks.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes an executable hook script and returns its path.
fn hook(w: &World, name: &str, body: &str) -> PathBuf {
    let p = w.path(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    p
}

fn shell_handler(script: &Path, extra: &str) -> String {
    format!(
        "[[handlers]]\ntype = \"shell\"\ncommand = [\"/bin/sh\", \"{}\"]\n{extra}\n",
        script.display()
    )
}

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_handled_exactly_once_by_a_shell_hook() {
    let w = World::new();
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
    let cfg = w.write_config("c.toml", &w.config_text("", &shell_handler(&script, "")));
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    let status = d.wait_timeout(LIMIT).expect("run --once did not finish");
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
    let w = World::new();
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
    let cfg = w.write_config(
        "c.toml",
        &w.config_text("max_dequeue_count = 3", &shell_handler(&script, "")),
    );
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    let poison = w.poison_queue();
    assert!(
        eventually(LIMIT, async || !World::peek_all(&poison).await.is_empty()).await,
        "never poisoned\n{}",
        d.logs()
    );
    d.signal(Signal::SIGTERM);
    let status = d.wait_timeout(LIMIT).expect("no exit after SIGTERM");
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
    let w = World::new();
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
    let cfg = w.write_config("c.toml", &w.config_text("", &shell_handler(&script, "")));
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    assert!(d.wait_timeout(LIMIT).unwrap().success(), "{}", d.logs());
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
    let w = World::new();
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
    let cfg = w.write_config(
        "c.toml",
        &w.config_text("", &shell_handler(&script, ""))
            .replace("shutdown_timeout = \"10s\"", "shutdown_timeout = \"1s\""),
    );
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    assert!(
        eventually(LIMIT, async || started.exists()).await,
        "{}",
        d.logs()
    );
    std::thread::sleep(Duration::from_millis(200));
    let hook_pid: i32 = std::fs::read_to_string(&started)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_timeout(Duration::from_secs(20))
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
    let w = World::new();
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
    let cfg = w.write_config("c.toml", &w.config_text("", &shell_handler(&script, "")));
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    assert!(
        eventually(LIMIT, async || started.exists()).await,
        "{}",
        d.logs()
    );
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_timeout(Duration::from_secs(20))
        .expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert_eq!(lines(&done).len(), 1);
    assert_eq!(World::length(&w.main_queue()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_running_past_half_the_visibility_timeout_is_not_delivered_twice() {
    let w = World::new();
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
    let cfg = w.write_config(
        "c.toml",
        &w.config_text("visibility_timeout = \"4s\"", &shell_handler(&script, "")),
    );
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
    std::thread::sleep(Duration::from_secs(2));
    a.signal(Signal::SIGTERM);
    b.signal(Signal::SIGTERM);
    assert!(a.wait_timeout(LIMIT).unwrap().success());
    assert!(b.wait_timeout(LIMIT).unwrap().success());
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
    let status = d.wait_timeout(LIMIT).expect("did not finish");
    assert!(status.success(), "{status:?}\n{}", d.logs());
    let handled: BTreeSet<String> = lines(&out).into_iter().collect();
    assert_eq!(handled, ids.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(World::length(&w.main_queue()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_key_with_development_storage() {
    let w = World::new();
    let cfg = w.config_text("", "");
    assert!(cfg.contains("UseDevelopmentStorage=true"));
    drains_with(&w, &cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_key_with_an_explicit_connection_string() {
    let w = World::new();
    let cfg = format!(
        "[queue]\nname = \"{}\"\nmax_poll_interval = \"500ms\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};QueueEndpoint={};\"\n[log]\nformat = \"json\"\n",
        w.queue,
        w.azurite.queue_endpoint()
    );
    drains_with(&w, &cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_token() {
    let w = World::new();
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
    let w = World::new();
    w.send_all(&[]).await;
    let good = w.write_config("good.toml", &w.config_text("", ""));
    let out = std::process::Command::new(bin())
        .args(["--config"])
        .arg(&good)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let bad = w.write_config(
        "bad.toml",
        &w.config_text("", "").replace(
            "UseDevelopmentStorage=true",
            &format!(
                "AccountName=devstoreaccount1;AccountKey={wrong_key};QueueEndpoint={}",
                w.azurite.queue_endpoint()
            ),
        ),
    );
    let out = std::process::Command::new(bin())
        .args(["--config"])
        .arg(&bad)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL"), "{text}");
    assert!(!text.contains(&wrong_key), "the key was printed");
}
