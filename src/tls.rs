//! Extra trusted CAs (`ca_file` options): a PEM bundle added to the system
//! roots, for receivers and endpoints behind a private CA.
//!
//! A leaf. It only builds trust; what to say when a certificate is not
//! trusted lives in [`crate::error::with_trust_hint`].

use std::path::{Path, PathBuf};

/// A `ca_file` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read ca_file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ca_file {} is not a PEM certificate bundle", path.display())]
    NotPem {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("ca_file {} holds no PEM certificate", path.display())]
    Empty { path: PathBuf },
}

/// Adds every certificate in the PEM bundle at `path` as a trusted root.
pub fn add_ca_file(
    mut builder: reqwest::ClientBuilder,
    path: &Path,
) -> Result<reqwest::ClientBuilder, CaFileError> {
    let pem = std::fs::read(path).map_err(|source| CaFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| CaFileError::NotPem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CaFileError::Empty {
            path: path.to_owned(),
        });
    }
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}
