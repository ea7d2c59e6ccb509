//! The alerting rules in a real Prometheus: Debian's `prometheus` binary
//! (installed by `scripts/check-deploy`) scrapes a real daemon on Azurite
//! every second and evaluates `deploy/prometheus/alerts.yaml`, loaded
//! unchanged (the poison alert has no `for`, so nothing needs shortening),
//! every second.

use crate::common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// A Prometheus server on a loopback port, with its data in a temp dir and
/// its output in files; stopped by its own pid.
struct Prometheus {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Prometheus {
    /// The first line of `prometheus --version`; panics, saying how to
    /// get it, when there is no Prometheus on PATH (never a silent skip:
    /// scripts/check-deploy fetches Debian's into target/deb-tools/bin,
    /// which scripts/test puts on PATH).
    fn version() -> String {
        match Command::new("prometheus").arg("--version").output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            other => panic!(
                "cannot run `prometheus --version` ({other:?}): this test needs the Prometheus \
                 server on PATH. scripts/check-deploy fetches Debian's package into \
                 target/deb-tools (no root needed) and scripts/test puts target/deb-tools/bin \
                 on PATH; alone: PATH=$PWD/target/deb-tools/bin:$PATH cargo nextest run --test prometheus"
            ),
        }
    }

    /// Scrapes `target` (`host:port`) every second and evaluates the
    /// project's alert rules every second.
    fn start(dir: &Path, target: &str) -> Self {
        let rules = repo_root().join("deploy/prometheus/alerts.yaml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules:?}\n\
                 scrape_configs:\n  - job_name: cvnotify\n    static_configs:\n      - targets: [{target:?}]\n",
            ),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            base: format!("http://{listen}"),
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `data` of a successful API answer; None while the server is not up.
    async fn api(&self, path: &str) -> Option<Value> {
        let rsp = reqwest::get(format!("{}{path}", self.base)).await.ok()?;
        let body: Value = serde_json::from_str(&rsp.text().await.ok()?).ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The array `key` of the `data` an API answer holds (empty while the
    /// server is not up).
    async fn list(&self, path: &str, key: &str) -> Vec<Value> {
        let data = self.api(path).await;
        data.and_then(|d| d[key].as_array().cloned())
            .unwrap_or_default()
    }

    /// The alerting rules Prometheus loaded (`/api/v1/rules`).
    async fn rules(&self) -> Vec<Value> {
        let groups = self.list("/api/v1/rules?type=alert", "groups").await;
        groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Active (pending or firing) alerts named `name`.
    async fn alerts(&self, name: &str) -> Vec<Value> {
        let mut alerts = self.list("/api/v1/alerts", "alerts").await;
        alerts.retain(|a| a["labels"]["alertname"] == name);
        alerts
    }

    /// The value of the one series `query` selects, as Prometheus has it.
    async fn value(&self, query: &str) -> Option<String> {
        let q: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let data = self.api(&format!("/api/v1/query?query={q}")).await?;
        data["result"][0]["value"][1].as_str().map(str::to_owned)
    }

    async fn stop(&mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let start = Instant::now();
        while start.elapsed() < LIMIT {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "prometheus: {status}\n{}", self.logs());
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("prometheus did not stop on SIGTERM\n{}", self.logs());
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_poison_alert_after_a_poisoned_message() {
    eprintln!("{}", Prometheus::version());
    let w = World::new().await;
    let script = w.hook("fail.sh", "exit 1");
    w.main_queue().create_if_missing().await.unwrap();
    let port = free_port();
    let cfg = w
        .config()
        .queue("max_dequeue_count = 1")
        .extra(format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"))
        .handler(shell_handler(&script, "name = \"fail\""))
        .write("c.toml");
    let mut d = w.daemon(&cfg).start();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    d.wait_for("/readyz to answer 200", async || {
        reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    let mut p = Prometheus::start(w.dir.path(), &format!("127.0.0.1:{port}"));
    // Before any poisoning: the poison queue's length was scraped (0), and
    // every rule of alerts.yaml loaded and evaluates without error; the
    // poison alert is inactive.
    let poison_length = r#"cvnotify_queue_length{job="cvnotify", role="poison"}"#;
    let loaded = eventually(LIMIT, async || {
        let rules = p.rules().await;
        p.value(poison_length).await.as_deref() == Some("0")
            && rules.len() == 4
            && rules.iter().all(|r| r["health"] == "ok")
            && rules
                .iter()
                .any(|r| r["name"] == "CvnotifyPoisonQueueNotEmpty" && r["state"] == "inactive")
    })
    .await;
    if !loaded {
        let rules = Value::Array(p.rules().await);
        fail_with(&format!("rules: {rules:#}\n{}", p.logs()), &[&d]);
    }
    let pending = p.alerts("CvnotifyPoisonQueueNotEmpty").await;
    assert!(pending.is_empty(), "{pending:?}");

    // One message; its only handler fails, and max_dequeue_count = 1.
    w.send_all(&[training("TrainingCompleted")]).await;
    w.wait_poisoned(&d, 1).await;
    let poisoned = Instant::now();

    // The daemon reads queue lengths at most every 30 s, so this takes up
    // to 30 s plus a scrape and an evaluation.
    let mut firing = Vec::new();
    let fired = eventually(LIMIT, async || {
        firing = p.alerts("CvnotifyPoisonQueueNotEmpty").await;
        firing.iter().any(|a| a["state"] == "firing")
    })
    .await;
    if !fired {
        let what = format!("no firing poison alert within {LIMIT:?}: {firing:?}");
        fail_with(&format!("{what}\n{}", p.logs()), &[&d]);
    }
    eprintln!(
        "CvnotifyPoisonQueueNotEmpty fired {:.1} s after the message reached the poison queue",
        poisoned.elapsed().as_secs_f64()
    );
    let alert = &firing[0];
    assert_eq!(alert["labels"]["job"], "cvnotify", "{alert}");
    assert_eq!(
        alert["labels"]["queue"],
        w.main_queue().name(),
        "the queue's name: {alert}"
    );
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    assert_eq!(
        alert["annotations"]["summary"], "cvnotify's poison queue holds 1 message(s) (cvnotify)",
        "{alert}"
    );

    d.stop_ok().await;
    p.stop().await;
}
