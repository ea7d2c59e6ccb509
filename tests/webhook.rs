//! The webhook handler against a real HTTP server on loopback (wiremock),
//! and end to end through the daemon with Azurite.

use crate::common;

use base64::Engine as _;
use common::tls;
use common::*;
use hmac::Mac;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn handler(url: &str, extra: &str) -> std::sync::Arc<dyn Handler> {
    let text = format!(
        "[queue]\nname = \"q-x\"\naccount = \"a\"\n[[handlers]]\ntype = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nretry_initial_delay = \"50ms\"\n{extra}\n"
    );
    let config = Config::from_toml(&text).unwrap();
    match &config.handlers[0] {
        c @ HandlerConfig::Webhook(_) => c.build(&crate::common::anonymous_ctx()).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn delivery(id: &str) -> Delivery {
    let body = r#"{"version":"1.0","type":"Export","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportCompleted","modelUri":"https://a.blob.core.windows.net/m/p.onnx?sig=s"}}"#;
    delivery_of(body, id, 2)
}

/// A loopback receiver that answers every POST with `template`.
async fn answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

/// What a handler with `extra` keys makes of a receiver that answers
/// every POST with `template`: its error with its causes (as the worker
/// records it), and how many requests it sent.
async fn against(template: ResponseTemplate, extra: &str) -> (String, usize) {
    let server = answering(template).await;
    let e = handler(&server.uri(), extra)
        .handle(&delivery("m"))
        .await
        .unwrap_err();
    (
        error_chain(&e),
        server.received_requests().await.unwrap().len(),
    )
}

/// A loopback receiver that answers the first `times` POSTs with `first`,
/// then 200.
async fn first_then_ok(first: ResponseTemplate, times: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(first)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

/// What a receiver does: recompute the signature from the secret.
fn verify(req: &wiremock::Request) -> bool {
    let h = |n: &str| req.headers.get(n).unwrap().to_str().unwrap().to_owned();
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    mac.update(&req.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    h("webhook-signature").split(' ').any(|s| s == expected)
}

#[tokio::test]
async fn the_receiver_verifies_the_signature_and_gets_the_documented_payload() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let h = handler(
        &format!("{}/hook", server.uri()),
        "headers = { X-Team = \"vision\" }",
    );
    h.handle(&delivery("msg-1")).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    let req = &reqs[0];
    assert!(verify(req), "signature does not verify");
    let header = |name: &str| req.headers.get(name).unwrap().to_str().unwrap();
    assert_eq!(header("webhook-id"), "msg-1", "webhook-id");
    assert_eq!(header("x-team"), "vision", "x-team");
    assert_eq!(header("content-type"), "application/json", "content-type");
    let ts: i64 = req
        .headers
        .get("webhook-timestamp")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - ts).abs() < 60, "webhook-timestamp {ts}, now {now}");
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    let documented =
        "type project_id iteration_id status model_uri message_id dequeue_count received_at raw";
    for key in documented.split(' ') {
        assert!(body.get(key).is_some(), "payload lacks {key}: {body}");
    }
    assert_eq!(body["type"], "Export", "{body}");
    assert_eq!(body["dequeue_count"], 2, "{body}");
    assert_eq!(
        body["raw"]["Content"]["exportStatus"], "ExportCompleted",
        "{body}"
    );
}

#[tokio::test]
async fn two_server_errors_then_success_is_one_delivery_with_one_webhook_id() {
    let server = first_then_ok(ResponseTemplate::new(500), 2).await;
    let h = handler(&server.uri(), "");
    h.handle(&delivery("msg-2")).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 3, "requests for two 500s and a 200");
    assert!(
        reqs.iter()
            .all(|r| r.headers.get("webhook-id").unwrap() == "msg-2"),
        "a retry changed the webhook-id"
    );
    assert!(reqs.iter().all(verify), "every attempt is signed");
}

#[tokio::test]
async fn gone_and_bad_request_fail_without_retrying() {
    for status in [410u16, 400, 401, 404] {
        let (e, requests) = against(ResponseTemplate::new(status), "").await;
        assert!(e.contains(&status.to_string()), "{e}");
        assert!(e.contains("not retried"), "{e}");
        assert_eq!(requests, 1, "{status} was retried");
    }
}

#[tokio::test]
async fn throttling_and_timeouts_are_retried_up_to_max_attempts() {
    for status in [408u16, 429, 502, 503] {
        let (e, requests) = against(ResponseTemplate::new(status), "max_attempts = 3").await;
        assert!(e.contains("gave up after 3 attempts"), "{e}");
        assert_eq!(requests, 3, "{status}");
    }
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_is_retried() {
    let started = Instant::now();
    let (e, requests) = against(
        ResponseTemplate::new(200).set_delay(Duration::from_secs(5)),
        "timeout = \"300ms\"\nmax_attempts = 2",
    )
    .await;
    assert!(e.contains("no answer from"), "{e}");
    assert_eq!(requests, 2, "attempts");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout was not applied"
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let busy = ResponseTemplate::new(503).insert_header("Retry-After", "2");
    let server = first_then_ok(busy, 1).await;
    let started = Instant::now();
    handler(&server.uri(), "")
        .handle(&delivery("m"))
        .await
        .unwrap();
    // retry_initial_delay is 50 ms: only Retry-After explains the wait.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "attempts"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_leaves_the_retry_to_the_queue() {
    let (e, requests) = against(
        ResponseTemplate::new(429).insert_header("Retry-After", "3600"),
        "",
    )
    .await;
    assert!(e.contains("exceeds retry_max_delay"), "{e}");
    assert_eq!(requests, 1, "attempts");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = answering(ResponseTemplate::new(307).insert_header("Location", "/new")).await;
    let e = handler(&format!("{}/old", server.uri()), "")
        .handle(&delivery("m"))
        .await
        .unwrap_err();
    assert!(
        error_chain(&e).contains("redirects are not followed"),
        "{}",
        error_chain(&e)
    );
    // Every request the server saw, whatever its method or path.
    let seen: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(seen, vec!["POST /old"], "the redirect was followed");
}

#[tokio::test]
async fn a_refused_connection_is_retried_and_reported_without_the_url_path() {
    let port = free_port();
    let e = handler(
        &format!("http://127.0.0.1:{port}/secret-token-in-path"),
        "max_attempts = 2",
    )
    .handle(&delivery("m"))
    .await
    .unwrap_err();
    let text = error_chain(&e);
    assert!(
        text.contains("cannot connect to http://127.0.0.1"),
        "{text}"
    );
    assert!(!text.contains("secret-token-in-path"), "{text}");
}

/// Through the daemon: the same webhook-id (the queue message id) on every
/// delivery of one message, then the poison queue; and a proxy from
/// HTTP_PROXY is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_redeliveries_keep_the_webhook_id_and_end_in_the_poison_queue() {
    let w = World::new().await;
    let server = answering(ResponseTemplate::new(500)).await;
    let id = w.send_all(&[training("TrainingFailed")]).await.remove(0);
    let handlers = format!(
        "[[handlers]]\ntype = \"webhook\"\nurl = \"{}/hook\"\nsecret_env = \"HOOK_SECRET\"\nmax_attempts = 2\nretry_initial_delay = \"10ms\"\n",
        server.uri()
    );
    let cfg = w
        .config()
        .queue("max_dequeue_count = 2")
        .handler(&handlers)
        .write("c.toml");
    let mut d = w.daemon(&cfg).envs(&[("HOOK_SECRET", SECRET)]).start();
    w.wait_poisoned(&d, 1).await;
    d.stop_ok().await;
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 4, "2 deliveries x 2 attempts");
    assert!(
        reqs.iter()
            .all(|r| r.headers.get("webhook-id").unwrap().to_str().unwrap() == id),
        "a redelivery changed the webhook-id"
    );
    assert!(reqs.iter().all(verify), "every attempt is signed");
    d.assert_not_logged(SECRET.trim_start_matches("whsec_"));
    // The worker prints the handler's error with its causes, each once
    // (issue 18): the retry's WARN line and the poison reason.
    let target = server.uri();
    let failure = format!(
        "handler `webhook#0` failed: gave up after 2 attempts: {target} answered 500 Internal Server Error"
    );
    let field = |message: &str, field: &str| -> Vec<String> {
        d.records_of(message)
            .into_iter()
            .filter_map(|r| r[field].as_str().map(str::to_owned))
            .collect()
    };
    d.assert_eq(
        field("Handling failed; the message will be retried", "error"),
        vec![failure.clone()],
        "the error field of the retry's WARN line",
    );
    d.assert_eq(
        field("Moved the message to the poison queue", "reason"),
        vec![format!(
            "failed on delivery 2 of max_dequeue_count 2: {failure}"
        )],
        "the poison reason",
    );
}

/// Issue 18: a retry is one typed event, one WARN line and one increment
/// of `cvnotify_retries_total{client="webhook"}`, seen on a real daemon's
/// `/metrics`: a receiver answering 503 once and then 200 makes exactly
/// one, and no other client's series moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_retry_is_one_log_line_and_one_count_in_metrics() {
    let w = World::new().await;
    let server = first_then_ok(ResponseTemplate::new(503), 1).await;
    let handlers = format!(
        "[[handlers]]\ntype = \"webhook\"\nurl = \"{}/hook\"\nretry_initial_delay = \"10ms\"\n",
        server.uri()
    );
    let cfg = w
        .config()
        .extra("[http]\nlisten = \"127.0.0.1:0\"\n")
        .handler(&handlers)
        .write("c.toml");
    let mut d = Daemon::start(&cfg, &["run"], w.dir.path(), "d");
    let metrics = format!("http://{}/metrics", d.http_addr().await);
    let series = |client: &str| format!("cvnotify_retries_total{{client=\"{client}\"}}");
    let (_, before) = http_get(&metrics).await;
    assert_eq!(sample(&before, &series("webhook")), Some(0.0), "{before}");

    w.send_all(&[training("TrainingCompleted")]).await;
    let main = w.main_queue();
    assert!(
        eventually(Duration::from_secs(60), async || {
            server.received_requests().await.unwrap().len() == 2 && World::length(&main).await == 0
        })
        .await,
        "{}",
        d.logs()
    );
    let (_, after) = http_get(&metrics).await;
    assert_eq!(sample(&after, &series("webhook")), Some(1.0), "{after}");
    for other in ["customvision", "token", "storage", "blob"] {
        assert_eq!(sample(&after, &series(other)), Some(0.0), "{after}");
    }
    let retries: Vec<serde_json::Value> = d
        .records()
        .into_iter()
        .filter(|r| r["message"] == "Webhook attempt failed; retrying")
        .collect();
    assert_eq!(retries.len(), 1, "{}", d.logs());
    let r = &retries[0];
    assert_eq!(
        (&r["level"], &r["client"]),
        (&"WARN".into(), &"webhook".into()),
        "{r}"
    );
    assert_eq!(
        (r["attempt"].as_u64(), r["max_attempts"].as_u64()),
        (Some(1), Some(5)),
        "{r}"
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .ends_with("answered 503 Service Unavailable"),
        "{r}"
    );
    d.stop_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_through_http_proxy() {
    let w = World::new().await;
    // The proxy is a loopback server; the target host is never resolved.
    let proxy = answering(ResponseTemplate::new(200)).await;
    w.send_all(&[training("TrainingCompleted")]).await;
    let handlers = "[[handlers]]\ntype = \"webhook\"\nurl = \"http://receiver.invalid/hook\"\n";
    let cfg = w.config().handler(handlers).write("c.toml");
    let d = w
        .daemon(&cfg)
        .envs(&[
            ("HTTP_PROXY", &proxy.uri()),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ])
        .run_once()
        .await;
    let reqs = proxy.received_requests().await.unwrap();
    d.assert_eq(reqs.len(), 1, "requests through the proxy");
    assert_eq!(
        reqs[0].url.host_str(),
        Some("receiver.invalid"),
        "the host the proxy was asked for"
    );
    assert_eq!(w.queued().await, 0, "messages left in the queue");
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_through_ca_file() {
    let pki = tls::Pki::new();
    let (port, served) = tls::https_server(&pki).await;
    let url = format!("https://127.0.0.1:{port}/hook");

    let e = handler(&url, "max_attempts = 1")
        .handle(&delivery("m"))
        .await
        .unwrap_err();
    let text = error_chain(&e);
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains("ca_file"), "no hint: {text}");
    assert_eq!(served.load(SeqCst), 0, "answered an untrusting client");

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    pki.write_ca(&ca);
    handler(&url, &format!("ca_file = \"{}\"", ca.display()))
        .handle(&delivery("m"))
        .await
        .unwrap();
    assert_eq!(served.load(SeqCst), 1, "deliveries with ca_file");
}

#[tokio::test]
async fn the_global_tls_ca_file_applies_to_webhooks() {
    let pki = tls::Pki::new();
    let (port, served) = tls::https_server(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    pki.write_ca(&ca);
    let text = format!(
        "[queue]\nname = \"q-x\"\naccount = \"a\"\n[tls]\nca_file = \"{}\"\n[[handlers]]\ntype = \"webhook\"\nurl = \"https://127.0.0.1:{port}/hook\"\n",
        ca.display()
    );
    let config = Config::from_toml(&text).unwrap();
    let ctx = BuildContext {
        ca_file: config.tls.ca_file.clone(),
        ..crate::common::anonymous_ctx()
    };
    config.handlers[0]
        .build(&ctx)
        .unwrap()
        .handle(&delivery("m"))
        .await
        .unwrap();
    assert_eq!(
        served.load(SeqCst),
        1,
        "deliveries with the global tls.ca_file"
    );
}
