//! `cvnotify poison list` and `cvnotify poison replay`.
//!
//! `list` shows why each message was poisoned: the reason the envelope
//! carries (`poison_format = "envelope"`), or the decode error. Replay moves
//! the original body, byte for byte, back to the main queue (never to
//! expire) by sending a copy first and deleting the original only once the
//! copy exists, so a failure of either
//! call never loses it (at worst it is in both queues). While looking for the
//! requested messages, receive keeps the others hidden; they are made
//! visible again before the command ends.

use super::edge::{print_error, report, runtime, with_config, with_queue};
use crate::azure::{AzureQueue, Connector};
use crate::config::Config;
use crate::envelope::Envelope;
use crate::error::error_chain;
use crate::event::decode;
use crate::exit;
use crate::logging::Target;
use crate::queue::{Expiry, Queue, QueueError, ReceivedMessage};
use crate::secret::{escape_control, redact, redact_text};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// What to do with the poison queue.
pub enum Action {
    /// Print one line per message, at most `max` (1 to 32).
    List { max: u8 },
    /// Move the selected messages back to the main queue.
    Replay(Selection),
}

/// Runs the command with the configuration at `config`, on the queue
/// `queue` names; the exit code.
pub fn exec(config: Option<&Path>, queue: Option<&str>, action: Action) -> i32 {
    with_config(config, Target::Stderr, |c| {
        with_queue(c, queue, |c| run(c, action))
    })
}

fn run(config: &Config, action: Action) -> i32 {
    let result = runtime().block_on(async {
        let (main, poison) = queues(config)?;
        match action {
            Action::List { max } => {
                let lines = list(&poison, max).await?;
                if lines.is_empty() {
                    eprintln!("The poison queue `{}` is empty", poison.name());
                }
                for l in lines {
                    println!("{l}");
                }
                anyhow::Ok(exit::OK)
            }
            Action::Replay(selection) => {
                let report = replay(&main, &poison, &selection).await?;
                for (old, new) in &report.replayed {
                    println!("replayed {old} as {new}");
                }
                for id in &report.missing {
                    eprintln!("not found: {id}");
                }
                for (id, why) in &report.failed {
                    eprintln!("failed: {id}: {}", redact(why));
                }
                Ok(if report.missing.is_empty() && report.failed.is_empty() {
                    exit::OK
                } else {
                    exit::FAILURE
                })
            }
        }
    });
    result.unwrap_or_else(|e| {
        print_error(report(&e));
        exit::FAILURE
    })
}

/// The main and the poison queue of `config`.
pub fn queues(config: &Config) -> anyhow::Result<(AzureQueue, AzureQueue)> {
    let connector = Connector::new(&config.queue, &config.auth, &config.tls)?;
    Ok((
        connector.queue(config.queue_name())?,
        connector.queue(&config.poison_queue_name())?,
    ))
}

/// One line of `poison list`.
pub fn describe(
    id: &str,
    inserted: Option<time::OffsetDateTime>,
    dequeue_count: u32,
    body: &str,
) -> String {
    let when = inserted
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into());
    let envelope = Envelope::open(body);
    let original = envelope.as_ref().map_or(body, |e| e.body.as_str());
    let what = match decode(original.as_bytes()) {
        // Every event of an array, in order.
        Ok(events) => events
            .iter()
            .map(|n| n.event.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("undecodable: {e}"),
    };
    let mut line = format!("{id}  {when}  deliveries={dequeue_count}  {what}");
    if let Some(e) = &envelope {
        if let Some(reason) = &e.reason {
            line.push_str(&format!("  reason: {reason}"));
        }
        if let Some(handler) = &e.handler {
            line.push_str(&format!("  handler: {handler}"));
        }
    }
    // Everything here may come from a message: no escape sequence may
    // reach the operator's terminal.
    escape_control(&redact_text(&line)).into_owned()
}

/// Lists up to `max` (1-32) messages of the poison queue without touching them.
pub async fn list(poison: &dyn Queue, max: u8) -> Result<Vec<String>, QueueError> {
    match poison.peek(max).await {
        Ok(messages) => Ok(messages
            .iter()
            .map(|m| describe(&m.id, m.inserted_at, m.dequeue_count, &m.body))
            .collect()),
        Err(QueueError::QueueNotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Which messages to replay.
pub enum Selection {
    All,
    Ids(BTreeSet<String>),
}

/// What `replay` did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// (poison id, new id in the main queue).
    pub replayed: Vec<(String, String)>,
    /// Requested ids that were not found.
    pub missing: Vec<String>,
    /// Messages that could not be moved, with why (they stay in the poison
    /// queue, or are in both queues if only the delete failed).
    pub failed: Vec<(String, String)>,
}

/// How long scanned messages stay hidden; they are released at the end.
const SCAN_VISIBILITY: Duration = Duration::from_secs(120);

/// Moves the selected messages from `poison` to `main`.
pub async fn replay(
    main: &dyn Queue,
    poison: &dyn Queue,
    selection: &Selection,
) -> Result<ReplayReport, QueueError> {
    let mut report = ReplayReport::default();
    let mut held: Vec<ReceivedMessage> = Vec::new();
    let mut found = BTreeSet::new();
    // Bounded: each round hides what it receives, so the queue runs dry.
    for _ in 0..10_000 {
        if let Selection::Ids(ids) = selection
            && found.len() == ids.len()
        {
            break;
        }
        let batch = match poison.receive(32, SCAN_VISIBILITY).await {
            Ok(b) => b,
            Err(QueueError::QueueNotFound { .. }) => break,
            Err(e) => {
                release_all(poison, &held).await;
                return Err(e);
            }
        };
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let wanted = match selection {
                Selection::All => true,
                Selection::Ids(ids) => ids.contains(&m.id),
            };
            if !wanted {
                held.push(m);
                continue;
            }
            found.insert(m.id.clone());
            // The original body, byte for byte, whatever the poison format;
            // an operator decides when it is handled, so it never expires.
            let body = Envelope::original(&m.body);
            match main.send(&body, Expiry::Never).await {
                Ok(sent) => match poison.delete(&m.id, &m.pop_receipt).await {
                    Ok(()) => report.replayed.push((m.id.clone(), sent.id)),
                    Err(e) => report.failed.push((
                        m.id.clone(),
                        format!("copied to the main queue as {}, but not deleted from the poison queue: {}", sent.id, error_chain(&e)),
                    )),
                },
                Err(e) => {
                    report.failed.push((m.id.clone(), format!("not copied, left in the poison queue: {}", error_chain(&e))));
                    held.push(m);
                }
            }
        }
    }
    release_all(poison, &held).await;
    if let Selection::Ids(ids) = selection {
        report.missing = ids.difference(&found).cloned().collect();
    }
    Ok(report)
}

async fn release_all(poison: &dyn Queue, held: &[ReceivedMessage]) {
    for m in held {
        if let Err(e) = poison
            .update_visibility(&m.id, &m.pop_receipt, Duration::ZERO)
            .await
        {
            tracing::warn!(message_id = %m.id, error = %error_chain(&e), "Could not make the message visible again; it reappears within two minutes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::memory::MemoryQueue;

    const GOOD: &str = r#"{"version":"1.0","type":"Training","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","trainingStatus":"TrainingFailed"}}"#;

    #[tokio::test]
    async fn replay_by_id_moves_only_that_message_and_releases_the_rest() {
        let main = MemoryQueue::new("q");
        let poison = MemoryQueue::new("q-poison");
        let mut ids = Vec::new();
        for i in 0..40 {
            ids.push(
                poison
                    .send(&format!("{GOOD} {i}"), Expiry::ServiceDefault)
                    .await
                    .unwrap()
                    .id,
            );
        }
        let wanted = ids[35].clone();
        let report = replay(&main, &poison, &Selection::Ids([wanted.clone()].into()))
            .await
            .unwrap();
        assert_eq!(report.replayed.len(), 1);
        assert_eq!(report.replayed[0].0, wanted);
        assert_eq!(main.bodies(), vec![format!("{GOOD} 35")]);
        assert_eq!(poison.len(), 39);
        // The others are visible again at once.
        assert_eq!(poison.peek(32).await.unwrap().len(), 32);
    }

    #[tokio::test]
    async fn missing_ids_are_reported() {
        let main = MemoryQueue::new("q");
        let poison = MemoryQueue::new("q-poison");
        poison.send(GOOD, Expiry::ServiceDefault).await.unwrap();
        let report = replay(&main, &poison, &Selection::Ids(["nope".to_owned()].into()))
            .await
            .unwrap();
        assert_eq!(report.missing, vec!["nope".to_owned()]);
        assert!(main.is_empty());
        assert_eq!(poison.peek(32).await.unwrap().len(), 1);
    }

    #[test]
    fn describe_decodes_or_names_the_error() {
        assert!(describe("m1", None, 5, GOOD).contains("Training TrainingFailed project=8a1c2c4e"));
        assert!(describe("m2", None, 1, "{").contains("undecodable: the body is not valid JSON"));
    }
}
