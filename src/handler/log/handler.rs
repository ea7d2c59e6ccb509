//! `type = "log"`: one structured log record per event.

use crate::handler::types::{Delivery, Handler, HandlerError};
use crate::view::LogValue;
use async_trait::async_trait;

pub struct LogHandler;

#[async_trait]
impl Handler for LogHandler {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        // The event's fields (outside text bounded, URLs without their
        // query), with the delivery's between the short and the long ones.
        let view = d.notification.event.view();
        let (mut fields, long) = view.log_fields();
        fields.extend([
            (
                "message_id",
                Some(LogValue::Display(tracing::field::display(
                    d.message_id.clone(),
                ))),
            ),
            ("dequeue_count", Some(LogValue::U64(d.dequeue_count.into()))),
        ]);
        fields.extend(long);
        crate::view::info(
            "cvnotify::event",
            module_path!(),
            format_args!("{} event", view.origin),
            &fields,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::types::sample_deliveries;
    use crate::view::{LogValue, Written};
    use futures_util::FutureExt as _;

    /// The line the log handler writes for `d`, in text or JSON.
    fn line(d: &Delivery, json: bool) -> String {
        let out = Written::default();
        let fmt = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .with_writer(out.clone());
        let handle = || {
            LogHandler
                .handle(d)
                .now_or_never()
                .expect("the log handler does not wait")
                .unwrap()
        };
        if json {
            tracing::subscriber::with_default(fmt.json().flatten_event(true).finish(), handle);
        } else {
            tracing::subscriber::with_default(fmt.finish(), handle);
        }
        out.text()
    }

    /// One field as the text and the JSON formats write it.
    fn written(name: &str, value: &LogValue) -> (String, String) {
        let quoted = serde_json::to_string(&format!("{value:?}")).unwrap();
        match value {
            LogValue::Str(s) => (
                format!("{name}={s:?}"),
                format!("\"{name}\":{}", serde_json::to_string(s).unwrap()),
            ),
            LogValue::U64(n) => (format!("{name}={n}"), format!("\"{name}\":{n}")),
            LogValue::F64(n) => (format!("{name}={n}"), format!("\"{name}\":{n}")),
            other => panic!("no sample has a {other:?} ({quoted})"),
        }
    }

    /// The log record: `Custom Vision event`, the event's short fields,
    /// the message id and dequeue count (pinned here), then the event's
    /// long fields, in text and in JSON. The event's fields are its view's
    /// (pinned per kind in `event.rs`). Before the view existed this
    /// pinned every kind's whole record; the change kept each byte.
    #[test]
    fn the_log_record_is_the_events_view_around_the_deliverys_fields() {
        for (kind, d) in sample_deliveries() {
            let view = d.notification.event.view();
            let origin = view.origin;
            let (short, long) = view.log_fields();
            let present = |fs: Vec<crate::view::LogField>| -> Vec<(String, String)> {
                fs.into_iter()
                    .filter_map(|(name, v)| v.map(|v| written(name, &v)))
                    .collect()
            };
            let (short, long) = (present(short), present(long));
            let text = |fs: &[(String, String)]| -> String {
                fs.iter().map(|(t, _)| format!(" {t}")).collect()
            };
            let json = |fs: &[(String, String)]| -> String {
                fs.iter().map(|(_, j)| format!(",{j}")).collect()
            };
            let m = "5714088e-e971-4dcd-9daa-d98cd5335c83";
            assert_eq!(
                line(&d, false),
                format!(
                    "INFO {origin} event{} message_id={m} dequeue_count=2{}",
                    text(&short),
                    text(&long)
                ),
                "text record of {kind}"
            );
            assert_eq!(
                line(&d, true),
                format!(
                    r#"{{"level":"INFO","message":"{origin} event"{},"message_id":"{m}","dequeue_count":2{}}}"#,
                    json(&short),
                    json(&long)
                ),
                "JSON record of {kind}"
            );
        }
    }
}
