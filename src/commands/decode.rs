//! `cvnotify decode [FILE]`: decodes one message body (a file, or stdin)
//! and prints the typed event as JSON (`{"version", "event"}`; for an array
//! of Event Grid events `{"events": [...]}`, every one); exit 65 (`EX_DATAERR`) with the
//! decode error otherwise.

use crate::exit;
use std::io::Read;
use std::path::Path;

/// Runs the command; the exit code.
pub fn exec(file: Option<&Path>) -> i32 {
    let mut body = Vec::new();
    let read = match file {
        None => std::io::stdin().read_to_end(&mut body).map(|_| ()),
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_end(&mut body).map(|_| ()),
        Some(p) => std::fs::read(p).map(|b| body = b),
    };
    if let Err(e) = read {
        eprintln!("error: cannot read the message: {e}");
        return exit::FAILURE;
    }
    match crate::event::decode(&body) {
        Ok(events) => {
            // One event as it always was; an array's under `events`, in order.
            let out = match events.as_slice() {
                [n] if n.index.is_none() => {
                    serde_json::json!({"version": n.version, "event": n.event})
                }
                _ => serde_json::json!({
                    "events": events.iter().map(|n| &n.event).collect::<Vec<_>>()
                }),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&out).expect("serializable")
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::DATA_ERR
        }
    }
}
