//! Production identity end to end: Azurite over HTTPS with OAuth, a local
//! token service (App Service managed identity and Entra ID workload
//! identity protocols), a private CA, and the failure modes users hit.

use crate::common;

use common::*;
use common::{tls, tokens};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Azurite over HTTPS with `--oauth basic`, its CA written to `ca.pem`.
struct Bed {
    azurite: Azurite,
    pki: tls::Pki,
    dir: tempfile::TempDir,
    queue: String,
}

impl Bed {
    async fn new() -> Self {
        let pki = tls::Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        pki.write_server(&cert, &key);
        pki.write_ca(&dir.path().join("ca.pem"));
        let azurite = Azurite::builder(Service::Queue)
            .args(["--oauth", "basic"])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .start()
            .await;
        Bed {
            azurite,
            pki,
            dir,
            queue: format!("q-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}/devstoreaccount1", self.azurite.port)
    }

    /// A Shared Key client over HTTPS, to set up queues and send messages.
    fn admin(&self, name: &str) -> AzureQueue {
        let text = format!(
            "[queue]\nname = \"{name}\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={DEV_KEY};QueueEndpoint={}\"\n[tls]\nca_file = \"{}\"\n",
            self.endpoint(),
            self.ca().display()
        );
        queue_client(&text, name)
    }

    fn config(&self, auth: &str, rest: &str) -> PathBuf {
        let p = self
            .dir
            .path()
            .join(format!("{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(
            &p,
            format!(
                "shutdown_timeout = \"5s\"\n[queue]\nname = \"{}\"\nendpoint = \"{}\"\nmax_poll_interval = \"300ms\"\n[auth]\n{auth}\n[log]\nformat = \"json\"\nlevel = \"debug\"\n{rest}\n",
                self.queue,
                self.endpoint()
            ),
        )
        .unwrap();
        p
    }
}

/// `cvnotify run` with the App Service managed-identity environment
/// pointing at `tokens`.
fn start_managed_identity(
    bed: &Bed,
    tokens: &tokens::TokenService,
    cfg: &Path,
    tag: &str,
) -> Daemon {
    let endpoint = format!("http://127.0.0.1:{}/msi/token", tokens.port);
    Daemon::start_with_env(
        cfg,
        &["run"],
        bed.dir.path(),
        tag,
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IDENTITY_HEADER", tokens::IDENTITY_HEADER),
        ],
    )
}

/// A bed with its queue, a token service issuing tokens for `lifetime`
/// over plain HTTP (App Service managed identity), a recording hook (its
/// output file), and a config with `mode = "managed_identity"` plus `auth`
/// keys that trusts the bed's CA.
async fn managed_identity(
    lifetime: Duration,
    auth: &str,
) -> (Bed, tokens::TokenService, PathBuf, PathBuf) {
    let bed = Bed::new().await;
    bed.admin(&bed.queue).create_if_missing().await.unwrap();
    let tokens = tokens::TokenService::start(lifetime, None).await;
    let (out, handler) = recording_hook(bed.dir.path());
    let cfg = bed.config(
        &format!("mode = \"managed_identity\"\n{auth}"),
        &format!("[tls]\nca_file = \"{}\"\n{handler}", bed.ca().display()),
    );
    (bed, tokens, out, cfg)
}

/// Sends one message every 500 ms for `run` and waits until all are handled.
async fn flow(bed: &Bed, d: &Daemon, out: &Path, run: Duration) -> usize {
    let q = bed.admin(&bed.queue);
    let mut ids = HashSet::new();
    let start = Instant::now();
    while start.elapsed() < run {
        ids.insert(
            q.send(&training("TrainingCompleted"), Expiry::ServiceDefault)
                .await
                .unwrap()
                .id,
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    d.wait_for("all handled", async || {
        lines(out)
            .into_iter()
            .collect::<HashSet<_>>()
            .is_superset(&ids)
    })
    .await;
    d.wait_for("an empty queue", async || World::length(&q).await == 0)
        .await;
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_over_https_with_token_refresh_and_client_id() {
    let lifetime = Duration::from_secs(6);
    let client_id = "5f3c1a7e-0000-4000-8000-00000000c11d";
    let (bed, tokens, out, cfg) =
        managed_identity(lifetime, &format!("client_id = \"{client_id}\"")).await;
    let mut d = start_managed_identity(&bed, &tokens, &cfg, "mi");
    // More than two token lifetimes of traffic.
    let run = lifetime * 2 + Duration::from_secs(3);
    let handled = flow(&bed, &d, &out, run).await;
    d.stop_ok().await;
    let reqs = tokens.snapshot();
    assert!(
        reqs.iter()
            .all(|r| r.client_id.as_deref() == Some(client_id)),
        "{reqs:?}"
    );
    // Refreshed (Azurite rejects expired tokens), but not per storage call:
    // about one token per half-life, while receive calls run every 300 ms.
    // Every token the daemon fetched is one the service counted.
    let fetched = d.records_of("Got a new token").len();
    assert!(reqs.len() >= 3, "{} token requests in {run:?}", reqs.len());
    assert!(reqs.len() <= 12, "{} token requests in {run:?}", reqs.len());
    assert_eq!(
        fetched,
        reqs.len(),
        "token fetches logged vs requests served"
    );
    println!(
        "managed identity: {handled} messages over {run:?}, {} token requests ({:.0} per hour of run), token lifetime {lifetime:?}",
        reqs.len(),
        reqs.len() as f64 * 3600.0 / run.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_with_a_rotated_token_file() {
    let bed = Bed::new().await;
    bed.admin(&bed.queue).create_if_missing().await.unwrap();
    let lifetime = Duration::from_secs(4);
    let tokens = tokens::TokenService::start(lifetime, Some(&bed.pki)).await;
    let token_file = bed.dir.path().join("federated-token");
    std::fs::write(&token_file, "assertion-one").unwrap();
    let (out, handler) = recording_hook(bed.dir.path());
    let cfg = bed.config(
        "mode = \"workload_identity\"",
        &format!("[tls]\nca_file = \"{}\"\n{handler}", bed.ca().display()),
    );
    let authority = format!("https://127.0.0.1:{}", tokens.port);
    let client_id = "0a1b2c3d-0000-4000-8000-00000000w1d0";
    let mut d = Daemon::start_with_env(
        &cfg,
        &["run"],
        bed.dir.path(),
        "wi",
        &[
            ("AZURE_AUTHORITY_HOST", authority.as_str()),
            ("AZURE_TENANT_ID", tokens::TENANT),
            ("AZURE_CLIENT_ID", client_id),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap()),
        ],
    );
    let first = flow(&bed, &d, &out, Duration::from_secs(4)).await;
    // Kubernetes rotates the projected token; the next token request must
    // carry the new one.
    std::fs::write(&token_file, "assertion-two").unwrap();
    let rotated_at = std::time::SystemTime::now();
    let second = flow(&bed, &d, &out, Duration::from_secs(6)).await;
    d.stop_ok().await;
    let reqs = tokens.snapshot();
    assert!(
        reqs.iter()
            .all(|r| r.path == format!("/{}/oauth2/v2.0/token", tokens::TENANT)),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .all(|r| r.client_id.as_deref() == Some(client_id)),
        "{reqs:?}"
    );
    let after: Vec<&tokens::TokenRequest> = reqs.iter().filter(|r| r.at > rotated_at).collect();
    assert!(!after.is_empty(), "no token request after the rotation");
    assert!(
        after
            .iter()
            .all(|r| r.assertion.as_deref() == Some("assertion-two")),
        "{after:?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.assertion.as_deref() == Some("assertion-one")),
        "no request with the first assertion: {reqs:?}"
    );
    println!(
        "workload identity: {} messages, {} token requests, {} after rotation",
        first + second,
        reqs.len(),
        after.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_ca_file_the_errors_say_the_certificate_is_untrusted() {
    let bed = Bed::new().await;
    bed.admin(&bed.queue).create_if_missing().await.unwrap();
    // Workload identity: the token endpoint itself is behind the private CA.
    let tokens = tokens::TokenService::start(Duration::from_secs(60), Some(&bed.pki)).await;
    let token_file = bed.dir.path().join("federated-token");
    std::fs::write(&token_file, "assertion").unwrap();
    // Generous, though the daemon retries the untrusted certificate until
    // it passes (the test takes that long): the first attempt, the SDK's
    // own three tries with their back-off (1.4 s unloaded, 1.7 s at load
    // 4), must end within it, or all the error can say is that no answer
    // came. With 2 s a loaded machine cut the first attempt short.
    let cfg = bed.config(
        "mode = \"workload_identity\"\nstartup_timeout = \"20s\"",
        "",
    );
    let authority = format!("https://127.0.0.1:{}", tokens.port);
    cli()
        .config(&cfg)
        .args(["run", "--once"])
        .env("AZURE_AUTHORITY_HOST", &authority)
        .env("AZURE_TENANT_ID", tokens::TENANT)
        .env("AZURE_CLIENT_ID", "0a1b2c3d-0000-4000-8000-000000000001")
        .env("AZURE_FEDERATED_TOKEN_FILE", &token_file)
        .run()
        .assert_code(69)
        .assert_stderr_shows("certificate")
        .assert_stderr_shows("tls.ca_file");
    assert_eq!(tokens.count(), 0, "tokens served over untrusted TLS");

    // Managed identity over plain HTTP gets its token; storage is untrusted.
    let mi = tokens::TokenService::start(Duration::from_secs(60), None).await;
    let cfg = bed.config("mode = \"managed_identity\"", "");
    let endpoint = format!("http://127.0.0.1:{}/msi/token", mi.port);
    let out = cli()
        .config(&cfg)
        .arg("check")
        .env("IDENTITY_ENDPOINT", &endpoint)
        .env("IDENTITY_HEADER", tokens::IDENTITY_HEADER)
        .run();
    out.assert_code(1).assert(
        out.lines()
            .iter()
            .find(|l| l.contains("queue"))
            .is_some_and(|l| l.starts_with("FAIL") && l.contains("tls.ca_file")),
        "the queue line: FAIL naming tls.ca_file",
    );

    // The same check with tls.ca_file passes every line.
    let cfg = bed.config(
        "mode = \"managed_identity\"",
        &format!("[tls]\nca_file = \"{}\"", bed.ca().display()),
    );
    let text = cli()
        .config(&cfg)
        .arg("check")
        .env("IDENTITY_ENDPOINT", &endpoint)
        .env("IDENTITY_HEADER", tokens::IDENTITY_HEADER)
        .stdout();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok")).count(),
        7,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_service_down_while_running_is_survived() {
    let lifetime = Duration::from_secs(4);
    let (bed, tokens, out, cfg) = managed_identity(lifetime, "").await;
    let mut d = start_managed_identity(&bed, &tokens, &cfg, "down");
    flow(&bed, &d, &out, Duration::from_secs(1)).await;
    // Down for longer than a token lifetime: the token expires meanwhile.
    tokens.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let q = bed.admin(&bed.queue);
    let during = q
        .send(&training("TrainingFailed"), Expiry::ServiceDefault)
        .await
        .unwrap()
        .id;
    tokio::time::sleep(lifetime + Duration::from_secs(3)).await;
    d.assert_running("while the token service is down");
    d.assert(
        d.logs().contains("Refreshing the token failed")
            || d.logs().contains("authentication failed"),
        "no warning while the token service is down",
    );
    tokens
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    d.wait_for("the message sent during the outage handled", async || {
        lines(&out).contains(&during)
    })
    .await;
    d.stop_ok().await;
    let errors: Vec<String> = d
        .records()
        .iter()
        .filter(|r| r["level"] == "ERROR")
        .map(|r| r.to_string())
        .collect();
    assert!(errors.is_empty(), "ERROR for a passing outage: {errors:?}");
}

/// A SAS without the process permission: receive is denied. ERROR with the
/// operation and the role, at the back-off rate, no crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_denied_is_an_error_naming_the_role() {
    let w = World::new().await;
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w.write_config("c.toml", &w.sas_config("ra"));
    let mut d = w.daemon(&cfg).start();
    tokio::time::sleep(Duration::from_secs(8)).await;
    d.assert_running("with receive denied");
    d.stop_ok().await;
    let errors: Vec<serde_json::Value> = d
        .records()
        .into_iter()
        .filter(|r| r["level"] == "ERROR")
        .collect();
    d.assert(!errors.is_empty(), "no ERROR record");
    let e = errors[0]["error"].as_str().unwrap();
    assert!(
        e.contains("receive messages") && e.contains("Storage Queue Data Message Processor"),
        "{e}"
    );
    // 1, 2, 4 s back-off: a handful in 8 s, not one per poll.
    assert!(errors.len() <= 5, "{} errors in 8 s", errors.len());

    let out = cli().config(&cfg).arg("check").run();
    out.assert_code(1).assert(
        out.lines()
            .iter()
            .find(|l| l.contains("receive"))
            .is_some_and(|l| l.starts_with("FAIL") && l.contains("Message Processor")),
        "the receive line: FAIL naming the Message Processor role",
    );
}

/// Read and process but not update (Message Processor alone): WARN once
/// with the role, then work without renewal; a failure reappears after the
/// visibility timeout instead of a retry delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_denied_warns_once_and_keeps_working() {
    let w = World::new().await;
    w.poison_queue().create_if_missing().await.unwrap();
    // Fails on the first delivery, succeeds on the second.
    let script = w.hook(
        "h.sh",
        "echo \"$CVNOTIFY_DEQUEUE_COUNT\" >> \"$DIR/calls.txt\"\n[ \"$CVNOTIFY_DEQUEUE_COUNT\" -ge 2 ]",
    );
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w.write_config(
        "c.toml",
        &format!(
            "[queue]\nname = \"{}\"\nendpoint = \"{}\"\nvisibility_timeout = \"3s\"\nmax_poll_interval = \"300ms\"\n[auth]\nmode = \"sas\"\nsas_token = \"{}\"\n[log]\nformat = \"json\"\n{}",
            w.queue,
            w.azurite.queue_endpoint(),
            account_sas("rpa"),
            shell_handler(&script, "")
        ),
    );
    let mut d = w.daemon(&cfg).start();
    w.wait_drained(&d).await;
    d.stop_ok().await;
    assert_eq!(
        lines(&w.path("calls.txt")),
        vec!["1", "2"],
        "the deliveries the hook saw"
    );
    let warns: Vec<serde_json::Value> = d
        .records()
        .into_iter()
        .filter(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Update Message is denied"))
        })
        .collect();
    d.assert_eq(warns.len(), 1, "\"Update Message is denied\" records");
    assert_eq!(warns[0]["level"], "WARN", "{}", warns[0]);
    assert!(
        warns[0]["message"]
            .as_str()
            .unwrap()
            .contains("Storage Queue Data Contributor"),
        "{}",
        warns[0]
    );

    let out = cli().config(&cfg).arg("check").run();
    let line = |step: &str| out.lines().into_iter().find(|l| l.contains(step));
    out.assert(
        line("update")
            .is_some_and(|l| l.starts_with("FAIL") && l.contains("Storage Queue Data Contributor")),
        "the update line: FAIL naming the Contributor role",
    )
    .assert(
        line("receive").is_some_and(|l| l.starts_with("ok")),
        "the receive line: ok",
    );
}
