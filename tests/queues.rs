//! Several queues in one daemon (`[[queues]]`): two Azurite instances (two
//! "accounts"), one queue on each, with their own handlers, thresholds and
//! credentials, and one shared concurrency limit.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Queue A on the world's Azurite (top-level `[auth]`), queue B on a second
/// Azurite with its own `[queues.auth]`.
struct Two {
    w: World,
    b: Azurite,
    qb: String,
}

impl Two {
    async fn new() -> Self {
        let w = World::new().await;
        let b = Azurite::start().await;
        let qb = format!("b-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Two { w, b, qb }
    }

    fn qa(&self) -> &str {
        &self.w.queue
    }

    /// B's own credentials: an explicit connection string naming its
    /// endpoint (A's come from the top-level `UseDevelopmentStorage=true`
    /// plus `endpoint`).
    fn b_connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};QueueEndpoint={};",
            self.b.queue_endpoint()
        )
    }

    /// The two-queue configuration: `top` goes before the tables, `a` and
    /// `b` are extra keys of each `[[queues]]` entry, `a_handlers` and
    /// `b_handlers` their `[[queues.handlers]]` tables.
    fn config(&self, top: &str, a: &str, a_handlers: &str, b: &str, b_handlers: &str) -> PathBuf {
        let shutdown = if top.contains("shutdown_timeout") {
            ""
        } else {
            "shutdown_timeout = \"10s\""
        };
        let text = format!(
            r#"
{shutdown}
{top}
[auth]
mode = "connection_string"
connection_string = "UseDevelopmentStorage=true"
[log]
format = "json"
level = "debug"
[http]
listen = "127.0.0.1:0"

[[queues]]
name = "{qa}"
endpoint = "{ea}"
min_poll_interval = "50ms"
max_poll_interval = "500ms"
retry_base_delay = "1s"
{a}
{a_handlers}

[[queues]]
name = "{qb}"
min_poll_interval = "50ms"
max_poll_interval = "500ms"
retry_base_delay = "1s"
{b}
[queues.auth]
mode = "connection_string"
connection_string = "{cb}"
{b_handlers}
"#,
            qa = self.qa(),
            ea = self.w.azurite.queue_endpoint(),
            qb = self.qb,
            cb = self.b_connection_string(),
        );
        self.w.write_config("two.toml", &text)
    }

    fn b_single(&self) -> String {
        format!(
            "[queue]\nname = \"{}\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"{}\"\n",
            self.qb,
            self.b_connection_string()
        )
    }

    fn queue_b(&self) -> AzureQueue {
        queue_client(&self.b_single(), &self.qb)
    }

    fn poison_b(&self) -> AzureQueue {
        queue_client(&self.b_single(), &format!("{}-poison", self.qb))
    }
}

async fn send(q: &AzureQueue, bodies: &[String]) -> Vec<String> {
    q.create_if_missing().await.unwrap();
    let mut ids = Vec::new();
    for b in bodies {
        ids.push(q.send(b, Expiry::ServiceDefault).await.unwrap().id);
    }
    ids
}

/// A `[[queues.handlers]]` shell hook that appends
/// `<message id> <dequeue count>` to `out` and fails on TrainingFailed.
fn recording_queue_hook(dir: &Path, name: &str, out: &Path, extra_body: &str) -> String {
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{extra_body}\necho \"$CVNOTIFY_MESSAGE_ID $CVNOTIFY_DEQUEUE_COUNT\" >> {}\n[ \"$CVNOTIFY_STATUS\" = TrainingFailed ] && exit 1\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    format!(
        "[[queues.handlers]]\ntype = \"shell\"\nname = \"{name}\"\ncommand = [\"/bin/sh\", \"{}\"]\n",
        script.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_queue_reaches_only_its_handlers_and_poisons_with_its_own_threshold() {
    let t = Two::new().await;
    let dir = t.w.dir.path();
    let (out_a, out_b) = (dir.join("a.txt"), dir.join("b.txt"));
    let cfg = t.config(
        "",
        "max_dequeue_count = 1",
        &recording_queue_hook(dir, "hook-a", &out_a, ""),
        "max_dequeue_count = 2",
        &recording_queue_hook(dir, "hook-b", &out_b, ""),
    );
    let (qa, qb) = (t.w.main_queue(), t.queue_b());
    let ids_a = send(
        &qa,
        &[
            training("TrainingCompleted"),
            training("TrainingCompleted"),
            training("TrainingFailed"),
        ],
    )
    .await;
    let ids_b = send(
        &qb,
        &[training("TrainingCompleted"), training("TrainingFailed")],
    )
    .await;
    let mut d = t.w.daemon(&cfg).start();
    let base = format!("http://{}", d.http_addr().await);
    let (pa, pb) = (t.w.poison_queue(), t.poison_b());
    d.wait_for("one poisoned and none left on each queue", async || {
        World::peek_all(&pa).await.len() == 1
            && World::peek_all(&pb).await.len() == 1
            && World::length(&qa).await == 0
            && World::length(&qb).await == 0
    })
    .await;
    // Each hook saw only its own queue's messages.
    let seen = |lines: &[String]| -> Vec<(String, u32)> {
        lines
            .iter()
            .map(|l| {
                let (id, n) = l.split_once(' ').unwrap();
                (id.to_owned(), n.parse().unwrap())
            })
            .collect()
    };
    let (a, b) = (seen(&lines(&out_a)), seen(&lines(&out_b)));
    assert!(
        a.iter().all(|(id, _)| ids_a.contains(id)),
        "A's hook got {a:?}"
    );
    assert!(
        b.iter().all(|(id, _)| ids_b.contains(id)),
        "B's hook got {b:?}"
    );
    // A poisons on the first failure, B on the second.
    let failed_a: Vec<u32> = a
        .iter()
        .filter(|(id, _)| *id == ids_a[2])
        .map(|x| x.1)
        .collect();
    let failed_b: Vec<u32> = b
        .iter()
        .filter(|(id, _)| *id == ids_b[1])
        .map(|x| x.1)
        .collect();
    assert_eq!(failed_a, vec![1], "{a:?}");
    assert_eq!(failed_b, vec![1, 2], "{b:?}");

    // Metrics per queue, readiness per queue.
    let (status, body) = http_get(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("{}: ready", t.qa())) && body.contains(&format!("{}: ready", t.qb)),
        "{body}"
    );
    let (_, text) = http_get(&format!("{base}/metrics")).await;
    for want in [
        format!("cvnotify_messages_received_total{{queue=\"{}\"}} 3", t.qa()),
        format!("cvnotify_messages_received_total{{queue=\"{}\"}} 3", t.qb),
        format!(
            "cvnotify_messages_poisoned_total{{queue=\"{}\",reason=\"max_dequeue_count\"}} 1",
            t.qa()
        ),
        format!(
            "cvnotify_messages_handled_total{{queue=\"{}\",handler=\"hook-b\",outcome=\"failure\"}} 2",
            t.qb
        ),
    ] {
        assert!(text.contains(&want), "{want} not in\n{text}");
    }
    assert!(
        !text.contains(&format!("queue=\"{}\",handler=\"hook-a\"", t.qb)),
        "{text}"
    );
    d.stop_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_both_queues() {
    let t = Two::new().await;
    let dir = t.w.dir.path();
    let (out_a, out_b) = (dir.join("a.txt"), dir.join("b.txt"));
    let (started_a, started_b) = (dir.join("a.started"), dir.join("b.started"));
    let cfg = t.config(
        "",
        "",
        &recording_queue_hook(
            dir,
            "hook-a",
            &out_a,
            &format!("touch {}; sleep 2", started_a.display()),
        ),
        "",
        &recording_queue_hook(
            dir,
            "hook-b",
            &out_b,
            &format!("touch {}; sleep 2", started_b.display()),
        ),
    );
    let (qa, qb) = (t.w.main_queue(), t.queue_b());
    send(&qa, &[training("TrainingCompleted")]).await;
    send(&qb, &[training("TrainingCompleted")]).await;
    let mut d = t.w.daemon(&cfg).start();
    d.wait_for("both hooks to start", async || {
        started_a.exists() && started_b.exists()
    })
    .await;
    d.stop_ok().await;
    // Both hooks finished within shutdown_timeout: both messages deleted.
    d.assert_eq(lines(&out_a).len(), 1, "A's hook runs that finished");
    d.assert_eq(lines(&out_b).len(), 1, "B's hook runs that finished");
    assert_eq!(World::length(&qa).await, 0, "A's message left");
    assert_eq!(World::length(&qb).await, 0, "B's message left");
}

/// The fairness bound: 2,000 slow messages on A hold A at its cap, and a
/// message on B is handled within about one poll interval plus one handler
/// run of its own, not after A's backlog, nor after one of A's (15 s)
/// handler runs frees a slot: B has a reserved one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_queue_does_not_delay_the_other() {
    const FLOOD: usize = 2000;
    let t = Two::new().await;
    let dir = t.w.dir.path();
    let (out_a, out_b) = (dir.join("a.txt"), dir.join("b.txt"));
    let started_a = dir.join("a.started");
    let cfg = t.config(
        "max_concurrency = 4\nshutdown_timeout = \"2s\"",
        "",
        &recording_queue_hook(
            dir,
            "slow",
            &out_a,
            &format!("echo x >> {}; sleep 15", started_a.display()),
        ),
        "",
        &recording_queue_hook(dir, "fast", &out_b, ""),
    );
    let qa = t.w.main_queue();
    qa.create_if_missing().await.unwrap();
    // Sent in batches of 50 concurrent requests (bounded in count).
    let body = training("TrainingCompleted");
    let sent_at = Instant::now();
    for _ in 0..FLOOD / 50 {
        let sends = (0..50).map(|_| qa.send(&body, Expiry::ServiceDefault));
        for r in futures_util::future::join_all(sends).await {
            r.unwrap();
        }
    }
    eprintln!(
        "sent {FLOOD} messages in {:.1} s",
        sent_at.elapsed().as_secs_f64()
    );
    let qb = t.queue_b();
    qb.create_if_missing().await.unwrap();
    let mut d = t.w.daemon(&cfg).start();
    // A is busy: it holds its cap (3 of the 4 slots; 1 is B's reserve).
    d.wait_for("A to run 3 hooks", async || lines(&started_a).len() >= 3)
        .await;
    let sent = Instant::now();
    let id = send(&qb, &[training("TrainingCompleted")]).await.remove(0);
    d.wait_for("B's message handled while A is flooded", async || {
        lines(&out_b).iter().any(|l| l.starts_with(&id))
    })
    .await;
    let delay = sent.elapsed();
    let a_started = lines(&started_a).len();
    eprintln!(
        "B's message handled {:.2} s after it was sent, while A ran {a_started} of {FLOOD} (poll interval 0.5 s, A's handler 15 s)",
        delay.as_secs_f64()
    );
    // One poll interval (0.5 s) plus B's handler run, with a generous
    // margin for a loaded machine, and below A's 15 s handler run: without
    // the reserve B would wait for one of A's slots.
    assert!(delay < Duration::from_secs(10), "{delay:?}");
    assert_eq!(a_started, 3, "A ran more than its cap");
    d.stop_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_take_queue_name_and_refuse_to_guess() {
    let t = Two::new().await;
    let cfg = t.config("", "", "", "", "");
    // Without --queue: a usage error naming both.
    cli()
        .config(&cfg)
        .args(["send", "--type", "training"])
        .run()
        .assert_code(2)
        .assert_stderr_shows(&format!("pass --queue NAME (one of: {}, {})", t.qa(), t.qb));
    // With it, the message lands in B's account only.
    cli()
        .config(&cfg)
        .args(["send", "--type", "training", "--queue", &t.qb])
        .stdout();
    assert_eq!(World::length(&t.queue_b()).await, 1, "B's messages");
    assert_eq!(World::length(&t.w.main_queue()).await, 0, "A's messages");
    cli()
        .config(&cfg)
        .args(["poison", "list", "--queue", "nope"])
        .run()
        .assert_code(2)
        .assert_stderr_shows("no queue is named `nope`");
    // check --config-only validates every queue, needing no --queue.
    cli().config(&cfg).args(["check", "--config-only"]).stdout();
    // `run --once` drains both and sums the summary.
    send(&t.w.main_queue(), &[training("TrainingCompleted")]).await;
    cli()
        .config(&cfg)
        .args(["run", "--once"])
        .run()
        .assert_success();
    assert_eq!(World::length(&t.queue_b()).await, 0, "B's messages left");
    assert_eq!(
        World::length(&t.w.main_queue()).await,
        0,
        "A's messages left"
    );
}
