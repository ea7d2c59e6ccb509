//! Loading: the TOML file, `CVNOTIFY__*` environment overrides, then
//! validation; the result is a [`Config`] or every problem at once.
//!
//! Owns the order of the steps, nothing of the schema (see [`super::schema`]).

use super::handlers::HandlerConfig;
use super::issues::{ConfigError, Issues, as_table, deserialize_collecting};
use super::queue::QueueConfig;
use super::schema::{AuthConfig, Config, ENV_PREFIX, FileConfig, QueueEntry};
use crate::secret::{redact_text, register};
use std::path::Path;

/// A file the TOML parser rejects: its message quotes the offending source
/// line, which may be the line holding a secret.
fn unreadable(e: config::ConfigError) -> ConfigError {
    ConfigError::one(
        "",
        format!(
            "cannot read the configuration: {}",
            redact_snippet(&e.to_string())
        ),
    )
}

/// Key names whose values are secrets (matched as parts of a key name).
const SECRET_KEY_PARTS: [&str; 6] = [
    "secret",
    "key",
    "token",
    "password",
    "connection_string",
    "sas",
];

/// Removes secret values from a parser message that quotes source lines:
/// the value of any `name = ...` whose name looks like a secret's, and any
/// text that looks like a credential (`AccountKey=`, `sig=`, `whsec_`, a
/// bearer token: see [`redact_text`]).
fn redact_snippet(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let Some((name, _)) = line.split_once('=') else {
                return line.to_owned();
            };
            // "5 | connection_string = ..." in a snippet: the key is the
            // last word before `=`.
            let key = name
                .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
                .find(|w| !w.is_empty())
                .unwrap_or_default()
                .to_ascii_lowercase();
            if SECRET_KEY_PARTS.iter().any(|p| key.contains(p)) {
                format!("{name}= REDACTED")
            } else {
                line.to_owned()
            }
        })
        .collect();
    redact_text(&lines.join("\n"))
}

impl Config {
    /// Loads `path` (if any) and the `CVNOTIFY__*` environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::one(
                    "",
                    format!(
                        "the configuration file {} does not exist (pass --config PATH or set CVNOTIFY_CONFIG)",
                        path.display()
                    ),
                ));
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .inspect(|(k, v)| register_otlp_headers(k, v))
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        );
        let built = builder.build().map_err(unreadable)?;
        let root = built
            .try_deserialize::<config::Map<String, config::Value>>()
            .map_err(unreadable)?;
        Self::from_table(root)
    }

    /// Parses a TOML document (for tests and `check`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(unreadable)?;
        Self::from_table(
            built
                .try_deserialize::<config::Map<String, config::Value>>()
                .map_err(unreadable)?,
        )
    }

    fn from_table(root: config::Map<String, config::Value>) -> Result<Config, ConfigError> {
        let mut issues = Issues::default();
        let file: Option<FileConfig> = deserialize_collecting(root, "", &mut issues);
        let Some(file) = file else {
            return Err(ConfigError(issues.0));
        };
        let handlers = parse_handlers(file.handlers, "handlers", &mut issues);
        let queues = file
            .queues
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| parse_queue_entry(v, &format!("queues[{i}]"), &mut issues))
            .collect::<Vec<_>>();
        if file.queue.is_some() && !queues.is_empty() {
            issues.push(
                "queue",
                "[queue] and [[queues]] are mutually exclusive; move [queue] into a [[queues]] entry",
            );
        }
        let config = Config {
            queue: file.queue.unwrap_or_default(),
            queues,
            max_concurrency: file.max_concurrency,
            auth: file.auth,
            log: file.log,
            http: file.http,
            tls: file.tls,
            telemetry: file.telemetry,
            shutdown_timeout: file.shutdown_timeout,
            handlers,
            customvision: file.customvision,
        };
        config.validate(&mut issues);
        register_secrets(&config);
        issues.into_result(config)
    }
}

/// Registers the secret values the configuration holds outside a
/// [`crate::secret::Secret`] (which registers itself): a webhook's header
/// values (`Authorization`, API keys under any header name) and the
/// password and query values of its URL (an Azure Functions `code=`).
fn register_secrets(config: &Config) {
    let queue_handlers = config.queues.iter().filter_map(|q| q.handlers.as_ref());
    for handler in std::iter::once(&config.handlers)
        .chain(queue_handlers)
        .flatten()
    {
        if let HandlerConfig::Webhook(w) = handler {
            w.headers.values().for_each(|v| register(v));
            if let Some(p) = w.url.password() {
                register(p);
            }
            w.url.query_pairs().for_each(|(_, v)| register(&v));
        }
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (and
/// any `OTEL_*HEADERS`): `key=value,...` with percent-encoded values, the
/// collector's credentials. Each value is registered (read here, where the
/// environment is read, for every command).
fn register_otlp_headers(name: &str, list: &str) {
    if name.starts_with("OTEL_") && name.ends_with("HEADERS") {
        for (_, value) in list.split(',').filter_map(|h| h.split_once('=')) {
            register(value);
        }
    }
}

fn parse_handlers(
    values: Vec<config::Value>,
    path: &str,
    issues: &mut Issues,
) -> Vec<HandlerConfig> {
    values
        .into_iter()
        .enumerate()
        .filter_map(|(i, value)| HandlerConfig::parse(value, &format!("{path}[{i}]"), issues))
        .collect()
}

/// One `[[queues]]` table: `auth` and `handlers` are taken out first and
/// parsed on their own, so the rest is exactly a `[queue]` table and every
/// problem keeps its path (`queues[1].auth.mode`, `queues[0].handlers[2].url`).
fn parse_queue_entry(value: config::Value, path: &str, issues: &mut Issues) -> Option<QueueEntry> {
    let mut table = as_table(value, path, issues)?;
    let auth = table.remove("auth").and_then(|a| {
        let auth_path = format!("{path}.auth");
        let t = as_table(a, &auth_path, issues)?;
        deserialize_collecting::<AuthConfig>(t, &auth_path, issues)
    });
    let handlers = table.remove("handlers").and_then(|h| {
        let handlers_path = format!("{path}.handlers");
        match h.into_array() {
            Ok(values) => Some(parse_handlers(values, &handlers_path, issues)),
            Err(_) => {
                issues.push(
                    handlers_path,
                    "expected an array of tables ([[queues.handlers]])",
                );
                None
            }
        }
    });
    let queue = deserialize_collecting::<QueueConfig>(table, path, issues)?;
    Some(QueueEntry {
        queue,
        auth,
        handlers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthMode, LogFormat};
    use std::time::Duration;

    fn errors(toml: &str) -> Vec<String> {
        Config::from_toml(toml)
            .unwrap_err()
            .0
            .into_iter()
            .map(|i| i.to_string())
            .collect()
    }

    const MINIMAL: &str = r#"
        [queue]
        name = "cv-events"
        account = "acct"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.queue.batch_size, 16);
        assert_eq!(c.queue.visibility_timeout, Duration::from_secs(300));
        assert_eq!(c.queue.max_concurrency, 32);
        assert_eq!(c.queue.min_poll_interval, Duration::from_millis(100));
        assert_eq!(c.queue.max_poll_interval, Duration::from_secs(10));
        assert_eq!(c.queue.max_dequeue_count, 5);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.auth.mode, AuthMode::ManagedIdentity);
        assert_eq!(c.poison_queue_name(), "cv-events-poison");
        assert_eq!(c.effective_handlers().len(), 1);
    }

    #[test]
    fn all_errors_reported_at_once_with_paths() {
        let errs = errors(
            r#"
            shutdown_timout = "5s"
            [queue]
            name = "Bad_Name"
            batch_size = 64
            visibility_timeout = "soon"
            colour = "blue"
            [auth]
            mode = "password"
            [[handlers]]
            type = "shell"
            comand = ["x"]
            "#,
        );
        let joined = errors_text(&errs);
        assert!(
            joined.contains("shutdown_timout: unknown key; allowed:"),
            "{joined}"
        );
        assert!(
            joined.contains("queue.colour: unknown key; allowed: one of `name`"),
            "{joined}"
        );
        assert!(joined.contains("queue.visibility_timeout:"), "{joined}");
        assert!(
            joined.contains(
                "auth.mode: unknown value `password`; allowed: managed_identity, workload_identity"
            ),
            "{joined}"
        );
        assert!(
            joined.contains("handlers[0].comand: unknown key; allowed:"),
            "{joined}"
        );
        assert!(joined.contains("handlers[0].command: missing"), "{joined}");
        assert!(
            joined.contains("queue.name: `Bad_Name` is not a valid queue name"),
            "{joined}"
        );
        assert!(
            joined.contains("queue.batch_size: 64 is out of range; allowed: 1 to 32"),
            "{joined}"
        );
    }

    fn errors_text(e: &[String]) -> String {
        e.join("\n")
    }

    #[test]
    fn environment_overrides_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let c = Config::load_with_env(
            Some(&path),
            [
                ("CVNOTIFY__QUEUE__NAME".to_owned(), "from-env".to_owned()),
                ("CVNOTIFY__QUEUE__BATCH_SIZE".to_owned(), "4".to_owned()),
                (
                    "CVNOTIFY__QUEUE__MAX_POLL_INTERVAL".to_owned(),
                    "1s".to_owned(),
                ),
                ("UNRELATED".to_owned(), "x".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(c.queue_name(), "from-env");
        assert_eq!(c.queue.batch_size, 4);
        assert_eq!(c.queue.max_poll_interval, Duration::from_secs(1));
    }

    #[test]
    fn unknown_environment_key_is_rejected() {
        let e = Config::load_with_env(
            None,
            [
                ("CVNOTIFY__QUEUE__NAME".to_owned(), "q-x".to_owned()),
                ("CVNOTIFY__QUEUE__ACCOUNT".to_owned(), "acct".to_owned()),
                ("CVNOTIFY__QUEUE__BATCHSIZE".to_owned(), "4".to_owned()),
            ],
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(
            e.0[0]
                .to_string()
                .starts_with("queue.batchsize: unknown key"),
            "{e}"
        );
    }

    /// Regression (issue 11, finding 4): the parser's message quoted the
    /// line, `AccountKey=...` in clear, and `check --config-only` (the
    /// systemd unit's ExecStartPre) printed it to the journal.
    #[test]
    fn parse_errors_do_not_show_secret_values() {
        let key = "c2VjcmV0a2V5bWF0ZXJpYWwxMjM0NTY3ODkw";
        for text in [
            format!(
                "[queue]\nname = \"q-x\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={key}\n"
            ),
            format!("[auth]\nsas_token = \"sv=2022&sig={key}\n"),
            format!("[[handlers]]\ntype = \"webhook\"\nsecret = \"whsec_{key}\n"),
            format!("[auth]\nmode = \"sas\"\nsas_token = \"sv=2022&sig={key}\" x\n"),
        ] {
            let e = Config::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains("cannot read the configuration"), "{e}");
            assert!(!e.contains(key), "{e}");
        }
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e =
            Config::load_with_env(Some(Path::new("/nonexistent/cvnotify.toml")), []).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn mode_specific_requirements() {
        let errs = errors(
            r#"
            [queue]
            name = "q-x"
            [auth]
            mode = "connection_string"
            "#,
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("auth.connection_string: required")),
            "{errs:?}"
        );
        let errs = errors(
            r#"
            [queue]
            name = "q-x"
            endpoint = "http://127.0.0.1:10001/devstoreaccount1"
            "#,
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("queue.endpoint: must use https")),
            "{errs:?}"
        );
        let errs =
            errors("[queue]\nname = \"q-x\"\n[auth]\nmode = \"sas\"\nsas_token = \"sv=1\"\n");
        assert!(errs.iter().any(|e| e.contains("no `sig=`")), "{errs:?}");
        assert!(
            errs.iter().any(|e| e.starts_with("queue.account")),
            "{errs:?}"
        );
    }

    #[test]
    fn poll_interval_order() {
        let errs = errors(
            "[queue]\nname=\"q-x\"\naccount=\"a\"\nmin_poll_interval=\"5s\"\nmax_poll_interval=\"1s\"\n",
        );
        assert_eq!(
            errs,
            vec!["queue.max_poll_interval: must not be less than queue.min_poll_interval"]
        );
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let c = Config::from_toml(
            "[queue]\nname=\"q-x\"\n[auth]\nmode=\"connection_string\"\nconnection_string=\"UseDevelopmentStorage=true\"\n",
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("UseDevelopmentStorage"), "{dbg}");
    }

    #[test]
    fn container_config_needs_only_the_queue_from_the_environment() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/container.toml");
        let env = [
            ("CVNOTIFY__QUEUE__NAME".to_owned(), "cv-events".to_owned()),
            ("CVNOTIFY__QUEUE__ACCOUNT".to_owned(), "acct".to_owned()),
        ];
        let c = Config::load_with_env(Some(&path), env).unwrap();
        assert_eq!(c.auth.mode, AuthMode::ManagedIdentity);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn example_and_dev_configs_are_valid() {
        for f in [
            "config/cvnotify.example.toml",
            "config/dev.toml",
            "config/customvision-and-azureml.toml",
        ] {
            let text =
                std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap();
            if let Err(e) = Config::from_toml(&text) {
                panic!("{f}: {e}");
            }
        }
    }

    const TWO_QUEUES: &str = r#"
        max_concurrency = 8
        [auth]
        mode = "connection_string"
        connection_string = "UseDevelopmentStorage=true"
        [[handlers]]
        type = "log"
        name = "shared"
        [[queues]]
        name = "eu-events"
        endpoint = "http://127.0.0.1:10001/devstoreaccount1"
        max_dequeue_count = 2
        [[queues.handlers]]
        type = "shell"
        name = "eu-hook"
        command = ["true"]
        [[queues]]
        name = "us-events"
        account = "usacct"
        [queues.auth]
        mode = "sas"
        sas_token = "sv=2022&sig=abc"
    "#;

    #[test]
    fn queues_get_their_own_auth_and_handlers_or_the_top_level_ones() {
        let c = Config::from_toml(TWO_QUEUES).unwrap();
        let q = c.effective_queues();
        assert_eq!(q.len(), 2);
        assert_eq!((q[0].name(), q[1].name()), ("eu-events", "us-events"));
        assert_eq!(q[0].queue.max_dequeue_count, 2);
        assert_eq!(q[1].queue.max_dequeue_count, 5);
        assert_eq!(q[0].auth.mode, AuthMode::ConnectionString);
        assert_eq!(q[1].auth.mode, AuthMode::Sas);
        assert_eq!(q[0].handlers[0].display_name(0), "eu-hook");
        assert_eq!(q[1].handlers[0].display_name(0), "shared");
        assert_eq!(q[1].poison_name(), "us-events-poison");
        assert_eq!(c.process_max_concurrency(), 8);
        assert_eq!(
            c.select_queue(Some("us-events")).unwrap().name(),
            "us-events"
        );
        let e = c.select_queue(None).unwrap_err().to_string();
        assert!(
            e.contains("pass --queue NAME (one of: eu-events, us-events)"),
            "{e}"
        );
        let e = c.select_queue(Some("nope")).unwrap_err().to_string();
        assert!(e.contains("no queue is named `nope`"), "{e}");
    }

    #[test]
    fn single_queue_form_is_a_one_element_list() {
        let c = Config::from_toml(MINIMAL).unwrap();
        let q = c.effective_queues();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].name(), "cv-events");
        assert_eq!(q[0].poison_name(), c.poison_queue_name());
        assert_eq!(c.process_max_concurrency(), 32);
        assert_eq!(c.select_queue(None).unwrap().name(), "cv-events");
    }

    #[test]
    fn queues_problems_are_all_reported_with_their_paths() {
        let errs = errors(
            r#"
            max_concurrency = 1
            [queue]
            name = "q-x"
            account = "a"
            [[queues]]
            name = "q-a"
            account = "a"
            max_dequeue_count = 0
            colour = "red"
            [[queues.handlers]]
            type = "shell"
            [[queues]]
            name = "q-a"
            [queues.auth]
            mode = "sas"
            "#,
        );
        let joined = errors_text(&errs);
        for want in [
            "queue: [queue] and [[queues]] are mutually exclusive",
            "queues[0].max_dequeue_count: must be at least 1",
            "queues[0].colour: unknown key",
            "queues[0].handlers[0].command: missing",
            "queues[1].name: `q-a` is also queues[0].name",
            "queues[1].auth.sas_token: required",
            "queues[1].account: set queues[1].account or queues[1].endpoint",
            "max_concurrency: 1 is less than the number of queues (2)",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
    }

    #[test]
    fn top_level_max_concurrency_is_refused_with_the_single_queue_form() {
        let errs = errors(&format!("max_concurrency = 4\n{MINIMAL}"));
        assert_eq!(
            errs,
            vec![
                "max_concurrency: only used with [[queues]]; with [queue], set queue.max_concurrency"
            ]
        );
    }
}
