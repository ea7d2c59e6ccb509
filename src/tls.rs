//! Extra trusted CAs (`ca_file` options): a PEM bundle added to the system
//! roots, for receivers and endpoints behind a private CA.

use anyhow::Context as _;
use std::path::Path;

/// Adds every certificate in the PEM bundle at `path` as a trusted root.
pub fn add_ca_file(
    mut builder: reqwest::ClientBuilder,
    path: &Path,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read ca_file {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("ca_file {} is not a PEM certificate bundle", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("ca_file {} holds no PEM certificate", path.display());
    }
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
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
