//! The stored name of a model: `{projectId} - {iterationId}.{rest}`, where
//! `rest` keeps the platform, the flavor and the archive extension the blob
//! name carries (`ONNX.zip`, `DockerFile.Linux.zip`).
//!
//! Pure. The GUIDs come from the message, `rest` from the blob name and is
//! letters, digits and single dots only, so no URL can name a file outside
//! `dir`, a hidden file, or one of the handler's own side files.

use url::Url;
use uuid::Uuid;

/// Longest `rest` accepted.
const MAX_REST: usize = 64;

/// Why no name could be made for a model URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "cannot tell the platform from the blob name `{0}` (expected `<name>.<Platform>[.<Flavor>][.zip]`, e.g. `….ONNX.zip`, letters, digits and single dots)"
    )]
    Platform(String),
    #[error(
        "the blob `{blob}` is the backup of another export than the message names (project {project}, iteration {iteration})"
    )]
    OtherExport {
        blob: String,
        project: Uuid,
        iteration: Uuid,
    },
}

/// A model's file name in `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName {
    /// `{projectId} - {iterationId}.{rest}`.
    pub file: String,
    /// Platform, flavor and extension: `ONNX.zip`.
    pub rest: String,
    /// Whether the blob itself is named `{projectId} - {iterationId}.{rest}`
    /// (the naming Custom Vision uses in a backup container).
    pub backup_named: bool,
}

impl ModelName {
    /// The name for the export `project`/`iteration` whose blob is at `url`.
    /// A backup-named blob keeps its `rest` and must name the same export.
    pub fn of(url: &Url, project: Uuid, iteration: Uuid) -> Result<Self, NameError> {
        let blob = blob_name(url);
        let shown = || blob.chars().take(200).collect::<String>();
        let (rest, backup_named) = match split_backup_name(&blob) {
            Some((p, i, rest)) => {
                if (p, i) != (project, iteration) {
                    return Err(NameError::OtherExport {
                        blob: shown(),
                        project,
                        iteration,
                    });
                }
                (rest, true)
            }
            // `<id>.ONNX.zip`: everything after the first dot.
            None => (
                blob.split_once('.').map(|(_, r)| r).unwrap_or_default(),
                false,
            ),
        };
        if !is_plain_rest(rest) {
            return Err(NameError::Platform(shown()));
        }
        Ok(Self {
            file: format!("{project} - {iteration}.{rest}"),
            rest: rest.to_owned(),
            backup_named,
        })
    }

    /// Whether the name says zip.
    pub fn says_zip(&self) -> bool {
        has_zip_extension(&self.rest)
    }

    /// The platform (and flavor): `rest` without an archive extension,
    /// as used in `current-{projectId}-{platform}`.
    pub fn platform(&self) -> &str {
        platform_of(&self.rest)
    }

    /// The folder an archive is unpacked into: the name without `.zip`, or
    /// `{name}.unzipped` for an archive whose name does not say zip.
    pub fn unpacked(&self) -> String {
        match self.file.len().checked_sub(4) {
            Some(cut) if self.says_zip() => self.file[..cut].to_owned(),
            _ => format!("{}.unzipped", self.file),
        }
    }
}

/// `rest` without a trailing `.zip`, unless nothing else is left.
pub fn platform_of(rest: &str) -> &str {
    match rest.len().checked_sub(4) {
        Some(cut) if cut > 0 && has_zip_extension(rest) => &rest[..cut],
        _ => rest,
    }
}

fn has_zip_extension(rest: &str) -> bool {
    rest.len() >= 4 && rest[rest.len() - 4..].eq_ignore_ascii_case(".zip") || rest == "zip"
}

/// The blob name: the URL's last path segment, percent-decoded (lossy:
/// a name that is not UTF-8 fails [`is_plain_rest`] anyway).
fn blob_name(url: &Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    percent_encoding::percent_decode_str(last)
        .decode_utf8_lossy()
        .into_owned()
}

/// `{uuid} - {uuid}.{rest}` → its parts (hyphenated GUIDs, any case).
pub fn split_backup_name(name: &str) -> Option<(Uuid, Uuid, &str)> {
    let p = name.get(..36)?;
    let i = name.get(36..)?.strip_prefix(" - ")?.get(..36)?;
    let rest = name.get(36 + 3 + 36..)?.strip_prefix('.')?;
    let parse = |s: &str| {
        (s.len() == 36 && s.as_bytes()[8] == b'-')
            .then(|| Uuid::parse_str(s).ok())
            .flatten()
    };
    Some((parse(p)?, parse(i)?, rest))
}

/// Letters and digits in dot-separated parts, not too long, and not the
/// ending of the handler's own `.sha256` files.
pub fn is_plain_rest(rest: &str) -> bool {
    !rest.is_empty()
        && rest.len() <= MAX_REST
        && rest
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()))
        && !rest
            .rsplit('.')
            .next()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("sha256"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c";
    const I: &str = "0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f";

    fn name(url: &str) -> Result<ModelName, NameError> {
        ModelName::of(
            &Url::parse(url).unwrap(),
            P.parse().unwrap(),
            I.parse().unwrap(),
        )
    }

    #[test]
    fn real_export_urls_keep_platform_flavor_and_extension() {
        let hex = "0123456789abcdef0123456789abcdef";
        let onnx = name(&format!(
            "https://irisprodeuapp.blob.core.windows.net/m-{hex}/{hex}.ONNX.zip?sv=2020-04-08&sr=b&sig=x%2By&se=2026-01-01&sp=r"
        ))
        .unwrap();
        assert_eq!(onnx.file, format!("{P} - {I}.ONNX.zip"));
        assert_eq!(onnx.platform(), "ONNX");
        assert_eq!(onnx.unpacked(), format!("{P} - {I}.ONNX"));
        assert!(onnx.says_zip() && !onnx.backup_named);
        let docker = name(&format!(
            "https://s.blob.core.windows.net/m-{hex}/{hex}.DockerFile.Linux.zip?sig=x"
        ))
        .unwrap();
        assert_eq!(docker.file, format!("{P} - {I}.DockerFile.Linux.zip"));
        assert_eq!(docker.platform(), "DockerFile.Linux");
        let coreml = name(&format!(
            "https://s.blob.core.windows.net/m-{hex}/{hex}.CoreML.zip?sig=x"
        ))
        .unwrap();
        assert_ne!(coreml.file, onnx.file, "two exports of one iteration");
    }

    #[test]
    fn a_backup_blob_keeps_its_rest_and_must_name_the_same_export() {
        let b = name(&format!(
            "https://acct.blob.core.windows.net/models/{P}%20-%20{I}.TensorFlow.TensorFlowLite.zip"
        ))
        .unwrap();
        assert_eq!(b.file, format!("{P} - {I}.TensorFlow.TensorFlowLite.zip"));
        assert!(b.backup_named);
        let b = name(&format!(
            "https://acct.blob.core.windows.net/models/{}%20-%20{}.ONNX",
            P.to_uppercase(),
            I
        ))
        .unwrap();
        assert_eq!(b.file, format!("{P} - {I}.ONNX"));
        assert_eq!(b.unpacked(), format!("{P} - {I}.ONNX.unzipped"));
        let other = uuid::Uuid::new_v4();
        let e = name(&format!(
            "https://acct.blob.core.windows.net/models/{P}%20-%20{other}.ONNX"
        ))
        .unwrap_err();
        assert!(matches!(e, NameError::OtherExport { .. }), "{e}");
    }

    #[test]
    fn nothing_but_letters_digits_and_single_dots_after_the_guids() {
        for bad in [
            "https://a.blob.core.windows.net/c/noext",
            "https://a.blob.core.windows.net/c/x.on%2Fnx",
            "https://a.blob.core.windows.net/c/..%2F..%2Fetc%2Fpasswd",
            "https://a.blob.core.windows.net/c/x.ONNX..zip",
            "https://a.blob.core.windows.net/c/x.ONNX.",
            "https://a.blob.core.windows.net/c/x.ON%00NX",
            "https://a.blob.core.windows.net/c/x.ONNX.sha256",
            "https://a.blob.core.windows.net/c/x.%C3%BCnnx",
            "https://a.blob.core.windows.net/c/x.ONNX%20.zip",
            "https://a.blob.core.windows.net/c/",
        ] {
            assert!(
                matches!(name(bad), Err(NameError::Platform(_))),
                "{bad}: {:?}",
                name(bad)
            );
        }
        let long = format!("https://a.blob.core.windows.net/c/x.{}", "A".repeat(65));
        assert!(name(&long).is_err());
    }

    #[test]
    fn platform_of_a_bare_zip_is_zip() {
        assert_eq!(platform_of("zip"), "zip");
        assert_eq!(platform_of("ONNX.ZIP"), "ONNX");
        assert_eq!(platform_of("ONNX"), "ONNX");
    }
}
