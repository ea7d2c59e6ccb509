//! Dead letters that last and explain, no wrongful poisoning, no secret in
//! config errors or hook environments, a listener that cannot be starved.
//!
//! Each test named after a finding fails on the code before the fix (the
//! finding is quoted in its doc comment); the others pin the new features.
//! Real Azurite, the real binary, loopback only.

use crate::common;

use common::*;
use std::time::Duration;

/// Finding 1: poisoned messages were sent without a time-to-live, so they
/// vanished after the service's default of 7 days; replayed ones too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_and_replayed_messages_never_expire() {
    let w = World::new().await;
    let body = training("TrainingCompleted");
    w.send_all(std::slice::from_ref(&body)).await;
    let script = w.hook("fail.sh", "exit 1");
    let cfg = w
        .config()
        .queue("max_dequeue_count = 1")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    let poisoned = w.poison_queue().peek(32).await.unwrap();
    d.assert_eq(poisoned.len(), 1, "messages in the poison queue");
    let expires = poisoned[0].expires_at.expect("an expiry time");
    assert_eq!(expires.year(), 9999, "poison message expires at {expires}");

    cli()
        .config(&cfg)
        .args(["poison", "replay", "--all"])
        .stdout();
    let replayed = w.main_queue().peek(32).await.unwrap();
    assert_eq!(replayed.len(), 1, "replayed messages: {replayed:?}");
    assert_eq!(replayed[0].body, body, "the replayed body");
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
    let slow = w.marked_hook("slow.sh", "sleep 4");
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w
        .config()
        .shutdown_timeout("1s")
        .queue("max_dequeue_count = 2")
        .handler(slow.handler(""))
        .write("c.toml");
    for restart in 1..=5 {
        let mut d = w.daemon(&cfg).tag(&format!("d{restart}")).start();
        slow.wait_started(&d, restart).await;
        d.stop_ok().await;
        d.assert_logged("Released the message back to the queue");
    }
    let mut d = w.daemon(&cfg).tag("last").start();
    d.wait_for("the message handled", async || slow.ends().len() == 1)
        .await;
    w.wait_drained(&d).await;
    d.stop().await;
    let deliveries: Vec<u32> = slow.starts().iter().map(|r| r.dequeue_count).collect();
    assert_eq!(
        deliveries,
        vec![1, 2, 3, 4, 5, 6],
        "the deliveries the hook saw"
    );
    assert_eq!(
        slow.ends().len(),
        1,
        "the hook ran to its end more than once"
    );
    d.assert_eq(w.poisoned().await, Vec::new(), "poisoned messages");
}

/// The other side of the rule: a message whose hook kills the daemon every
/// time still ends in the poison queue, after
/// `max_deliveries_without_outcome` deliveries without an outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_the_daemon_every_time_is_poisoned() {
    let w = World::new().await;
    let script = w.hook(
        "kill.sh",
        "echo x >> \"$DIR/runs.txt\"\nkill -KILL $PPID\nsleep 5",
    );
    let body = training("TrainingCompleted");
    w.send_all(std::slice::from_ref(&body)).await;
    let cfg = w
        .config()
        .queue("max_dequeue_count = 5\nmax_deliveries_without_outcome = 3\nvisibility_timeout = \"2s\"")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let mut last = None;
    for start in 1..=8 {
        if !w.poisoned().await.is_empty() {
            break;
        }
        let mut d = w.daemon(&cfg).tag(&format!("d{start}")).start();
        // Killed by its hook, or, once the message is poisoned, stopped by
        // us.
        let settled = eventually(WAIT, async || {
            d.child.try_wait().unwrap().is_some() || !w.poisoned().await.is_empty()
        })
        .await;
        if !settled {
            fail_with("neither killed by its hook nor poisoned", &[&d]);
        }
        if d.child.try_wait().unwrap().is_none() {
            d.stop().await;
        }
        last = Some(d);
    }
    let last = last.unwrap();
    last.assert_eq(w.poisoned().await, vec![body], "the poisoned body");
    assert_eq!(
        lines(&w.path("runs.txt")).len(),
        3,
        "the hook ran once per delivery"
    );
    last.assert_logged("max_deliveries_without_outcome");
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
    let mut sh = std::process::Command::new("/bin/sh");
    sh.args([
        "-c",
        "ulimit -n 128 && exec \"$0\" \"$@\"",
        bin(),
        "--config",
    ])
    .arg(&cfg)
    .arg("run");
    let mut d = Daemon::start_wrapped(sh, w.dir.path(), "d");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    d.wait_for("the listener", async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
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
    d.wait_for_progress("the 20 messages handled", WAIT, async || {
        let n = lines(&out).len();
        (n, n >= ids.len())
    })
    .await;
    d.assert_eq(w.poisoned().await, Vec::new(), "poisoned messages");
    d.assert_not_logged("Too many open files");
    drop(held);
    // The probes answer again once the flood is gone.
    let client = reqwest::Client::new();
    d.wait_for("/healthz to answer once the flood is gone", async || {
        client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    d.stop().await;
}

/// `cvnotify run` on `w` with the listener on a free port, once it
/// accepts connections.
async fn listening_daemon(w: &World) -> (Daemon, std::net::SocketAddr) {
    let port = free_port();
    let cfg = w
        .config()
        .extra(format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"))
        .write("c.toml");
    let d = w.daemon(&cfg).start();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    d.wait_for("the listener", async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
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
    d.stop().await;
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
    let answers = || answered.load(std::sync::atomic::Ordering::SeqCst) as usize;
    // The pool is taken: at least 32 of them were answered once.
    d.wait_for_progress("32 answers to the clients", WAIT, async || {
        (answers(), answers() >= 32)
    })
    .await;
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
        answers()
    );
    // The kubelet waits 1 s; the daemon answers in milliseconds. 3 s leaves
    // a loaded machine room, and is far from the 59 s of the finding.
    assert!(took.iter().all(|t| *t < Duration::from_secs(3)), "{took:?}");
    // And the 40 are still served: a second round of answers.
    d.wait_for_progress("80 answers to the clients", WAIT, async || {
        (answers(), answers() >= 80)
    })
    .await;
    for c in clients {
        c.abort();
    }
    d.stop().await;
}

/// Finding 4: an unterminated `connection_string` line made `check
/// --config-only` print the source line with `AccountKey=...` in clear.
#[test]
fn config_errors_do_not_print_secret_values() {
    let key = "U2VjcmV0QWNjb3VudEtleU1hdGVyaWFsMDEyMzQ1Njc4OQ==";
    let (_dir, cfg) = temp_config(&format!(
        "[queue]\nname = \"q-x\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key}\n"
    ));
    cli()
        .config(&cfg)
        .args(["check", "--config-only"])
        .run()
        .assert_code(78)
        .assert_shows("cannot read the configuration")
        .assert_hides(key)
        .assert_hides(&key[..16]);
}

/// Finding 5: with `inherit_env = true` a hook running `env` printed the
/// webhook's `secret_env` variable (`whsec_...`) and `IDENTITY_HEADER`, and
/// the daemon logged those lines; `Authorization: Bearer eyJ...` in hook
/// output was logged verbatim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_do_not_inherit_or_echo_secrets() {
    let w = World::new().await;
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjdm5vdGlmeSJ9.c2lnbmF0dXJlLXNlY3JldA";
    let script = w.hook(
        "env.sh",
        &format!("env | tee \"$DIR/env.txt\"\necho \"Authorization: Bearer {jwt}\""),
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
    let d = w.daemon(&cfg).envs(&env).run_once().await;
    let seen = std::fs::read_to_string(w.path("env.txt")).unwrap();
    assert!(seen.contains("UNRELATED_VARIABLE=inherited-fine"), "{seen}");
    d.assert_logged("Hook output");
    for (name, value) in secrets {
        assert!(!seen.contains(name), "{name} reached the hook\n{seen}");
        d.assert_not_logged(value);
    }
    d.assert_not_logged(jwt);
    d.assert_not_logged("c2lnbmF0dXJlLXNlY3JldA");
}

/// Finding 6: a hook writing 100 MB without a newline raised the daemon's
/// RSS by 125 MB: a line was read whole before it was cut to 4 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_hook_line_costs_bounded_memory() {
    let w = World::new().await;
    let script = w.hook(
        "flood.sh",
        "head -c 100000000 /dev/zero | tr '\\0' 'a'\necho\necho after",
    );
    let cfg = w
        .config()
        .log_level("info")
        .handler(shell_handler(&script, "timeout = \"120s\""))
        .write("c.toml");
    let mut d = w.daemon(&cfg).start();
    let pid = d.pid();
    d.wait_logged("Listening").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = status_kib(pid, "VmRSS");
    w.send_all(&[training("TrainingCompleted")]).await;
    // 100 MB through a pipe: longer than most waits on a loaded machine.
    d.wait_for_within(
        Duration::from_secs(120),
        "\"Message handled\" in the logs",
        async || d.logs().contains("Message handled"),
    )
    .await;
    let peak = status_kib(pid, "VmHWM");
    d.stop().await;
    // The line after the flood was not lost; the long line was logged cut.
    d.assert_logged("after");
    d.assert_logged("aaaa...");
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
    let script = w.hook("h.sh", "echo \"$CVNOTIFY_MODEL_URI\" >> \"$DIR/ran.txt\"");
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
    let (d, _) = w.daemon(&cfg).run_once_any().await;
    let ran = w.path("ran.txt");
    assert!(!ran.exists(), "the hook ran: {:?}", lines(&ran));
    d.assert_eq(w.poisoned().await, vec![body], "the poisoned body");
    d.assert_logged("not a URL: it contains");
}

/// Finding 8: `poison list` printed an unknown `type` raw (an escape
/// sequence retitled the terminal and cleared the screen); text logs passed
/// escape codes and carriage returns from hook output through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_never_reach_the_terminal() {
    let w = World::new().await;
    let script = w.hook(
        "esc.sh",
        "printf '\\033]0;pwned\\007\\033[2J\\rFORGED LINE\\n'",
    );
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w
        .config()
        .log_format("text")
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let (d, _) = w.daemon(&cfg).run_once_any().await;
    d.assert_logged("FORGED LINE");
    d.assert_not_logged("\u{1b}");
    d.assert_not_logged("\r");

    let hostile =
        "{\"version\":\"1.0\",\"type\":\"\\u001b]0;pwned\\u0007\\u001b[2J\",\"Content\":{}}";
    let poison = w.poison_queue();
    poison.create_if_missing().await.unwrap();
    poison.send(hostile, Expiry::ServiceDefault).await.unwrap();
    let out = cli().config(&cfg).args(["poison", "list"]).stdout();
    assert!(out.contains("pwned"), "{out:?}");
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
}

/// Permanent failures: a webhook answering 410 and a hook exiting with a
/// listed code poison the message on its first delivery, with the reason;
/// an unlisted code is retried as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_poison_at_once_with_their_reason() {
    let w = World::new().await;
    let receiver = receiver(410).await;
    let script = w.hook(
        "code.sh",
        "echo \"$CVNOTIFY_DEQUEUE_COUNT $CVNOTIFY_STATUS\" >> \"$DIR/calls.txt\"\n[ \"$CVNOTIFY_STATUS\" = TrainingFailed ] && exit 3\nexit 4",
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
    let mut d = w.daemon(&cfg).start();
    w.wait_poisoned(&d, 3).await;
    d.stop().await;
    assert_eq!(
        receiver.received_requests().await.unwrap().len(),
        1,
        "410 was retried"
    );
    let calls = lines(&w.path("calls.txt"));
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
    cli()
        .config(&cfg)
        .args(["poison", "list"])
        .run()
        .assert_success()
        .assert_stdout_shows("permanent failure")
        .assert_stdout_shows("410 Gone")
        .assert_stdout_shows("exited with status 3")
        .assert_stdout_shows("failed on delivery 3 of max_dequeue_count 3");
    d.assert(
        d.logs().contains("permanent_failure") || d.logs().contains("permanent failure"),
        "no permanent failure in the logs",
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
    assert_eq!(large.len(), 65_300, "the large body's length");
    let bodies = vec![plain, spaced, b64, large];
    w.send_all(&bodies).await;
    let script = w.hook("fail.sh", "exit 3");
    let cfg = w
        .config()
        .queue("poison_format = \"envelope\"")
        .handler(shell_handler(&script, "permanent_exit_codes = [3]"))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    let poisoned = w.poisoned().await;
    d.assert_eq(poisoned.len(), 4, "messages in the poison queue");
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
