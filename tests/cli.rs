//! The command line without a storage service: decode, config errors, help.

use crate::common;

use common::{cli, temp_config, write_file};

#[test]
fn decode_prints_the_typed_event() {
    let body = r#"{"version":"1.0","type":"Export","Content":{"projectId":"8A1C2C4E-5B57-4A8E-9F3C-1D2E3F4A5B6C","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportCompleted","modelUri":"https://a.blob.core.windows.net/m/x.onnx?sig=s"}}"#;
    let out = cli().args(["decode", "-"]).stdin_bytes(body).assert_exit(0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], "1.0", "{v}");
    assert_eq!(v["event"]["type"], "export", "{v}");
    assert_eq!(
        v["event"]["project_id"], "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c",
        "{v}"
    );
    assert_eq!(v["event"]["status"], "ExportCompleted", "{v}");
}

#[test]
fn decode_reads_a_file_and_base64() {
    let dir = tempfile::tempdir().unwrap();
    // base64 of the reference ConnectionTest message.
    let p = write_file(
        dir.path(),
        "m.txt",
        "eyJ2ZXJzaW9uIjoiMS4wIiwidHlwZSI6IkNvbm5lY3Rpb25UZXN0IiwiQ29udGVudCI6eyJwcm9qZWN0SWQiOiIwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDAifX0=\n",
    );
    cli()
        .arg("decode")
        .arg(&p)
        .run()
        .assert_code(0)
        .assert_stdout_shows("connection_test");
}

#[test]
fn decode_error_exits_65_and_names_the_field() {
    cli()
        .arg("decode")
        .stdin_bytes(r#"{"type":"Training","Content":{"projectId":"x"}}"#)
        .run()
        .assert_code(65)
        .assert_stderr_shows("`Content.projectId`: not a GUID");
}

#[test]
fn bad_config_exits_78_with_every_error() {
    let (_dir, p) = temp_config(
        "[queue]\nname = \"UPPER\"\nbatch_size = 99\nbogus = 1\n[[handlers]]\ntype = \"shell\"\ncommand = []\nevents = [\"trainig\"]\n",
    );
    for cmd in [
        &["run"][..],
        &["check", "--config-only"],
        &["run", "--once"],
    ] {
        let out = cli().config(&p).args(cmd).run();
        out.assert_code(78);
        for needle in [
            "queue.name:",
            "queue.batch_size: 99 is out of range",
            "queue.bogus: unknown key",
            "handlers[0].command:",
            "handlers[0].events: `trainig`: unknown event type",
        ] {
            out.assert_stderr_shows(needle);
        }
    }
}

#[test]
fn config_from_environment_variable_path_and_overrides() {
    let (_dir, p) = temp_config("[queue]\nname = \"q-x\"\naccount = \"acct\"\n");
    cli()
        .args(["check", "--config-only"])
        .env("CVNOTIFY_CONFIG", &p)
        .env("CVNOTIFY__QUEUE__BATCH_SIZE", "0")
        .run()
        .assert_code(78)
        .assert_stderr_shows("queue.batch_size: 0 is out of range");
    cli()
        .args(["check", "--config-only"])
        .env("CVNOTIFY_CONFIG", &p)
        .assert_exit(0);
}

#[test]
fn help_on_every_command() {
    for cmd in [&[][..], &["run"], &["check"], &["decode"], &["send"]] {
        let out = cli().args(cmd).arg("--help").stdout();
        assert!(out.contains("Usage:"), "{cmd:?}: {out}");
    }
}

#[test]
fn missing_config_file_is_a_config_error() {
    cli()
        .config("/nonexistent/cvnotify.toml")
        .arg("run")
        .run()
        .assert_code(78)
        .assert_stderr_shows("does not exist");
}
