//! BENCHMARK PEER: the raw ceiling. A bare loop over the same Azure SDK
//! queue client cvnotify uses (through its thin `AzureQueue` wrapper, so
//! transport settings match): receive 32, decode, delete concurrently, with
//! no routing, logging or bookkeeping. `scripts/bench` runs it.
//!
//! `raw_ceiling ENDPOINT QUEUE COUNT` prints `START <ns>` before the first
//! receive and `END <ns> <handled>` after COUNT messages are deleted.

use cvnotify::azure::Connector;
use cvnotify::config::Config;
use cvnotify::queue::Queue;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (endpoint, name, count) = (&args[1], &args[2], args[3].parse::<usize>().unwrap());
    let config = Config::from_toml(&format!(
        "[queue]\nname = \"{name}\"\nendpoint = \"{endpoint}\"\n[auth]\nmode = \"connection_string\"\nconnection_string = \"UseDevelopmentStorage=true\"\n"
    ))
    .unwrap();
    let queue = Connector::new(&config.queue, &config.auth, &config.tls)
        .unwrap()
        .queue(name)
        .unwrap();
    println!("START {}", now_ns());
    let mut handled = 0;
    let mut empty = 0;
    while handled < count {
        let batch = queue.receive(32, Duration::from_secs(300)).await.unwrap();
        if batch.is_empty() {
            empty += 1;
            if empty > 500 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let deletes = batch.iter().map(|m| {
            let _: serde_json::Value = serde_json::from_str(&m.body).unwrap_or_default();
            queue.delete(&m.id, &m.pop_receipt)
        });
        for r in futures_util::future::join_all(deletes).await {
            r.unwrap();
        }
        handled += batch.len();
    }
    println!("END {} {handled}", now_ns());
}
