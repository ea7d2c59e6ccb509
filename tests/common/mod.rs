//! Test harness: a real Azurite per test, the real `cvnotify` binary, and
//! a client for the same queues through the library's Azure implementation.
//!
//! Azurite comes from the pinned npm package (`npm ci`); it is started on a
//! free loopback port, waited for, and stopped by its own pid (gracefully by
//! [`Azurite::stop`], killed on drop).
//!
//! - [`cli`] runs the binary to completion ([`TestCommand`], [`Ran`]);
//!   [`Daemon`] keeps it running with its output in files. Their
//!   assertions explain a failure themselves: the command, its status and
//!   output, or the tail of the daemon's logs ([`Daemon::assert_logged`],
//!   [`Daemon::wait_for`], [`Daemon::assert`]), as ripgrep's `TestCommand`
//!   does; no test passes `d.logs()` into a message by hand.
//! - [`World`] is a test's Azurite, directory and queue: [`World::config`]
//!   renders a config ([`ConfigBuilder`]), [`World::daemon`] starts the
//!   binary on it ([`DaemonBuilder`]), [`World::marked_hook`] is a hook that
//!   records when each of its runs starts and ends ([`MarkedHook`]).
//! - [`Azurite::builder`] starts Azurite with options.
//! - `tls`, `tokens`, `faults` and `flood` are loopback servers for some
//!   tests; `customvision` is a stand-in for the Custom Vision Training API.
//! - [`status_kib`] reads a process's memory (`VmRSS`, `VmHWM`).

pub mod customvision;
pub mod eventgrid;
pub mod faults;
pub mod flood;
pub mod tls;
pub mod tokens;

// What the tests take from the library, named here only (each test binary
// uses part of it).
#[allow(unused_imports)]
pub use cvnotify::{
    azure::{AzureBlobs, AzureQueue, ConnectError, Connector, SharedKeyPolicy},
    config::{Config, DEV_KEY, HandlerConfig},
    customvision::TrainingClient,
    error::error_chain,
    event::{DecodeError, Event, Notification, decode},
    handler::{BuildContext, BuildHandler, Delivery, Handler},
    queue::{Expiry, Queue, QueueError},
    secret::Secret,
};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::{OsStr, OsString};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

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
    /// Azurite's working directory, removed when this is dropped.
    _dir: TempDir,
}

/// How to start Azurite: [`Azurite::builder`].
pub struct AzuriteBuilder {
    service: Service,
    location: Option<PathBuf>,
    port: Option<u16>,
    args: Vec<OsString>,
}

impl AzuriteBuilder {
    /// On-disk persistence in `path` (for restarts); in memory without.
    pub fn location(mut self, path: impl Into<PathBuf>) -> Self {
        self.location = Some(path.into());
        self
    }

    /// Listen on `port` (else on a free one Azurite picks).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// An extra argument (`--oauth basic`, `--cert`, `--key` for HTTPS).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Starts it and waits until it accepts connections (three attempts).
    pub async fn start(self) -> Azurite {
        let (bin, host_flag, port_flag) = match self.service {
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
            let requested = self.port.unwrap_or(0);
            let mut cmd = Command::new(&exe);
            cmd.args([host_flag, "127.0.0.1", port_flag, &requested.to_string()])
                .args(["--skipApiVersionCheck", "--silent", "--loose"])
                .args(&self.args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            match &self.location {
                Some(l) => cmd.arg("--location").arg(l),
                // Azurite still writes its extent metadata to the working
                // directory, so run it in the temp dir.
                None => cmd.arg("--inMemoryPersistence").current_dir(dir.path()),
            };
            let mut child = cmd.spawn().expect("starting azurite");
            let stdout = child.stdout.take().unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            // Reads Azurite's output for as long as it runs (so that it never
            // blocks on a full pipe), reporting the port it listens on.
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
            if let Ok(Some(Some(port))) =
                tokio::time::timeout(Duration::from_secs(30), rx.recv()).await
                && wait_for_port(port, &mut child, Duration::from_secs(10)).await
            {
                return Azurite {
                    child,
                    port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("azurite did not come up (attempt {attempt})");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("azurite did not start");
    }
}

impl Azurite {
    /// The queue service, in memory, on a free port.
    pub async fn start() -> Self {
        Self::builder(Service::Queue).start().await
    }

    pub fn builder(service: Service) -> AzuriteBuilder {
        AzuriteBuilder {
            service,
            location: None,
            port: None,
            args: Vec::new(),
        }
    }

    pub fn queue_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.port)
    }

    /// Stops it (SIGTERM to its pid, so on-disk data is flushed; SIGKILL
    /// after 5 s) and waits for it.
    pub async fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Azurite {
    /// Kills it unless [`Azurite::stop`] already stopped it (a drop cannot
    /// wait for a graceful exit without blocking the test's runtime).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn wait_for_port(port: u16, child: &mut Child, limit: Duration) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A client for queue `name`, built from config `text` as the daemon builds
/// its own.
pub fn queue_client(text: &str, name: &str) -> AzureQueue {
    crate::common::connect(&Config::from_toml(text).unwrap())
        .unwrap()
        .queue(name)
        .unwrap()
}

/// A test's world: Azurite, a temp dir, a queue name, and a config.
pub struct World {
    pub azurite: Azurite,
    pub dir: TempDir,
    pub queue: String,
}

impl World {
    pub async fn new() -> Self {
        let azurite = Azurite::start().await;
        World {
            azurite,
            dir: tempfile::tempdir().unwrap(),
            queue: format!("q-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config for this world: its queue on its Azurite with Shared Key
    /// (development storage), fast polling, JSON debug logs, no handlers.
    pub fn config(&self) -> ConfigBuilder {
        ConfigBuilder {
            dir: self.dir.path().to_owned(),
            queue: self.queue.clone(),
            endpoint: Some(self.azurite.queue_endpoint()),
            shutdown_timeout: "10s".into(),
            queue_extra: Vec::new(),
            connection_string: "UseDevelopmentStorage=true".into(),
            log_format: "json".into(),
            log_level: "debug".into(),
            rest: String::new(),
            poll: ("50ms".into(), "500ms".into()),
        }
    }

    /// Writes a config file and returns its path.
    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn main_queue(&self) -> AzureQueue {
        queue_client(&self.config().render(), &self.queue)
    }

    pub fn poison_queue(&self) -> AzureQueue {
        queue_client(&self.config().render(), &format!("{}-poison", self.queue))
    }

    /// Creates the main queue and sends `bodies`, returning their ids.
    pub async fn send_all(&self, bodies: &[String]) -> Vec<String> {
        let q = self.main_queue();
        q.create_if_missing().await.unwrap();
        let mut ids = Vec::new();
        for b in bodies {
            ids.push(q.send(b, Expiry::ServiceDefault).await.unwrap().id);
        }
        ids
    }

    /// Every message text still in `q` (peeked; includes invisible ones only
    /// once they are visible again).
    pub async fn peek_all(q: &AzureQueue) -> Vec<String> {
        match q.peek(32).await {
            Ok(m) => m.into_iter().map(|m| m.body).collect(),
            Err(QueueError::QueueNotFound { .. }) => Vec::new(),
            Err(e) => panic!("peek failed: {e}"),
        }
    }

    pub async fn length(q: &AzureQueue) -> u64 {
        match q.approximate_length().await {
            Ok(n) => n,
            Err(QueueError::QueueNotFound { .. }) => 0,
            Err(e) => panic!("properties failed: {e}"),
        }
    }

    /// A config for this world's queue with `auth.mode = "sas"`: an account
    /// SAS with `permissions`, JSON logs.
    pub fn sas_config(&self, permissions: &str) -> String {
        format!(
            "[queue]\nname = \"{}\"\nendpoint = \"{}\"\n[auth]\nmode = \"sas\"\nsas_token = \"{}\"\n[log]\nformat = \"json\"\n",
            self.queue,
            self.azurite.queue_endpoint(),
            account_sas(permissions)
        )
    }

    /// The bodies in the poison queue (peeked).
    pub async fn poisoned(&self) -> Vec<String> {
        Self::peek_all(&self.poison_queue()).await
    }

    /// The main queue's length.
    pub async fn queued(&self) -> u64 {
        Self::length(&self.main_queue()).await
    }

    /// Waits until the poison queue holds at least `n` messages (failing
    /// with the tail of `d`'s logs).
    pub async fn wait_poisoned(&self, d: &Daemon, n: usize) {
        let what = format!("{n} message(s) in the poison queue");
        d.wait_for(&what, async || self.poisoned().await.len() >= n)
            .await
    }

    /// Waits until the main queue is empty (failing with the tail of `d`'s
    /// logs).
    pub async fn wait_drained(&self, d: &Daemon) {
        d.wait_for("an empty queue", async || self.queued().await == 0)
            .await
    }

    /// `cvnotify` on `config`, its output in this world's directory
    /// ([`DaemonBuilder`]: `.start()` for `run`, `.run_once()`).
    pub fn daemon(&self, config: &Path) -> DaemonBuilder {
        DaemonBuilder {
            config: config.to_owned(),
            dir: self.dir.path().to_owned(),
            tag: "d".into(),
            env: Vec::new(),
        }
    }

    /// Writes an executable `/bin/sh` hook script `name` into the world's
    /// directory. The shell variable `DIR` (not exported) names that
    /// directory, so that `body` can write `"$DIR/calls.txt"` for a file
    /// the test reads with `lines(&w.path("calls.txt"))`.
    pub fn hook(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path(name);
        let dir = self.dir.path().display();
        std::fs::write(&p, format!("#!/bin/sh\nDIR='{dir}'\n{body}\n")).unwrap();
        p
    }

    /// A hook `name` that records when each of its runs starts and ends,
    /// running `body` in between ([`MarkedHook`]).
    pub fn marked_hook(&self, name: &str, body: &str) -> MarkedHook {
        let starts = self.path(&format!("{name}.starts"));
        let ends = self.path(&format!("{name}.ends"));
        // One `echo` per record: a line appended by one write, so a reader
        // sees it whole or not at all (see `complete_lines`).
        let record = "\"$$ $PPID $CVNOTIFY_MESSAGE_ID $CVNOTIFY_DEQUEUE_COUNT\"";
        let script = self.hook(
            name,
            &format!(
                "echo {record} >> '{}'\n{body}\necho {record} >> '{}'",
                starts.display(),
                ends.display()
            ),
        );
        MarkedHook {
            script,
            starts,
            ends,
        }
    }

    /// Sends one training event, starts `cvnotify run` with `config` plus
    /// `hook` as its handler, and waits until the hook runs: the set-up of
    /// the tests about what happens to a running hook.
    pub async fn start_with_running_hook(
        &self,
        hook: &MarkedHook,
        config: ConfigBuilder,
    ) -> (Daemon, HookRun) {
        self.send_all(&[training("TrainingCompleted")]).await;
        let cfg = config.handler(hook.handler("")).write("c.toml");
        let d = self.daemon(&cfg).start();
        let run = hook.wait_started(&d, 1).await;
        (d, run)
    }
}

/// A config file under construction ([`World::config`]): each method
/// changes one thing, [`ConfigBuilder::render`] gives the TOML and
/// [`ConfigBuilder::write`] writes it into the world's directory.
#[derive(Clone)]
pub struct ConfigBuilder {
    dir: PathBuf,
    queue: String,
    endpoint: Option<String>,
    shutdown_timeout: String,
    queue_extra: Vec<String>,
    connection_string: String,
    log_format: String,
    log_level: String,
    rest: String,
    /// `queue.min_poll_interval` and `queue.max_poll_interval`.
    poll: (String, String),
}

impl ConfigBuilder {
    /// `queue.min_poll_interval` and `max_poll_interval` (default `50ms`,
    /// `500ms`).
    pub fn poll_intervals(mut self, min: &str, max: &str) -> Self {
        self.poll = (min.into(), max.into());
        self
    }

    /// `shutdown_timeout` (default `10s`).
    pub fn shutdown_timeout(mut self, t: &str) -> Self {
        self.shutdown_timeout = t.into();
        self
    }

    /// More `[queue]` keys (`max_dequeue_count = 2`).
    pub fn queue(mut self, keys: &str) -> Self {
        self.queue_extra.push(keys.into());
        self
    }

    /// No `queue.endpoint`: the connection string names it.
    pub fn without_endpoint(mut self) -> Self {
        self.endpoint = None;
        self
    }

    /// `auth.connection_string` (default `UseDevelopmentStorage=true`).
    pub fn connection_string(mut self, s: &str) -> Self {
        self.connection_string = s.into();
        self
    }

    /// `log.format` (default `json`).
    pub fn log_format(mut self, f: &str) -> Self {
        self.log_format = f.into();
        self
    }

    /// `log.level` (default `debug`).
    pub fn log_level(mut self, l: &str) -> Self {
        self.log_level = l.into();
        self
    }

    /// A `[[handlers]]` table ([`shell_handler`]); handlers keep their order.
    pub fn handler(self, table: impl AsRef<str>) -> Self {
        self.extra(table)
    }

    /// Other tables (`[http]`, `[tls]`), after those above, in call order
    /// with the handlers.
    pub fn extra(mut self, text: impl AsRef<str>) -> Self {
        self.rest.push_str(text.as_ref());
        self
    }

    pub fn render(&self) -> String {
        let endpoint = match &self.endpoint {
            Some(e) => format!("endpoint = \"{e}\"\n"),
            None => String::new(),
        };
        format!(
            r#"
shutdown_timeout = "{shutdown_timeout}"
[queue]
name = "{queue}"
{endpoint}min_poll_interval = "{min_poll}"
max_poll_interval = "{max_poll}"
retry_base_delay = "1s"
{queue_extra}
[auth]
mode = "connection_string"
connection_string = "{connection_string}"
[log]
format = "{log_format}"
level = "{log_level}"
{rest}
"#,
            shutdown_timeout = self.shutdown_timeout,
            queue = self.queue,
            queue_extra = self.queue_extra.join("\n"),
            connection_string = self.connection_string,
            log_format = self.log_format,
            log_level = self.log_level,
            rest = self.rest,
            min_poll = self.poll.0,
            max_poll = self.poll.1,
        )
    }

    /// Writes the config as `name` in the world's directory; its path.
    pub fn write(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, self.render()).unwrap();
        p
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

/// `body` as a handler gets it: decoded, with this message id and count.
pub fn delivery_of(body: &str, message_id: &str, dequeue_count: u32) -> Delivery {
    Delivery {
        message_id: message_id.into(),
        dequeue_count,
        inserted_at: None,
        received_at: time::OffsetDateTime::now_utc(),
        notification: decode(body.as_bytes()).unwrap().remove(0),
        trace_id: None,
        model: None,
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cvnotify")
}

/// `cvnotify` (without `CVNOTIFY_CONFIG` from the test's environment), to
/// run to completion: `cli().config(&cfg).arg("check").stdout()`.
pub fn cli() -> TestCommand {
    let mut cmd = Command::new(bin());
    cmd.env_remove("CVNOTIFY_CONFIG");
    TestCommand { cmd, stdin: None }
}

/// `cvnotify --config config args...` with `env`, run to completion off
/// the runtime's threads ([`TestCommand::run_off_runtime`]).
pub async fn run_cli(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut cmd = cli();
    cmd.config(config).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.run_off_runtime().await
}

/// A command line of the binary under test, with assertions on how it ends
/// that show everything it printed when they fail.
pub struct TestCommand {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl TestCommand {
    /// `--config path`.
    pub fn config(&mut self, path: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg("--config").arg(path);
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env_remove(key);
        self
    }

    /// Feeds `bytes` to its stdin (else stdin is empty).
    pub fn stdin_bytes(&mut self, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs it to completion: its exit status, stdout and stderr, whatever
    /// they are.
    pub fn output(&mut self) -> Output {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let Some(bytes) = self.stdin.clone() else {
            return self
                .cmd
                .stdin(Stdio::null())
                .output()
                .expect("running cvnotify");
        };
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .spawn()
            .expect("starting cvnotify");
        let mut stdin = child.stdin.take().unwrap();
        // Written from a thread, so that a large input cannot deadlock against
        // output the child cannot get rid of. It may exit without reading it
        // all: a broken pipe is no error.
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            match stdin.write_all(&bytes) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
                _ => Ok(()),
            }
        });
        let out = child.wait_with_output().expect("running cvnotify");
        writer.join().unwrap().expect("writing cvnotify's stdin");
        out
    }

    /// Runs it, asserts that it succeeded, and returns its stdout.
    #[track_caller]
    pub fn stdout(&mut self) -> String {
        let out = self.output();
        if !out.status.success() {
            self.fail("expected success", &out);
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs it and asserts that it exited with `code`.
    #[track_caller]
    pub fn assert_exit(&mut self, code: i32) -> Output {
        let out = self.output();
        if out.status.code() != Some(code) {
            self.fail(&format!("expected exit code {code}"), &out);
        }
        out
    }

    /// Runs it to completion: what it printed, with assertions ([`Ran`]).
    pub fn run(&mut self) -> Ran {
        let output = self.output();
        Ran {
            command: format!("{:?}", self.cmd),
            output,
        }
    }

    /// [`TestCommand::run`] on a blocking thread, so that the loopback
    /// servers on the test's runtime (the Custom Vision stand-in) keep
    /// answering meanwhile.
    pub async fn run_off_runtime(mut self) -> Ran {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .unwrap()
    }

    /// Starts it for a long run: stdin empty, stdout and stderr to `stdout`
    /// and `stderr` ([`Daemon`]).
    pub fn spawn(&mut self, stdout: &Path, stderr: &Path) -> Child {
        self.cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(stdout).unwrap())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .expect("starting cvnotify")
    }

    #[track_caller]
    fn fail(&self, expected: &str, out: &Output) -> ! {
        panic!(
            "\n\n==========\n{expected}\n\ncommand: {:?}\n\nstatus: {}\n\nstdout:\n{}\n\nstderr:\n{}\n==========\n",
            self.cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// How a [`TestCommand`] ended: its status and output, with assertions
/// that show the command and all it printed when they fail.
pub struct Ran {
    command: String,
    pub output: Output,
}

impl Ran {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Its stdout's lines.
    pub fn lines(&self) -> Vec<String> {
        self.stdout().lines().map(str::to_owned).collect()
    }

    /// Status, stdout and stderr, for searching all it printed.
    pub fn text(&self) -> String {
        describe(&self.output)
    }

    /// Fails, showing the command and all it printed, unless `ok`.
    #[track_caller]
    pub fn assert(&self, ok: bool, what: impl std::fmt::Display) -> &Self {
        if !ok {
            panic!(
                "\n\n==========\n{what}\n\ncommand: {}\n\n{}\n==========\n",
                self.command,
                self.text()
            );
        }
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        self.assert(
            self.code() == Some(code),
            format!("expected exit code {code}"),
        )
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert(self.output.status.success(), "expected success")
    }

    /// Its stdout or stderr contains `needle`.
    #[track_caller]
    pub fn assert_shows(&self, needle: &str) -> &Self {
        self.assert(
            self.text().contains(needle),
            format!("expected the output to contain {needle:?}"),
        )
    }

    /// Its stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_shows(&self, needle: &str) -> &Self {
        self.assert(
            self.stderr().contains(needle),
            format!("expected stderr to contain {needle:?}"),
        )
    }

    /// Its stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_shows(&self, needle: &str) -> &Self {
        self.assert(
            self.stdout().contains(needle),
            format!("expected stdout to contain {needle:?}"),
        )
    }

    /// Neither its stdout nor its stderr contains `needle`.
    #[track_caller]
    pub fn assert_hides(&self, needle: &str) -> &Self {
        self.assert(
            !self.text().contains(needle),
            format!("expected the output NOT to contain {needle:?}"),
        )
    }
}

/// Status, stdout and stderr of `o`, for assertions and their messages.
pub fn describe(o: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// How long a test waits for something to happen before it fails. Generous:
/// a machine loaded by parallel builds (load 10 and more on 2 cores) meets
/// it by a wide margin, and a passing test never waits it out; short enough
/// that a failing test reports before nextest's 240 s limit stops it.
pub const WAIT: Duration = Duration::from_secs(90);

/// How long work that moves at the machine's pace may stand still before
/// a test fails ([`progressing`]): long enough for a loaded machine's
/// worst pause, short enough to report before nextest's 240 s limit.
pub const STALL: Duration = Duration::from_secs(60);

/// How many lines of a daemon's stdout (its logs) and stderr a failure
/// shows, and how much of each line.
const TAIL_LINES: (usize, usize) = (40, 20);
const TAIL_LINE_CHARS: usize = 2000;

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
        let mut cmd = cli();
        cmd.config(config).args(args).env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn(&stdout, &stderr);
        Daemon {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for exit up to `limit`; None if still running.
    pub async fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Sends SIGTERM and waits for the exit (failing, with the tail of the
    /// logs, if there is none within [`WAIT`]); the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        self.stop_within(WAIT).await
    }

    /// [`Daemon::stop`] with a limit of its own: where how soon it stops is
    /// what the test pins.
    pub async fn stop_within(&mut self, limit: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        match self.wait_timeout(limit).await {
            Some(status) => status,
            None => self.fail(&format!("no exit within {limit:?} of SIGTERM")),
        }
    }

    /// [`Daemon::stop`], and the exit status must be success.
    pub async fn stop_ok(&mut self) {
        let status = self.stop().await;
        self.assert(
            status.success(),
            format!("exit status after SIGTERM: {status}"),
        );
    }

    /// Waits for it to exit by itself (`run --once`), failing with the tail
    /// of the logs if it does not within [`WAIT`]; the exit status.
    pub async fn finish(&mut self) -> ExitStatus {
        match self.wait_timeout(WAIT).await {
            Some(status) => status,
            None => self.fail(&format!("still running after {WAIT:?}")),
        }
    }

    /// [`Daemon::finish`], and the exit status must be success.
    pub async fn finish_ok(&mut self) {
        let status = self.finish().await;
        self.assert(status.success(), format!("exit status: {status}"));
    }

    /// Fails, with the tail of the logs, unless it is still running.
    #[track_caller]
    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            self.fail(&format!("the daemon exited ({status}) {when}"));
        }
    }

    /// Its stdout (where it logs) and stderr, whole.
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

    /// The JSON log records whose message is `message`.
    pub fn records_of(&self, message: &str) -> Vec<serde_json::Value> {
        self.records()
            .into_iter()
            .filter(|r| r["message"] == message)
            .collect()
    }

    /// The one "Moved the message to the poison queue" record (failing,
    /// with the tail of the logs, unless there is exactly one): its reason
    /// and the delivery it happened on.
    #[track_caller]
    pub fn poisoning(&self) -> (String, u64) {
        let records = self.records_of("Moved the message to the poison queue");
        self.assert_eq(records.len(), 1, "poisoning records");
        let r = &records[0];
        let reason = r["reason"].as_str().unwrap_or_default().to_owned();
        (reason, r["spans"][0]["dequeue_count"].as_u64().unwrap_or(0))
    }

    /// The lines of its logs that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// How often `needle` occurs in its logs.
    pub fn count_logged(&self, needle: &str) -> usize {
        self.logs().matches(needle).count()
    }

    /// Fails, with the tail of the logs, unless they contain `needle`.
    #[track_caller]
    pub fn assert_logged(&self, needle: &str) {
        if !self.logs().contains(needle) {
            self.fail(&format!("expected the logs to contain {needle:?}"));
        }
    }

    /// Fails if its logs contain `needle`, showing the lines that do.
    #[track_caller]
    pub fn assert_not_logged(&self, needle: &str) {
        let logs = self.logs();
        let hits: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(needle))
            .take(5)
            .collect();
        if !hits.is_empty() {
            // Debug-escaped: what a test looks for may be an escape code.
            self.fail(&format!(
                "expected the logs NOT to contain {needle:?}; it is in:\n{hits:#?}"
            ));
        }
    }

    /// Fails, saying `what` and showing the tail of the logs, unless `ok`.
    #[track_caller]
    pub fn assert(&self, ok: bool, what: impl std::fmt::Display) {
        if !ok {
            self.fail(&what.to_string());
        }
    }

    /// Fails unless `left == right`, showing both sides, `what`, and the
    /// tail of the logs.
    #[track_caller]
    pub fn assert_eq<T: PartialEq + std::fmt::Debug>(
        &self,
        left: T,
        right: T,
        what: impl std::fmt::Display,
    ) {
        if left != right {
            self.fail(&format!(
                "{what}: not equal\n\n got: {left:#?}\n\nwant: {right:#?}"
            ));
        }
    }

    /// Polls `condition` every 100 ms for up to [`WAIT`]; fails saying it
    /// waited for `what`, with the tail of the logs.
    pub async fn wait_for(&self, what: &str, condition: impl AsyncFnMut() -> bool) {
        self.wait_for_within(WAIT, what, condition).await
    }

    /// [`Daemon::wait_for`] with a limit of its own: where the limit is
    /// what the test pins (a message released "at once").
    pub async fn wait_for_within(
        &self,
        limit: Duration,
        what: &str,
        condition: impl AsyncFnMut() -> bool,
    ) {
        if !eventually(limit, condition).await {
            self.fail(&format!("waited {limit:?} for {what}"));
        }
    }

    /// The address its HTTP listener bound (configured with port 0), from
    /// its "Serving" record; waits for it.
    pub async fn http_addr(&self) -> String {
        let serving = "Serving /healthz, /readyz and /metrics";
        self.wait_for(&format!("a {serving:?} record"), async || {
            !self.records_of(serving).is_empty()
        })
        .await;
        self.records_of(serving)[0]["listen"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Waits until `needle` is in its logs ([`Daemon::wait_for`]).
    pub async fn wait_logged(&self, needle: &str) {
        self.wait_for(&format!("{needle:?} in the logs"), async || {
            self.logs().contains(needle)
        })
        .await
    }

    /// Waits for work that moves at the machine's pace: `progress` returns
    /// how much is done and whether all of it is. Fails only when nothing
    /// moved for [`STALL`], or after `cap` in all ([`progressing`]).
    pub async fn wait_for_progress(
        &self,
        what: &str,
        cap: Duration,
        progress: impl AsyncFnMut() -> (usize, bool),
    ) {
        if let Err(e) = progressing(STALL, cap, progress).await {
            self.fail(&format!("{what}: {e}"));
        }
    }

    /// The last lines of its stdout and stderr, and whether it still runs:
    /// what its failures show.
    pub fn tail(&self) -> String {
        let state = match std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) {
            Ok(stat) if !stat.contains(") Z ") => "running",
            _ => "exited",
        };
        format!(
            "daemon: pid {} ({state})\n{}{}",
            self.pid(),
            tail_of(&self.stdout, TAIL_LINES.0),
            tail_of(&self.stderr, TAIL_LINES.1)
        )
    }

    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        fail_with(what, &[self])
    }
}

/// Fails saying `what`, with the tail of each daemon's logs.
#[track_caller]
pub fn fail_with(what: &str, daemons: &[&Daemon]) -> ! {
    let tails: Vec<String> = daemons.iter().map(|d| d.tail()).collect();
    panic!("\n\n==========\n{what}\n\n{}==========\n", tails.join("\n"))
}

/// The last `n` lines of `path`, each cut to a readable length, under a
/// heading naming it.
fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    let mut out = format!(
        "--- {} (last {} of {} lines) ---\n",
        path.display(),
        lines.len() - from,
        lines.len()
    );
    for l in &lines[from..] {
        match l.char_indices().nth(TAIL_LINE_CHARS) {
            Some((at, _)) => out.push_str(&format!("{}... ({} bytes)\n", &l[..at], l.len())),
            None => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

impl Daemon {
    /// A daemon started through `wrapper` (a shell that sets a limit,
    /// `unshare`), which must end by exec'ing `cvnotify` so that its pid is
    /// the daemon's: stdin empty, output to `{tag}.stdout` and
    /// `{tag}.stderr` in `out_dir`.
    pub fn start_wrapped(mut wrapper: Command, out_dir: &Path, tag: &str) -> Self {
        let stdout = out_dir.join(format!("{tag}.stdout"));
        let stderr = out_dir.join(format!("{tag}.stderr"));
        let child = wrapper
            .env_remove("CVNOTIFY_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("starting the wrapper of cvnotify");
        Daemon {
            child,
            stdout,
            stderr,
        }
    }
}

/// The value of `series` (`name{labels}`) in a Prometheus scrape, written
/// without the `queue` label every per-queue series carries (for tests
/// with one queue).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    let strip = |l: &str| match l.split_once("queue=\"") {
        Some((head, rest)) => {
            let rest = rest.split_once('"').map_or("", |(_, r)| r);
            format!("{head}{}", rest.strip_prefix(',').unwrap_or(rest)).replace("{}", "")
        }
        None => l.to_owned(),
    };
    text.lines()
        .map(strip)
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How to start `cvnotify` on a [`World`] ([`World::daemon`]): output
/// files named after the tag (`d` unless [`DaemonBuilder::tag`]).
pub struct DaemonBuilder {
    config: PathBuf,
    dir: PathBuf,
    tag: String,
    env: Vec<(String, String)>,
}

impl DaemonBuilder {
    /// Names its output files `{tag}.stdout` and `{tag}.stderr` (several
    /// daemons in one test).
    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.into();
        self
    }

    /// Environment variables of its own.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        for (k, v) in vars {
            self.env.push((k.to_string(), v.to_string()));
        }
        self
    }

    fn spawn(&self, args: &[&str]) -> Daemon {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Daemon::start_with_env(&self.config, args, &self.dir, &self.tag, &env)
    }

    /// `cvnotify run`.
    pub fn start(self) -> Daemon {
        self.spawn(&["run"])
    }

    /// `cvnotify run --once`, waited for; it must exit with success.
    pub async fn run_once(self) -> Daemon {
        let mut d = self.spawn(&["run", "--once"]);
        d.finish_ok().await;
        d
    }

    /// `cvnotify run --once`, waited for, whatever its exit status.
    pub async fn run_once_any(self) -> (Daemon, ExitStatus) {
        let mut d = self.spawn(&["run", "--once"]);
        let status = d.finish().await;
        (d, status)
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

/// [`eventually`] with [`WAIT`], failing with `what` (where no daemon's
/// logs tell more: a server the test runs, the test's own queue).
pub async fn wait_until(what: &str, f: impl AsyncFnMut() -> bool) {
    assert!(eventually(WAIT, f).await, "waited {WAIT:?} for {what}");
}

/// Polls `progress` every 250 ms until it reports done. `progress` returns
/// how much is done (a count that grows as the work goes on) and whether
/// all of it is. This fails only when the count did not grow for `stall`,
/// so a slow machine slows the work down without failing it while a stuck
/// one fails within `stall`; and, to stay bounded, after `cap` in all. The
/// error says how far it got.
pub async fn progressing(
    stall: Duration,
    cap: Duration,
    mut progress: impl AsyncFnMut() -> (usize, bool),
) -> Result<(), String> {
    let start = Instant::now();
    let (mut best, mut moved) = (0usize, Instant::now());
    loop {
        let (count, done) = progress().await;
        if done {
            return Ok(());
        }
        if count > best {
            (best, moved) = (count, Instant::now());
        }
        if moved.elapsed() > stall {
            return Err(format!(
                "no progress for {stall:?} (stuck at {best} after {:.0?})",
                start.elapsed()
            ));
        }
        if start.elapsed() > cap {
            return Err(format!(
                "not done after {:.0?}, though still moving (at {best})",
                start.elapsed()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A memory figure of process `pid` from `/proc/{pid}/status`, in KiB:
/// `VmRSS` (now) or `VmHWM` (the peak so far).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
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

/// A process as `/proc/{pid}/stat` shows it.
pub struct Process {
    pub pid: i32,
    /// `R`, `S`, `Z` (a zombie: dead, not yet reaped), ...
    pub state: String,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Every process on the machine (host view).
pub fn processes() -> Vec<Process> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        let number = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(-1);
        out.push(Process {
            pid,
            state: f[0].to_owned(),
            ppid: number(1),
            pgrp: number(2),
        });
    }
    out
}

/// Processes in process group `pgid` that are alive (zombies, which are
/// dead but not yet reaped, do not count).
pub fn live_members_of_group(pgid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && p.state != "Z" && p.state != "X")
        .map(|p| p.pid)
        .collect()
}

/// A hook ([`World::marked_hook`]) that appends a record to `starts` when
/// a run begins and to `ends` when it ends: facts written by the hook
/// itself, which a test reads instead of guessing from time windows.
pub struct MarkedHook {
    pub script: PathBuf,
    pub starts: PathBuf,
    pub ends: PathBuf,
}

/// One record of a [`MarkedHook`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    /// The hook's shell, which leads its process group.
    pub pid: i32,
    /// The daemon that ran it.
    pub daemon_pid: i32,
    pub message_id: String,
    pub dequeue_count: u32,
}

impl MarkedHook {
    /// Its `[[handlers]]` table with `extra` keys.
    pub fn handler(&self, extra: &str) -> String {
        shell_handler(&self.script, extra)
    }

    /// The runs that started, in order.
    pub fn starts(&self) -> Vec<HookRun> {
        Self::read(&self.starts)
    }

    /// The runs that ended, in order.
    pub fn ends(&self) -> Vec<HookRun> {
        Self::read(&self.ends)
    }

    fn read(path: &Path) -> Vec<HookRun> {
        complete_lines(path)
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let field = |i: usize| -> &str {
                    match f.get(i) {
                        Some(v) if !v.is_empty() => v,
                        _ => panic!("a malformed record in {}: {l:?}", path.display()),
                    }
                };
                let number = |i: usize| -> i64 {
                    field(i)
                        .parse()
                        .unwrap_or_else(|e| panic!("{e} in {}: {l:?}", path.display()))
                };
                HookRun {
                    pid: number(0) as i32,
                    daemon_pid: number(1) as i32,
                    message_id: field(2).to_owned(),
                    dequeue_count: number(3) as u32,
                }
            })
            .collect()
    }

    /// Waits until `n` runs started under `d`; the `n`th.
    pub async fn wait_started(&self, d: &Daemon, n: usize) -> HookRun {
        d.wait_for(&format!("run {n} of the hook to start"), async || {
            self.starts().len() >= n
        })
        .await;
        self.starts().swap_remove(n - 1)
    }
}

/// The lines of `path` that are complete (end in a newline): a line being
/// written is not yet one. Empty if the file does not exist.
pub fn complete_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match text.rfind('\n') {
        Some(end) => text[..end].lines().map(str::to_owned).collect(),
        None => Vec::new(),
    }
}

/// A new temp dir holding the config file `c.toml` with `text`: the dir
/// (removed on drop) and the file.
pub fn temp_config(text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "c.toml", text);
    (dir, cfg)
}

/// Writes `text` to `name` in `dir`; its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A `[[handlers]]` table running `script` with `/bin/sh`, plus `extra` keys.
pub fn shell_handler(script: &Path, extra: &str) -> String {
    format!(
        "[[handlers]]\ntype = \"shell\"\ncommand = [\"/bin/sh\", \"{}\"]\n{extra}\n",
        script.display()
    )
}

/// GET `url`: the status and the body.
pub async fn http_get(url: &str) -> (u16, String) {
    let rsp = reqwest::get(url).await.unwrap();
    (rsp.status().as_u16(), rsp.text().await.unwrap())
}

/// A loopback HTTP receiver (wiremock) answering every POST with
/// `status` and recording the requests.
pub async fn receiver(status: u16) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

/// A loopback OTLP/HTTP collector (wiremock) answering `status` to every
/// export on `/v1/traces` and recording them.
pub async fn collector(status: u16) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v1/traces"))
        .respond_with(wiremock::ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
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
pub fn connect(config: &Config) -> Result<Connector, ConnectError> {
    Connector::new(&config.queue, &config.auth, &config.tls)
}

/// Client options signing with the development account's key (Azurite).
pub fn dev_signed() -> azure_core::http::ClientOptions {
    azure_core::http::ClientOptions {
        per_try_policies: vec![std::sync::Arc::new(SharedKeyPolicy::new(
            "devstoreaccount1",
            Secret::new(DEV_KEY),
        ))],
        ..Default::default()
    }
}

/// A client for the blob at `url`, signing with the development key.
pub fn blob_client(url: &url::Url) -> azure_storage_blob::BlobClient {
    azure_storage_blob::BlobClient::new(
        url.clone(),
        None,
        Some(azure_storage_blob::BlobClientOptions {
            client_options: dev_signed(),
            ..Default::default()
        }),
    )
    .unwrap()
}

fn container_client(url: &str) -> azure_storage_blob::BlobContainerClient {
    azure_storage_blob::BlobContainerClient::new(
        url::Url::parse(url).unwrap(),
        None,
        Some(azure_storage_blob::BlobContainerClientOptions {
            client_options: dev_signed(),
            ..Default::default()
        }),
    )
    .unwrap()
}

/// Creates container `name` on the blob service at `endpoint`; its URL.
pub async fn create_container(endpoint: &str, name: &str) -> String {
    let url = format!("{endpoint}/{name}");
    container_client(&url).create(None).await.unwrap();
    url
}

/// Blob names in `container_url` under `prefix`, listed with the
/// development key (what a test looks at).
pub async fn list_blobs(container_url: &str, prefix: &str) -> Vec<String> {
    use futures_util::TryStreamExt as _;
    let options = azure_storage_blob::models::BlobContainerClientListBlobsOptions {
        // An empty `prefix=` fails Azurite's Shared Key check: leave it out.
        prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
        ..Default::default()
    };
    let mut pager = container_client(container_url)
        .list_blobs(Some(options))
        .unwrap();
    let mut names = Vec::new();
    while let Some(item) = pager.try_next().await.unwrap() {
        if let Some(n) = item.name {
            names.push(n);
        }
    }
    names
}

/// What handlers are built with when no storage account is involved: blob
/// access without credentials (SAS URLs and public blobs only).
pub fn anonymous_ctx() -> BuildContext {
    BuildContext {
        blobs: std::sync::Arc::new(AzureBlobs::anonymous()),
        ca_file: None,
        secret_env: Vec::new(),
        customvision: None,
        expected_exports: Default::default(),
    }
}
