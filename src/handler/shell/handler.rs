//! `type = "shell"`: runs a program for each event.
//!
//! The program is an argument list, never a shell string, so nothing from a
//! message can become code: event data reaches it only as JSON on stdin and
//! as `CVNOTIFY_*` environment variables. It runs in its own process group,
//! which is killed when the timeout expires or the daemon gives up on the
//! message at shutdown, so that a hook's own children do not outlive it.

use super::config::ShellConfig;
use crate::handler::types::{Delivery, Handler, HandlerError};
use crate::secret::{escape_control, redact_cut, redact_text};
use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Longest stdout/stderr line logged; the rest is cut.
const MAX_LINE: usize = 4096;

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("working_dir {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for `{program}` failed")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` timed out after {timeout} and was killed")]
    Timeout {
        program: String,
        timeout: humantime::Duration,
    },
    #[error("`{program}` exited with status {code}")]
    Exit { program: String, code: i32 },
    #[error("`{program}` was killed by signal {signal}")]
    Signal { program: String, signal: i32 },
}

/// Variables that hold the daemon's own credentials: managed identity
/// (App Service, Container Apps, Arc: `IDENTITY_HEADER`, `MSI_SECRET`) and
/// service principals (`AZURE_CLIENT_SECRET`,
/// `AZURE_CLIENT_CERTIFICATE_PASSWORD`). Hooks never inherit them.
pub const CREDENTIAL_VARIABLES: [&str; 4] = [
    "IDENTITY_HEADER",
    "MSI_SECRET",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
];

/// Inherited variables withheld by their name: the `CVNOTIFY_*`
/// configuration overrides (`CVNOTIFY__AUTH__SAS_TOKEN`...) and the
/// OpenTelemetry exporter's headers (`OTEL_EXPORTER_OTLP_HEADERS`,
/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` and any other `OTEL_*HEADERS`), which
/// carry the collector's credentials.
fn withheld_by_name(name: &str) -> bool {
    name.starts_with("CVNOTIFY_") || (name.starts_with("OTEL_") && name.ends_with("HEADERS"))
}

pub struct ShellHandler {
    config: ShellConfig,
    /// Inherited variables removed from the hook's environment.
    withheld: Vec<String>,
}

impl ShellHandler {
    /// `secret_env`: the variables other handlers read secrets from.
    pub fn new(config: &ShellConfig, secret_env: &[String]) -> Result<Self, ShellError> {
        if let Some(dir) = &config.working_dir
            && !dir.is_dir()
        {
            return Err(ShellError::NotADirectory(dir.clone()));
        }
        let withheld = CREDENTIAL_VARIABLES
            .iter()
            .map(|v| v.to_string())
            .chain(secret_env.iter().cloned())
            .collect();
        Ok(Self {
            config: config.clone(),
            withheld,
        })
    }

    fn command(&self, d: &Delivery) -> Command {
        let c = &self.config;
        let mut cmd = Command::new(&c.command[0]);
        cmd.args(&c.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if c.inherit_env {
            for (k, _) in std::env::vars_os() {
                if withheld_by_name(&k.to_string_lossy()) {
                    cmd.env_remove(k);
                }
            }
            for k in &self.withheld {
                cmd.env_remove(k);
            }
        } else {
            cmd.env_clear();
        }
        if let Some(dir) = &c.working_dir {
            cmd.current_dir(dir);
        }
        cmd.envs(&c.env);
        // The event's variables (`CVNOTIFY_EVENT_TYPE` and one per field),
        // then the delivery's.
        cmd.envs(d.notification.event.view().env())
            .env("CVNOTIFY_MESSAGE_ID", &d.message_id)
            .env("CVNOTIFY_DEQUEUE_COUNT", d.dequeue_count.to_string())
            // W3C trace context of the handler span (empty with traces off),
            // the variable OpenTelemetry SDKs read.
            .env(
                "TRACEPARENT",
                crate::telemetry::traceparent(&tracing::Span::current()).unwrap_or_default(),
            )
            .env(
                "CVNOTIFY_MODEL_PATH",
                d.model
                    .as_ref()
                    .map(|m| m.path.as_os_str())
                    .unwrap_or_default(),
            )
            .env(
                "CVNOTIFY_MODEL_SHA256",
                d.model
                    .as_ref()
                    .map(|m| m.sha256.as_str())
                    .unwrap_or_default(),
            );
        cmd
    }
}

/// Registers a hook pid with the PID-1 reaper while tokio waits for it.
struct Tracked(i32);

impl Tracked {
    fn new(pid: i32) -> Self {
        crate::reaper::track(pid);
        Self(pid)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        crate::reaper::untrack(self.0);
    }
}

/// Kills the process group on drop unless disarmed: covers the timeout and
/// the handler future being dropped at shutdown.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Logs what a hook prints, line by line, in bounded memory: it reads
/// chunks, keeps at most [`MAX_LINE`] bytes of the current line and
/// discards the rest of an over-long line as it arrives (a hook printing
/// 100 MB without a newline costs one buffer, not 100 MB). Text is
/// redacted (a cut line also loses the start of a secret the cut split)
/// and its control characters escaped before it is logged.
fn log_lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut reader: R,
    stream: &'static str,
) -> tokio::task::JoinHandle<()> {
    // `instrument`, not `span.enter()`: a guard held across `.await` would
    // leave the span entered on whichever thread the task yields on, and
    // other messages' log lines would carry it.
    let span = tracing::Span::current();
    let task = async move {
        let mut chunk = vec![0u8; 8192];
        let mut line = LineBuffer::default();
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut pieces = chunk[..n].split(|b| *b == b'\n').peekable();
            while let Some(piece) = pieces.next() {
                line.push(piece);
                if pieces.peek().is_some() {
                    line.emit(stream);
                }
            }
        }
        if !line.is_empty() {
            line.emit(stream);
        }
    };
    tokio::spawn(tracing::Instrument::instrument(task, span))
}

/// The current output line, at most [`MAX_LINE`] bytes of it.
#[derive(Default)]
struct LineBuffer {
    bytes: Vec<u8>,
    /// More bytes than fit arrived and were discarded.
    cut: bool,
}

impl LineBuffer {
    fn push(&mut self, piece: &[u8]) {
        let room = MAX_LINE - self.bytes.len();
        if piece.len() > room {
            self.cut = true;
        }
        self.bytes
            .extend_from_slice(&piece[..piece.len().min(room)]);
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && !self.cut
    }

    fn emit(&mut self, stream: &'static str) {
        let text = String::from_utf8_lossy(&self.bytes);
        // A secret the cut split leaves its start at the end: removed too.
        let text = if self.cut {
            redact_cut(&text) + "..."
        } else {
            redact_text(text.trim_end())
        };
        tracing::info!(stream, output = %escape_control(&text), "Hook output");
        self.bytes.clear();
        self.cut = false;
    }
}

#[async_trait]
impl Handler for ShellHandler {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        self.run(d).await.map_err(|e| match e {
            ShellError::Exit { code, .. } if self.config.permanent_exit_codes.contains(&code) => {
                HandlerError::permanent(e)
            }
            e => HandlerError::new(e),
        })
    }
}

impl ShellHandler {
    async fn run(&self, d: &Delivery) -> Result<(), ShellError> {
        let program = &self.config.command[0];
        let mut child = self
            .command(d)
            .spawn()
            .map_err(|source| ShellError::Spawn {
                program: program.clone(),
                source,
            })?;
        let mut guard = GroupGuard(child.id().map(|id| Pid::from_raw(id as i32)));
        let _tracked = child.id().map(|id| Tracked::new(id as i32));
        let stdout = log_lines(child.stdout.take().expect("piped"), "stdout");
        let stderr = log_lines(child.stderr.take().expect("piped"), "stderr");
        let input = serde_json::to_vec(&d.payload()).expect("JSON values serialize");
        let mut stdin = child.stdin.take().expect("piped");
        let feed = async move {
            // A hook that does not read stdin closes it early: not an error.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.write_all(b"\n").await;
            drop(stdin);
        };
        let run = async {
            let (_, status) = tokio::join!(feed, child.wait());
            status
        };
        let status = match tokio::time::timeout(self.config.timeout, run).await {
            Ok(Ok(status)) => status,
            Ok(Err(source)) => {
                return Err(ShellError::Wait {
                    program: program.clone(),
                    source,
                });
            }
            Err(_) => {
                drop(guard); // kills the group
                let _ = child.wait().await;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = tokio::join!(stdout, stderr);
                })
                .await;
                return Err(ShellError::Timeout {
                    program: program.clone(),
                    timeout: self.config.timeout.into(),
                });
            }
        };
        // The hook exited; a child it left in the background may still hold
        // the pipes open, so do not wait long for the last lines. Its
        // group is killed below, so it cannot outlive the hook.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = tokio::join!(stdout, stderr);
        })
        .await;
        if let Some(pgid) = guard.0.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        if status.success() {
            Ok(())
        } else if let Some(code) = status.code() {
            Err(ShellError::Exit {
                program: program.clone(),
                code,
            })
        } else {
            use std::os::unix::process::ExitStatusExt;
            Err(ShellError::Signal {
                program: program.clone(),
                signal: status.signal().unwrap_or_default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::types::sample_deliveries;
    use std::collections::BTreeMap;

    /// The variables a hook gets: the event's, as its view gives them
    /// (pinned per kind in `event.rs`), the delivery's, pinned here, and
    /// the configured ones. Before the view existed this pinned every
    /// kind's whole environment; the change kept each variable.
    #[test]
    fn the_environment_is_the_events_view_and_the_deliverys_variables() {
        let config: ShellConfig = toml::from_str(
            "command = [\"/bin/true\"]\ninherit_env = false\nenv = { EXTRA = \"x\" }",
        )
        .unwrap();
        let h = ShellHandler::new(&config, &[]).unwrap();
        for (kind, d) in sample_deliveries() {
            let env: BTreeMap<String, String> = h
                .command(&d)
                .as_std()
                .get_envs()
                .map(|(k, v)| {
                    let v = v.expect("nothing removed with inherit_env = false");
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            let (path, sha) = if kind == "export_completed" {
                (
                    "/var/lib/cvnotify/models/p - i.ONNX.zip",
                    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                )
            } else {
                ("", "")
            };
            let mut want: BTreeMap<String, String> = [
                (
                    "CVNOTIFY_MESSAGE_ID",
                    "5714088e-e971-4dcd-9daa-d98cd5335c83",
                ),
                ("CVNOTIFY_DEQUEUE_COUNT", "2"),
                ("CVNOTIFY_MODEL_PATH", path),
                ("CVNOTIFY_MODEL_SHA256", sha),
                // Traces are off in unit tests.
                ("TRACEPARENT", ""),
                ("EXTRA", "x"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            for (k, v) in d.notification.event.view().env() {
                assert!(
                    want.insert(k.clone(), v).is_none(),
                    "{kind}: the event's `{k}` would hide the delivery's"
                );
            }
            assert_eq!(env, want, "environment of {kind}");
        }
    }
}
