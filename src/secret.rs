//! Secrets: the [`Secret`] type, and removing secrets from text before it
//! is logged or printed.
//!
//! A leaf: imports nothing from the crate. Two shapes of secret reach log
//! lines: SAS tokens in URLs (a `modelUri`, or a request URL inside an HTTP
//! client error) and account keys inside connection strings. Handlers that
//! need the real value (the shell hook's `CVNOTIFY_MODEL_URI`) get it
//! unredacted; logs never do. This module must not log anything itself.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A value that must never be printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A URL with its query removed: a SAS token lives in the query, and any
/// part of it (`sig=` above all) is a credential.
pub fn redact_url(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut url) => {
            let had_query = url.query().is_some();
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            if had_query {
                format!("{url}?REDACTED")
            } else {
                url.to_string()
            }
        }
        Err(_) => redact_text(uri),
    }
}

/// Replaces the value of every `sig=`, `AccountKey=` and `SharedAccessSignature=`
/// found in free text (case-insensitive) with `REDACTED`.
pub fn redact_text(text: &str) -> String {
    const KEYS: [(&str, &[char]); 3] = [
        ("sig=", &['&', ' ', '"', '\'', ')', '>', '\n', ';', ',']),
        ("accountkey=", &[';', ' ', '"', '\'', '\n']),
        ("sharedaccesssignature=", &[';', ' ', '"', '\'', '\n']),
    ];
    let mut out = text.to_owned();
    for (key, ends) in KEYS {
        let mut from = 0;
        loop {
            let lower = out.to_ascii_lowercase();
            let Some(pos) = lower[from..].find(key).map(|p| p + from) else {
                break;
            };
            let start = pos + key.len();
            let end = out[start..]
                .find(|c: char| ends.contains(&c))
                .map(|e| e + start)
                .unwrap_or(out.len());
            out.replace_range(start..end, "REDACTED");
            from = start + "REDACTED".len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_query_is_dropped() {
        assert_eq!(
            redact_url("https://a.blob.core.windows.net/c/p%20-%20i.ONNX?sv=2022&sig=AbC%2Bd&se=x"),
            "https://a.blob.core.windows.net/c/p%20-%20i.ONNX?REDACTED"
        );
        assert_eq!(
            redact_url("https://a.blob.core.windows.net/c/m.zip"),
            "https://a.blob.core.windows.net/c/m.zip"
        );
    }

    #[test]
    fn text_secrets_are_replaced() {
        let t = redact_text("error sending request for url (http://h/q?se=1&SIG=abc%2F&sp=r): x");
        assert_eq!(
            t,
            "error sending request for url (http://h/q?se=1&SIG=REDACTED&sp=r): x"
        );
        let t = redact_text("AccountName=a;AccountKey=c2VjcmV0;QueueEndpoint=x");
        assert_eq!(t, "AccountName=a;AccountKey=REDACTED;QueueEndpoint=x");
        let t = redact_text("sig=a sig=b");
        assert_eq!(t, "sig=REDACTED sig=REDACTED");
    }
}
