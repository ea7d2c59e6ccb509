//! Dead letters that last and explain, no wrongful poisoning, no secret in
//! config errors or hook environments, a listener that cannot be starved.
//!
//! Each test named after a finding fails on the code before the fix (the
//! finding is quoted in its doc comment); the others pin the new features.
//! Real Azurite, the real binary, loopback only.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// The bodies in the world's poison queue (peeked).
async fn poison_bodies(w: &World) -> Vec<String> {
    World::peek_all(&w.poison_queue()).await
}

/// Finding 1: poisoned messages were sent without a time-to-live, so they
/// vanished after the service's default of 7 days; replayed ones too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_and_replayed_messages_never_expire() {
    let w = World::new().await;
    let body = training("TrainingCompleted");
    w.send_all(std::slice::from_ref(&body)).await;
    let script = hook(&w, "fail.sh", "exit 1");
    let cfg = w
        .config()
        .queue("max_dequeue_count = 1")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    let status = d.wait_timeout(LIMIT).await.expect("--once did not exit");
    assert!(status.success(), "{}", d.logs());
    let poisoned = w.poison_queue().peek(32).await.unwrap();
    assert_eq!(poisoned.len(), 1, "{}", d.logs());
    let expires = poisoned[0].expires_at.expect("an expiry time");
    assert_eq!(expires.year(), 9999, "poison message expires at {expires}");

    cli()
        .config(&cfg)
        .args(["poison", "replay", "--all"])
        .stdout();
    let replayed = w.main_queue().peek(32).await.unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].body, body);
    let expires = replayed[0].expires_at.expect("an expiry time");
    assert_eq!(
        expires.year(),
        9999,
        "replayed message expires at {expires}"
    );
}

/// Finding 2: with `max_dequeue_count = 2`, two SIGTERMs while a slow hook
/// ran, and the third start poisoned the message although its hook never
/// failed. Here: five restarts during one slow message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_during_a_slow_message_never_poison_it() {
    let w = World::new().await;
    let started = w.path("started.txt");
    let done = w.path("done.txt");
    let script = hook(
        &w,
        "slow.sh",
        &format!(
            "echo \"$CVNOTIFY_DEQUEUE_COUNT\" >> {}\nsleep 4\necho \"$CVNOTIFY_MESSAGE_ID\" >> {}",
            started.display(),
            done.display()
        ),
    );
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w
        .config()
        .shutdown_timeout("1s")
        .queue("max_dequeue_count = 2")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    for restart in 1..=5 {
        let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), &format!("d{restart}"));
        assert!(
            eventually(LIMIT, async || lines(&started).len() >= restart).await,
            "restart {restart}: the hook never started\n{}",
            d.logs()
        );
        d.signal(Signal::SIGTERM);
        let status = d.wait_timeout(LIMIT).await.expect("no exit after SIGTERM");
        assert!(status.success(), "{}", d.logs());
        assert!(
            d.logs().contains("Released the message back to the queue"),
            "{}",
            d.logs()
        );
    }
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "last");
    assert!(
        eventually(LIMIT, async || lines(&done).len() == 1).await,
        "never handled\n{}",
        d.logs()
    );
    assert!(
        eventually(LIMIT, async || World::length(&w.main_queue()).await == 0).await,
        "{}",
        d.logs()
    );
    d.signal(Signal::SIGTERM);
    d.wait_timeout(LIMIT).await;
    assert_eq!(lines(&started), vec!["1", "2", "3", "4", "5", "6"]);
    assert_eq!(lines(&done).len(), 1);
    assert!(poison_bodies(&w).await.is_empty(), "poisoned\n{}", d.logs());
}

/// The other side of the rule: a message whose hook kills the daemon every
/// time still ends in the poison queue, after
/// `max_deliveries_without_outcome` deliveries without an outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_the_daemon_every_time_is_poisoned() {
    let w = World::new().await;
    let runs = w.path("runs.txt");
    let script = hook(
        &w,
        "kill.sh",
        &format!("echo x >> {}\nkill -KILL $PPID\nsleep 5", runs.display()),
    );
    let body = training("TrainingCompleted");
    w.send_all(std::slice::from_ref(&body)).await;
    let cfg = w
        .config()
        .queue("max_dequeue_count = 5\nmax_deliveries_without_outcome = 3\nvisibility_timeout = \"2s\"")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut last_logs = String::new();
    for start in 1..=8 {
        if !poison_bodies(&w).await.is_empty() {
            break;
        }
        let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), &format!("d{start}"));
        // Killed by its hook, or, once poisoned, stopped by us.
        let poisoned = eventually(Duration::from_secs(6), async || {
            !poison_bodies(&w).await.is_empty()
        })
        .await;
        if poisoned || d.child.try_wait().unwrap().is_none() {
            d.signal(Signal::SIGTERM);
        }
        d.wait_timeout(LIMIT).await;
        last_logs = d.logs();
    }
    assert_eq!(poison_bodies(&w).await, vec![body], "{last_logs}");
    assert_eq!(lines(&runs).len(), 3, "the hook ran once per delivery");
    assert!(
        last_logs.contains("max_deliveries_without_outcome"),
        "{last_logs}"
    );
}

/// Finding 3: the listener had no header-read timeout and no connection
/// limit; under `ulimit -n 128`, 200 idle connections made hooks fail with
/// "Too many open files" and a valid message went to the poison queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_listener_never_fails_a_handler() {
    let w = World::new().await;
    let (out, table) = recording_hook(w.dir.path());
    let port = free_port();
    let cfg = w
        .config()
        .queue("max_dequeue_count = 2")
        .handler(table)
        .extra(format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"))
        .write("c.toml");
    // A low file-descriptor limit, as in a tight container.
    let stdout = w.path("d.stdout");
    let stderr = w.path("d.stderr");
    let mut child = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            "ulimit -n 128 && exec \"$0\" \"$@\"",
            bin(),
            "--config",
        ])
        .arg(&cfg)
        .arg("run")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        eventually(LIMIT, async || tokio::net::TcpStream::connect(addr)
            .await
            .is_ok())
        .await,
        "the listener never came up"
    );
    // 500 connections: half idle, half with a request head that never ends.
    let mut held = Vec::new();
    for i in 0..500 {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
        else {
            continue;
        };
        if i % 2 == 0 {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
        }
        held.push(s);
    }
    let bodies: Vec<String> = (0..20).map(|_| training("TrainingCompleted")).collect();
    let ids = w.send_all(&bodies).await;
    let logs = || {
        std::fs::read_to_string(&stdout).unwrap_or_default()
            + &std::fs::read_to_string(&stderr).unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(60), async || lines(&out).len()
            >= ids.len())
        .await,
        "handled {} of {}\n{}",
        lines(&out).len(),
        ids.len(),
        logs()
    );
    assert!(poison_bodies(&w).await.is_empty(), "poisoned\n{}", logs());
    assert!(!logs().contains("Too many open files"), "{}", logs());
    drop(held);
    // The probes answer again once the flood is gone.
    let client = reqwest::Client::new();
    assert!(
        eventually(LIMIT, async || client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()))
        .await
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

/// `cvnotify run` on `w` with the listener on a free port, once it
/// accepts connections.
async fn listening_daemon(w: &World) -> (Daemon, std::net::SocketAddr) {
    let port = free_port();
    let cfg = w
        .config()
        .extra(format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"))
        .write("c.toml");
    let d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        eventually(LIMIT, async || tokio::net::TcpStream::connect(addr)
            .await
            .is_ok())
        .await,
        "the listener never came up\n{}",
        d.logs()
    );
    (d, addr)
}

/// Finding 3, the timeout alone: a partial request stayed open past 45 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_request_is_closed_within_seconds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::new().await;
    let (mut d, addr) = listening_daemon(&w).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    // Closed (EOF or reset) well before the 45 s seen before the fix.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after 20 s");
    eprintln!("partial request closed after {:?}", started.elapsed());
    d.signal(Signal::SIGTERM);
    d.wait_timeout(LIMIT).await;
}

/// A client that keeps one connection and sends `GET /healthz` on it every
/// 4 s, as a keep-alive client does; when the daemon closes it, it
/// reconnects at once and holds the new connection idle until its next
/// request. Counts the answers it gets.
async fn keep_alive_client(
    addr: std::net::SocketAddr,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::AsyncWriteExt;
    // Bounded, whatever happens: the test aborts it long before.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut conn: Option<tokio::net::TcpStream> = None;
    while std::time::Instant::now() < deadline {
        let mut s = match conn.take() {
            Some(s) => s,
            None => match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .is_err()
        {
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(70), read_http_request(&mut s)).await {
            Ok(Some((head, _))) => {
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                conn = if head.to_ascii_lowercase().contains("connection: close") {
                    tokio::net::TcpStream::connect(addr).await.ok()
                } else {
                    Some(s)
                };
            }
            // Closed before answering: reconnect and ask again at once.
            _ => continue,
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
}

/// Issue 17, finding 3: 40 keep-alive clients sending one `GET /healthz`
/// every 4 s held all 32 connection slots (each request restarted the 5 s
/// idle timer, and only the 60 s lifetime freed a slot): a fresh
/// `/healthz` waited 59 s, and the shipped liveness probe (1 s timeout, 3
/// failures) restarts the pod. Here fresh probes are answered while the 40
/// go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_3_keep_alive_clients_never_starve_a_fresh_probe() {
    let w = World::new().await;
    let (mut d, addr) = listening_daemon(&w).await;
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..40)
        .map(|_| tokio::spawn(keep_alive_client(addr, answered.clone())))
        .collect();
    // The pool is taken: at least 32 of them were answered once.
    assert!(
        eventually(LIMIT, async || answered
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 32)
        .await,
        "{} answers\n{}",
        answered.load(std::sync::atomic::Ordering::SeqCst),
        d.logs()
    );
    let mut took = Vec::new();
    for _ in 0..5 {
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let answer = probe.get(format!("http://{addr}/healthz")).send().await;
        took.push(started.elapsed());
        assert!(
            answer.as_ref().is_ok_and(|r| r.status().is_success()),
            "a fresh probe got {answer:?} after {took:?}"
        );
        // Spread over several of the clients' 4 s rounds.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!(
        "fresh probes answered after {took:?}; the 40 clients got {} answers",
        answered.load(std::sync::atomic::Ordering::SeqCst)
    );
    // The kubelet waits 1 s; the daemon answers in milliseconds. 3 s leaves
    // a loaded machine room, and is far from the 59 s of the finding.
    assert!(took.iter().all(|t| *t < Duration::from_secs(3)), "{took:?}");
    // And the 40 are still served: a second round of answers.
    assert!(
        eventually(LIMIT, async || answered
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 80)
        .await,
        "{} answers\n{}",
        answered.load(std::sync::atomic::Ordering::SeqCst),
        d.logs()
    );
    for c in clients {
        c.abort();
    }
    d.signal(Signal::SIGTERM);
    d.wait_timeout(LIMIT).await;
}

/// Finding 4: an unterminated `connection_string` line made `check
/// --config-only` print the source line with `AccountKey=...` in clear.
#[test]
fn config_errors_do_not_print_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let key = "U2VjcmV0QWNjb3VudEtleU1hdGVyaWFsMDEyMzQ1Njc4OQ==";
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[queue]\nname = \"q-x\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key}\n"
        ),
    )
    .unwrap();
    let out = cli()
        .config(&cfg)
        .args(["check", "--config-only"])
        .assert_exit(78);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cannot read the configuration"), "{text}");
    assert!(!text.contains(key), "{text}");
    assert!(!text.contains(&key[..16]), "{text}");
}

/// Finding 5: with `inherit_env = true` a hook running `env` printed the
/// webhook's `secret_env` variable (`whsec_...`) and `IDENTITY_HEADER`, and
/// the daemon logged those lines; `Authorization: Bearer eyJ...` in hook
/// output was logged verbatim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_do_not_inherit_or_echo_secrets() {
    let w = World::new().await;
    let env_file = w.path("env.txt");
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjdm5vdGlmeSJ9.c2lnbmF0dXJlLXNlY3JldA";
    let script = hook(
        &w,
        "env.sh",
        &format!(
            "env | tee {}\necho \"Authorization: Bearer {jwt}\"",
            env_file.display()
        ),
    );
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let secrets = [
        ("HOOK_SECRET", whsec),
        ("IDENTITY_HEADER", "identity-header-secret-value"),
        ("MSI_SECRET", "msi-secret-value"),
        ("AZURE_CLIENT_SECRET", "client-secret-value"),
        ("AZURE_CLIENT_CERTIFICATE_PASSWORD", "cert-password-value"),
    ];
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w
        .config()
        .handler(shell_handler(&script, "inherit_env = true"))
        // Never called (it takes no training events): it only names the
        // variable its secret comes from.
        .handler("[[handlers]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"HOOK_SECRET\"\nevents = [\"export.failed\"]\n")
        .write("c.toml");
    let mut env: Vec<(&str, &str)> = secrets.to_vec();
    env.push(("UNRELATED_VARIABLE", "inherited-fine"));
    let mut d = Daemon::start_with_env(&cfg, &["run", "--once"], w.dir.path(), "d", &env);
    let status = d.wait_timeout(LIMIT).await.expect("--once did not exit");
    assert!(status.success(), "{}", d.logs());
    let seen = std::fs::read_to_string(&env_file).unwrap();
    assert!(seen.contains("UNRELATED_VARIABLE=inherited-fine"), "{seen}");
    let logs = d.logs();
    assert!(logs.contains("Hook output"), "{logs}");
    for (name, value) in secrets {
        assert!(!seen.contains(name), "{name} reached the hook\n{seen}");
        assert!(!logs.contains(value), "{name}'s value logged\n{logs}");
    }
    assert!(!logs.contains(jwt), "{logs}");
    assert!(!logs.contains("c2lnbmF0dXJlLXNlY3JldA"), "{logs}");
}

/// Finding 6: a hook writing 100 MB without a newline raised the daemon's
/// RSS by 125 MB: a line was read whole before it was cut to 4 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_hook_line_costs_bounded_memory() {
    let w = World::new().await;
    let script = hook(
        &w,
        "flood.sh",
        "head -c 100000000 /dev/zero | tr '\\0' 'a'\necho\necho after",
    );
    let cfg = w
        .config()
        .log_level("info")
        .handler(shell_handler(&script, "timeout = \"120s\""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    let pid = d.child.id();
    assert!(eventually(LIMIT, async || d.logs().contains("Listening")).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = status_kib(pid, "VmRSS");
    w.send_all(&[training("TrainingCompleted")]).await;
    assert!(
        eventually(Duration::from_secs(120), async || d
            .logs()
            .contains("Message handled"))
        .await,
        "{}",
        d.logs()
    );
    let peak = status_kib(pid, "VmHWM");
    let logs = d.logs();
    d.signal(Signal::SIGTERM);
    d.wait_timeout(LIMIT).await;
    assert!(logs.contains("after"), "the line after the flood was lost");
    assert!(logs.contains("aaaa..."), "the long line was not logged cut");
    // The 4 KiB cut and an 8 KiB read buffer: nowhere near 100 MB.
    assert!(
        peak < idle + 40 * 1024,
        "peak RSS {peak} KiB, idle {idle} KiB"
    );
    eprintln!("hook flood: idle RSS {idle} KiB, peak {peak} KiB");
}

/// Finding 7: `"  https://…/m.onnx\n$(touch x) `id`\t"` decoded, and that
/// raw string reached `CVNOTIFY_MODEL_URI`, hook stdin and webhook bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_uri_with_a_newline_never_reaches_a_hook() {
    let w = World::new().await;
    let ran = w.path("ran.txt");
    let script = hook(
        &w,
        "h.sh",
        &format!("echo \"$CVNOTIFY_MODEL_URI\" >> {}", ran.display()),
    );
    let uri = "  https://acct.blob.core.windows.net/m/m.onnx\n$(touch x) `id`\t";
    let body = serde_json::json!({"version":"1.0","type":"Export","Content":{
        "projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f",
        "exportStatus":"ExportCompleted","modelUri":uri}})
    .to_string();
    w.send_all(std::slice::from_ref(&body)).await;
    let cfg = w
        .config()
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    d.wait_timeout(LIMIT).await.expect("--once did not exit");
    assert!(!ran.exists(), "the hook ran: {:?}", lines(&ran));
    assert_eq!(poison_bodies(&w).await, vec![body]);
    assert!(d.logs().contains("not a URL: it contains"), "{}", d.logs());
}

/// Finding 8: `poison list` printed an unknown `type` raw (an escape
/// sequence retitled the terminal and cleared the screen); text logs passed
/// escape codes and carriage returns from hook output through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_never_reach_the_terminal() {
    let w = World::new().await;
    let script = hook(
        &w,
        "esc.sh",
        "printf '\\033]0;pwned\\007\\033[2J\\rFORGED LINE\\n'",
    );
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w
        .config()
        .log_format("text")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    d.wait_timeout(LIMIT).await.expect("--once did not exit");
    let logs = d.logs();
    assert!(logs.contains("FORGED LINE"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
    assert!(!logs.contains('\r'), "{logs:?}");

    let hostile =
        "{\"version\":\"1.0\",\"type\":\"\\u001b]0;pwned\\u0007\\u001b[2J\",\"Content\":{}}";
    let poison = w.poison_queue();
    poison.create_if_missing().await.unwrap();
    poison.send(hostile, Expiry::ServiceDefault).await.unwrap();
    let out = cli().config(&cfg).args(["poison", "list"]).stdout();
    assert!(out.contains("pwned"), "{out}");
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
}

/// Permanent failures: a webhook answering 410 and a hook exiting with a
/// listed code poison the message on its first delivery, with the reason;
/// an unlisted code is retried as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_poison_at_once_with_their_reason() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let w = World::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&receiver)
        .await;
    let calls = w.path("calls.txt");
    let script = hook(
        &w,
        "code.sh",
        &format!(
            "echo \"$CVNOTIFY_DEQUEUE_COUNT $CVNOTIFY_STATUS\" >> {}\n[ \"$CVNOTIFY_STATUS\" = TrainingFailed ] && exit 3\nexit 4",
            calls.display()
        ),
    );
    let gone = training("TrainingCompleted");
    let listed = training("TrainingFailed");
    let unlisted = r#"{"version":"1.0","type":"Export","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportFailed"}}"#.to_owned();
    w.send_all(&[gone.clone(), listed.clone(), unlisted.clone()])
        .await;
    let cfg = w
        .config()
        .queue("max_dequeue_count = 3\npoison_format = \"envelope\"")
        .handler(format!(
            "[[handlers]]\ntype = \"webhook\"\nurl = \"{}/hook\"\nevents = [\"training.completed\"]\n",
            receiver.uri()
        ))
        .handler(shell_handler(
            &script,
            "events = [\"training.failed\", \"export\"]\npermanent_exit_codes = [3]",
        ))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    assert!(
        eventually(LIMIT, async || poison_bodies(&w).await.len() == 3).await,
        "{}",
        d.logs()
    );
    d.signal(Signal::SIGTERM);
    d.wait_timeout(LIMIT).await;
    assert_eq!(
        receiver.received_requests().await.unwrap().len(),
        1,
        "410 was retried"
    );
    let calls = lines(&calls);
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.ends_with("TrainingFailed"))
            .count(),
        1,
        "a listed exit code was retried: {calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.ends_with("ExportFailed"))
            .map(|c| &c[..1])
            .collect::<Vec<_>>(),
        vec!["1", "2", "3"],
        "an unlisted exit code must be retried"
    );
    let list = cli().config(&cfg).args(["poison", "list"]).stdout();
    assert!(
        list.contains("permanent failure") && list.contains("410 Gone"),
        "{list}"
    );
    assert!(list.contains("exited with status 3"), "{list}");
    assert!(
        list.contains("failed on delivery 3 of max_dequeue_count 3"),
        "{list}"
    );
    let logs = d.logs();
    assert!(
        logs.contains("permanent_failure") || logs.contains("permanent failure"),
        "{logs}"
    );
}

/// The envelope round trip: poison, list, replay keeps the body byte for
/// byte (plain, base64, a body near the 64 KiB limit, odd white space).
/// Invalid UTF-8 cannot be tested: the queue's messages are XML text, and
/// the service (and Azurite) accept only valid UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_poison_list_replay_round_trip_keeps_bodies_exactly() {
    use base64::Engine as _;
    let w = World::new().await;
    let plain = training("TrainingFailed");
    let spaced = plain.replace(',', " ,\n\t");
    let b64 = base64::engine::general_purpose::STANDARD.encode(training("TrainingFailed"));
    // Large: the envelope then exceeds the 64 KiB message limit, and the
    // original goes to the poison queue verbatim instead.
    let head = format!("{},\"pad\":\"", &plain[..plain.len() - 1]);
    let large = format!("{head}{}\"}}", "p".repeat(65_300 - head.len() - 2));
    assert_eq!(large.len(), 65_300);
    let bodies = vec![plain, spaced, b64, large];
    w.send_all(&bodies).await;
    let script = hook(&w, "fail.sh", "exit 3");
    let cfg = w
        .config()
        .queue("poison_format = \"envelope\"")
        .handler(shell_handler(&script, "permanent_exit_codes = [3]"))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    let status = d
        .wait_timeout(Duration::from_secs(60))
        .await
        .expect("--once did not exit");
    assert!(status.success(), "{}", d.logs());
    let poisoned = poison_bodies(&w).await;
    assert_eq!(poisoned.len(), 4, "{}", d.logs());
    let envelopes = poisoned
        .iter()
        .filter(|b| b.contains("cvnotify_envelope"))
        .count();
    assert_eq!(envelopes, 3, "small bodies travel in an envelope");
    let list = cli().config(&cfg).args(["poison", "list"]).stdout();
    assert_eq!(
        list.matches("reason: permanent failure").count(),
        3,
        "{list}"
    );
    cli()
        .config(&cfg)
        .args(["poison", "replay", "--all"])
        .stdout();
    let mut back = World::peek_all(&w.main_queue()).await;
    let mut want = bodies.clone();
    back.sort();
    want.sort();
    assert_eq!(back, want, "replay changed a body");
}
