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
    use futures_util::FutureExt as _;
    use std::sync::{Arc, Mutex};

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line the log handler writes for `d`, in text or JSON.
    fn line(d: &Delivery, json: bool) -> String {
        let out = Written::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let fmt = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .with_writer(writer);
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
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.trim().to_owned()
    }

    /// The log record of each event kind, in text and in JSON, fields in
    /// their order. Pinned before the record was built from the event's
    /// view, so that change is shown to change nothing.
    #[test]
    fn the_log_record_of_each_event_kind_is_pinned() {
        let (p, i) = (
            "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c",
            "0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f",
        );
        let m = "5714088e-e971-4dcd-9daa-d98cd5335c83";
        let want: [(&str, String, String); 6] = [
            (
                "connection_test",
                format!(
                    r#"INFO Custom Vision event event_type="ConnectionTest" project_id="{p}" message_id={m} dequeue_count=2"#
                ),
                format!(
                    r#"{{"level":"INFO","message":"Custom Vision event","event_type":"ConnectionTest","project_id":"{p}","message_id":"{m}","dequeue_count":2}}"#
                ),
            ),
            (
                "training",
                format!(
                    r#"INFO Custom Vision event event_type="Training" project_id="{p}" iteration_id="{i}" status="TrainingFailed" message_id={m} dequeue_count=2"#
                ),
                format!(
                    r#"{{"level":"INFO","message":"Custom Vision event","event_type":"Training","project_id":"{p}","iteration_id":"{i}","status":"TrainingFailed","message_id":"{m}","dequeue_count":2}}"#
                ),
            ),
            (
                "training_unknown_status",
                format!(
                    r#"INFO Custom Vision event event_type="Training" project_id="{p}" iteration_id="{i}" status="Training\0Paused" message_id={m} dequeue_count=2"#
                ),
                format!(
                    r#"{{"level":"INFO","message":"Custom Vision event","event_type":"Training","project_id":"{p}","iteration_id":"{i}","status":"Training\u0000Paused","message_id":"{m}","dequeue_count":2}}"#
                ),
            ),
            (
                "export_completed",
                format!(
                    r#"INFO Custom Vision event event_type="Export" project_id="{p}" iteration_id="{i}" status="ExportCompleted" message_id={m} dequeue_count=2 model_uri="https://acct.blob.core.windows.net/models/p%20-%20i.ONNX?REDACTED""#
                ),
                format!(
                    r#"{{"level":"INFO","message":"Custom Vision event","event_type":"Export","project_id":"{p}","iteration_id":"{i}","status":"ExportCompleted","message_id":"{m}","dequeue_count":2,"model_uri":"https://acct.blob.core.windows.net/models/p%20-%20i.ONNX?REDACTED"}}"#
                ),
            ),
            (
                "export_failed",
                format!(
                    r#"INFO Custom Vision event event_type="Export" project_id="{p}" iteration_id="{i}" status="ExportFailed" message_id={m} dequeue_count=2"#
                ),
                format!(
                    r#"{{"level":"INFO","message":"Custom Vision event","event_type":"Export","project_id":"{p}","iteration_id":"{i}","status":"ExportFailed","message_id":"{m}","dequeue_count":2}}"#
                ),
            ),
            (
                "unknown",
                format!(
                    r#"INFO Custom Vision event event_type="Deployment" message_id={m} dequeue_count=2"#
                ),
                format!(
                    r#"{{"level":"INFO","message":"Custom Vision event","event_type":"Deployment","message_id":"{m}","dequeue_count":2}}"#
                ),
            ),
        ];
        let got = sample_deliveries();
        assert_eq!(got.len(), want.len(), "one expectation per sample");
        for ((kind, d), (want_kind, text, json)) in got.iter().zip(&want) {
            assert_eq!(kind, want_kind);
            assert_eq!(line(d, false), *text, "text record of {kind}");
            assert_eq!(line(d, true), *json, "JSON record of {kind}");
        }
    }
}
