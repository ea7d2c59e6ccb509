//! The model-download handler against azurite-blob and loopback servers
//! written here (ones that lie about sizes, stream without end, or record
//! who asked), in process and through the daemon. Each hostile finding of
//! issue 12 has a test named after it; issue 17's findings 2, 8 and 10 have
//! theirs at the end (finding 2 on a small tmpfs in a user and mount
//! namespace).

use crate::common;

use azure_core::http::RequestContent;
use common::*;
use sha2::Digest;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;
use uuid::Uuid;

const MIB: usize = 1 << 20;

/// Azurite's blob service with a `models` container.
struct Blobs {
    azurite: Azurite,
}

impl Blobs {
    async fn start() -> Self {
        let azurite = Azurite::builder(Service::Blob).start().await;
        let b = Blobs { azurite };
        b.create("models").await;
        b
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.azurite.port)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.azurite.port)
    }

    fn container_url(&self, container: &str) -> String {
        format!("{}/{container}", self.endpoint())
    }

    async fn create(&self, container: &str) {
        create_container(&self.endpoint(), container).await;
    }

    /// The URL of blob `name` (spaces encoded, as the service writes them).
    fn url(&self, container: &str, name: &str) -> String {
        format!(
            "{}/{}",
            self.container_url(container),
            name.replace(' ', "%20")
        )
    }

    /// The same with a read SAS.
    fn sas_url(&self, container: &str, name: &str) -> String {
        format!(
            "{}?{}",
            self.url(container, name),
            account_sas_for("b", "r")
        )
    }

    fn client(&self, container: &str, name: &str) -> azure_storage_blob::BlobClient {
        blob_client(&Url::parse(&self.url(container, name)).unwrap())
    }

    async fn upload(&self, container: &str, name: &str, bytes: Vec<u8>) {
        self.client(container, name)
            .upload(RequestContent::from(bytes), None)
            .await
            .unwrap();
    }

    /// Uploads `bytes` as the backup of a new project and iteration,
    /// `{p} - {i}.{rest}` in `models`: the two ids and the blob's name.
    async fn backup(&self, rest: &str, bytes: Vec<u8>) -> (Uuid, Uuid, String) {
        let p = Uuid::new_v4();
        let (i, name) = self.backup_of(p, rest, bytes).await;
        (p, i, name)
    }

    /// The same for a new iteration of project `p`: its id and the name.
    async fn backup_of(&self, p: Uuid, rest: &str, bytes: Vec<u8>) -> (Uuid, String) {
        let i = Uuid::new_v4();
        let name = backup_name(p, i, rest);
        self.upload("models", &name, bytes).await;
        (i, name)
    }

    /// A download handler in process, with the development key, into `dir`
    /// from this service's `models`, with `keys`.
    fn handler(&self, dir: &Path, keys: &str) -> Arc<dyn Handler> {
        keyed_handler(
            dir,
            &format!("{keys}\n{}", container_key(&[self.container_url("models")])),
        )
    }

    /// `w`'s config with `queue` keys and a download handler into
    /// `w.path("models")` from this service's `models`: that directory and
    /// the config file.
    fn daemon_config(&self, w: &World, queue: &str) -> (PathBuf, PathBuf) {
        let config = w.config().queue(queue);
        models_config(w, config, "", &[self.container_url("models")])
    }

    /// A `[[handlers]]` download table into `dir` whose container is this
    /// service's `models`, with `keys`.
    fn download_table(&self, dir: &Path, keys: &str) -> String {
        download_table(
            dir,
            &format!("{keys}\n{}", container_key(&[self.container_url("models")])),
        )
    }
}

fn model_bytes(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(len as u64);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// An ONNX export as Custom Vision packs it.
fn onnx_export(model: &[u8]) -> Vec<u8> {
    zip_of(&[
        ("cvexport.manifest", b"{\"DomainType\":\"Classification\"}"),
        ("labels.txt", b"cat\ndog\n"),
        ("model.onnx", model),
    ])
}

fn export(project: Uuid, iteration: Uuid, uri: &str) -> String {
    format!(
        r#"{{"version":"1.0","type":"Export","Content":{{"projectId":"{project}","iterationId":"{iteration}","exportStatus":"ExportCompleted","modelUri":"{uri}"}}}}"#
    )
}

fn backup_name(p: Uuid, i: Uuid, rest: &str) -> String {
    format!("{p} - {i}.{rest}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every name in `dir` (hidden ones too), sorted.
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

/// Fails, naming `what` happened and what was left, unless `dir` is empty.
#[track_caller]
fn assert_no_files(dir: &Path, what: &str) {
    let left = files(dir);
    assert!(left.is_empty(), "{what}: left behind {left:?}");
}

/// What a stored model leaves in `dir`: it, its `.sha256`, its side file.
fn stored(name: &str) -> Vec<String> {
    let mut v = vec![
        name.to_owned(),
        format!("{name}.sha256"),
        format!(".{name}.json"),
    ];
    v.sort();
    v
}

/// A `[[handlers]]` download table.
fn download_table(dir: &Path, keys: &str) -> String {
    format!(
        "[[handlers]]\ntype = \"download\"\ndir = \"{}\"\n{keys}\n",
        dir.display()
    )
}

/// `config` with a download handler into `w.path("models")` with `keys`
/// from `containers`: that directory and the config file.
fn models_config(
    w: &World,
    config: ConfigBuilder,
    keys: &str,
    containers: &[String],
) -> (PathBuf, PathBuf) {
    let dir = w.path("models");
    let keys = format!("{keys}\n{}", container_key(containers));
    let cfg = config.handler(download_table(&dir, &keys)).write("c.toml");
    (dir, cfg)
}

/// A download handler without credentials that takes only
/// `acct.blob.core.windows.net`.
fn acct_only(dir: &Path) -> Arc<dyn Handler> {
    anonymous_handler(dir, "allowed_hosts = [\"acct.blob.core.windows.net\"]")
}

fn container_key(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("container = [{}]", quoted.join(", "))
}

fn delivery(body: &str) -> Delivery {
    delivery_of(body, "m", 1)
}

/// The first handler of config `text`, built as the daemon builds it
/// (the daemon's own credential from `[auth]`).
fn handler_from(text: &str) -> Arc<dyn Handler> {
    let config = Config::from_toml(text).unwrap();
    let ctx = BuildContext {
        blobs: Arc::new(crate::common::connect(&config).unwrap().blobs().unwrap()),
        ..crate::common::anonymous_ctx()
    };
    config.handlers[0].build(&ctx).unwrap()
}

/// A download handler with the development account's key (Azurite) and
/// `keys`.
fn keyed_handler(dir: &Path, keys: &str) -> Arc<dyn Handler> {
    handler_from(&format!(
        "[queue]\nname = \"q-x\"\nendpoint = \"http://127.0.0.1:1/devstoreaccount1\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"UseDevelopmentStorage=true\"\n{}",
        download_table(dir, keys)
    ))
}

/// A download handler without any credential of its own.
fn anonymous_handler(dir: &Path, keys: &str) -> Arc<dyn Handler> {
    let text = format!(
        "[queue]\nname = \"q-x\"\naccount = \"a\"\n{}",
        download_table(dir, keys)
    );
    let config = Config::from_toml(&text).unwrap();
    config.handlers[0]
        .build(&crate::common::anonymous_ctx())
        .unwrap()
}

/// What a [`TestServer`] answers to every request.
#[derive(Clone)]
enum Answer {
    /// `head` (status line and headers, ending in an empty line) and `body`.
    Fixed { head: String, body: Vec<u8> },
    /// `head`, then `len` zero bytes, for as long as the client reads.
    Zeros { head: String, len: u64 },
}

/// A loopback HTTP server that records the head of every request and
/// answers each with `answer` (at most 16 connections, one request each).
struct TestServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    async fn start(answer: Answer) -> Self {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            for _ in 0..16 {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Some((head, _)) = read_http_request(&mut s).await else {
                        return;
                    };
                    seen.lock().unwrap().push(head);
                    match answer {
                        Answer::Fixed { head, body } => {
                            let _ = s.write_all(head.as_bytes()).await;
                            let _ = s.write_all(&body).await;
                        }
                        Answer::Zeros { head, len } => {
                            if s.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = vec![0u8; 64 * 1024];
                            let mut sent = 0u64;
                            while sent < len {
                                let n = chunk.len().min((len - sent) as usize);
                                if s.write_all(&chunk[..n]).await.is_err() {
                                    return;
                                }
                                sent += n as u64;
                            }
                        }
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
        TestServer { port, requests }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Hands the export of `p`/`i` at `url` to `handler`; it must succeed.
async fn stores(handler: &Arc<dyn Handler>, p: Uuid, i: Uuid, url: &str) {
    handler.handle(&delivery(&export(p, i, url))).await.unwrap();
}

/// The handler's error as the worker records it: with its causes.
async fn fails(handler: &Arc<dyn Handler>, body: &str) -> String {
    error_chain(&handler.handle(&delivery(body)).await.unwrap_err())
}

// ---------------------------------------------------------------------
// Storing real exports.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_blob_is_stored_under_its_own_name_with_its_checksum() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let bytes = model_bytes(3 * MIB + 17);
    let (p, i, name) = blobs.backup("ONNX", bytes.clone()).await;
    w.send_all(&[export(p, i, &blobs.url("models", &name))])
        .await;
    let (dir, cfg) = blobs.daemon_config(&w, "");
    let d = w.daemon(&cfg).run_once().await;
    d.assert_eq(files(&dir), stored(&name), "the files in dir");
    let got = std::fs::read(dir.join(&name)).unwrap();
    assert!(got == bytes, "content differs");
    let sha_file = std::fs::read_to_string(dir.join(format!("{name}.sha256"))).unwrap();
    assert_eq!(
        sha_file,
        format!("{}  {name}\n", sha256_hex(&bytes)),
        "the .sha256 file"
    );
    assert_eq!(w.queued().await, 0, "messages left in the queue");
}

/// `m-<32 hex>/<32 hex>.ONNX.zip?sv=…&sig=…` as Custom Vision hands out
/// without a backup container: the platform, flavor and archive extension
/// survive, and three exports of one iteration are three files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_export_url_shapes_keep_the_platform_and_every_export_is_kept() {
    let blobs = Blobs::start().await;
    let hex = |u: Uuid| u.simple().to_string();
    let container = format!("m-{}", hex(Uuid::new_v4()));
    blobs.create(&container).await;
    let dir = tempfile::tempdir().unwrap();
    let handler = blobs.handler(
        dir.path(),
        &format!("allowed_hosts = [\"{}\"]", blobs.host()),
    );
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let mut expected = Vec::new();
    for platform in ["ONNX", "DockerFile.Linux", "CoreML"] {
        let blob = format!("{}.{platform}.zip", hex(Uuid::new_v4()));
        let body = onnx_export(platform.as_bytes());
        blobs.upload(&container, &blob, body.clone()).await;
        let url = blobs.sas_url(&container, &blob);
        stores(&handler, p, i, &url).await;
        let name = format!("{p} - {i}.{platform}.zip");
        let got = std::fs::read(dir.path().join(&name)).unwrap();
        assert!(got == body, "{name}: content differs");
        expected.extend(stored(&name));
    }
    expected.sort();
    assert_eq!(files(dir.path()), expected, "the files in dir");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sas_url_is_fetched_as_is() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    blobs.create("exports").await;
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let bytes = model_bytes(100_000);
    blobs.upload("exports", "m.ONNX", bytes.clone()).await;
    let good = blobs.sas_url("exports", "m.ONNX");
    // A broken signature: if the daemon signed with its own key instead of
    // using the URL as is, this one would succeed too.
    let bad = good.replace("sig=", "sig=AAAA");
    let (p2, i2) = (Uuid::new_v4(), Uuid::new_v4());
    w.send_all(&[export(p, i, &good), export(p2, i2, &bad)])
        .await;
    let (dir, cfg) = blobs.daemon_config(&w, "max_dequeue_count = 1");
    let d = w.daemon(&cfg).run_once().await;
    let name = format!("{p} - {i}.ONNX");
    let got = std::fs::read(dir.join(&name));
    d.assert(
        got.as_ref().is_ok_and(|b| *b == bytes),
        format!("{name}: not stored, or its content differs"),
    );
    assert_eq!(files(&dir), stored(&name), "the files in dir");
    d.assert_eq(w.poisoned().await.len(), 1, "poisoned messages");
    d.assert_logged("denied (403)");
    d.assert_not_logged("sig=AAAA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_blob_is_retried_then_poisoned() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let body = export(p, i, &blobs.url("models", &backup_name(p, i, "ONNX")));
    w.send_all(std::slice::from_ref(&body)).await;
    let (dir, cfg) = blobs.daemon_config(&w, "max_dequeue_count = 2");
    let mut d = w.daemon(&cfg).start();
    w.wait_poisoned(&d, 1).await;
    d.stop_ok().await;
    assert_eq!(w.poisoned().await, vec![body], "the poisoned body");
    d.assert(
        d.count_logged("does not exist (404)") >= 2,
        "a 404 on each of the two deliveries",
    );
    assert_no_files(&dir, "a missing blob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_does_not_download_again() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let (p, i, name) = blobs.backup("ONNX", model_bytes(50_000)).await;
    let body = export(p, i, &blobs.url("models", &name));
    let (dir, cfg) = blobs.daemon_config(&w, "");
    w.send_all(std::slice::from_ref(&body)).await;
    w.daemon(&cfg).tag("first").run_once().await;
    let before = std::fs::metadata(dir.join(&name))
        .unwrap()
        .modified()
        .unwrap();
    // Delete the blob: a second download could only fail.
    blobs.client("models", &name).delete(None).await.unwrap();
    w.send_all(std::slice::from_ref(&body)).await;
    let d = w.daemon(&cfg).tag("second").run_once().await;
    d.assert_logged("The model is already downloaded");
    assert_eq!(
        std::fs::metadata(dir.join(&name))
            .unwrap()
            .modified()
            .unwrap(),
        before,
        "the stored model was written again"
    );
    assert_eq!(w.queued().await, 0, "messages left in the queue");
    d.assert_eq(w.poisoned().await, Vec::new(), "poisoned messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_last_removes_older_models_of_the_same_project_and_platform() {
    let blobs = Blobs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let handler = blobs.handler(dir.path(), "keep_last = 2");
    let (p, other) = (Uuid::new_v4(), Uuid::new_v4());
    let mut names = Vec::new();
    for (k, (project, rest)) in [
        (p, "ONNX"),
        (p, "ONNX"),
        (other, "ONNX"),
        (p, "ONNX"),
        (p, "CoreML"),
    ]
    .into_iter()
    .enumerate()
    {
        let i = Uuid::new_v4();
        let name = backup_name(project, i, rest);
        blobs.upload("models", &name, model_bytes(1000 + k)).await;
        stores(&handler, project, i, &blobs.url("models", &name)).await;
        names.push(name);
    }
    let mut expected: Vec<String> = [1, 2, 3, 4]
        .iter()
        .flat_map(|&k| stored(&names[k]))
        .collect();
    expected.sort();
    assert_eq!(
        files(dir.path()),
        expected,
        "keep_last = 2 per project and platform"
    );
}

#[tokio::test]
async fn urls_outside_the_allowed_hosts_and_bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let handler = acct_only(dir.path());
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    for uri in [
        "https://evil.example/models/x.ONNX?sig=1",
        "https://acct.blob.core.windows.net.evil.example/m/x.ONNX?sig=1",
        "https://acct.blob.core.windows.net:8443/m/x.ONNX?sig=1",
    ] {
        let e = fails(&handler, &export(p, i, uri)).await;
        assert!(e.contains("not in allowed_hosts"), "{uri}: {e}");
    }
    // An allowed host, but a blob name that tries to climb out of `dir`:
    // the stored name comes from the GUIDs, and the rest must be plain.
    let e = fails(
        &handler,
        &export(
            p,
            i,
            "https://acct.blob.core.windows.net/m/..%2F..%2Fetc%2Fpasswd?sig=1",
        ),
    )
    .await;
    assert!(e.contains("cannot tell the platform"), "{e}");
    // Without a container, a URL without a SAS is not fetched at all.
    let e = fails(
        &handler,
        &export(p, i, "https://acct.blob.core.windows.net/m/x.ONNX"),
    )
    .await;
    assert!(e.contains("no `container` is configured"), "{e}");
    assert_no_files(dir.path(), "refused URLs");
}

#[tokio::test]
async fn failed_exports_and_other_events_succeed_without_downloading() {
    let dir = tempfile::tempdir().unwrap();
    let handler = acct_only(dir.path());
    let failed = r#"{"version":"1.0","type":"Export","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportFailed"}}"#;
    handler.handle(&delivery(failed)).await.unwrap();
    handler
        .handle(&delivery(&training("TrainingCompleted")))
        .await
        .unwrap();
    assert_no_files(dir.path(), "a failed export and a training event");
}

/// A handler whose container is a [`TestServer`]'s `/models`, and an
/// export of `p`/`i` from it with a SAS.
fn loopback(server: &TestServer, dir: &Path, keys: &str) -> (Arc<dyn Handler>, String) {
    let handler = anonymous_handler(
        dir,
        &format!("{}\n{keys}", container_key(&[server.url("/models")])),
    );
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let uri = server.url(&format!("/models/{p}%20-%20{i}.ONNX?sv=1&sig=x"));
    (handler, export(p, i, &uri))
}

#[tokio::test]
async fn a_transfer_cut_half_way_leaves_no_file() {
    // Announces 1,000,000 bytes, sends half, closes.
    let server = TestServer::start(Answer::Fixed {
        head: "HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n".into(),
        body: vec![7u8; 500_000],
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (handler, body) = loopback(&server, dir.path(), "");
    let error = fails(&handler, &body).await;
    assert!(
        error.contains("broke") || error.contains("ended after"),
        "{error}"
    );
    assert_no_files(dir.path(), "a transfer cut half way");
}

/// Issue 18: opening a model goes through the retry runner. A 503 is tried
/// three times in all, each retry counted in
/// `cvnotify_retries_total{client="blob"}`, and the error says it gave up,
/// with the last answer as its cause; a `Retry-After` beyond the 5 s a
/// download waits ends it at the first answer. (No other test of this
/// binary makes a blob retry, so the process-wide counter's delta is this
/// test's.)
#[tokio::test]
async fn a_busy_blob_server_is_retried_by_the_runner_and_counted() {
    let retries = || {
        cvnotify::metrics::retries()
            .get_or_create(&cvnotify::metrics::ClientLabel { client: "blob" })
            .get()
    };
    let dir = tempfile::tempdir().unwrap();
    for (extra, error, requests, counted) in [
        (
            "",
            "gave up after 3 attempts: the blob server answered 503",
            3,
            2,
        ),
        (
            "retry-after: 60\r\n",
            "the server asks to retry after 60s, which exceeds the longest wait of a download (5s): the blob server answered 503",
            1,
            0,
        ),
    ] {
        let before = retries();
        let server = TestServer::start(Answer::Fixed {
            head: format!("HTTP/1.1 503 Service Unavailable\r\n{extra}content-length: 0\r\n\r\n"),
            body: Vec::new(),
        })
        .await;
        let (handler, body) = loopback(&server, dir.path(), "");
        assert_eq!(fails(&handler, &body).await, error);
        assert_eq!(server.requests().len(), requests, "{error}");
        assert_eq!(retries() - before, counted, "{error}");
    }
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
}

#[tokio::test]
async fn a_content_md5_mismatch_is_a_failure_and_leaves_no_file() {
    use base64::Engine as _;
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b"other bytes"));
    let server = TestServer::start(Answer::Fixed {
        head: format!("HTTP/1.1 200 OK\r\ncontent-length: 10000\r\ncontent-md5: {md5}\r\n\r\n"),
        body: vec![7u8; 10_000],
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (handler, body) = loopback(&server, dir.path(), "");
    let error = fails(&handler, &body).await;
    assert!(error.contains("Content-MD5"), "{error}");
    assert_no_files(dir.path(), "a Content-MD5 mismatch");
}

// ---------------------------------------------------------------------
// The hostile findings of issue 12, one test each.

/// Finding 1: `206` with `Content-Range: bytes 0-0/1152921504606846976`
/// made the SDK allocate 4 TiB and the daemon abort, on every redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_a_huge_content_range_total_fails_the_handler_and_the_daemon_lives_on() {
    let blobs = Blobs::start().await;
    let server = TestServer::start(Answer::Fixed {
        head: "HTTP/1.1 206 Partial Content\r\ncontent-length: 1\r\ncontent-range: bytes 0-0/1152921504606846976\r\n\r\n".into(),
        body: vec![0u8],
    })
    .await;
    let w = World::new().await;
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let hostile = export(
        p,
        i,
        &server.url(&format!("/models/{p}%20-%20{i}.ONNX?sv=1&sig=x")),
    );
    let (p2, i2) = (Uuid::new_v4(), Uuid::new_v4());
    let name = backup_name(p2, i2, "ONNX");
    blobs.upload("models", &name, model_bytes(10_000)).await;
    let next = export(p2, i2, &blobs.url("models", &name));
    w.send_all(std::slice::from_ref(&hostile)).await;
    let containers = [blobs.container_url("models"), server.url("/models")];
    let (dir, cfg) = models_config(
        &w,
        w.config().queue("max_dequeue_count = 1"),
        "",
        &containers,
    );
    let mut d = w.daemon(&cfg).start();
    w.wait_poisoned(&d, 1).await;
    d.assert_running("after the hostile answer");
    w.send_all(&[next]).await;
    d.wait_for("the next message to be handled", async || {
        dir.join(&name).exists()
    })
    .await;
    d.assert_running("after the next message");
    d.stop_ok().await;
    d.assert_logged("the model is 1152921504606846976 bytes (the total of its Content-Range), more than max_size");
    assert_eq!(w.poisoned().await, vec![hostile], "the poisoned body");
    assert_eq!(files(&dir), stored(&name), "the files in dir");
}

/// Finding 2: a server ignoring `Range` that streams 600 MiB had it stored
/// in full. Announced or not, it is refused, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_a_600_mib_stream_passes_max_size_and_leaves_no_file() {
    let len = 600 * MIB as u64;
    for (head, how) in [
        (
            format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n"),
            "its Content-Length",
        ),
        (
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned(),
            "bytes received so far",
        ),
    ] {
        let server = TestServer::start(Answer::Zeros { head, len }).await;
        let dir = tempfile::tempdir().unwrap();
        let (handler, body) = loopback(&server, dir.path(), "max_size = \"100MiB\"");
        let error = fails(&handler, &body).await;
        assert!(
            error.contains(&format!("({how}), more than max_size (100.0 MiB)")),
            "{error}"
        );
        assert_no_files(dir.path(), how);
    }
}

/// Finding 3: a URL without a SAS on an allowed host was fetched with the
/// daemon's credential for any path, so another container's blob was
/// copied into `dir`. Now no request at all is made for it, while a blob
/// inside the configured container does get the credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_3_a_blob_outside_the_container_is_refused_without_a_request() {
    let server = TestServer::start(Answer::Fixed {
        head: "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".into(),
        body: b"model".to_vec(),
    })
    .await;
    let w = World::new().await;
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let base = "/devstoreaccount1";
    let outside = [
        format!("{base}/private-hr/payroll.onnx"),
        format!("{base}/models/../private-hr/payroll.onnx"),
        format!("{base}/models/..%2Fprivate-hr%2Fpayroll.onnx"),
        format!("{base}/models-archive/{p}%20-%20{i}.ONNX"),
    ];
    let mut bodies: Vec<String> = outside
        .iter()
        .map(|path| export(p, i, &server.url(path)))
        .collect();
    let inside = server.url(&format!("{base}/models/{p}%20-%20{i}.ONNX"));
    bodies.push(export(p, i, &inside));
    w.send_all(&bodies).await;
    let containers = [server.url(&format!("{base}/models"))];
    let (dir, cfg) = models_config(
        &w,
        w.config().queue("max_dequeue_count = 1"),
        "",
        &containers,
    );
    let d = w.daemon(&cfg).run_once().await;
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert!(
        requests[0].starts_with(&format!("GET {base}/models/")),
        "{}",
        requests[0]
    );
    assert!(
        requests[0]
            .to_ascii_lowercase()
            .contains("authorization: sharedkey devstoreaccount1:"),
        "the container's blob is fetched with the daemon's key: {}",
        requests[0]
    );
    d.assert_eq(
        w.poisoned().await.len(),
        outside.len(),
        "poisoned messages (the blobs outside)",
    );
    d.assert(
        d.count_logged("outside the configured container") >= outside.len(),
        "each blob outside refused in the logs",
    );
    assert_eq!(
        files(&dir),
        stored(&backup_name(p, i, "ONNX")),
        "the files in dir"
    );
}

/// Finding 4: an `http` URL was accepted and, in `sas` mode, the daemon's
/// own SAS appended and sent in clear text to the host the message named.
#[tokio::test]
async fn finding_4_an_http_url_in_sas_mode_is_refused_before_any_request() {
    let server = TestServer::start(Answer::Fixed {
        head: "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".into(),
        body: b"model".to_vec(),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let daemon_sas =
        "sv=2022-11-02&ss=bq&srt=sco&sp=rwdlacup&se=2099-01-01&sig=DaemonSasThatMustNotTravel";
    let handler = handler_from(&format!(
        "[queue]\nname = \"q-x\"\naccount = \"acct\"\n[auth]\nmode = \"sas\"\nsas_token = \"{daemon_sas}\"\n{}",
        download_table(
            dir.path(),
            &format!(
                "allowed_hosts = [\"{}\", \"acct.blob.core.windows.net\"]\ncontainer = \"https://acct.blob.core.windows.net/models\"",
                server.host()
            )
        )
    ));
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    for path in [
        format!("/models/{p}%20-%20{i}.ONNX"),
        format!("/models/{p}%20-%20{i}.ONNX?sv=1&sig=abc"),
    ] {
        let e = fails(&handler, &export(p, i, &server.url(&path))).await;
        assert!(e.contains("refusing a plain http model URL"), "{e}");
        assert!(!e.contains("DaemonSas"), "{e}");
    }
    assert!(server.requests().is_empty(), "{:#?}", server.requests());
    assert_no_files(dir.path(), "refused http URLs");
}

/// Finding 5: with two legitimate models and `keep_last = 2`, two messages
/// with the project's id and random iteration ids removed both. Now a
/// message naming a container blob of another export is refused, and
/// models from other URLs displace only each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_5_messages_alone_cannot_make_keep_last_delete_container_models() {
    let blobs = Blobs::start().await;
    blobs.create("uploads").await;
    let dir = tempfile::tempdir().unwrap();
    let handler = blobs.handler(
        dir.path(),
        &format!("keep_last = 2\nallowed_hosts = [\"{}\"]", blobs.host()),
    );
    let p = Uuid::new_v4();
    let mut legit = Vec::new();
    for _ in 0..2 {
        let i = Uuid::new_v4();
        let name = backup_name(p, i, "ONNX");
        blobs.upload("models", &name, model_bytes(2000)).await;
        stores(&handler, p, i, &blobs.url("models", &name)).await;
        legit.push(name);
    }
    // A legitimate backup blob under a random iteration id.
    let e = fails(
        &handler,
        &export(p, Uuid::new_v4(), &blobs.url("models", &legit[0])),
    )
    .await;
    assert!(e.contains("the backup of another export"), "{e}");
    // Models from elsewhere (a SAS URL), three of them.
    blobs
        .upload("uploads", "x.ONNX", b"not a model".to_vec())
        .await;
    let mut others = Vec::new();
    for _ in 0..3 {
        let i = Uuid::new_v4();
        stores(&handler, p, i, &blobs.sas_url("uploads", "x.ONNX")).await;
        others.push(backup_name(p, i, "ONNX"));
    }
    let now = files(dir.path());
    for name in &legit {
        assert!(now.contains(name), "{name} was removed: {now:?}");
        assert!(now.contains(&format!("{name}.sha256")), "{now:?}");
    }
    // The URL models are pruned among themselves: the newest two stay.
    assert!(!now.contains(&others[0]), "{now:?}");
    assert!(
        now.contains(&others[1]) && now.contains(&others[2]),
        "{now:?}"
    );
}

/// Finding 6: the temporary `.sha256` name was predictable and opened
/// following symlinks, so a planted link made the handler write outside
/// `dir`. Every name the handler writes is now safe against that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_6_planted_symlinks_are_never_followed() {
    let blobs = Blobs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let name = backup_name(p, i, "ONNX.zip");
    let unpacked = backup_name(p, i, "ONNX");
    let plant = |at: &str, to: &Path| std::os::unix::fs::symlink(to, dir.path().join(at)).unwrap();
    for at in [
        name.clone(),
        format!("{name}.sha256"),
        format!(".{name}.sha256.partial"),
        format!(".{name}.partial"),
        format!(".{name}.json"),
    ] {
        plant(&at, &victim);
    }
    plant(&unpacked, outside.path());
    plant(&format!("current-{p}-ONNX"), outside.path());
    let model = model_bytes(4096);
    let body = onnx_export(&model);
    blobs.upload("models", &name, body.clone()).await;
    let handler = blobs.handler(dir.path(), "extract = true\nlink_current = true");
    stores(&handler, p, i, &blobs.url("models", &name)).await;
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "the victim was written"
    );
    assert_eq!(
        files(outside.path()),
        vec!["victim"],
        "a file was written outside dir"
    );
    let kind = |n: &str| {
        std::fs::symlink_metadata(dir.path().join(n))
            .unwrap()
            .file_type()
    };
    for (file, is) in [
        (name.clone(), kind(&name).is_file()),
        (
            format!("{name}.sha256"),
            kind(&format!("{name}.sha256")).is_file(),
        ),
        (
            format!(".{name}.json"),
            kind(&format!(".{name}.json")).is_file(),
        ),
        (unpacked.clone(), kind(&unpacked).is_dir()),
    ] {
        assert!(is, "{file} is still the planted link");
    }
    let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
    assert!(read(&name) == body, "the stored model differs");
    assert_eq!(
        std::fs::read_link(dir.path().join(format!("current-{p}-ONNX"))).unwrap(),
        PathBuf::from(&unpacked),
        "where current points"
    );
    assert!(
        read(&format!("current-{p}-ONNX/model.onnx")) == model,
        "the current model differs"
    );
    // A symlink planted where an already stored model is looked for counts
    // as no model (it is not read through), and is replaced.
    std::fs::remove_file(dir.path().join(&name)).unwrap();
    plant(&name, &victim);
    stores(&handler, p, i, &blobs.url("models", &name)).await;
    assert!(kind(&name).is_file(), "{name} is still the planted link");
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "the victim was written"
    );
}

/// Finding 7: the SDK fetched ranges in parallel and buffered them (118 MB
/// for a 200 MiB model). The daemon's peak RSS now stays within 40 MiB of
/// its idle RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_7_a_200_mib_download_stays_within_40_mib_of_idle_rss() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let bytes = model_bytes(200 * MIB);
    let sha = sha256_hex(&bytes);
    let (p, i, name) = blobs.backup("ONNX", bytes).await;
    let (dir, cfg) = models_config(
        &w,
        w.config().log_level("info"),
        "timeout = \"5m\"",
        &[blobs.container_url("models")],
    );
    w.send_all(&[]).await;
    let mut d = w.daemon(&cfg).start();
    let pid = d.pid();
    d.wait_logged("Listening for Custom Vision notifications")
        .await;
    // A few idle polls first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = status_kib(pid, "VmRSS");
    w.send_all(&[export(p, i, &blobs.url("models", &name))])
        .await;
    // 200 MiB through Azurite: longer than most waits on a loaded machine.
    d.wait_for_within(
        Duration::from_secs(180),
        "the model stored and the message deleted",
        async || dir.join(&name).exists() && w.queued().await == 0,
    )
    .await;
    let peak = status_kib(pid, "VmHWM");
    d.stop_ok().await;
    let sha_file = std::fs::read_to_string(dir.join(format!("{name}.sha256"))).unwrap();
    assert!(sha_file.starts_with(&sha), "{sha_file}");
    println!(
        "idle RSS {:.1} MiB, peak RSS {:.1} MiB",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert!(
        peak <= idle + 40 * 1024,
        "peak RSS {peak} KiB is more than 40 MiB above idle {idle} KiB"
    );
}

// ---------------------------------------------------------------------
// Archives, links and the hand-off to hooks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_escaping_and_bomb_zips_are_refused_and_leave_no_file() {
    let blobs = Blobs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let handler = blobs.handler(dir.path(), "max_size = \"1MiB\"\nextract = true");
    let zeros = vec![0u8; 4 * MIB];
    let bomb = zip_of(&[
        ("a", zeros.as_slice()),
        ("b", zeros.as_slice()),
        ("c", zeros.as_slice()),
        ("d", zeros.as_slice()),
    ]);
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    let mut corrupt = onnx_export(&model_bytes(50_000));
    let cut = corrupt.len() - 30;
    corrupt.truncate(cut);
    for (case, bytes, expected) in [
        ("corrupt", corrupt, "not a readable zip"),
        (
            "garbage",
            b"PK\x03\x04garbage".to_vec(),
            "not a readable zip",
        ),
        (
            "dot-dot",
            zip_of(&[("../x", b"escape")]),
            "`../x` has an absolute path",
        ),
        (
            "absolute",
            zip_of(&[("/etc/x", b"escape")]),
            "has an absolute path",
        ),
        ("bomb", bomb, "more than max_size (1.0 MiB) (a zip bomb?)"),
    ] {
        let (p, i, name) = blobs.backup("ONNX.zip", bytes).await;
        let e = fails(&handler, &export(p, i, &blobs.url("models", &name))).await;
        assert!(e.contains(expected), "{case}: {e}");
        assert_no_files(dir.path(), case);
    }
}

/// `extract` and `link_current`: a reader looping on
/// `current-{p}-ONNX/model.onnx` while 20 models are stored one after the
/// other never finds it missing or partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_links_flip_atomically_while_a_reader_loops() {
    let blobs = Blobs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let handler = blobs.handler(
        dir.path(),
        "extract = true\nlink_current = true\nkeep_last = 2",
    );
    let p = Uuid::new_v4();
    const SIZE: usize = 256 * 1024;
    let mut exports = Vec::new();
    for k in 0..20u8 {
        let i = Uuid::new_v4();
        let name = backup_name(p, i, "ONNX.zip");
        blobs
            .upload("models", &name, onnx_export(&vec![k + 1; SIZE]))
            .await;
        exports.push((i, name));
    }
    let link = dir.path().join(format!("current-{p}-ONNX/model.onnx"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (link, stop) = (link.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let (mut reads, mut problems, mut started) = (0u64, Vec::new(), false);
            let limit = std::time::Instant::now() + Duration::from_secs(120);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && reads < 50_000_000
                && std::time::Instant::now() < limit
            {
                match std::fs::read(&link) {
                    Ok(b) => {
                        started = true;
                        reads += 1;
                        if b.len() != SIZE || b.iter().any(|x| *x != b[0]) {
                            problems.push(format!("partial: {} bytes", b.len()));
                        }
                    }
                    Err(e) if started => problems.push(format!("missing: {e}")),
                    Err(_) => {}
                }
            }
            (reads, problems)
        })
    };
    for (i, name) in &exports {
        stores(&handler, p, *i, &blobs.url("models", name)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, problems) = reader.await.unwrap();
    assert!(
        problems.is_empty(),
        "{} problems, e.g. {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    assert!(reads > 20, "{reads} reads");
    assert!(
        std::fs::read(&link).unwrap() == vec![20u8; SIZE],
        "current is not the last model"
    );
    let last = &exports[19].1;
    assert_eq!(
        std::fs::read_link(dir.path().join(format!("current-{p}-ONNX"))).unwrap(),
        PathBuf::from(last.trim_end_matches(".zip")),
        "where current points"
    );
    // keep_last = 2: two models, their folders, and the link.
    let visible: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|f| !f.starts_with('.'))
        .collect();
    assert_eq!(visible.len(), 2 * 3 + 1, "{visible:?}");
}

/// The hand-off: a shell hook routed with a download handler runs after it
/// and gets the complete model's path and checksum; a training event's hook
/// gets none; when the download fails, the hook does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_routed_with_a_download_gets_the_complete_model() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let bytes = model_bytes(20 * MIB);
    let (p, i, name) = blobs.backup("ONNX", bytes.clone()).await;
    let inbox = w.path("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let script = w.hook(
        "deploy.sh",
        &format!(
            "out={}/$CVNOTIFY_MESSAGE_ID\ncat > \"$out.json\"\nprintf '%s\\n%s\\n' \"$CVNOTIFY_MODEL_PATH\" \"$CVNOTIFY_MODEL_SHA256\" > \"$out.env\"\nif [ -n \"$CVNOTIFY_MODEL_PATH\" ]; then sha256sum \"$CVNOTIFY_MODEL_PATH\" | cut -d' ' -f1 > \"$out.actual\"; fi",
            inbox.display()
        ),
    );
    let dir = w.path("models");
    let (p2, i2) = (Uuid::new_v4(), Uuid::new_v4());
    let ids = w
        .send_all(&[
            export(p, i, &blobs.url("models", &name)),
            training("TrainingCompleted"),
            export(p2, i2, &blobs.url("models", &backup_name(p2, i2, "ONNX"))),
        ])
        .await;
    let cfg = w
        .config()
        .queue("max_dequeue_count = 1")
        // The hook first: configuration order does not decide.
        .handler(shell_handler(&script, ""))
        .handler(blobs.download_table(&dir, ""))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    let read = |id: &str, ext: &str| std::fs::read_to_string(inbox.join(format!("{id}.{ext}")));
    let path = dir.join(&name);
    let sha = sha256_hex(&bytes);
    d.assert_eq(
        read(&ids[0], "env").ok(),
        Some(format!("{}\n{sha}\n", path.display())),
        "the model's path and checksum the hook got",
    );
    assert_eq!(
        read(&ids[0], "actual").unwrap().trim(),
        sha,
        "the hook saw an incomplete model"
    );
    let json: serde_json::Value = serde_json::from_str(&read(&ids[0], "json").unwrap()).unwrap();
    assert_eq!(json["model_path"], path.display().to_string(), "{json}");
    assert_eq!(json["model_sha256"], sha, "{json}");
    // A training event: routed to the hook only, with empty fields.
    assert_eq!(
        read(&ids[1], "env").unwrap(),
        "\n\n",
        "a training event's model fields"
    );
    let json: serde_json::Value = serde_json::from_str(&read(&ids[1], "json").unwrap()).unwrap();
    assert!(
        json["model_path"].is_null() && json["model_sha256"].is_null(),
        "{json}"
    );
    // A failed download: the hook did not run.
    assert!(
        read(&ids[2], "env").is_err(),
        "the hook ran after a failed download"
    );
    d.assert_eq(w.poisoned().await.len(), 1, "poisoned messages");
}

// ---------------------------------------------------------------------
// Issue 17 (the trust boundary on the new surfaces), findings 2, 8, 10.

/// Finding 10: a backup blob is named `{projectId} - {iterationId}.{platform}`,
/// and whether Custom Vision encodes the spaces in `modelUri` is not
/// documented (a .NET producer writing `Uri.OriginalString` does not). A
/// literal space was a decode error, so such an export was poisoned at
/// once. Now the literal form and the `%20` form store the same file, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_uri_with_literal_spaces_is_stored_under_the_backup_name() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let bytes = model_bytes(200_000);
    let (p, i, name) = blobs.backup("ONNX", bytes.clone()).await;
    let encoded = blobs.url("models", &name);
    let literal = format!("{}/{name}", blobs.container_url("models"));
    assert!(
        literal.contains(' ') && !encoded.contains(' '),
        "{literal} / {encoded}"
    );
    let (dir, cfg) = blobs.daemon_config(&w, "max_dequeue_count = 1");
    for (tag, uri) in [("literal", &literal), ("encoded", &encoded)] {
        w.send_all(&[export(p, i, uri)]).await;
        let d = w.daemon(&cfg).tag(tag).run_once().await;
        d.assert_eq(w.poisoned().await, Vec::new(), format!("{tag}: poisoned"));
        assert_eq!(w.queued().await, 0, "{tag}: messages left in the queue");
        d.assert_eq(
            files(&dir),
            stored(&name),
            format!("{tag}: the files in dir"),
        );
        assert!(
            std::fs::read(dir.join(&name)).unwrap() == bytes,
            "{tag}: content differs"
        );
        if tag == "encoded" {
            // The same file: the second form found it stored.
            d.assert_logged("The model is already downloaded");
        }
    }
}

/// Runs `cvnotify --config config run` in a new user and mount namespace
/// in which `dir` is a tmpfs of `size` bytes holding a file `filler` of
/// `filler` bytes. The process is the daemon itself (`unshare` and `sh`
/// exec it), so it is stopped by its pid; the tmpfs goes with it. From
/// outside, [`mounted`] reaches the tmpfs through `/proc/{pid}/root`.
///
/// Why a namespace: a real full file system is the only honest way to get
/// ENOSPC out of the kernel in the middle of an unpack; a user namespace
/// (`unshare --user --map-root-user --mount`) lets an ordinary user mount
/// a small tmpfs as well as root, so the test runs the same way in CI (as
/// root) and on a developer's machine, with no fault-injection seam in the
/// daemon. Where user namespaces are off, the test fails saying so.
fn daemon_on_a_small_tmpfs(
    config: &Path,
    dir: &Path,
    size: usize,
    filler: (&str, usize),
    out_dir: &Path,
) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let probe = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg("mount -t tmpfs -o size=64k tmpfs \"$1\"")
        .arg("sh")
        .arg(dir)
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "THIS TEST NEEDS A USER AND MOUNT NAMESPACE to mount a small tmpfs \
             (`unshare --user --map-root-user --mount` then `mount -t tmpfs`), and \
             it did not work here: {other:?}. Enable unprivileged user namespaces \
             (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone = 1, \
             or the AppArmor restriction off), or run the test as root."
        ),
    }
    let script = "mount -t tmpfs -o size=\"$2\" tmpfs \"$1\" \
        && head -c \"$4\" /dev/zero > \"$1/$3\" \
        && exec \"$5\" --config \"$6\" run";
    let mut unshare = std::process::Command::new("unshare");
    unshare
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(dir)
        .arg(size.to_string())
        .arg(filler.0)
        .arg(filler.1.to_string())
        .arg(bin())
        .arg(config);
    Daemon::start_wrapped(unshare, out_dir, "tmpfs")
}

/// `dir` as the daemon sees it, inside its mount namespace.
fn mounted(d: &Daemon, dir: &Path) -> PathBuf {
    Path::new(&format!("/proc/{}/root", d.child.id())).join(dir.strip_prefix("/").unwrap())
}

/// Finding 2: with `extract = true` and `dir` on a small file system that
/// another download's partial file filled, unpacking a healthy export
/// failed with `No space left on device (os error 28)` and the message
/// went to the poison queue on its first delivery: every archive error
/// counted as permanent, I/O errors included. Now it is retried and
/// stored, once, when space is back, and no partial file stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_while_unpacking_is_retried_and_the_model_stored_when_space_is_back() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let model = model_bytes(640 * 1024);
    let zip = onnx_export(&model);
    let (p, i, name) = blobs.backup("ONNX", zip.clone()).await;
    w.send_all(&[export(p, i, &blobs.url("models", &name))])
        .await;
    // 4 MiB, 3 MiB of it taken: the download (about 640 KiB) fits, its
    // unpacking (as much again) does not.
    let filler = ".another-download.partial";
    let (dir, cfg) = models_config(
        &w,
        w.config()
            .queue("max_dequeue_count = 10\nretry_max_delay = \"2s\""),
        "extract = true",
        &[blobs.container_url("models")],
    );
    let mut d = daemon_on_a_small_tmpfs(&cfg, &dir, 4 * MIB, (filler, 3 * MIB), w.dir.path());
    d.wait_logged("No space left on device").await;
    let inside = mounted(&d, &dir);
    std::fs::remove_file(inside.join(filler)).unwrap();
    w.wait_drained(&d).await;
    d.assert_eq(w.poisoned().await, Vec::new(), "poisoned messages");
    // The failure was in the unpacking.
    d.assert_logged("cannot check or unpack the archive");
    d.assert_eq(
        d.count_logged("\"Model downloaded\""),
        1,
        "\"Model downloaded\" records",
    );
    let unpacked = format!("{name}.unzipped");
    let mut expected = stored(&name);
    expected.push(unpacked.clone());
    expected.sort();
    // No partial file or folder of the failed attempts is left.
    d.assert_eq(files(&inside), expected, "the files in dir");
    assert!(
        std::fs::read(inside.join(&name)).unwrap() == zip,
        "the stored archive differs"
    );
    assert!(
        std::fs::read(inside.join(&unpacked).join("model.onnx")).unwrap() == model,
        "the unpacked model differs"
    );
    d.stop_ok().await;
}

/// Finding 8: with `keep_last = 1` and `link_current = true`, a model from
/// a message-named SAS URL with an old `Last-Modified` took
/// `current-{p}-ONNX` from a newer backup-container model. `current` now
/// follows one rule across origins: the newest by `Last-Modified` (then
/// the time stored), so the old one leaves it alone and a newer one from
/// a URL takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_is_the_newest_model_across_origins() {
    let blobs = Blobs::start().await;
    blobs.create("uploads").await;
    let old_model = onnx_export(&[2u8; 5000]);
    let server = TestServer::start(Answer::Fixed {
        head: format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nlast-modified: Sat, 01 Jan 2000 00:00:00 GMT\r\n\r\n",
            old_model.len()
        ),
        body: old_model.clone(),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let handler = keyed_handler(
        dir.path(),
        &format!(
            "keep_last = 1\nextract = true\nlink_current = true\nallowed_hosts = [\"{}\", \"{}\"]\n{}",
            blobs.host(),
            server.host(),
            container_key(&[blobs.container_url("models"), server.url("/models")])
        ),
    );
    let p = Uuid::new_v4();
    let hex = || Uuid::new_v4().simple().to_string();
    let current = dir.path().join(format!("current-{p}-ONNX"));
    let link = || std::fs::read_link(&current).unwrap();
    // A backup in the container, Last-Modified now.
    let (i1, backup) = blobs.backup_of(p, "ONNX", onnx_export(&[1u8; 5000])).await;
    stores(&handler, p, i1, &blobs.url("models", &backup)).await;
    assert_eq!(
        link(),
        PathBuf::from(format!("{backup}.unzipped")),
        "where current points after the backup"
    );
    // A message-named SAS URL whose blob is from 2000: stored, not current.
    let i2 = Uuid::new_v4();
    let (h, k) = (hex(), hex());
    let old_url = server.url(&format!("/exports/m-{h}/{k}.ONNX.zip?sv=1&sig=x"));
    stores(&handler, p, i2, &old_url).await;
    let old_name = backup_name(p, i2, "ONNX.zip");
    assert!(
        std::fs::read(dir.path().join(&old_name)).unwrap() == old_model,
        "the old model from a URL differs"
    );
    assert_eq!(
        link(),
        PathBuf::from(format!("{backup}.unzipped")),
        "an older model took current"
    );
    assert!(
        std::fs::read(current.join("model.onnx")).unwrap() == [1u8; 5000],
        "current is not the backup's model"
    );
    // A SAS URL uploaded after the backup was stored: newer, so current.
    let i3 = Uuid::new_v4();
    let blob = format!("{}.ONNX.zip", hex());
    blobs
        .upload("uploads", &blob, onnx_export(&[3u8; 5000]))
        .await;
    stores(&handler, p, i3, &blobs.sas_url("uploads", &blob)).await;
    assert_eq!(
        link(),
        PathBuf::from(backup_name(p, i3, "ONNX")),
        "where current points after a newer URL model"
    );
    assert!(
        std::fs::read(current.join("model.onnx")).unwrap() == [3u8; 5000],
        "current is not the newer URL model"
    );
    // keep_last = 1 within each origin: the older URL model went, the
    // backup stays.
    let now = files(dir.path());
    assert!(!now.contains(&old_name), "{now:?}");
    assert!(now.contains(&backup), "{now:?}");
}
