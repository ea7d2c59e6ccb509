//! Where the blob of a `blob_created` event is stored in `dir`. Pure.
//!
//! - A blob under `CustomVision-TestPermission/` (Custom Vision's check
//!   that it may write the container) is not stored.
//! - A Custom Vision backup, a blob whose name (its last path segment) is
//!   `{projectId} - {iterationId}.{platform}`, is stored under the name its
//!   `Export` message stores it under ([`super::name::ModelName`]), so the
//!   two notifications of one export store it once.
//! - Any other blob is stored at its path inside the container, under
//!   `dir`. Blob names may hold almost anything (`..`, `//`, a leading
//!   `/`, control characters, 1024 characters), so a path is refused
//!   unless every segment is a plain file name: not empty, not `.` or
//!   `..`, not hidden (a leading `.`: the handler's own side and temporary
//!   files are hidden), no backslash, no control character, at most
//!   [`MAX_SEGMENT`] bytes (room for the handler's `.sha256` and temporary
//!   names within the file system's 255), and not one of the names the
//!   handler writes beside a model (`….sha256`, `….unzipped`,
//!   `current-{projectId}-…` at the top). Refusals are permanent: no retry
//!   changes a blob's name.

use super::name::split_backup_name;
use uuid::Uuid;

/// Longest segment (file or folder name) stored, in bytes: the handler
/// writes `.{name}.{32 hex}.partial` beside it, and a file system takes
/// 255.
pub const MAX_SEGMENT: usize = 200;
/// Longest blob path stored, in bytes (Azure's own limit for a blob name).
pub const MAX_PATH: usize = 1024;
/// The folder Custom Vision writes its permission test blob into.
const TEST_PERMISSION: &str = "CustomVision-TestPermission";

/// What is done with a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Custom Vision's permission test: nothing is stored.
    TestPermission,
    /// A Custom Vision backup: stored as its `Export` message would store
    /// it.
    Backup { project: Uuid, iteration: Uuid },
    /// Any other blob: at this path under `dir`.
    Path(BlobPath),
}

/// A blob's path under `dir`, every segment checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPath {
    /// The folders, outermost first (empty for a blob at the top).
    pub dirs: Vec<String>,
    /// The file name.
    pub file: String,
}

/// Why a blob's path cannot be stored under `dir`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to store the blob `{path}` under dir: its path {why}; only plain relative paths are stored (a blob event for it can be left out with the handler's `events`)"
)]
pub struct PathError {
    /// The path, control characters escaped, cut to 300 bytes.
    pub path: String,
    pub why: &'static str,
}

/// What is done with the blob at `blob` (its path inside the container,
/// decoded).
pub fn place_of(blob: &str) -> Result<Place, PathError> {
    let refuse = |why| PathError {
        path: crate::limit::text(&crate::secret::escape_control(blob), 300).into_owned(),
        why,
    };
    if blob.is_empty() {
        return Err(refuse("is empty"));
    }
    if blob.len() > MAX_PATH {
        return Err(refuse("is longer than 1024 bytes"));
    }
    if blob.starts_with('/') {
        return Err(refuse("is absolute (it starts with `/`)"));
    }
    let mut segments: Vec<&str> = blob.split('/').collect();
    if segments[0].eq_ignore_ascii_case(TEST_PERMISSION) && segments.len() > 1 {
        return Ok(Place::TestPermission);
    }
    for s in &segments {
        if s.is_empty() {
            return Err(refuse("has an empty segment (`//` or a trailing `/`)"));
        }
        if *s == "." || *s == ".." {
            return Err(refuse("has a `.` or `..` segment"));
        }
        if s.chars().any(char::is_control) {
            return Err(refuse("has a control character (NUL, a line break...)"));
        }
        if s.contains('\\') {
            return Err(refuse("has a backslash"));
        }
        if s.starts_with('.') {
            return Err(refuse(
                "has a hidden segment (a leading `.`: the handler's own files are hidden)",
            ));
        }
        if s.len() > MAX_SEGMENT {
            return Err(refuse("has a segment longer than 200 bytes"));
        }
        if ends_with_ci(s, ".unzipped") {
            return Err(refuse(
                "has a segment ending in `.unzipped`, the name of an unpacked archive's folder",
            ));
        }
    }
    let file = segments.pop().expect("split yields one segment at least");
    if let Some((project, iteration, _)) = split_backup_name(file) {
        return Ok(Place::Backup { project, iteration });
    }
    if ends_with_ci(file, ".sha256") {
        return Err(refuse(
            "ends in `.sha256`, the name of the checksum file the handler writes beside each blob",
        ));
    }
    if segments.is_empty() && is_link_name(file) {
        return Err(refuse(
            "is `current-{projectId}-…`, the name of the handler's `link_current` links",
        ));
    }
    Ok(Place::Path(BlobPath {
        dirs: segments.into_iter().map(str::to_owned).collect(),
        file: file.to_owned(),
    }))
}

fn ends_with_ci(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.is_char_boundary(s.len() - suffix.len())
        && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// `current-{uuid}-…`, as [`super::stored::link_name`] makes them.
fn is_link_name(name: &str) -> bool {
    name.get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("current-"))
        && name
            .get(8..44)
            .is_some_and(|id| Uuid::parse_str(id).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c";
    const I: &str = "0f9e8d7c-6b5a-4c3d-8e1f-2a3b4c5d6e7f";

    fn path(dirs: &[&str], file: &str) -> Place {
        Place::Path(BlobPath {
            dirs: dirs.iter().map(|d| d.to_string()).collect(),
            file: file.into(),
        })
    }

    #[test]
    fn a_blob_is_stored_at_its_path_inside_the_container() {
        assert_eq!(place_of("model.onnx").unwrap(), path(&[], "model.onnx"));
        assert_eq!(
            place_of("automl/run 7/outputs/model.onnx").unwrap(),
            path(&["automl", "run 7", "outputs"], "model.onnx")
        );
        // Names that only look like the handler's are fine.
        for ok in [
            "current-model.onnx",
            "a/current-8a1c2c4e-5b57-4a8e-9f3c-1d2e3f4a5b6c-ONNX",
            "model.sha256.txt",
            "unzipped/x",
            "ünïcödé/モデル.onnx",
            "a..b",
        ] {
            assert!(matches!(place_of(ok), Ok(Place::Path(_))), "{ok}");
        }
    }

    #[test]
    fn a_backup_blob_is_stored_as_its_export_and_the_permission_test_not_at_all() {
        for name in [
            format!("{P} - {I}.ONNX"),
            format!("{} - {I}.TensorFlow.TensorFlowLite.zip", P.to_uppercase()),
            format!("nested/{P} - {I}.ONNX"),
        ] {
            assert_eq!(
                place_of(&name).unwrap(),
                Place::Backup {
                    project: P.parse().unwrap(),
                    iteration: I.parse().unwrap()
                },
                "{name}"
            );
        }
        for test in [
            "CustomVision-TestPermission/test.txt",
            "customvision-testpermission/0f9e8d7c",
            "CustomVision-TestPermission/a/../../x",
        ] {
            assert_eq!(place_of(test).unwrap(), Place::TestPermission, "{test}");
        }
        // A blob named like the folder is an ordinary blob.
        assert!(matches!(
            place_of("CustomVision-TestPermission"),
            Ok(Place::Path(_))
        ));
    }

    #[test]
    fn hostile_blob_paths_are_refused_with_the_reason() {
        let long_segment = "a".repeat(MAX_SEGMENT + 1);
        let long_path = format!("{}/x", "abcdefgh/".repeat(114));
        for (bad, why) in [
            ("", "is empty"),
            ("../x", "`..` segment"),
            ("a/../../x", "`..` segment"),
            ("./x", "`.` or `..`"),
            ("/etc/passwd", "is absolute"),
            ("a//b", "empty segment"),
            ("a/", "empty segment"),
            ("a\\..\\b", "backslash"),
            ("a/\0b", "control character"),
            ("a\nb", "control character"),
            ("x\u{1b}[31m", "control character"),
            ("a\u{85}b", "control character"),
            (".bashrc", "hidden segment"),
            ("a/.x.onnx.json", "hidden segment"),
            (&long_segment, "longer than 200 bytes"),
            (&long_path, "longer than 1024 bytes"),
            ("model.onnx.sha256", "ends in `.sha256`"),
            ("a/model.onnx.SHA256", "ends in `.sha256`"),
            ("model.zip.unzipped/x", "`.unzipped`"),
            ("m.Unzipped", "`.unzipped`"),
            (&format!("current-{P}-ONNX"), "`link_current` links"),
        ] {
            let e = place_of(bad).expect_err(bad);
            assert!(e.why.contains(why), "{bad:?}: {e}");
            assert!(!e.to_string().contains('\0'), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
            assert!(e.path.len() < 400, "{e}");
        }
        assert!(long_path.len() > MAX_PATH);
        // A segment of exactly MAX_SEGMENT bytes is fine.
        assert!(place_of(&"b".repeat(MAX_SEGMENT)).is_ok());
    }
}
