//! `cvnotify config schema`: prints the JSON Schema of the configuration
//! file ([`Config::json_schema`]). Reads no configuration.

use crate::config::Config;
use crate::exit;

/// Runs the command; the exit code.
pub fn exec() -> i32 {
    let schema = Config::json_schema();
    println!(
        "{}",
        serde_json::to_string_pretty(&schema).expect("serializable")
    );
    exit::OK
}
