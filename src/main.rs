//! The command line. Everything else lives in the library; see its Layout.

use clap::{Parser, Subcommand};
use cvnotify::commands::poison::{Action, Selection};
use cvnotify::commands::send::SendSpec;
use cvnotify::commands::setup::SetupOptions;
use cvnotify::commands::{check, decode, poison, run, schema, send, setup};
use std::path::PathBuf;
use std::process::ExitCode;
use uuid::Uuid;

/// Acts on Azure Custom Vision training and export notifications.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Every key can be overridden from the
    /// environment: CVNOTIFY__QUEUE__NAME=...
    #[arg(long, short, global = true, env = "CVNOTIFY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: poll the queue and dispatch events to the handlers.
    Run {
        /// Drain the queue, then exit 0 (cron jobs, tests).
        #[arg(long)]
        once: bool,
    },
    /// Validate the configuration, get a token, and check that the queue is
    /// reachable and that the identity may receive, update, delete and
    /// write to the poison queue.
    Check {
        /// Only validate the configuration; no network (systemd ExecStartPre).
        #[arg(long)]
        config_only: bool,
        /// Which `[[queues]]` entry (by name); needed when several are
        /// configured.
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
    },
    /// Point a Custom Vision project at this daemon's queue (and backup
    /// container), read the project back, and wait for the ConnectionTest
    /// message and test blob the service writes.
    Setup {
        /// An existing project's id.
        #[arg(long, conflicts_with = "create", required_unless_present = "create")]
        project: Option<Uuid>,
        /// Create a new project with this name instead.
        #[arg(long)]
        create: Option<String>,
        /// notificationQueueUri. Default: the configured queue's URL.
        #[arg(long)]
        queue_uri: Option<url::Url>,
        /// exportModelContainerUri. Default: a download handler's `container`.
        #[arg(long, conflicts_with = "no_backup")]
        container_uri: Option<url::Url>,
        /// Do not set a backup container.
        #[arg(long)]
        no_backup: bool,
        /// Show the change without making it.
        #[arg(long)]
        dry_run: bool,
        /// How long to wait for the ConnectionTest message and the test
        /// blob (at most 30m).
        #[arg(long, default_value = "2m", value_parser = setup::parse_wait)]
        wait: std::time::Duration,
        /// Which `[[queues]]` entry (by name) the project notifies; needed
        /// when several are configured.
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
    },
    /// Decode one message body and print the typed event as JSON.
    Decode {
        /// File holding the body; `-` or nothing reads stdin.
        file: Option<PathBuf>,
    },
    /// Inspect and replay messages in the poison queue.
    Poison {
        #[command(subcommand)]
        command: PoisonCommand,
        /// Which `[[queues]]` entry (by name); needed when several are
        /// configured.
        #[arg(long, value_name = "NAME", global = true)]
        queue: Option<String>,
    },
    /// Describe the configuration file.
    #[command(name = "config")]
    ConfigFile {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Enqueue a message exactly as Custom Vision writes it, or an Azure
    /// Machine Learning or Blob Storage event as Event Grid delivers it.
    Send {
        #[command(flatten)]
        spec: SendSpec,
        /// Which `[[queues]]` entry (by name); needed when several are
        /// configured.
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the JSON Schema (draft 2020-12) of the configuration file:
    /// every key with its description and default, for editors (taplo,
    /// Even Better TOML) and validators. Reads no configuration.
    Schema,
}

#[derive(Subcommand)]
enum PoisonCommand {
    /// Print one line per message (id, insertion time, deliveries, decoded
    /// summary or decode error) without changing anything.
    List {
        /// How many to show (the service peeks at most 32).
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u8).range(1..=32))]
        max: u8,
    },
    /// Move messages back to the main queue: copy, then delete from the
    /// poison queue, so neither failing call loses one.
    Replay {
        /// Every message in the poison queue.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        all: bool,
        /// A message id from `poison list` (repeatable).
        #[arg(long)]
        id: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Decode { file } => decode::exec(file.as_deref()),
        Command::ConfigFile {
            command: ConfigCommand::Schema,
        } => schema::exec(),
        Command::Run { once } => run::exec(cli.config.as_deref(), once),
        Command::Check { config_only, queue } => {
            check::exec(cli.config.as_deref(), config_only, queue.as_deref())
        }
        Command::Poison { command, queue } => {
            let action = match command {
                PoisonCommand::List { max } => Action::List { max },
                PoisonCommand::Replay { all: true, .. } => Action::Replay(Selection::All),
                PoisonCommand::Replay { id, .. } => {
                    Action::Replay(Selection::Ids(id.into_iter().collect()))
                }
            };
            poison::exec(cli.config.as_deref(), queue.as_deref(), action)
        }
        Command::Setup {
            project,
            create,
            queue_uri,
            container_uri,
            no_backup,
            dry_run,
            wait,
            queue,
        } => {
            let opts = SetupOptions {
                project,
                create,
                queue_uri,
                container_uri,
                no_backup,
                dry_run,
                wait,
            };
            setup::exec(cli.config.as_deref(), queue.as_deref(), &opts)
        }
        Command::Send { spec, queue } => send::exec(cli.config.as_deref(), queue.as_deref(), &spec),
    };
    ExitCode::from(code as u8)
}
