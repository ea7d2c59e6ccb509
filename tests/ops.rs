//! Operations: health and metrics endpoints, systemd notifications, poison
//! tooling, PID 1 behaviour. Real daemons against real Azurite.

use crate::common;

use common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// The status of `/healthz`, and the status and body of `/readyz`, at
/// `base`.
async fn probes(base: &str) -> (u16, u16, String) {
    let (healthz, _) = http_get(&format!("{base}/healthz")).await;
    let (readyz, body) = http_get(&format!("{base}/readyz")).await;
    (healthz, readyz, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_messages_flow_and_fail() {
    let w = World::new().await;
    let script = w.hook(
        "h.sh",
        "[ \"$CVNOTIFY_STATUS\" = TrainingFailed ] && exit 1\nexit 0",
    );
    w.send_all(&[
        training("TrainingCompleted"),
        training("TrainingCompleted"),
        training("TrainingCompleted"),
        training("TrainingFailed"),
        "not json".to_owned(),
    ])
    .await;
    let cfg = w
        .config()
        .queue("max_dequeue_count = 1")
        .extra("[http]\nlisten = \"127.0.0.1:0\"\n")
        .handler(shell_handler(&script, "name = \"hook\""))
        .write("c.toml");
    let mut d = w.daemon(&cfg).start();
    let base = format!("http://{}", d.http_addr().await);
    w.wait_poisoned(&d, 2).await;
    w.wait_drained(&d).await;

    let (healthz, readyz, body) = probes(&base).await;
    assert_eq!((healthz, readyz), (200, 200), "/healthz, /readyz: {body}");
    let (status, text) = http_get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        sample(&text, "cvnotify_messages_received_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cvnotify_messages_handled_total{handler=\"hook\",outcome=\"success\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cvnotify_messages_handled_total{handler=\"hook\",outcome=\"failure\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cvnotify_messages_poisoned_total{reason=\"decode_error\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cvnotify_messages_poisoned_total{reason=\"max_dequeue_count\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cvnotify_messages_deleted_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cvnotify_handler_duration_seconds_count{handler=\"hook\"}"
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cvnotify_messages_in_flight"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cvnotify_queue_length{role=\"poison\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cvnotify_queue_length{role=\"main\"}"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(&text, "cvnotify_last_receive_timestamp_seconds").unwrap() > 1.7e9,
        "{text}"
    );
    assert!(text.contains("cvnotify_build_info{version="), "{text}");
    assert!(text.contains("cvnotify_poll_interval_seconds"), "{text}");
    let queue = w.main_queue().name().to_owned();
    assert!(
        text.contains(&format!(
            "cvnotify_messages_received_total{{queue=\"{queue}\"}} 5"
        )),
        "{text}"
    );
    d.stop_ok().await;
    // Label values come from config and fixed sets only.
    assert!(!text.contains(DEV_KEY), "the account key in a metric");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_storage_is_unreachable_and_storage_errors_count() {
    let closed = free_port();
    let (dir, cfg) = temp_config(&format!(
        "[queue]\nname = \"q-x\"\nendpoint = \"http://127.0.0.1:{closed}/devstoreaccount1\"\nrequest_timeout = \"1s\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"UseDevelopmentStorage=true\"\n[log]\nformat = \"json\"\n[http]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let mut d = Daemon::start(&cfg, &["run"], dir.path(), "d");
    let base = format!("http://{}", d.http_addr().await);
    let (healthz, readyz, body) = probes(&base).await;
    assert_eq!((healthz, readyz), (200, 503), "/healthz, /readyz: {body}");
    assert!(body.contains("not ready"), "{body}");
    d.wait_for("a transient receive error counted", async || {
        let (_, text) = http_get(&format!("{base}/metrics")).await;
        sample(
            &text,
            "cvnotify_storage_errors_total{operation=\"receive\",kind=\"transient\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    d.stop_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_gets_ready_watchdog_and_stopping() {
    let w = World::new().await;
    w.send_all(&[]).await;
    let sock_path = w.path("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    // Waits up to 200 ms for a datagram.
    let recv = async |buf: &mut [u8]| {
        tokio::time::timeout(Duration::from_millis(200), sock.recv(buf))
            .await
            .ok()
            .and_then(Result::ok)
    };
    let cfg = w.config().write("c.toml");
    let mut d = w
        .daemon(&cfg)
        .envs(&[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ])
        .start();
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        if let Some(n) = recv(&mut buf).await {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    d.signal(Signal::SIGTERM);
    let until = std::time::Instant::now();
    while until.elapsed() < Duration::from_secs(3) {
        if let Some(n) = recv(&mut buf).await {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    d.finish_ok().await;
    assert!(
        got.first()
            .is_some_and(|m| m.lines().any(|l| l == "READY=1")),
        "{got:?}"
    );
    // WatchdogSec=1s: a ping every 0.5 s while the loop waits on an empty queue.
    let pings = got
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    assert!(pings >= 4, "{pings} watchdog pings in 4 s: {got:?}");
    assert!(
        got.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_list_and_replay() {
    let w = World::new().await;
    w.send_all(&[]).await;
    let poison = w.poison_queue();
    poison.create_if_missing().await.unwrap();
    let a = training("TrainingFailed");
    let b = training("TrainingCompleted");
    let bad = "{broken".to_owned();
    let ia = poison.send(&a, Expiry::ServiceDefault).await.unwrap().id;
    poison.send(&b, Expiry::ServiceDefault).await.unwrap();
    poison.send(&bad, Expiry::ServiceDefault).await.unwrap();
    let cfg = w.config().write("c.toml");

    let out = cli().config(&cfg).args(["poison", "list"]).stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&ia) && lines[0].contains("Training TrainingFailed"),
        "{out}"
    );
    assert!(
        lines[2].contains("undecodable: the body is not valid JSON"),
        "{out}"
    );

    let out = cli()
        .config(&cfg)
        .args(["poison", "replay", "--id", &ia])
        .stdout();
    assert!(out.starts_with(&format!("replayed {ia} as ")), "{out}");
    assert_eq!(
        World::peek_all(&w.main_queue()).await,
        vec![a.clone()],
        "the main queue after replaying one"
    );
    assert_eq!(World::peek_all(&poison).await.len(), 2, "left in poison");

    let out = cli()
        .config(&cfg)
        .args(["poison", "replay", "--id", "no-such-id"])
        .run();
    out.assert_code(1)
        .assert(out.stdout().is_empty(), "expected no stdout");
    assert_eq!(
        World::peek_all(&poison).await.len(),
        2,
        "scanned messages were not released"
    );

    let out = cli()
        .config(&cfg)
        .args(["poison", "replay", "--all"])
        .stdout();
    assert_eq!(out.lines().count(), 2, "{out}");
    let mut main = World::peek_all(&w.main_queue()).await;
    main.sort();
    let mut want = vec![a, b, bad];
    want.sort();
    assert_eq!(main, want, "bodies changed");
    assert_eq!(
        World::peek_all(&poison).await,
        Vec::<String>::new(),
        "left in poison"
    );

    // --all or --id is required.
    cli().config(&cfg).args(["poison", "replay"]).assert_exit(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_loses_nothing_when_the_copy_fails() {
    let w = World::new().await;
    w.send_all(&[]).await;
    let poison = w.poison_queue();
    poison.create_if_missing().await.unwrap();
    for _ in 0..3 {
        poison
            .send(&training("TrainingFailed"), Expiry::ServiceDefault)
            .await
            .unwrap();
    }
    // May read and process, but not add messages: every copy fails.
    let cfg = w.write_config("c.toml", &w.sas_config("rup"));
    let out = cli().config(&cfg).args(["poison", "replay", "--all"]).run();
    out.assert_code(1).assert(
        out.stderr()
            .matches("not copied, left in the poison queue")
            .count()
            == 3,
        "three \"not copied\" lines",
    );
    assert_eq!(
        World::peek_all(&poison).await.len(),
        3,
        "a message was lost or left hidden"
    );
    assert_eq!(
        World::peek_all(&w.main_queue()).await,
        Vec::<String>::new(),
        "the main queue"
    );
}

/// Children of `pid` (host view) and their states.
fn children(pid: i32) -> Vec<(i32, String)> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| (p.pid, p.state))
        .collect()
}

/// What a container without an init does: cvnotify as PID 1 in its own PID
/// namespace reaps what hooks leave behind and exits 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_pid_1_it_reaps_orphans_and_stops_on_sigterm() {
    // An ordinary user may make a PID namespace inside a user namespace of
    // its own (mapped to itself); root needs none.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let userns: &[&str] = if unsafe { libc::geteuid() } == 0 {
        &[]
    } else {
        &["--user", "--map-root-user"]
    };
    if std::process::Command::new("unshare")
        .args(userns)
        .args(["--fork", "--pid", "--mount-proc", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        panic!(
            "`unshare {} --fork --pid --mount-proc` does not work here; this test needs a PID \
             namespace (as an ordinary user, unprivileged user namespaces)",
            userns.join(" ")
        );
    }
    let w = World::new().await;
    let done = w.path("done.txt");
    // Leaves a child in its process group (killed with the group, then a
    // zombie of PID 1) and one in a new session (outlives the hook).
    let script = w.hook(
        "leave.sh",
        "sleep 30 &\nsetsid sleep 1 &\necho \"$CVNOTIFY_MESSAGE_ID\" >> \"$DIR/done.txt\"",
    );
    w.send_all(&[
        training("TrainingCompleted"),
        training("TrainingFailed"),
        training("TrainingCompleted"),
    ])
    .await;
    let cfg = w
        .config()
        .shutdown_timeout("5s")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let stdout = w.path("pid1.stdout");
    let mut unshare = std::process::Command::new("unshare")
        .args(userns)
        .args(["--fork", "--pid", "--mount-proc"])
        .arg(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let unshare_pid = unshare.id() as i32;
    // Kills unshare and its child if an assertion below fails, so a failed
    // run leaves no daemon behind.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            for (child, _) in children(self.0) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
    let _guard = KillOnDrop(unshare_pid);
    let logs = || std::fs::read_to_string(&stdout).unwrap_or_default();
    wait_until("a child of unshare", async || {
        !children(unshare_pid).is_empty()
    })
    .await;
    let daemon_pid = children(unshare_pid)[0].0;
    if !eventually(LIMIT, async || lines(&done).len() == 3).await {
        panic!("hooks did not run\n{}", logs());
    }
    // The setsid'd sleep ends after 1 s; the reaper runs every second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let zombies: Vec<(i32, String)> = children(daemon_pid)
        .into_iter()
        .filter(|c| c.1 == "Z")
        .collect();
    assert!(
        zombies.is_empty(),
        "unreaped children of PID 1: {zombies:?}"
    );
    assert!(logs().contains("Running as PID 1"), "{}", logs());

    let t = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon_pid), Signal::SIGTERM).unwrap();
    let status = loop {
        if let Some(s) = unshare.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "PID 1 did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", logs());
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "took {:?}, shutdown_timeout is 5 s",
        t.elapsed()
    );
}

/// Under systemd (JOURNAL_STREAM set), `auto` logs are plain text: no ANSI
/// colours, no timestamp of their own (journald adds one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_gets_plain_text_lines() {
    let w = World::new().await;
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w
        .config()
        .log_format("auto")
        .log_level("info")
        .write("c.toml");
    let d = w
        .daemon(&cfg)
        .envs(&[("JOURNAL_STREAM", "8:12345")])
        .run_once()
        .await;
    d.assert_logged("Custom Vision event");
    d.assert_not_logged("\u{1b}");
    for line in d.logs().lines().filter(|l| !l.is_empty()) {
        assert!(!line.starts_with('{'), "JSON under journald: {line}");
        assert!(
            line.trim_start().starts_with("INFO")
                || line.trim_start().starts_with("WARN")
                || line.trim_start().starts_with("DEBUG"),
            "a timestamp or other prefix: {line}"
        );
    }
}
