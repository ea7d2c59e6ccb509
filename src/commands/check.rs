//! `cvnotify check`: is this configuration able to run?
//!
//! Each check prints one line. Permissions are probed without touching real
//! messages where possible: update and delete are tried on a message id that
//! does not exist (storage checks authorization first, so 403 means denied
//! and 404 means allowed); the poison queue gets a probe message that is
//! deleted at once. Receive cannot be probed that way: if a message is
//! there, it is received and made visible again immediately (its dequeue
//! count goes up by one).

use super::edge::{runtime, with_config, with_queue};
use super::lines::{CheckLine, Lines, exit_code, line};
use crate::azure::Connector;
use crate::config::Config;
use crate::error::error_chain;
use crate::exit;
use crate::logging::Target;
use crate::queue::{Expiry, Queue, QueueError};
use std::path::Path;
use std::time::Duration;

const MISSING_ID: &str = "00000000-0000-0000-0000-000000000000";
const MISSING_RECEIPT: &str = "AgAAAAMAAAAAAAAAAAAAAAAAAAA=";

/// Runs the command with the configuration at `config`: the configuration
/// is valid, then (unless `config_only`) the network checks of the queue
/// `queue` names and of the Custom Vision projects; the exit code.
pub fn exec(config: Option<&Path>, config_only: bool, queue: Option<&str>) -> i32 {
    with_config(config, Target::Stderr, |c| {
        println!("ok    config     valid");
        if config_only {
            exit::OK
        } else {
            with_queue(c, queue, check)
        }
    })
}

fn check(config: &Config) -> i32 {
    let lines = runtime().block_on(async {
        let mut lines = run(config, |l| println!("{l}")).await;
        lines.extend(super::check_projects::run(config, |l| println!("{l}")).await);
        lines
    });
    exit_code(&lines)
}

/// Whether a call on a missing message shows the operation is allowed.
fn allowed_on_missing(r: Result<impl Sized, QueueError>) -> Result<(), QueueError> {
    match r {
        Ok(_) => Ok(()),
        Err(e @ (QueueError::Forbidden { .. } | QueueError::Unauthenticated { .. })) => Err(e),
        Err(e) if e.is_transient() => Err(e),
        Err(_) => Ok(()),
    }
}

/// Runs the network checks, printing each line through `out` as it is known.
pub async fn run(config: &Config, out: impl FnMut(&CheckLine)) -> Vec<CheckLine> {
    let mut lines = Lines::new(out);
    let connector = match Connector::new(&config.queue, &config.auth, &config.tls) {
        Ok(c) => c,
        Err(e) => {
            lines.push(line("client", false, error_chain(&e)));
            return lines.into_vec();
        }
    };
    match connector
        .verify_credential(config.auth.startup_timeout)
        .await
    {
        Ok(()) if config.auth.mode.uses_token() => lines.push(line(
            "token",
            true,
            format!(
                "got a storage token with auth.mode = \"{}\"",
                config.auth.mode.as_str()
            ),
        )),
        Ok(()) => lines.push(line(
            "token",
            true,
            format!(
                "not needed with auth.mode = \"{}\"",
                config.auth.mode.as_str()
            ),
        )),
        Err(e) => {
            lines.push(line("token", false, error_chain(&e)));
            return lines.into_vec();
        }
    }
    let (queue, poison) = match (
        connector.queue(config.queue_name()),
        connector.queue(&config.poison_queue_name()),
    ) {
        (Ok(q), Ok(p)) => (q, p),
        (Err(e), _) | (_, Err(e)) => {
            lines.push(line("client", false, error_chain(&e)));
            return lines.into_vec();
        }
    };
    match queue.approximate_length().await {
        Ok(n) => lines.push(line(
            "queue",
            true,
            format!(
                "`{}` at {} is reachable (about {n} messages)",
                queue.name(),
                connector.endpoint()
            ),
        )),
        // Reading properties needs a reader role the daemon does not; only
        // a missing queue or an unreachable service is fatal here.
        Err(e @ QueueError::Forbidden { .. }) => lines.push(line(
            "queue",
            true,
            format!(
                "`{}` is reachable; its properties are not readable ({}); not needed to run",
                queue.name(),
                error_chain(&e)
            ),
        )),
        Err(e) => {
            lines.push(line("queue", false, error_chain(&e)));
            return lines.into_vec();
        }
    }
    let receive = match queue.receive(1, Duration::from_secs(2)).await {
        Ok(messages) => {
            for m in &messages {
                let _ = queue
                    .update_visibility(&m.id, &m.pop_receipt, Duration::ZERO)
                    .await;
            }
            line("receive", true, "allowed")
        }
        Err(e) => line("receive", false, error_chain(&e)),
    };
    lines.push(receive);
    let update = allowed_on_missing(
        queue
            .update_visibility(MISSING_ID, MISSING_RECEIPT, Duration::ZERO)
            .await,
    );
    lines.push(match update {
        Ok(()) => line("update", true, "allowed"),
        Err(e) => line("update", false, error_chain(&e)),
    });
    let delete = allowed_on_missing(queue.delete(MISSING_ID, MISSING_RECEIPT).await);
    lines.push(match delete {
        Ok(()) => line("delete", true, "allowed"),
        Err(e) => line("delete", false, error_chain(&e)),
    });
    let poison_result = async {
        let created = match poison.create_if_missing().await {
            Ok(()) => true,
            // Creating may be denied while sending to an existing queue is
            // allowed, which is all the daemon needs once it exists.
            Err(QueueError::Forbidden { .. }) => false,
            Err(e) => return Err(e),
        };
        let sent = poison
            .send("cvnotify check probe", Expiry::ServiceDefault)
            .await?;
        poison.delete(&sent.id, &sent.pop_receipt).await?;
        Ok::<_, QueueError>(created)
    }
    .await;
    lines.push(match poison_result {
        Ok(true) => line(
            "poison",
            true,
            format!("`{}` exists and accepts messages", poison.name()),
        ),
        Ok(false) => line(
            "poison",
            true,
            format!(
                "`{}` accepts messages (creating queues is denied, which is fine while it exists)",
                poison.name()
            ),
        ),
        Err(e) => line(
            "poison",
            false,
            format!("`{}`: {}", poison.name(), error_chain(&e)),
        ),
    });
    lines.into_vec()
}
