//! [`Queue`] over the official `azure_storage_queue` client, and the mapping
//! of the SDK's errors into [`QueueError`].
//!
//! Clients are made by [`super::Connector`]; this file only speaks the
//! queue protocol.

use crate::queue::{
    Cause, Expiry, Operation, PeekedMessage, Queue, QueueError, ReceivedMessage, SentMessage,
};
use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::headers::HeaderName;
use azure_storage_queue::QueueClient;
use azure_storage_queue::models::{
    QueueClientPeekMessagesOptions, QueueClientReceiveMessagesOptions,
    QueueClientSendMessageOptions, QueueClientUpdateMessageOptions, QueueMessage,
};
use std::time::Duration;

const POP_RECEIPT: HeaderName = HeaderName::from_static("x-ms-popreceipt");

/// One Azure Storage queue.
pub struct AzureQueue {
    client: QueueClient,
    name: String,
}

impl AzureQueue {
    pub(super) fn new(client: QueueClient, name: String) -> Self {
        Self { client, name }
    }
}

fn secs(d: Duration) -> i32 {
    d.as_secs().min(i32::MAX as u64) as i32
}

impl AzureQueue {
    fn classify(&self, op: Operation, e: azure_core::Error) -> QueueError {
        classify(&self.name, op, e)
    }
}

/// The [`QueueError`] an SDK error of an `op` on queue `name` stands for.
fn classify(name: &str, op: Operation, e: azure_core::Error) -> QueueError {
    match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let status = u16::from(*status);
            let code = error_code.clone().unwrap_or_default();
            match (status, code.as_str()) {
                (404, "QueueNotFound") => QueueError::QueueNotFound {
                    op,
                    queue: name.to_owned(),
                },
                (404, _) if matches!(op, Operation::Delete | Operation::Update) => {
                    QueueError::MessageNotFound { op }
                }
                (404, _) => QueueError::QueueNotFound {
                    op,
                    queue: name.to_owned(),
                },
                (400, "PopReceiptMismatch") => QueueError::PopReceiptMismatch { op },
                // Storage answers 403 both for a missing role and for a
                // credential it does not accept (an expired token, a bad
                // key or SAS signature); only the first is about roles.
                (403, "AuthenticationFailed") => QueueError::Unauthenticated {
                    op,
                    source: Cause::CredentialRefused,
                },
                (403, _) => QueueError::Forbidden {
                    op,
                    code: if code.is_empty() {
                        "HTTP 403".into()
                    } else {
                        code
                    },
                },
                (401, _) => QueueError::Unauthenticated {
                    op,
                    source: status_cause(status, code),
                },
                (408 | 429 | 500..=599, _) => QueueError::Transient {
                    op,
                    source: status_cause(status, code),
                },
                _ => QueueError::Other {
                    op,
                    source: status_cause(status, code),
                },
            }
        }
        ErrorKind::Connection | ErrorKind::Io => QueueError::Transient {
            op,
            source: Cause::client(e),
        },
        ErrorKind::Credential => QueueError::Unauthenticated {
            op,
            source: Cause::client(e),
        },
        _ => QueueError::Other {
            op,
            source: Cause::client(e),
        },
    }
}

/// An answer's status and error code (the SDK's error for it carries the
/// whole XML body as its message, which is not worth a log line).
fn status_cause(status: u16, code: String) -> Cause {
    Cause::Status {
        status,
        code: (!code.is_empty()).then_some(code),
    }
}

impl AzureQueue {
    /// Update Message: new visibility, and new text when `body` is given;
    /// returns the new pop receipt.
    #[tracing::instrument(name = "queue.update", level = "info", skip_all, fields(otel.kind = "client", queue = %self.name))]
    async fn update(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
        body: Option<&str>,
    ) -> Result<String, QueueError> {
        let op = Operation::Update;
        let options = match body {
            Some(text) => Some(QueueClientUpdateMessageOptions {
                queue_message: Some(
                    QueueMessage {
                        message_text: Some(text.to_owned()),
                    }
                    .try_into()
                    .map_err(|e| self.classify(op, e))?,
                ),
                ..Default::default()
            }),
            None => None,
        };
        let rsp = self
            .client
            .update_message(id, pop_receipt, secs(visibility), options)
            .await
            .map_err(|e| self.classify(op, e))?;
        rsp.headers()
            .get_optional_string(&POP_RECEIPT)
            .ok_or(QueueError::Other {
                op,
                source: Cause::Malformed("the response has no x-ms-popreceipt header"),
            })
    }
}

#[async_trait]
impl Queue for AzureQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn receive(
        &self,
        max: u8,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let op = Operation::Receive;
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(max.clamp(1, 32) as i32),
            visibility_timeout: Some(secs(visibility)),
            ..Default::default()
        };
        let rsp = self
            .client
            .receive_messages(Some(options))
            .await
            .map_err(|e| self.classify(op, e))?;
        let items = rsp.into_model().map_err(|e| self.classify(op, e))?.items;
        Ok(items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(ReceivedMessage {
                    id: m.message_id?,
                    pop_receipt: m.pop_receipt?,
                    dequeue_count: m.dequeue_count.unwrap_or(1).clamp(0, u32::MAX as i64) as u32,
                    body: m.message_text.unwrap_or_default(),
                    inserted_at: m.insertion_time,
                })
            })
            .collect())
    }

    #[tracing::instrument(name = "queue.delete", level = "info", skip_all, fields(otel.kind = "client", queue = %self.name))]
    async fn delete(&self, id: &str, pop_receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message(id, pop_receipt, None)
            .await
            .map(|_| ())
            .map_err(|e| self.classify(Operation::Delete, e))
    }

    async fn update_visibility(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<String, QueueError> {
        self.update(id, pop_receipt, visibility, None).await
    }

    async fn update_body(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
        body: &str,
    ) -> Result<String, QueueError> {
        self.update(id, pop_receipt, visibility, Some(body)).await
    }

    #[tracing::instrument(name = "queue.send", level = "info", skip_all, fields(otel.kind = "client", queue = %self.name))]
    async fn send(&self, body: &str, expiry: Expiry) -> Result<SentMessage, QueueError> {
        let op = Operation::Send;
        let message = QueueMessage {
            message_text: Some(body.to_owned()),
        };
        let content = message.try_into().map_err(|e| self.classify(op, e))?;
        let options = QueueClientSendMessageOptions {
            message_time_to_live: match expiry {
                Expiry::ServiceDefault => None,
                Expiry::Never => Some(-1),
            },
            ..Default::default()
        };
        let rsp = self
            .client
            .send_message(content, Some(options))
            .await
            .map_err(|e| self.classify(op, e))?;
        let sent = rsp
            .into_model()
            .and_then(|m| m.into_message())
            .map_err(|e| self.classify(op, e))?;
        Ok(SentMessage {
            id: sent.message_id.unwrap_or_default(),
            pop_receipt: sent.pop_receipt.unwrap_or_default(),
        })
    }

    async fn create_if_missing(&self) -> Result<(), QueueError> {
        match self.client.create(None).await {
            Ok(_) => Ok(()),
            // 409 QueueAlreadyExists: it exists with other metadata; fine.
            Err(e) if e.http_status().map(u16::from) == Some(409) => Ok(()),
            Err(e) => Err(self.classify(Operation::Create, e)),
        }
    }

    async fn peek(&self, max: u8) -> Result<Vec<PeekedMessage>, QueueError> {
        let op = Operation::Peek;
        let options = QueueClientPeekMessagesOptions {
            number_of_messages: Some(max.clamp(1, 32) as i32),
            ..Default::default()
        };
        let rsp = self
            .client
            .peek_messages(Some(options))
            .await
            .map_err(|e| self.classify(op, e))?;
        let items = rsp.into_model().map_err(|e| self.classify(op, e))?.items;
        Ok(items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(PeekedMessage {
                    id: m.message_id?,
                    dequeue_count: m.dequeue_count.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
                    body: m.message_text.unwrap_or_default(),
                    inserted_at: m.insertion_time,
                    expires_at: m.expiration_time,
                })
            })
            .collect())
    }

    async fn approximate_length(&self) -> Result<u64, QueueError> {
        use azure_storage_queue::models::QueueClientGetPropertiesResultHeaders as _;
        let op = Operation::Properties;
        let rsp = self
            .client
            .get_properties(None)
            .await
            .map_err(|e| self.classify(op, e))?;
        let n = rsp
            .approximate_messages_count()
            .map_err(|e| self.classify(op, e))?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::error_chain;
    use azure_core::http::StatusCode;

    /// Issue 18: the SDK's error stays the typed source of a QueueError
    /// whose own message does not repeat it, so the chain shows it once.
    #[test]
    fn storage_errors_keep_the_sdk_cause_and_print_it_once() {
        let refused = azure_core::Error::new(
            ErrorKind::Io,
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
        );
        let e = classify("q", Operation::Receive, refused);
        assert!(e.is_transient(), "{e:?}");
        assert_eq!(e.to_string(), "cannot receive messages");
        let source = std::error::Error::source(&e).expect("the cause is kept");
        let Some(Cause::Client(sdk)) = source.downcast_ref::<Cause>() else {
            panic!("{source:?}")
        };
        let sdk: &(dyn std::error::Error + 'static) = &**sdk;
        assert!(sdk.downcast_ref::<azure_core::Error>().is_some(), "{sdk:?}");
        assert_eq!(
            error_chain(&e),
            "cannot receive messages: connection refused"
        );

        // An answer: its status and code, not the XML body the SDK's
        // error carries as its message.
        let busy = azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::ServiceUnavailable,
                error_code: Some("ServerBusy".into()),
                raw_response: None,
            },
            "<?xml version=\"1.0\"?><Error><Code>ServerBusy</Code></Error>",
        );
        let e = classify("q", Operation::Delete, busy);
        assert!(e.is_transient(), "{e:?}");
        assert_eq!(
            error_chain(&e),
            "cannot delete a message: HTTP 503 ServerBusy"
        );

        // A certificate refused: the fix in the error's own message.
        let tls = azure_core::Error::new(
            ErrorKind::Connection,
            std::io::Error::other("invalid peer certificate: UnknownIssuer"),
        );
        let e = classify("q", Operation::Receive, tls);
        assert!(
            e.to_string()
                .starts_with("cannot receive messages; the server's certificate is not trusted"),
            "{e}"
        );
        assert!(e.to_string().contains("set tls.ca_file"), "{e}");
        assert!(
            error_chain(&e).ends_with(": invalid peer certificate: UnknownIssuer"),
            "{}",
            error_chain(&e)
        );
    }
}
