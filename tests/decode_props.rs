//! Property tests of the decoder: arbitrary bytes and mutations of valid
//! messages never panic and never hang; valid messages keep their values.
//! Case counts are fixed so CI time is bounded; `PROPTEST_CASES` raises them
//! for longer runs, and `fuzz/` has a cargo-fuzz target for open-ended ones.

use crate::common;

use base64::Engine as _;
use common::{DecodeError, Event, Notification, decode};
use proptest::prelude::*;
use std::time::{Duration, Instant};

const VALID: [&str; 4] = [
    r#"{"version":"1.0","type":"ConnectionTest","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c"}}"#,
    r#"{"version":"1.0","type":"Training","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","trainingStatus":"TrainingCompleted"}}"#,
    r#"{"version":"1.0","type":"Export","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportCompleted","modelUri":"https://a.blob.core.windows.net/m/p%20-%20i.ONNX?sv=1&sig=x"}}"#,
    r#"{"version":"1.0","type":"Export","Content":{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","exportStatus":"ExportFailed"}}"#,
];

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Decodes, and fails the case if that took absurdly long (a hang detector
/// with a wide margin, not a timing test).
fn decode_bounded(bytes: &[u8]) -> Result<Vec<Notification>, DecodeError> {
    let t = Instant::now();
    let r = decode(bytes);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "decode took {:?} on {} bytes",
        t.elapsed(),
        bytes.len()
    );
    r
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

fn apply(mut v: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = v.len().max(1);
        match *m {
            Mutation::Flip(i, b) if !v.is_empty() => v[i % n] ^= b,
            Mutation::Insert(i, b) => v.insert(i % (v.len() + 1), b),
            Mutation::Delete(i) if !v.is_empty() => {
                v.remove(i % n);
            }
            Mutation::Truncate(i) => v.truncate(i % (v.len() + 1)),
            Mutation::Duplicate(a, b) if !v.is_empty() => {
                let (a, b) = (a % n, b % n);
                let (lo, hi) = (a.min(b), a.max(b));
                let piece = v[lo..hi].to_vec();
                v.splice(hi..hi, piece);
            }
            _ => {}
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_bounded(&bytes);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let _ = decode_bounded(b64.as_bytes());
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        which in 0usize..VALID.len(),
        as_base64 in any::<bool>(),
        muts in proptest::collection::vec(mutation(), 1..8),
    ) {
        let base = if as_base64 {
            base64::engine::general_purpose::STANDARD.encode(VALID[which]).into_bytes()
        } else {
            VALID[which].as_bytes().to_vec()
        };
        let mutated = apply(base, &muts);
        for n in decode_bounded(&mutated).unwrap_or_default() {
            // Whatever decodes must also serialize for handlers.
            let _ = serde_json::to_string(&n.event).unwrap();
        }
    }

    #[test]
    fn any_status_string_is_kept_verbatim(status in "\\PC{0,64}") {
        prop_assume!(!status.is_empty());
        let body = format!(
            r#"{{"type":"Training","Content":{{"projectId":"8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c","iterationId":"0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f","trainingStatus":{}}}}}"#,
            serde_json::to_string(&status).unwrap()
        );
        let n = decode_bounded(body.as_bytes()).unwrap().remove(0);
        prop_assert_eq!(n.event.status(), Some(status.as_str()));
    }

    #[test]
    fn unknown_types_are_delivered(ty in "[A-Za-z][A-Za-z0-9]{0,20}") {
        prop_assume!(!["ConnectionTest", "Training", "Export"].contains(&ty.as_str()));
        let body = format!(r#"{{"type":"{ty}","Content":{{"any":[1,{{"x":null}}]}}}}"#);
        let n = decode_bounded(body.as_bytes()).unwrap().remove(0);
        let is_unknown = matches!(n.event, Event::Unknown { .. });
        prop_assert!(is_unknown, "{:?}", n.event);
    }
}
