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

/// A string. Never `Serialize`: the schema shows no default for it, and
/// nothing can write one out by accident.
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "writeOnly": true })
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

/// Replaces secrets found in free text with `REDACTED`: the values of
/// `sig=`, `AccountKey=` and `SharedAccessSignature=` (case-insensitive), the
/// token after `Bearer `, the key after `whsec_`, and anything shaped like a
/// JSON Web Token (`eyJ...` with three dot-separated parts).
pub fn redact_text(text: &str) -> String {
    const KEYS: [(&str, &[char]); 5] = [
        ("sig=", &['&', ' ', '"', '\'', ')', '>', '\n', ';', ',']),
        ("accountkey=", &[';', ' ', '"', '\'', '\n']),
        ("sharedaccesssignature=", &[';', ' ', '"', '\'', '\n']),
        ("bearer ", &[' ', '"', '\'', '\n', ',', ';']),
        ("whsec_", &[' ', '"', '\'', '\n', ',', ';', '&']),
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
                .find(|c: char| ends.contains(&c) || c.is_control())
                .map(|e| e + start)
                .unwrap_or(out.len());
            if end > start && &out[start..end] != "REDACTED" {
                out.replace_range(start..end, "REDACTED");
            }
            from = start + "REDACTED".len().min(out.len() - start);
        }
    }
    redact_jwts(&out)
}

/// Replaces every `eyJ<b64url>.<b64url>.<b64url>` (a JWT's header always
/// starts with `{"`, which is `eyJ` in base64url).
fn redact_jwts(text: &str) -> String {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("eyJ") {
        out.push_str(&rest[..pos]);
        let candidate = &rest[pos..];
        let len = candidate
            .find(|c: char| !(is_b64(c) || c == '.'))
            .unwrap_or(candidate.len());
        let token = &candidate[..len];
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() >= 3 && parts.iter().take(3).all(|p| !p.is_empty()) {
            out.push_str("REDACTED");
            rest = &candidate[len..];
        } else {
            out.push_str("eyJ");
            rest = &candidate[3..];
        }
    }
    out.push_str(rest);
    out
}

/// Escapes control characters (escape sequences, carriage returns, NUL...)
/// so that text from a message or a hook cannot drive a terminal or forge
/// log lines: `\u{1b}`, `\r`, `\n`, `\t`.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
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

    #[test]
    fn tokens_and_webhook_secrets_are_replaced() {
        let t = redact_text("Authorization: Bearer abc.def-ghi, next");
        assert_eq!(t, "Authorization: Bearer REDACTED, next");
        let t = redact_text("HOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(t, "HOOK_SECRET=whsec_REDACTED");
        let t = redact_text("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl done");
        assert_eq!(t, "token REDACTED done");
        // Not a JWT: left alone.
        assert_eq!(redact_text("eyJust words."), "eyJust words.");
        assert_eq!(redact_text("plain text"), "plain text");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("ok"), "ok");
        assert_eq!(
            escape_control("a\u{1b}]0;pwned\u{7}b\r\nc\0"),
            "a\\u{1b}]0;pwned\\u{7}b\\r\\nc\\u{0}"
        );
    }
}
