//! Open-ended fuzzing of the message decoder:
//! `cargo fuzz run decode -- -max_total_time=600`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = cvnotify::event::decode(data) {
        let _ = serde_json::to_string(&n.event);
        let _ = n.event.type_key();
        let _ = n.event.status_key();
    }
});
