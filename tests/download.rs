//! The model-download handler against azurite-blob (and a loopback server
//! that breaks transfers), in process and through the daemon.

mod common;

use azure_core::http::{ClientOptions, RequestContent};
use common::*;
use sha2::Digest;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use url::Url;
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(60);

/// Azurite's blob service with one container.
struct Blobs {
    azurite: Azurite,
    container: String,
}

impl Blobs {
    async fn start() -> Self {
        let azurite = Azurite::builder(Service::Blob).start().await;
        let b = Blobs {
            azurite,
            container: "models".into(),
        };
        let url = Url::parse(&format!("{}/{}", b.endpoint(), b.container)).unwrap();
        azure_storage_blob::BlobContainerClient::new(
            url,
            None,
            Some(azure_storage_blob::BlobContainerClientOptions {
                client_options: signed(),
                ..Default::default()
            }),
        )
        .unwrap()
        .create(None)
        .await
        .unwrap();
        b
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.azurite.port)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.azurite.port)
    }

    /// The URL of blob `name` (spaces encoded, as the service writes them).
    fn url(&self, name: &str) -> String {
        format!(
            "{}/{}/{}",
            self.endpoint(),
            self.container,
            name.replace(' ', "%20")
        )
    }

    fn client(&self, name: &str) -> azure_storage_blob::BlobClient {
        azure_storage_blob::BlobClient::new(
            Url::parse(&self.url(name)).unwrap(),
            None,
            Some(azure_storage_blob::BlobClientOptions {
                client_options: signed(),
                ..Default::default()
            }),
        )
        .unwrap()
    }

    async fn upload(&self, name: &str, bytes: Vec<u8>) {
        self.client(name)
            .upload(RequestContent::from(bytes), None)
            .await
            .unwrap();
    }
}

fn signed() -> ClientOptions {
    ClientOptions {
        per_try_policies: vec![Arc::new(SharedKeyPolicy::new(
            "devstoreaccount1",
            Secret::new(DEV_KEY),
        ))],
        ..Default::default()
    }
}

fn model_bytes(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(len as u64);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn export(project: Uuid, iteration: Uuid, uri: &str) -> String {
    format!(
        r#"{{"version":"1.0","type":"Export","Content":{{"projectId":"{project}","iterationId":"{iteration}","exportStatus":"ExportCompleted","modelUri":"{uri}"}}}}"#
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Files in `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn download_handler(w: &World, dir: &Path, hosts: &[String], extra: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let _ = w;
    format!(
        "[[handlers]]\ntype = \"download\"\ndir = \"{}\"\nallowed_hosts = [{}]\n{extra}\n",
        dir.display(),
        hosts.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_model_is_stored_under_the_service_naming_with_its_checksum() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let bytes = model_bytes(3 * 1024 * 1024 + 17);
    let name = format!("{p} - {i}.ONNX");
    blobs.upload(&name, bytes.clone()).await;
    w.send_all(&[export(p, i, &blobs.url(&name))]).await;
    let dir = w.path("models");
    let cfg = w
        .config()
        .handler(download_handler(&w, &dir, &[blobs.host()], ""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    assert!(
        d.wait_timeout(LIMIT).await.unwrap().success(),
        "{}",
        d.logs()
    );
    assert_eq!(
        files(&dir),
        vec![name.clone(), format!("{name}.sha256")],
        "{}",
        d.logs()
    );
    let stored = std::fs::read(dir.join(&name)).unwrap();
    assert_eq!(stored.len(), bytes.len());
    assert!(stored == bytes, "content differs");
    let sha_file = std::fs::read_to_string(dir.join(format!("{name}.sha256"))).unwrap();
    assert_eq!(sha_file, format!("{}  {name}\n", sha256_hex(&bytes)));
    assert_eq!(World::length(&w.main_queue()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sas_url_is_fetched_as_is() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let name = format!("{p} - {i}.zip");
    let bytes = model_bytes(100_000);
    blobs.upload(&name, bytes.clone()).await;
    let good = format!("{}?{}", blobs.url(&name), account_sas_for("b", "r"));
    // A broken signature: if the daemon signed with its own key instead of
    // using the URL as is, this one would succeed too.
    let bad = good.replace("sig=", "sig=AAAA");
    let (p2, i2) = (Uuid::new_v4(), Uuid::new_v4());
    w.send_all(&[export(p, i, &good), export(p2, i2, &bad)])
        .await;
    let dir = w.path("models");
    let cfg = w
        .config()
        .queue("max_dequeue_count = 1")
        .handler(download_handler(&w, &dir, &[blobs.host()], ""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "d");
    assert!(
        d.wait_timeout(LIMIT).await.unwrap().success(),
        "{}",
        d.logs()
    );
    assert_eq!(std::fs::read(dir.join(&name)).unwrap(), bytes);
    assert_eq!(files(&dir).len(), 2, "{:?}", files(&dir));
    assert_eq!(World::peek_all(&w.poison_queue()).await.len(), 1);
    let logs = d.logs();
    assert!(logs.contains("denied (403)"), "{logs}");
    assert!(!logs.contains("sig=AAAA"), "SAS in logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_blob_is_retried_then_poisoned() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let body = export(p, i, &blobs.url(&format!("{p} - {i}.ONNX")));
    w.send_all(std::slice::from_ref(&body)).await;
    let dir = w.path("models");
    let cfg = w
        .config()
        .queue("max_dequeue_count = 2")
        .handler(download_handler(&w, &dir, &[blobs.host()], ""))
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    let poison = w.poison_queue();
    assert!(
        eventually(LIMIT, async || !World::peek_all(&poison).await.is_empty()).await,
        "{}",
        d.logs()
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_timeout(LIMIT).await.unwrap().success());
    assert_eq!(World::peek_all(&poison).await, vec![body]);
    let logs = d.logs();
    assert!(logs.matches("does not exist (404)").count() >= 2, "{logs}");
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_does_not_download_again() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let name = format!("{p} - {i}.ONNX");
    blobs.upload(&name, model_bytes(50_000)).await;
    let body = export(p, i, &blobs.url(&name));
    let dir = w.path("models");
    let cfg = w
        .config()
        .handler(download_handler(&w, &dir, &[blobs.host()], ""))
        .write("c.toml");
    w.send_all(std::slice::from_ref(&body)).await;
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "first");
    assert!(
        d.wait_timeout(LIMIT).await.unwrap().success(),
        "{}",
        d.logs()
    );
    let before = std::fs::metadata(dir.join(&name))
        .unwrap()
        .modified()
        .unwrap();
    // Delete the blob: a second download could only fail.
    self::delete_blob(&blobs, &name).await;
    w.send_all(std::slice::from_ref(&body)).await;
    let mut d = Daemon::start(&cfg, &["run", "--once"], w.dir.path(), "second");
    assert!(
        d.wait_timeout(LIMIT).await.unwrap().success(),
        "{}",
        d.logs()
    );
    assert!(
        d.logs().contains("The model is already downloaded"),
        "{}",
        d.logs()
    );
    assert_eq!(
        std::fs::metadata(dir.join(&name))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    assert_eq!(World::length(&w.main_queue()).await, 0);
    assert!(World::peek_all(&w.poison_queue()).await.is_empty());
}

async fn delete_blob(blobs: &Blobs, name: &str) {
    blobs.client(name).delete(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_last_removes_older_models_of_the_same_project() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let dir = w.path("models");
    let p = Uuid::new_v4();
    let other = Uuid::new_v4();
    let text = w
        .config()
        .handler(download_handler(&w, &dir, &[blobs.host()], "keep_last = 2"))
        .render();
    let config = Config::from_toml(&text).unwrap();
    let ctx = BuildContext {
        blobs: std::sync::Arc::new(crate::common::connect(&config).unwrap().blobs().unwrap()),
        ..crate::common::anonymous_ctx()
    };
    let handler = match &config.handlers[0] {
        c @ HandlerConfig::Download(_) => c.build(&ctx).unwrap(),
        other => panic!("{other:?}"),
    };
    let mut names = Vec::new();
    for (k, project) in [p, p, other, p].into_iter().enumerate() {
        let i = Uuid::new_v4();
        let name = format!("{project} - {i}.ONNX");
        blobs.upload(&name, model_bytes(1000 + k)).await;
        handler
            .handle(&delivery(&export(project, i, &blobs.url(&name))))
            .await
            .unwrap();
        names.push(name);
        // Distinct modification times.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut expected = vec![
        names[1].clone(),
        format!("{}.sha256", names[1]),
        names[2].clone(),
        format!("{}.sha256", names[2]),
        names[3].clone(),
        format!("{}.sha256", names[3]),
    ];
    expected.sort();
    assert_eq!(files(&dir), expected);
}

fn delivery(body: &str) -> Delivery {
    delivery_of(body, "m", 1)
}

fn anonymous_handler(dir: &Path, hosts: &[&str]) -> Arc<dyn Handler> {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let text = format!(
        "[queue]\nname = \"q-x\"\naccount = \"a\"\n[[handlers]]\ntype = \"download\"\ndir = \"{}\"\nallowed_hosts = [{}]\n",
        dir.display(),
        hosts.join(", ")
    );
    let config = Config::from_toml(&text).unwrap();
    config.handlers[0]
        .build(&crate::common::anonymous_ctx())
        .unwrap()
}

#[tokio::test]
async fn urls_outside_the_allowed_hosts_and_bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let handler = anonymous_handler(dir.path(), &["acct.blob.core.windows.net"]);
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    for uri in [
        "https://evil.example/models/x.ONNX",
        "https://acct.blob.core.windows.net.evil.example/m/x.ONNX",
        "https://acct.blob.core.windows.net:8443/m/x.ONNX",
    ] {
        let e = handler
            .handle(&delivery(&export(p, i, uri)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not in allowed_hosts"), "{uri}: {e}");
    }
    // An allowed host, but a blob name that tries to climb out of `dir`:
    // the stored name comes from the GUIDs, and the extension must be plain.
    let e = handler
        .handle(&delivery(&export(
            p,
            i,
            "https://acct.blob.core.windows.net/m/..%2F..%2Fetc%2Fpasswd",
        )))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot tell the platform"), "{e}");
    assert!(files(dir.path()).is_empty());
}

#[tokio::test]
async fn failed_exports_and_other_events_succeed_without_downloading() {
    let dir = tempfile::tempdir().unwrap();
    let handler = anonymous_handler(dir.path(), &["acct.blob.core.windows.net"]);
    let failed = r#"{"version":"1.0","type":"Export","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportFailed"}}"#;
    handler.handle(&delivery(failed)).await.unwrap();
    handler
        .handle(&delivery(&training("TrainingCompleted")))
        .await
        .unwrap();
    assert!(files(dir.path()).is_empty());
}

/// Benchmark, not run by default: `cargo test --release --test download --
/// --ignored --nocapture`. Downloads a 50 MiB blob from Azurite through the
/// handler and prints the throughput.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_download_50_mib() {
    let blobs = Blobs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let name = format!("{p} - {i}.ONNX");
    let bytes = model_bytes(50 * 1024 * 1024);
    blobs.upload(&name, bytes.clone()).await;
    let text = format!(
        "[queue]\nname = \"q-x\"\nendpoint = \"http://127.0.0.1:1/devstoreaccount1\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"UseDevelopmentStorage=true\"\n[[handlers]]\ntype = \"download\"\ndir = \"{}\"\nallowed_hosts = [\"{}\"]\n",
        dir.path().display(),
        blobs.host()
    );
    let config = Config::from_toml(&text).unwrap();
    let ctx = BuildContext {
        blobs: std::sync::Arc::new(crate::common::connect(&config).unwrap().blobs().unwrap()),
        ..crate::common::anonymous_ctx()
    };
    let handler = config.handlers[0].build(&ctx).unwrap();
    let mut rates = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_file(dir.path().join(&name));
        let _ = std::fs::remove_file(dir.path().join(format!("{name}.sha256")));
        let t = std::time::Instant::now();
        handler
            .handle(&delivery(&export(p, i, &blobs.url(&name))))
            .await
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        rates.push(50.0 / secs);
        println!("50 MiB in {secs:.2} s = {:.1} MiB/s", 50.0 / secs);
    }
    assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), bytes);
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "min/median/max MiB/s: {:.1} / {:.1} / {:.1}",
        rates[0], rates[1], rates[2]
    );
}

/// A server that answers every request (up to 8: the client may retry) with
/// `head` and then `body`, and closes: a blob server that misbehaves.
async fn fixed_response_server(head: String, body: Vec<u8>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 8192];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
            let _ = s.shutdown().await;
        }
    });
    port
}

/// Downloads an export from `port` with an anonymous handler: the error,
/// and the files left in its directory.
async fn failed_download_from(port: u16) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let handler = anonymous_handler(dir.path(), &[&format!("127.0.0.1:{port}")]);
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let uri = format!("http://127.0.0.1:{port}/models/{p}%20-%20{i}.ONNX?sv=1&sig=x");
    let e = handler
        .handle(&delivery(&export(p, i, &uri)))
        .await
        .unwrap_err();
    (e.to_string(), files(dir.path()))
}

#[tokio::test]
async fn a_transfer_cut_half_way_leaves_no_file_under_the_final_name() {
    // Announces 1,000,000 bytes, sends half, closes.
    let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\ncontent-type: application/octet-stream\r\n\r\n";
    let port = fixed_response_server(head.into(), vec![7u8; 500_000]).await;
    let (error, left) = failed_download_from(port).await;
    assert!(
        error.contains("broke") || error.contains("ended after"),
        "{error}"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn a_content_md5_mismatch_is_a_failure_and_leaves_no_file() {
    use base64::Engine as _;
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b"other bytes"));
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: 10000\r\ncontent-md5: {md5}\r\n\r\n");
    let port = fixed_response_server(head, vec![7u8; 10_000]).await;
    let (error, left) = failed_download_from(port).await;
    assert!(error.contains("Content-MD5"), "{error}");
    assert!(left.is_empty(), "left behind: {left:?}");
}
