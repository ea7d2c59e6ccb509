//! Secrets and text from services (issue 17, findings 4-7 and 12): the
//! registry of secret values keeps a key the Training API echoes out of
//! every output, log, envelope and span; names and URIs from GetProject are
//! escaped and SAS-free in `check` and `setup`; hooks never inherit the
//! collector's headers; a text log line holds what a reader wants.
//!
//! Each test named after a finding fails on the code before the fix (the
//! finding is quoted in its doc comment). Real Azurite, the real binary,
//! loopback only; the Training API is the loopback stand-in
//! (`common::customvision`, written from the reference: no real Custom
//! Vision service is reachable here), and the OTLP collector a wiremock
//! server that records what it receives.

use crate::common;

use common::customvision::{CustomVision, CvOptions, Fault};
use common::*;
use std::path::PathBuf;
use uuid::Uuid;
use wiremock::MockServer;

/// The `project` lines of `check` or `setup` output.
fn project_lines(o: &Ran) -> Vec<String> {
    o.lines()
        .into_iter()
        .filter(|l| l.get(6..).is_some_and(|r| r.starts_with("project ")))
        .collect()
}

/// `[customvision]` for the stand-in, its key read from `CV_KEY` (a key
/// the configuration does not hold: the client reads it at start).
fn section(cv: &CustomVision, extra: &str) -> String {
    format!(
        "\n[customvision]\nendpoint = \"{}\"\ntraining_key_env = \"CV_KEY\"\nmax_attempts = 2\n{extra}\n",
        cv.endpoint()
    )
}

/// The stand-in, echoing the key it gets into its error answers (as the
/// service's gateway may), and that key.
async fn echoing() -> (CustomVision, String) {
    let options = CvOptions {
        echo_key: true,
        ..Default::default()
    };
    let cv = CustomVision::start(options).await;
    let key = cv.options.key.clone();
    (cv, key)
}

/// A config for `check` and `setup` on `w` (its queue created) listing
/// `project`.
async fn listing(w: &World, cv: &CustomVision, project: Uuid) -> PathBuf {
    w.main_queue().create_if_missing().await.unwrap();
    w.config()
        .extra(section(cv, &format!("projects = [\"{project}\"]")))
        .write("c.toml")
}

fn training_of(project: Uuid, iteration: Uuid) -> String {
    format!(
        r#"{{"version":"1.0","type":"Training","Content":{{"projectId":"{project}","iterationId":"{iteration}","trainingStatus":"TrainingCompleted"}}}}"#
    )
}

/// Every OTLP export request body the collector received, concatenated
/// (protobuf keeps strings as their UTF-8 bytes).
async fn exported(c: &MockServer) -> Vec<u8> {
    c.received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == "/v1/traces")
        .flat_map(|r| r.body)
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Finding 4: "A Training API error body containing the `Training-Key`
/// value reached `check` output, WARN log lines, the poison envelope (which
/// never expires), `poison list` and exported span events."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_key_the_service_echoes_reaches_no_output_log_envelope_or_span() {
    let w = World::new().await;
    let (cv, key) = echoing().await;
    let project = cv.add_project("birds");
    let iteration = cv.add_iteration(project, &["ONNX"], true);
    // ExportIteration is busy once (retried in process: a WARN line), then
    // refused for good (poisoned at once: an ERROR line and the envelope);
    // both answers end with the key the request carried.
    for (status, code, message) in [
        (503, "ServiceUnavailable", "busy"),
        (
            400,
            "BadRequestProjectUnsupportedExportPlatform",
            "Unsupported export platform",
        ),
    ] {
        cv.inject(Fault {
            method: "POST",
            path_contains: "/export".into(),
            status,
            headers: Vec::new(),
            body: serde_json::json!({"code": code, "message": message}).to_string(),
            times: 1,
        });
    }
    let traces = collector(200).await;
    let cfg = w
        .config()
        .log_level("info")
        .queue("poison_format = \"envelope\"")
        // `check` reads a project that does not exist: a 404, echoed too.
        .extra(section(
            &cv,
            &format!("projects = [\"{}\"]", Uuid::new_v4()),
        ))
        .handler("[[handlers]]\ntype = \"customvision\"\nexport = [{ platform = \"ONNX\" }]\n")
        .extra(format!(
            "[telemetry]\notlp_endpoint = \"{}\"\n",
            traces.uri()
        ))
        .write("c.toml");
    let env = [("CV_KEY", key.as_str())];
    w.send_all(&[training_of(project, iteration)]).await;
    let d = w.daemon(&cfg).envs(&env).run_once().await;

    // Logs: the WARN of the retried call and the ERROR of the poisoning
    // carry the service's text, the key replaced.
    d.assert_logged("Training API call failed; retrying");
    d.assert_logged("busy (Training-Key: REDACTED)");
    d.assert_logged("Unsupported export platform (Training-Key: REDACTED)");
    d.assert_not_logged(&key);

    // The poison envelope, which never expires.
    let poisoned = w.poisoned().await;
    d.assert_eq(poisoned.len(), 1, "poisoned messages");
    let envelope: serde_json::Value = serde_json::from_str(&poisoned[0]).unwrap();
    let reason = envelope["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("BadRequestProjectUnsupportedExportPlatform")
            && reason.contains("(Training-Key: REDACTED)"),
        "{reason}"
    );
    assert!(!poisoned[0].contains(&key), "{}", poisoned[0]);

    // `poison list`.
    run_cli(&cfg, &["poison", "list"], &env)
        .await
        .assert_success()
        .assert_shows("(Training-Key: REDACTED)")
        .assert_hides(&key);

    // Exported spans: the log lines inside the message became span events
    // with the same text.
    let spans = exported(&traces).await;
    assert!(!spans.is_empty(), "no spans were exported");
    assert!(
        contains(&spans, "busy (Training-Key: REDACTED)"),
        "the WARN line is not among the span events"
    );
    assert!(!contains(&spans, &key), "the key was exported in a span");

    // `check`: GetProject of a missing project, answered 404 with the key.
    run_cli(&cfg, &["check"], &env)
        .await
        .assert_code(1)
        .assert_shows("NotFoundProject")
        .assert_shows("(Training-Key: REDACTED)")
        .assert_hides(&key);

    // `setup` with a key the service refuses: its 401 answer echoes the
    // key the daemon sent, which is as secret.
    let wrong = "wrong-training-key-9876543210fedcba";
    run_cli(
        &cfg,
        &["setup", "--project", &project.to_string(), "--dry-run"],
        &[("CV_KEY", wrong)],
    )
    .await
    .assert_code(1)
    .assert_shows("refused the credential")
    .assert_shows("(Training-Key: REDACTED)")
    .assert_hides(wrong);
}

/// Finding 4, where texts are cut: "Error text is cut and stripped of
/// control characters, but known secret values are not removed." A cut
/// through a secret kept its start: the service's message is cut at 500
/// characters, a hook's output line at 4 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_split_by_a_cut_leaks_no_part_of_it() {
    let w = World::new().await;
    let (cv, key) = echoing().await;
    let project = cv.add_project("birds");
    // 474 characters, then " (Training-Key: " (16): the cut at 500 falls
    // 10 characters into the key.
    cv.inject(Fault {
        method: "GET",
        path_contains: project.to_string(),
        status: 400,
        headers: Vec::new(),
        body: serde_json::json!({"code": "BadRequest", "message": "x".repeat(474)}).to_string(),
        times: 1,
    });
    let header_value = "hook-cut-secret-0123456789";
    // 4085 bytes, then the value: the cut at 4096 falls 11 bytes into it.
    let script = w.hook(
        "long.sh",
        &format!("printf '%4085s{header_value}\\n' '' | tr ' ' a"),
    );
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w
        .config()
        .log_level("info")
        .extra(section(&cv, &format!("projects = [\"{project}\"]")))
        .handler(shell_handler(&script, ""))
        .write("c.toml");
    let otlp = format!("api-key={header_value}");
    let env = [
        ("CV_KEY", key.as_str()),
        ("OTEL_EXPORTER_OTLP_HEADERS", otlp.as_str()),
    ];

    run_cli(&cfg, &["check"], &env)
        .await
        .assert_shows(&"x".repeat(474))
        .assert_hides(&key[..8]);

    let d = w.daemon(&cfg).envs(&env).run_once().await;
    d.assert_logged("aaaaREDACTED...");
    d.assert_not_logged(&header_value[..8]);
}

/// Finding 5: "A project name with ESC/BEL/CR/LF from GetProject reached
/// the terminal raw in `check` and `setup` and forged an `ok` line."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_name_with_escapes_is_printed_escaped_and_forges_no_line() {
    let w = World::new().await;
    let cv = CustomVision::start(CvOptions::default()).await;
    let name = "birds\u{1b}]0;pwned\u{7}\u{1b}[2J\r\nok    project    forged";
    let project = cv.add_project(name);
    let queue_url = format!("{}/{}", w.azurite.queue_endpoint(), w.queue);
    cv.set_storage(project, &queue_url, None);
    let cfg = listing(&w, &cv, project).await;
    let env = [("CV_KEY", cv.options.key.as_str())];
    let escaped = "birds\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\r\\nok    project    forged";
    let id = project.to_string();
    for args in [&["check"][..], &["setup", "--project", &id, "--dry-run"]] {
        let out = run_cli(&cfg, args, &env).await;
        out.assert_code(0).assert(
            !out.text().contains(['\u{1b}', '\u{7}', '\r']),
            format!("{args:?}: an escape, BEL or CR: {:?}", out.text()),
        );
        let lines = project_lines(&out);
        out.assert(lines.len() == 1, format!("{args:?}: a forged line"));
        out.assert(
            lines[0].starts_with("ok    project ") && lines[0].contains(escaped),
            format!("{args:?}: the project line"),
        );
    }
}

/// Finding 6: "`check` printed `notificationQueueUri is
/// https://…?sv=…&sig=…` unredacted" (a SAS from GetProject).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sas_in_the_projects_queue_uri_is_never_printed() {
    let w = World::new().await;
    let cv = CustomVision::start(CvOptions::default()).await;
    let project = cv.add_project("birds");
    let signature = "U0FTLXNpZ25hdHVyZS1mcm9tLUdldFByb2plY3Q%3D";
    cv.set_storage(
        project,
        &format!(
            "https://other.queue.core.windows.net/cv-events?sv=2022-11-02&sp=a&se=2030-01-01&sig={signature}"
        ),
        None,
    );
    let cfg = listing(&w, &cv, project).await;
    let env = [("CV_KEY", cv.options.key.as_str())];
    let queue_url = format!("{}/{}", w.azurite.queue_endpoint(), w.queue);

    let check = run_cli(&cfg, &["check"], &env).await;
    check.assert_code(1).assert(
        project_lines(&check)[0].contains(&format!("notificationQueueUri is https://other.queue.core.windows.net/cv-events?REDACTED, not this daemon's queue {queue_url}")),
        "the project line",
    );

    let id = project.to_string();
    let setup = run_cli(&cfg, &["setup", "--project", &id, "--dry-run"], &env).await;
    setup.assert_code(0).assert_shows(&format!(
        "notificationQueueUri: https://other.queue.core.windows.net/cv-events?REDACTED → {queue_url}"
    ));
    for out in [check, setup] {
        out.assert_hides("sv=2022-11-02")
            .assert_hides(&signature[..16]);
    }
}

/// Finding 7: "`OTEL_EXPORTER_OTLP_HEADERS` /
/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (bearer tokens for the collector)
/// are passed to hooks with `inherit_env = true`."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_never_inherit_the_collectors_headers() {
    let w = World::new().await;
    let token = "collector-token-0123456789";
    let team_key = "hc-team-key-0123456789";
    let logs_key = "logs-api-key-0123456789";
    // The hook prints its environment to a file, and one of the values on
    // stdout, which the daemon logs: registered, so redacted.
    let script = w.hook(
        "env.sh",
        &format!("env > \"$DIR/env.txt\"\necho \"collector said {team_key}\""),
    );
    let variables = [
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("Authorization=Bearer%20{token}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            format!("x-honeycomb-team={team_key}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            format!("api-key={logs_key}"),
        ),
    ];
    w.send_all(&[training("TrainingCompleted")]).await;
    let cfg = w
        .config()
        .log_level("info")
        .handler(shell_handler(&script, "inherit_env = true"))
        .write("c.toml");
    let mut env: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("UNRELATED_VARIABLE", "inherited-fine"));
    env.push(("OTEL_SERVICE_NAME", "cvnotify-test"));
    let d = w.daemon(&cfg).envs(&env).run_once().await;
    let seen = std::fs::read_to_string(w.path("env.txt")).unwrap();
    assert!(seen.contains("UNRELATED_VARIABLE=inherited-fine"), "{seen}");
    assert!(seen.contains("OTEL_SERVICE_NAME=cvnotify-test"), "{seen}");
    for (name, _) in &variables {
        assert!(!seen.contains(name), "{name} reached the hook\n{seen}");
    }
    for value in [token, team_key, logs_key] {
        assert!(!seen.contains(value), "{value} reached the hook\n{seen}");
    }
    d.assert_logged("collector said REDACTED");
    d.assert_not_logged(team_key);
}

/// Finding 12: "Text log lines grew to ~700 characters since traces came:
/// every line inside a message repeats the span's OpenTelemetry attributes
/// (`otel.name`, `otel.kind`, `messaging.*`) beside the fields a reader
/// wants." With traces on, a text line inside a message holds the message
/// id, dequeue count, event type, project and iteration, the handler, and
/// its own fields: nothing else. JSON lines keep `trace_id` and `span_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_line_inside_a_message_holds_the_message_and_its_own_fields() {
    let w = World::new().await;
    let traces = collector(200).await;
    let script = w.hook("hello.sh", "echo hello");
    let (project, iteration) = (Uuid::new_v4(), Uuid::new_v4());
    let telemetry = format!("[telemetry]\notlp_endpoint = \"{}\"\n", traces.uri());
    // One message through `run --once` with logs in `format`: its id and
    // the daemon.
    let run = async |format: &str| {
        let cfg = w
            .config()
            .log_format(format)
            .log_level("info")
            .handler(shell_handler(&script, "name = \"deploy\""))
            .extra(&telemetry)
            .write(&format!("{format}.toml"));
        let ids = w.send_all(&[training_of(project, iteration)]).await;
        (ids, w.daemon(&cfg).tag(format).run_once().await)
    };

    let (ids, d) = run("text").await;
    let line = |needle: &str| -> String {
        d.assert_logged(needle);
        let logs = d.logs();
        let line = logs.lines().find(|l| l.contains(needle)).unwrap();
        // From the level on (the timestamp varies).
        line[line.find("INFO ").expect("an INFO line")..].to_owned()
    };
    let context = format!(
        "INFO message{{queue={} message_id={} dequeue_count=1 event_type=\"Training\" project_id={project} iteration_id={iteration}}}",
        w.queue, ids[0]
    );
    let hook_line = line("Hook output");
    assert_eq!(
        hook_line,
        format!("{context}:handler{{handler=deploy}}: Hook output stream=\"stdout\" output=hello"),
        "the hook output line"
    );
    let handled = line("Message handled");
    assert!(
        handled.starts_with(&format!("{context}: Message handled took_ms=")),
        "{handled}"
    );
    for unwanted in ["otel.", "messaging.", "trace_id", "span_id", "outcome"] {
        d.assert_not_logged(unwanted);
    }
    eprintln!(
        "text line inside a message: {} characters from the level on",
        hook_line.len()
    );
    // Traces still got the messaging attributes (tests/traces.rs pins them).
    assert!(
        contains(&exported(&traces).await, "messaging.message.id"),
        "no messaging.message.id in the exported spans"
    );

    // JSON: the message span keeps the trace and span ids, without the
    // traces-only fields.
    let (ids, d) = run("json").await;
    let hooks = d.records_of("Hook output");
    d.assert(!hooks.is_empty(), "no Hook output record");
    let hook_record = &hooks[0];
    let message_span = hook_record["spans"][0].as_object().unwrap();
    let mut keys: Vec<&str> = message_span.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "dequeue_count",
            "event_type",
            "iteration_id",
            "message_id",
            "name",
            "project_id",
            "queue",
            "span_id",
            "trace_id"
        ],
        "{hook_record}"
    );
    assert_eq!(message_span["message_id"], ids[0], "{hook_record}");
    assert_eq!(message_span["queue"], w.queue, "{hook_record}");
    assert_eq!(
        hook_record["spans"][1]["handler"], "deploy",
        "{hook_record}"
    );
    assert_eq!(
        hook_record["spans"][1].as_object().unwrap().len(),
        2,
        "{hook_record}"
    );
}
