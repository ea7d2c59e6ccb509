//! Error chains and hints shared by every layer.
//!
//! A leaf: imports only [`crate::secret`] for redaction and
//! [`crate::limit`] for the length of a line. Library errors are
//! `thiserror` enums that keep their causes as `#[source]` and whose
//! messages are their own, never their cause's text. The edges print a
//! chain once, with [`error_chain`]: the commands (`check`, `setup`, the
//! exit error), the worker (a failure's recorded reason and its log
//! fields) and the log lines that report an error. [`trust_hint`] adds the
//! fix for untrusted certificates to an error's own message. This module
//! must not know about any particular error type.

use crate::secret::redact_text;

/// A boxed cause, for errors whose source comes from several crates.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error and its sources on one line, `outer: cause: its cause`,
/// secrets redacted (reqwest puts the request URL, which may carry a SAS
/// signature, into its errors) and cut to [`crate::limit::MAX_TEXT`] (a
/// service's message can be megabytes).
///
/// A source whose text the line already contains is skipped: cvnotify's
/// own errors never repeat their source, but the Azure SDK's do
/// (`azure_core::Error` wrapping an error shows that error's text and
/// returns it as its source; `azure_identity` writes its cause's text into
/// its message and keeps it as the source too).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner sig=abc")]
    struct Inner;

    #[test]
    fn chain_is_joined_once_and_redacted() {
        assert_eq!(error_chain(&Outer(Inner)), "outer: inner sig=REDACTED");
    }

    /// azure_identity's shape: the cause's text inside the message, and the
    /// cause as the source.
    #[test]
    fn a_source_its_parent_already_shows_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("ManagedIdentityCredential authentication failed. {0}")]
        struct Repeats(#[source] Inner);
        assert_eq!(
            error_chain(&Repeats(Inner)),
            "ManagedIdentityCredential authentication failed. inner sig=REDACTED"
        );
        let sdk = azure_core::Error::new(
            azure_core::error::ErrorKind::Io,
            std::io::Error::other("connection refused"),
        );
        assert_eq!(error_chain(&sdk), "connection refused");
    }

    #[test]
    fn trust_hint_only_for_certificate_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("invalid peer certificate: UnknownIssuer")]
        struct Tls;
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect")]
        struct Connect(#[source] Tls);
        assert!(trust_hint(&Connect(Tls), "x").contains("set x"));
        assert_eq!(trust_hint(&Outer(Inner), "x"), "");
    }
}
