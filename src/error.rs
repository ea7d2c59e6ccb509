//! Error chains and hints shared by every layer.
//!
//! A leaf: imports only [`crate::secret`] for redaction and
//! [`crate::limit`] for the length of a line. Library errors are
//! `thiserror` enums that keep their causes as `#[source]`; this module turns
//! a chain into one redacted line where a line is needed (log fields, the
//! `check` output), and adds the fix for untrusted certificates. It must not
//! know about any particular error type.

use crate::secret::redact_text;

/// A boxed cause, for errors whose source comes from several crates.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error and its sources on one line, secrets redacted (reqwest puts the
/// request URL, which may carry a SAS signature, into its errors) and cut
/// to [`crate::limit::MAX_TEXT`] (a service's message can be megabytes). A
/// source whose text its parent already contains is skipped.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    // Redacted whole, then cut: a cut first could split a secret so that
    // its shape is no longer recognised.
    crate::limit::text(&redact_text(&out), crate::limit::MAX_TEXT).into_owned()
}

/// What to do when an error's causes say a certificate is not trusted,
/// naming the option that fixes it (`tls.ca_file`, or a handler's
/// `ca_file`): `"; the server's certificate is not trusted: ..."`, for the
/// end of the error's own message; empty for any other cause.
pub fn trust_hint(e: &(dyn std::error::Error + 'static), option: &str) -> String {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.to_string().to_ascii_lowercase().contains("certificate") {
            return format!(
                "; the server's certificate is not trusted: if it comes from a private CA (or a TLS-inspecting proxy), set {option} to a PEM bundle of that CA"
            );
        }
        cause = c.source();
    }
    String::new()
}

/// Adds what to do when a TLS error says a certificate is not trusted,
/// naming the option that fixes it (`tls.ca_file`, or a handler's `ca_file`).
pub fn with_trust_hint(message: String, option: &str) -> String {
    if message.to_ascii_lowercase().contains("certificate") {
        format!(
            "{message}; the server's certificate is not trusted: if it comes from a private CA (or a TLS-inspecting proxy), set {option} to a PEM bundle of that CA"
        )
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner sig=abc")]
    struct Inner;

    #[test]
    fn chain_is_joined_and_redacted() {
        assert_eq!(error_chain(&Outer(Inner)), "outer: inner sig=REDACTED");
        #[derive(Debug, thiserror::Error)]
        #[error("top")]
        struct Top(#[source] Inner);
        assert_eq!(error_chain(&Top(Inner)), "top: inner sig=REDACTED");
    }

    #[test]
    fn trust_hint_only_for_certificate_errors() {
        assert!(with_trust_hint("invalid peer certificate".into(), "x").contains("set x"));
        assert_eq!(with_trust_hint("refused".into(), "x"), "refused");
    }
}
