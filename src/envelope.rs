//! The envelope cvnotify wraps a message body in: in the main queue, to
//! remember how often its handlers failed (so that restarts are not counted
//! as failures), and in the poison queue with `poison_format = "envelope"`,
//! to carry why it was poisoned.
//!
//! A leaf: JSON in, JSON out. The original body is kept exactly, as a JSON
//! string, so it can always be restored byte for byte (`poison replay`,
//! `poison_format = "verbatim"`). A body that is not an envelope is the
//! original body itself. This module must not decide when to wrap.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The key that marks an envelope. Custom Vision's messages have `version`,
/// `type` and `Content` at the top level, never this.
const MARK: &str = "cvnotify_envelope";

/// What cvnotify knows about a message beyond its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Envelope {
    /// Format version, 1.
    #[serde(rename = "cvnotify_envelope")]
    pub version: u32,
    /// The original message text, exactly.
    pub body: String,
    /// Deliveries whose handlers failed.
    #[serde(default)]
    pub failures: u32,
    /// The queue's dequeue count when last written.
    #[serde(default)]
    pub dequeue_count: u32,
    /// The first and the latest delivery cvnotify saw.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub first_delivery: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_delivery: Option<OffsetDateTime>,
    /// Why it failed last (or why it was poisoned), secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The handler(s) that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// The id of the message in the queue it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl Envelope {
    /// A new envelope around `body`.
    pub fn new(body: &str) -> Self {
        Envelope {
            version: 1,
            body: body.to_owned(),
            ..Default::default()
        }
    }

    /// The envelope in `text`, if it is one.
    pub fn open(text: &str) -> Option<Envelope> {
        // Cheap test first: most bodies are plain notifications.
        if !text.contains(MARK) {
            return None;
        }
        let e: Envelope = serde_json::from_str(text).ok()?;
        (e.version == 1).then_some(e)
    }

    /// The original body of `text`: unwrapped when it is an envelope.
    pub fn original(text: &str) -> std::borrow::Cow<'_, str> {
        match Self::open(text) {
            Some(e) => std::borrow::Cow::Owned(e.body),
            None => std::borrow::Cow::Borrowed(text),
        }
    }

    /// The JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("an envelope serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_body_exactly() {
        let bodies = [
            r#"{"version":"1.0","type":"Training","Content":{}}"#.to_owned(),
            "eyJ2ZXJzaW9uIjoiMS4wIn0=".to_owned(),
            "not json \u{1b}[2J \"quoted\" \\ back".to_owned(),
            "x".repeat(64 * 1024),
            String::new(),
        ];
        for body in bodies {
            let mut e = Envelope::new(&body);
            e.failures = 2;
            e.reason = Some("handler `x` failed".into());
            e.first_delivery = Some(OffsetDateTime::UNIX_EPOCH);
            let text = e.to_text();
            let back = Envelope::open(&text).unwrap();
            assert_eq!(back.body, body);
            assert_eq!(back, e);
            assert_eq!(Envelope::original(&text), body);
        }
    }

    #[test]
    fn plain_bodies_are_not_envelopes() {
        assert_eq!(Envelope::open(r#"{"version":"1.0"}"#), None);
        assert_eq!(Envelope::open("cvnotify_envelope"), None);
        assert_eq!(
            Envelope::open(r#"{"cvnotify_envelope":2,"body":"x"}"#),
            None
        );
        assert_eq!(Envelope::original("plain"), "plain");
    }
}
