//! Test harness: a real Azurite per test, the real `cvnotify` binary, and
//! a client for the same queues through the library's Azure implementation.
//!
//! Azurite comes from the pinned npm package (`npm ci`); it is started on a
//! free loopback port, waited for, and stopped by its own pid on drop.
#![allow(dead_code)]

use cvnotify::azure::{AzureQueue, Connector};
use cvnotify::config::Config;
use cvnotify::queue::Queue;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const DEV_KEY: &str = cvnotify::config::DEV_KEY;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Which Azurite service to start.
#[derive(Clone, Copy)]
pub enum Service {
    Queue,
    Blob,
}

/// A running Azurite service.
pub struct Azurite {
    child: Child,
    pub port: u16,
    /// Azurite's working directory.
    pub dir: TempDir,
}

impl Azurite {
    pub fn start() -> Self {
        Self::start_service(Service::Queue, None)
    }

    /// Starts `service`; with `location`, on-disk persistence there (for
    /// restarts), else in memory.
    pub fn start_service(service: Service, location: Option<&Path>) -> Self {
        Self::start_on(service, location, None)
    }

    /// As [`Azurite::start_service`], on `port` if given (else a free one).
    pub fn start_on(service: Service, location: Option<&Path>, port: Option<u16>) -> Self {
        Self::start_with(service, location, port, &[])
    }

    /// As [`Azurite::start_on`], with extra arguments (`--oauth basic`,
    /// `--cert`, `--key` for HTTPS).
    pub fn start_with(
        service: Service,
        location: Option<&Path>,
        port: Option<u16>,
        extra: &[String],
    ) -> Self {
        let (bin, host_flag, port_flag) = match service {
            Service::Queue => ("azurite-queue", "--queueHost", "--queuePort"),
            Service::Blob => ("azurite-blob", "--blobHost", "--blobPort"),
        };
        let exe = repo_root().join("node_modules/.bin").join(bin);
        assert!(
            exe.exists(),
            "{} is missing: run `npm ci` in the repository first",
            exe.display()
        );
        let dir = tempfile::tempdir().unwrap();
        for attempt in 0..3 {
            // Port 0 lets Azurite pick a free port and report it: choosing
            // one here and passing it on would race with parallel tests.
            let requested = port.unwrap_or(0);
            let mut cmd = Command::new(&exe);
            cmd.args([host_flag, "127.0.0.1", port_flag, &requested.to_string()])
                .args(["--skipApiVersionCheck", "--silent", "--loose"])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            match location {
                Some(l) => cmd.arg("--location").arg(l),
                // Azurite still writes its extent metadata to the working
                // directory, so run it in the temp dir.
                None => cmd.arg("--inMemoryPersistence").current_dir(dir.path()),
            };
            let mut child = cmd.spawn().expect("starting azurite");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Some(rest) = line
                        .split("successfully listens on http://127.0.0.1:")
                        .nth(1)
                        .or_else(|| {
                            line.split("successfully listens on https://127.0.0.1:")
                                .nth(1)
                        })
                    {
                        let _ = tx.send(rest.trim().parse::<u16>().ok());
                    }
                }
            });
            if let Ok(Some(port)) = rx.recv_timeout(Duration::from_secs(30))
                && wait_for_port(port, &mut child, Duration::from_secs(10))
            {
                return Azurite { child, port, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("azurite did not come up (attempt {attempt})");
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("azurite did not start");
    }

    pub fn queue_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it (SIGTERM to its pid, so on-disk data is flushed; SIGKILL
    /// after 5 s) and waits for it.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for_port(port: u16, child: &mut Child, limit: Duration) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A test's world: Azurite, a temp dir, a queue name, and a config.
pub struct World {
    pub azurite: Azurite,
    pub dir: TempDir,
    pub queue: String,
}

impl World {
    pub fn new() -> Self {
        let azurite = Azurite::start();
        World {
            azurite,
            dir: tempfile::tempdir().unwrap(),
            queue: format!("q-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `[queue]` + `[auth]` for this world with Shared Key, plus `extra`
    /// (more `[queue]` keys first, then other tables).
    pub fn config_text(&self, queue_extra: &str, rest: &str) -> String {
        format!(
            r#"
shutdown_timeout = "10s"
[queue]
name = "{queue}"
endpoint = "{endpoint}"
min_poll_interval = "50ms"
max_poll_interval = "500ms"
retry_base_delay = "1s"
{queue_extra}
[auth]
mode = "connection_string"
connection_string = "UseDevelopmentStorage=true"
[log]
format = "json"
level = "debug"
{rest}
"#,
            queue = self.queue,
            endpoint = self.azurite.queue_endpoint(),
        )
    }

    /// Writes a config file and returns its path.
    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn connector(&self) -> Connector {
        let text = self.config_text("", "");
        crate::common::connect(&Config::from_toml(&text).unwrap()).unwrap()
    }

    pub fn main_queue(&self) -> AzureQueue {
        self.connector().queue(&self.queue).unwrap()
    }

    pub fn poison_queue(&self) -> AzureQueue {
        self.connector()
            .queue(&format!("{}-poison", self.queue))
            .unwrap()
    }

    /// Creates the main queue and sends `bodies`, returning their ids.
    pub async fn send_all(&self, bodies: &[String]) -> Vec<String> {
        let q = self.main_queue();
        q.create_if_missing().await.unwrap();
        let mut ids = Vec::new();
        for b in bodies {
            ids.push(q.send(b).await.unwrap().id);
        }
        ids
    }

    /// Every message text still in `q` (peeked; includes invisible ones only
    /// once they are visible again).
    pub async fn peek_all(q: &AzureQueue) -> Vec<String> {
        match q.peek(32).await {
            Ok(m) => m.into_iter().map(|m| m.body).collect(),
            Err(cvnotify::queue::QueueError::QueueNotFound { .. }) => Vec::new(),
            Err(e) => panic!("peek failed: {e}"),
        }
    }

    pub async fn length(q: &AzureQueue) -> u64 {
        match q.approximate_length().await {
            Ok(n) => n,
            Err(cvnotify::queue::QueueError::QueueNotFound { .. }) => 0,
            Err(e) => panic!("properties failed: {e}"),
        }
    }
}

/// A Custom Vision training notification as the service writes it.
pub fn training(status: &str) -> String {
    format!(
        r#"{{"version":"1.0","type":"Training","Content":{{"projectId":"{}","iterationId":"{}","trainingStatus":"{status}"}}}}"#,
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    )
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cvnotify")
}

/// A running `cvnotify` process with its output captured to files.
pub struct Daemon {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, args: &[&str], out_dir: &Path, tag: &str) -> Self {
        Self::start_with_env(config, args, out_dir, tag, &[])
    }

    pub fn start_with_env(
        config: &Path,
        args: &[&str],
        out_dir: &Path,
        tag: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let stdout = out_dir.join(format!("{tag}.stdout"));
        let stderr = out_dir.join(format!("{tag}.stderr"));
        let child = Command::new(bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("starting cvnotify");
        Daemon {
            child,
            stdout,
            stderr,
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for exit up to `limit`; None if still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
            + &std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// JSON log records.
    pub fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` every 100 ms until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Lines of a file (empty if it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An account SAS for the Azurite account, signed with the well-known key
/// (queue service, object level, given permissions; sv=2019-12-12 layout).
pub fn account_sas(permissions: &str) -> String {
    account_sas_for("q", permissions)
}

/// An account SAS for `services` (`q`, `b`, `bq`, ...).
pub fn account_sas_for(services: &str, permissions: &str) -> String {
    let sv = "2019-12-12";
    let se = "2099-01-01T00:00:00Z";
    let sts =
        format!("devstoreaccount1\n{permissions}\n{services}\nsco\n\n{se}\n\nhttp,https\n{sv}\n");
    let sig = azure_core::hmac::hmac_sha256(&sts, &azure_core::credentials::Secret::new(DEV_KEY))
        .unwrap();
    let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    format!("sv={sv}&ss={services}&srt=sco&sp={permissions}&se={se}&spr=http,https&sig={sig}")
}

/// Processes in process group `pgid` that are alive (zombies, which are
/// dead but not yet reaped, do not count).
pub fn live_members_of_group(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" && fields[0] != "X"
        {
            out.push(pid);
        }
    }
    out
}

/// Writes an executable `/bin/sh` hook script into the world's directory.
pub fn hook(w: &World, name: &str, body: &str) -> PathBuf {
    let p = w.path(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    p
}

/// A `[[handlers]]` table running `script` with `/bin/sh`, plus `extra` keys.
pub fn shell_handler(script: &Path, extra: &str) -> String {
    format!(
        "[[handlers]]\ntype = \"shell\"\ncommand = [\"/bin/sh\", \"{}\"]\n{extra}\n",
        script.display()
    )
}

/// Reads one HTTP/1.1 request (head, and a body of `content-length`) from a
/// loopback test server's connection: (head, body), or None if the peer
/// closed first.
pub async fn read_http_request<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
) -> Option<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            return Some((head, body));
        }
    }
}

/// A shell handler whose hook appends each message id to `handled.txt` in
/// `dir`: (that file, the `[[handlers]]` table).
pub fn recording_hook(dir: &Path) -> (PathBuf, String) {
    let out = dir.join("handled.txt");
    let script = dir.join("record.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$CVNOTIFY_MESSAGE_ID\" >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    (out, shell_handler(&script, ""))
}

/// A storage client for `config`'s queue account (the library takes the
/// sections it needs).
pub fn connect(
    config: &cvnotify::config::Config,
) -> Result<cvnotify::azure::Connector, cvnotify::azure::ConnectError> {
    cvnotify::azure::Connector::new(&config.queue, &config.auth, &config.tls)
}

/// What handlers are built with when no storage account is involved: blob
/// access without credentials (SAS URLs and public blobs only).
pub fn anonymous_ctx() -> cvnotify::handler::BuildContext {
    cvnotify::handler::BuildContext {
        blobs: std::sync::Arc::new(cvnotify::azure::AzureBlobs::anonymous()),
        ca_file: None,
    }
}
