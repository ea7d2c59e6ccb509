//! OpenTelemetry traces: one span per message with its handler and storage
//! children, exported over OTLP/HTTP to a loopback receiver (wiremock,
//! decoding the protobuf body with `opentelemetry-proto`); the same trace id
//! in the webhook's `traceparent`, the hook's `TRACEPARENT` and stdin, and the
//! JSON log lines; a collector that never answers neither slows handling nor
//! loses a message, and its dropped spans are counted.

use crate::common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use wiremock::MockServer;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

/// Every span the receiver got.
pub(crate) async fn spans(collector: &MockServer) -> Vec<Span> {
    collector
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/v1/traces")
        .flat_map(|r| {
            ExportTraceServiceRequest::decode(r.body.as_slice())
                .expect("an OTLP protobuf body")
                .resource_spans
        })
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_one_trace_from_queue_to_webhook_and_hook() {
    let w = World::new().await;
    let collector = collector(200).await;
    let receiver = receiver(200).await;
    let script = w.hook(
        "trace.sh",
        "echo \"$TRACEPARENT\" > \"$DIR/hook.txt\"\ncat >> \"$DIR/hook.txt\"",
    );
    let body = training("TrainingCompleted");
    let ids = w.send_all(std::slice::from_ref(&body)).await;
    let cfg = w
        .config()
        .log_level("info")
        .handler(format!(
            "[[handlers]]\ntype = \"webhook\"\nname = \"notify\"\nurl = \"{}/hook\"\n",
            receiver.uri()
        ))
        .handler(shell_handler(&script, "name = \"deploy\""))
        .extra(format!(
            "[telemetry]\notlp_endpoint = \"{}\"\n",
            collector.uri()
        ))
        .write("c.toml");
    let d = w.daemon(&cfg).run_once().await;

    // Flushed at exit: the spans are there.
    let spans = spans(&collector).await;
    let message = spans
        .iter()
        .find(|s| s.name == format!("process {}", w.queue))
        .unwrap_or_else(|| {
            panic!(
                "no message span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    let attrs = attributes(message);
    for (key, want) in [
        ("messaging.system", "azure_storage_queues"),
        ("messaging.destination.name", &w.queue),
        ("messaging.operation.type", "process"),
        ("messaging.message.id", &ids[0]),
        ("dequeue_count", "1"),
        ("event_type", "Training"),
        ("outcome", "handled"),
    ] {
        assert_eq!(
            attrs.get(key).map(String::as_str),
            Some(want),
            "{key}: {attrs:?}"
        );
    }
    assert!(
        attrs.contains_key("project_id") && attrs.contains_key("iteration_id"),
        "{attrs:?}"
    );
    let trace = hex(&message.trace_id);
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == message.span_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"handler notify") && names.contains(&"handler deploy"),
        "{names:?}"
    );
    assert!(names.contains(&"queue.delete"), "{names:?}");
    assert!(
        children.iter().all(|s| hex(&s.trace_id) == trace),
        "a child span of another trace"
    );

    // The webhook got the handler span's context.
    let requests = receiver.received_requests().await.unwrap();
    let traceparent = requests[0]
        .headers
        .get("traceparent")
        .expect("a traceparent header")
        .to_str()
        .unwrap()
        .to_owned();
    let webhook_span = children
        .iter()
        .find(|s| s.name == "handler notify")
        .unwrap();
    assert_eq!(
        traceparent,
        format!("00-{trace}-{}-01", hex(&webhook_span.span_id)),
        "the webhook's traceparent"
    );
    let payload: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(payload["trace_id"], trace, "{payload}");

    // The hook: TRACEPARENT of its handler span, trace_id on stdin.
    let hook_lines = lines(&w.path("hook.txt"));
    let hook_span = children
        .iter()
        .find(|s| s.name == "handler deploy")
        .unwrap();
    assert_eq!(
        hook_lines[0],
        format!("00-{trace}-{}-01", hex(&hook_span.span_id)),
        "the hook's TRACEPARENT"
    );
    let stdin: serde_json::Value = serde_json::from_str(&hook_lines[1]).unwrap();
    assert_eq!(stdin["trace_id"], trace, "{stdin}");

    // JSON log lines carry the ids in the message span.
    let handled = d.records_of("Message handled");
    d.assert(!handled.is_empty(), "no \"Message handled\" record");
    let span = &handled[0]["spans"][0];
    assert_eq!(span["trace_id"], trace, "{span}");
    assert_eq!(span["span_id"], hex(&message.span_id), "{span}");
}

/// Drains `n` messages with `telemetry` as the config's extra tables; the
/// seconds from start to an empty queue and the metrics text at that point.
async fn drain(w: &World, n: usize, telemetry: &str, tag: &str) -> (f64, String) {
    let bodies: Vec<String> = (0..n).map(|_| training("TrainingCompleted")).collect();
    w.send_all(&bodies).await;
    let port = free_port();
    let cfg = w
        .config()
        .log_level("warn")
        .queue("batch_size = 32")
        .extra(format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n{telemetry}"
        ))
        .write(&format!("{tag}.toml"));
    let started = Instant::now();
    let mut d = w.daemon(&cfg).tag(tag).start();
    let q = w.main_queue();
    d.wait_for_within(
        Duration::from_secs(120),
        &format!("{tag}: the queue drained"),
        async || {
            World::length(&q).await == 0 && q.peek(1).await.map(|m| m.is_empty()).unwrap_or(false)
        },
    )
    .await;
    let took = started.elapsed().as_secs_f64();
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    d.stop_ok().await;
    (took, metrics)
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

/// A collector that accepts connections and never answers: the worst case
/// for an exporter. Message handling goes on at the same rate (the ratio to
/// a run without traces, in this test's own run), and the spans that do not
/// fit the bounded queue are counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_neither_slows_nor_fails_handling() {
    let w = World::new().await;
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = blackhole.local_addr().unwrap();
    // Accepts and holds every connection, never answering.
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for s in blackhole.incoming().flatten().take(200) {
            keep.lock().unwrap().push(s);
        }
    });
    let n = 200;
    let (off, _) = drain(&w, n, "", "off").await;
    let (down, metrics) = drain(
        &w,
        n,
        &format!("[telemetry]\notlp_endpoint = \"http://{hole}\"\nmax_queue_size = 16\nexport_timeout = \"20s\"\n"),
        "down",
    )
    .await;
    let ratio = down / off;
    eprintln!("drain of {n}: traces off {off:.2} s, collector down {down:.2} s, ratio {ratio:.2}");
    // Generous: shared machines are noisy; a blocked exporter would stall
    // the run for the whole export timeout per batch.
    assert!(ratio < 2.5, "{ratio:.2} (off {off:.2} s, down {down:.2} s)");
    assert!(
        counter(&metrics, "cvnotify_spans_dropped_total") > 0.0,
        "{metrics}"
    );
    assert_eq!(
        counter(
            &metrics,
            &format!(
                "cvnotify_messages_processed_total{{queue=\"{}\",outcome=\"handled\"}}",
                w.queue
            )
        ),
        n as f64,
        "{metrics}"
    );
}
