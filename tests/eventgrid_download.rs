//! The download handler on Event Grid `BlobCreated` events (issue 19):
//! through the daemon, on azurite-blob behind a loopback proxy that
//! records every request the daemon makes for a blob, so "stored once" and
//! "no request" are counted on the wire rather than read from the
//! daemon's own logs.

use crate::common;

use azure_core::http::RequestContent;
use common::eventgrid;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use url::Url;
use uuid::Uuid;

/// Azurite's blob service with a `models` container, and a proxy in front
/// of it that the daemon is pointed at.
struct Blobs {
    _azurite: Azurite,
    azurite_port: u16,
    proxy: Proxy,
}

impl Blobs {
    async fn start() -> Self {
        let azurite = Azurite::builder(Service::Blob).start().await;
        let port = azurite.port;
        create_container(
            &format!("http://127.0.0.1:{port}/devstoreaccount1"),
            "models",
        )
        .await;
        let proxy = Proxy::start(port).await;
        Blobs {
            _azurite: azurite,
            azurite_port: port,
            proxy,
        }
    }

    async fn create(&self, container: &str) {
        create_container(&self.direct(""), container).await;
    }

    /// Azurite's own address (for uploads the proxy does not count).
    fn direct(&self, path: &str) -> String {
        let base = format!("http://127.0.0.1:{}/devstoreaccount1", self.azurite_port);
        if path.is_empty() {
            base
        } else {
            format!("{base}/{path}")
        }
    }

    /// The container URL the daemon is configured with: through the proxy.
    fn container_url(&self, container: &str) -> String {
        format!("{}/{container}", self.proxy.base())
    }

    /// The URL an event names for blob `name` (spaces as `%20`, as the
    /// service writes them; other characters as given).
    fn url(&self, container: &str, name: &str) -> String {
        format!(
            "{}/{}",
            self.container_url(container),
            name.replace(' ', "%20")
        )
    }

    async fn upload(&self, container: &str, name: &str, bytes: Vec<u8>) {
        let url =
            Url::parse(&self.direct(&format!("{container}/{}", name.replace(' ', "%20")))).unwrap();
        blob_client(&url)
            .upload(RequestContent::from(bytes), None)
            .await
            .unwrap();
    }

    /// A `[[handlers]]` download table into `dir` from `containers`, with
    /// the default `events`.
    fn table(&self, dir: &Path, containers: &[&str], keys: &str) -> String {
        let quoted: Vec<String> = containers
            .iter()
            .map(|c| format!("\"{}\"", self.container_url(c)))
            .collect();
        format!(
            "[[handlers]]\ntype = \"download\"\ndir = \"{}\"\ncontainer = [{}]\n{keys}\n",
            dir.display(),
            quoted.join(", ")
        )
    }

    /// The GET requests the proxy saw whose path contains `needle`.
    fn gets(&self, needle: &str) -> Vec<String> {
        self.proxy
            .gets()
            .into_iter()
            .filter(|g| g.contains(needle))
            .collect()
    }
}

/// A loopback TCP proxy to Azurite that records the request line of every
/// GET passing through it (the daemon only ever GETs blobs).
struct Proxy {
    port: u16,
    gets: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    async fn start(target: u16) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let gets = Arc::new(Mutex::new(Vec::new()));
        let seen = gets.clone();
        tokio::spawn(async move {
            // Bounded: a test makes a handful of connections.
            for _ in 0..64 {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        // Requests without bodies (GETs): each head ends in
                        // an empty line.
                        let mut pending = Vec::new();
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            pending.extend_from_slice(&buf[..n]);
                            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n")
                            {
                                let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                                let line = head.lines().next().unwrap_or_default().to_owned();
                                if line.starts_with("GET ") {
                                    seen.lock().unwrap().push(line);
                                }
                                pending.drain(..end + 4);
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Proxy { port, gets }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.port)
    }

    fn gets(&self) -> Vec<String> {
        self.gets.lock().unwrap().clone()
    }
}

/// A loopback listener that only counts the connections made to it.
struct Listener {
    port: u16,
    connections: Arc<Mutex<usize>>,
}

impl Listener {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(Mutex::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            for _ in 0..16 {
                if listener.accept().await.is_err() {
                    return;
                }
                *count.lock().unwrap() += 1;
            }
        });
        Listener { port, connections }
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

/// An Event Grid `Microsoft.Storage.BlobCreated` event for the blob at
/// `url`, whose subject names `container` and `blob` (as Event Grid
/// writes it: the name as it is), base64-encoded as Event Grid puts it on
/// a queue.
fn blob_created(url: &str, container: &str, blob: &str, etag: &str, sequencer: &str) -> String {
    eventgrid::b64(&eventgrid::blob_created(
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
        url,
        (container, blob),
        (etag, sequencer),
    ))
}

fn export(project: Uuid, iteration: Uuid, uri: &str) -> String {
    format!(
        r#"{{"version":"1.0","type":"Export","Content":{{"projectId":"{project}","iterationId":"{iteration}","exportStatus":"ExportCompleted","modelUri":"{uri}"}}}}"#
    )
}

fn model_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Every path under `dir`, relative, sorted (hidden files included;
/// symlinks not followed).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// A hook that writes `$CVNOTIFY_MODEL_PATH` to `{inbox}/{message id}`.
fn path_hook(w: &World) -> (PathBuf, String) {
    let inbox = w.path("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let script = w.hook(
        "deploy.sh",
        &format!(
            "printf '%s' \"$CVNOTIFY_MODEL_PATH\" > {}/$CVNOTIFY_MESSAGE_ID",
            inbox.display()
        ),
    );
    (inbox, shell_handler(&script, ""))
}

/// Drains the queue once (`run --once`, one delivery each) with the
/// path hook and a download handler on the `models` container into `dir`;
/// nothing may be poisoned. The daemon and the hook's inbox.
async fn drain_with_path_hook(w: &World, blobs: &Blobs, dir: &Path) -> (Daemon, PathBuf) {
    let (inbox, hook) = path_hook(w);
    let cfg = w
        .config()
        .queue("max_dequeue_count = 1")
        .handler(hook)
        .handler(blobs.table(dir, &["models"], ""))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    d.assert_eq(
        w.poisoned().await,
        Vec::<String>::new(),
        "poisoned messages",
    );
    (d, inbox)
}

/// How many "Message handled" records each message id has.
fn handled(d: &Daemon, id: &str) -> usize {
    d.records_of("Message handled")
        .iter()
        .filter(|r| {
            r["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["message_id"] == id))
        })
        .count()
}

/// The poisoned records' reasons.
fn reasons(d: &Daemon) -> Vec<String> {
    d.records_of("Moved the message to the poison queue")
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_created_event_is_stored_at_its_path_and_the_hook_gets_it() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let bytes = model_bytes(300_000, 1);
    let blob = "automl/run 7/outputs/model.onnx";
    blobs.upload("models", blob, bytes.clone()).await;
    blobs
        .upload(
            "models",
            "CustomVision-TestPermission/probe.txt",
            b"t".to_vec(),
        )
        .await;
    let ids = w
        .send_all(&[
            blob_created(
                &blobs.url("models", blob),
                "models",
                blob,
                "0x8DE1A2B3C4D5E6F",
                "00000000000000000000000000000001",
            ),
            blob_created(
                &blobs.url("models", "CustomVision-TestPermission/probe.txt"),
                "models",
                "CustomVision-TestPermission/probe.txt",
                "0x8DE1A2B3C4D5E70",
                "00000000000000000000000000000002",
            ),
        ])
        .await;
    let dir = w.path("models");
    let (d, inbox) = drain_with_path_hook(&w, &blobs, &dir).await;
    let stored = dir.join(blob);
    d.assert(
        std::fs::read(&stored).is_ok_and(|b| b == bytes),
        format!("{}: not stored, or its content differs", stored.display()),
    );
    assert_eq!(
        std::fs::read_to_string(inbox.join(&ids[0])).unwrap(),
        stored.display().to_string(),
        "the model path the hook got"
    );
    // The permission test: handled, nothing stored, nothing fetched; the
    // hook ran with no model.
    assert_eq!(std::fs::read_to_string(inbox.join(&ids[1])).unwrap(), "");
    assert!(
        blobs.gets("TestPermission").is_empty(),
        "{:?}",
        blobs.proxy.gets()
    );
    assert_eq!(
        tree(&dir),
        [
            "automl",
            "automl/run 7",
            "automl/run 7/outputs",
            "automl/run 7/outputs/.model.onnx.json",
            "automl/run 7/outputs/model.onnx",
            "automl/run 7/outputs/model.onnx.sha256",
        ],
        "the files in dir"
    );
    for id in &ids {
        d.assert_eq(handled(&d, id), 1, format!("deletions of {id}"));
    }
    assert_eq!(w.queued().await, 0, "messages left in the queue");
}

/// Custom Vision writes its backup blob and sends `Export`; Event Grid
/// sends the `BlobCreated` of that blob. One GET, one file, both messages
/// deleted once, in whichever order the daemon takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_and_the_blob_created_of_its_backup_store_it_once() {
    let blobs = Blobs::start().await;
    let w = World::new().await;
    let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
    let name = format!("{p} - {i}.ONNX");
    let bytes = model_bytes(200_000, 2);
    blobs.upload("models", &name, bytes.clone()).await;
    let ids = w
        .send_all(&[
            export(p, i, &blobs.url("models", &name)),
            // The subject with the name's spaces as they are.
            blob_created(
                &blobs.url("models", &name),
                "models",
                &name,
                "\"0x8DE1A2B3C4D5E6F\"",
                "0000000000000000000000000000000a",
            ),
        ])
        .await;
    let dir = w.path("models");
    let (d, inbox) = drain_with_path_hook(&w, &blobs, &dir).await;
    let gets = blobs.gets(&p.to_string());
    d.assert_eq(gets.len(), 1, format!("GETs of the backup blob: {gets:?}"));
    d.assert_eq(d.count_logged("\"Model downloaded\""), 1, "files written");
    d.assert_eq(
        d.count_logged("The model is already downloaded"),
        1,
        "notifications that found it stored",
    );
    let mut want = vec![
        format!(".{name}.json"),
        name.clone(),
        format!("{name}.sha256"),
    ];
    want.sort();
    assert_eq!(tree(&dir), want, "the files in dir");
    assert!(
        std::fs::read(dir.join(&name)).unwrap() == bytes,
        "content differs"
    );
    for id in &ids {
        d.assert_eq(handled(&d, id), 1, format!("deletions of {id}"));
        assert_eq!(
            std::fs::read_to_string(inbox.join(id)).unwrap(),
            dir.join(&name).display().to_string(),
            "the model path the hook got for {id}"
        );
    }
    assert_eq!(w.queued().await, 0, "messages left in the queue");
}

/// A blob event for a URL outside every configured container: poisoned
/// at once with a reason naming the URL (without its query), and no
/// connection is made, even to an allowed host and with a SAS in the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_created_outside_the_container_is_poisoned_without_a_request() {
    let blobs = Blobs::start().await;
    blobs.create("private").await;
    blobs
        .upload("private", "payroll.onnx", b"secret".to_vec())
        .await;
    let listener = Listener::start().await;
    let w = World::new().await;
    let elsewhere = format!(
        "http://127.0.0.1:{}/devstoreaccount1/models/x.onnx",
        listener.port
    );
    let other_container = blobs.url("private", "payroll.onnx");
    w.send_all(&[
        blob_created(
            &format!("{elsewhere}?sv=2025-01-05&sr=b&sp=r&sig=MustNotLeak"),
            "models",
            "x.onnx",
            "0x1",
            "01",
        ),
        // On the configured endpoint, with a SAS that `decide` alone would
        // take: still refused, since a blob event's URL is the blob's own.
        blob_created(
            &format!("{other_container}?sv=2025-01-05&sr=b&sp=r&sig=MustNotLeak"),
            "private",
            "payroll.onnx",
            "0x2",
            "02",
        ),
    ])
    .await;
    let dir = w.path("models");
    let cfg = w
        .config()
        .queue("max_dequeue_count = 5")
        .handler(blobs.table(
            &dir,
            &["models"],
            &format!(
                "allowed_hosts = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]",
                blobs.proxy.port, listener.port
            ),
        ))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;
    d.assert_eq(listener.connections(), 0, "connections to the listener");
    d.assert_eq(
        blobs.proxy.gets(),
        Vec::<String>::new(),
        "GETs through the proxy",
    );
    d.assert_eq(w.poisoned().await.len(), 2, "poisoned messages");
    let reasons = reasons(&d);
    // Each URL without its SAS (`secret::redact_url`).
    for url in [&elsewhere, &other_container] {
        d.assert(
            reasons.iter().any(|r| {
                r.contains(&format!("refusing the blob event for {url}?REDACTED: the blob is outside every configured container"))
            }),
            format!("a reason naming {url}: {reasons:?}"),
        );
    }
    d.assert_not_logged("MustNotLeak");
    d.assert_eq(listener.connections(), 0, "connections to the listener");
    d.assert_eq(
        blobs.proxy.gets(),
        Vec::<String>::new(),
        "GETs through the proxy",
    );
    // Poisoned on the first delivery: permanent.
    for r in d.records_of("Moved the message to the poison queue") {
        d.assert_eq(
            r["spans"][0]["dequeue_count"].as_u64(),
            Some(1),
            "dequeue count",
        );
    }
    assert_eq!(tree(&dir), Vec::<String>::new(), "the files in dir");
}

/// Blob names that cannot be stored safely under `dir`: a `..` (encoded
/// in the URL, as a blob may be named), an absolute path, a path longer
/// than 1024 bytes, a control character, a planted symlink where a folder
/// should be, and a second container's blob mapping to the file of the
/// first's. Each is poisoned at once with its reason; nothing is written
/// outside `dir` and nothing is overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_blob_paths_are_refused_and_nothing_is_written_outside_dir() {
    let blobs = Blobs::start().await;
    blobs.create("models2").await;
    let w = World::new().await;
    let sandbox = w.path("sandbox");
    let dir = sandbox.join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("planted")).unwrap();
    for (container, name, seed) in [
        ("models", "planted/x.onnx", 3),
        ("models", "same/x.onnx", 4),
        ("models2", "same/x.onnx", 5),
    ] {
        blobs.upload(container, name, model_bytes(1000, seed)).await;
    }
    let long = format!("{}x.onnx", "abcdefgh/".repeat(114));
    // (the name as encoded in the URL, the blob's name, the reason)
    let cases: Vec<(String, String, &str)> = [
        (
            "..%2Fescape.onnx",
            "../escape.onnx",
            "has a `.` or `..` segment",
        ),
        (
            "%2Ftmp%2Fabsolute.onnx",
            "/tmp/absolute.onnx",
            "is absolute",
        ),
        (&long, &long, "is longer than 1024 bytes"),
        ("a%0Ab.onnx", "a\nb.onnx", "has a control character"),
        (
            "planted/x.onnx",
            "planted/x.onnx",
            "is there where its folder should be",
        ),
    ]
    .into_iter()
    .map(|(encoded, blob, reason)| (blobs.url("models", encoded), blob.to_owned(), reason))
    .collect();
    let mut bodies: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(k, (url, blob, _))| blob_created(url, "models", blob, "0x1", &format!("{k:02}")))
        .collect();
    bodies.push(blob_created(
        &blobs.url("models", "same/x.onnx"),
        "models",
        "same/x.onnx",
        "0x2",
        "10",
    ));
    w.send_all(&bodies).await;
    let cfg = w
        .config()
        .queue("max_dequeue_count = 5")
        .handler(blobs.table(&dir, &["models", "models2"], ""))
        .write("c.toml");
    let d = w.daemon(&cfg).tag("first").run_once().await;
    // The second container's blob of the same path, after the first's.
    w.send_all(&[blob_created(
        &blobs.url("models2", "same/x.onnx"),
        "models2",
        "same/x.onnx",
        "0x3",
        "11",
    )])
    .await;
    let d2 = w.daemon(&cfg).tag("second").run_once().await;
    d.assert_eq(
        tree(outside.path()),
        Vec::<String>::new(),
        "files outside dir",
    );
    d2.assert(
        std::fs::read(dir.join("same/x.onnx")).is_ok_and(|b| b == model_bytes(1000, 4)),
        "the first container's same/x.onnx was overwritten",
    );
    let mut reasons = reasons(&d);
    reasons.extend(self::reasons(&d2));
    d.assert_eq(
        reasons.len(),
        cases.len() + 1,
        format!("poisoned: {reasons:?}"),
    );
    for (_, _, why) in &cases {
        d.assert(
            reasons.iter().any(|r| r.contains(why)),
            format!("a reason saying `{why}`: {reasons:?}"),
        );
    }
    d2.assert(
        reasons.iter().any(|r| {
            r.contains("refusing to store the blob")
                && r.contains("/models2/same/x.onnx")
                && r.contains("the file of the blob")
        }),
        format!("the clash refused: {reasons:?}"),
    );
    for r in d
        .records_of("Moved the message to the poison queue")
        .iter()
        .chain(&d2.records_of("Moved the message to the poison queue"))
    {
        d.assert_eq(
            r["spans"][0]["dequeue_count"].as_u64(),
            Some(1),
            "dequeue count",
        );
    }
    // Only the first `same/x.onnx` was fetched; nothing else.
    let gets = blobs.proxy.gets();
    d.assert_eq(gets.len(), 1, format!("GETs: {gets:?}"));
    assert!(gets[0].contains("/models/same/x.onnx"), "{gets:?}");
    assert_eq!(
        std::fs::read(dir.join("same/x.onnx")).unwrap(),
        model_bytes(1000, 4),
        "the first container's blob was overwritten"
    );
    assert_eq!(
        tree(&sandbox)
            .iter()
            .filter(|p| !p.starts_with("models"))
            .count(),
        0,
        "{:?}",
        tree(&sandbox)
    );
    assert_eq!(
        tree(&dir),
        [
            "planted",
            "same",
            "same/.x.onnx.json",
            "same/x.onnx",
            "same/x.onnx.sha256"
        ],
        "the files in dir"
    );
}
