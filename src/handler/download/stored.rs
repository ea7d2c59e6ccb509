//! The models stored in `dir`: where each came from, which is newest,
//! pruning (`keep_last`) and the `current-…` links.
//!
//! Each model has a hidden side file `.{name}.json` recording its origin:
//! `container` (a backup blob inside a configured container, whose
//! contents only Custom Vision and the container's owners can write) or
//! `url` (any other URL a message named, with its own SAS). Models of one
//! origin only ever displace models of the same origin, so no message alone
//! can make `keep_last` delete a model that came from a configured
//! container. "Newest" is by the blob's `Last-Modified` (so re-delivering an
//! old export makes it no newer), then by the time it was stored. A model
//! without a side file (stored by an older version) counts as `container`.
//!
//! `current-{projectId}-{platform}` follows one rule across origins: the
//! newest model of the project and platform by that same order, whatever
//! its origin and whether its name says `.zip` (a backup blob is
//! `….ONNX`, a SAS URL's `….ONNX.zip`: one link). A message-named URL
//! with an old `Last-Modified` does not take it from a newer backup, and a
//! newer one does. Blocking calls.

use super::files::{mtime_ns, read_small, write_file};
use super::name::{ModelName, platform_of, split_backup_name};
use serde::{Deserialize, Serialize};
use std::path::Path;
use uuid::Uuid;

/// Where a stored model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A backup blob inside a configured container.
    Container,
    /// Any other URL (with its own SAS).
    Url,
}

/// The side file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub origin: Origin,
    /// The blob's `Last-Modified`, Unix seconds.
    pub last_modified: Option<i64>,
    /// For a blob a `blob_created` event had stored at its path: which
    /// blob it is (absent for models, so their side file is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobMeta>,
}

/// Which blob a file stored at its path holds, and which write of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// The blob's URL, without a query: only this blob's events may
    /// replace the file (another blob mapping to the same path is refused).
    pub url: String,
    /// The `eTag` of the event that stored it: an event with another one
    /// is a new write of the blob, downloaded again.
    pub etag: Option<String>,
    /// The event's `sequencer`: an event with a smaller one (same length,
    /// compared as strings, as Blob Storage documents) is older than the
    /// stored copy and downloads nothing.
    pub sequencer: Option<String>,
}

impl BlobMeta {
    /// Whether an event with `sequencer` is older than the write stored.
    pub fn is_newer_than(&self, sequencer: Option<&str>) -> bool {
        match (self.sequencer.as_deref(), sequencer) {
            (Some(stored), Some(event)) => stored.len() == event.len() && stored > event,
            _ => false,
        }
    }
}

fn meta_name(file: &str) -> String {
    format!(".{file}.json")
}

/// Writes the side file of model `file`.
pub fn write_meta(dir: &Path, file: &str, meta: Meta) -> std::io::Result<()> {
    let json = serde_json::to_vec(&meta).expect("serializable");
    write_file(dir, &meta_name(file), &json)
}

/// The side file of model `file` (a missing or unreadable one: a model
/// from a container, as the safe default for pruning).
pub fn meta_of(dir: &Path, file: &str) -> Meta {
    read_small(&dir.join(meta_name(file)), 16 * 1024)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Meta {
            origin: Origin::Container,
            last_modified: None,
            blob: None,
        })
}

/// A stored model of one project and platform.
#[derive(Debug, Clone)]
struct Stored {
    file: String,
    meta: Meta,
    /// (`Last-Modified` or stored time, stored time), ns.
    key: (i128, i128),
}

/// The regular files `{project} - {any iteration}.{r}` in `dir` whose `r`
/// passes `wanted`.
fn models_of(dir: &Path, project: Uuid, wanted: impl Fn(&str) -> bool) -> Vec<Stored> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let (p, _, r) = split_backup_name(&file)?;
            if p != project || !wanted(r) {
                return None;
            }
            let stored = mtime_ns(&e.path())?;
            let meta = meta_of(dir, &file);
            let modified = meta
                .last_modified
                .map_or(stored, |s| s as i128 * 1_000_000_000);
            Some(Stored {
                file,
                meta,
                key: (modified, stored),
            })
        })
        .collect()
}

/// Whether `file` is at least as new as every other stored model of its
/// project and platform, of any origin: whether `current-…` points at it.
pub fn is_newest(dir: &Path, project: Uuid, rest: &str, file: &str) -> bool {
    let platform = platform_of(rest);
    let all = models_of(dir, project, |r| platform_of(r) == platform);
    let Some(me) = all.iter().find(|s| s.file == file) else {
        return false;
    };
    all.iter().all(|s| s.key <= me.key)
}

/// Removes all but the newest `keep` models of `project` and `rest` that
/// have the origin of `just_stored`, never `just_stored` itself, each with
/// its `.sha256`, side file and unpacked folder. Returns the removed names.
pub fn prune(dir: &Path, project: Uuid, rest: &str, just_stored: &str, keep: usize) -> Vec<String> {
    let all = models_of(dir, project, |r| r == rest);
    let Some(origin) = all
        .iter()
        .find(|s| s.file == just_stored)
        .map(|s| s.meta.origin)
    else {
        return Vec::new();
    };
    let mut group: Vec<Stored> = all
        .into_iter()
        .filter(|s| s.meta.origin == origin)
        .collect();
    group.sort_by_key(|s| std::cmp::Reverse(s.key));
    let mut removed = Vec::new();
    for s in group.into_iter().skip(keep) {
        if s.file == just_stored {
            continue;
        }
        let name = ModelName {
            file: s.file.clone(),
            rest: rest.to_owned(),
            backup_named: false,
        };
        let _ = std::fs::remove_file(dir.join(&s.file));
        let _ = std::fs::remove_file(dir.join(format!("{}.sha256", s.file)));
        let _ = std::fs::remove_file(dir.join(meta_name(&s.file)));
        let unpacked = dir.join(name.unpacked());
        if std::fs::symlink_metadata(&unpacked).is_ok_and(|m| m.is_dir()) {
            // Does not follow symlinks inside the folder.
            let _ = std::fs::remove_dir_all(&unpacked);
        }
        removed.push(s.file);
    }
    removed
}

/// `current-{projectId}-{platform}`.
pub fn link_name(project: Uuid, platform: &str) -> String {
    format!("current-{project}-{platform}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, p: Uuid, rest: &str, origin: Origin, modified: Option<i64>) -> String {
        let file = format!("{p} - {}.{rest}", Uuid::new_v4());
        std::fs::write(dir.join(&file), b"m").unwrap();
        std::fs::write(dir.join(format!("{file}.sha256")), b"s").unwrap();
        write_meta(
            dir,
            &file,
            Meta {
                origin,
                last_modified: modified,
                blob: None,
            },
        )
        .unwrap();
        file
    }

    #[test]
    fn url_models_never_displace_container_models() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = Uuid::new_v4();
        let a = store(d, p, "ONNX", Origin::Container, Some(100));
        let b = store(d, p, "ONNX", Origin::Container, Some(200));
        let x = store(d, p, "ONNX", Origin::Url, Some(9_000));
        assert!(prune(d, p, "ONNX", &x, 2).is_empty());
        let y = store(d, p, "ONNX", Origin::Url, Some(9_001));
        let z = store(d, p, "ONNX", Origin::Url, Some(9_002));
        assert_eq!(prune(d, p, "ONNX", &z, 2), vec![x.clone()]);
        assert!(d.join(&a).exists() && d.join(&b).exists() && d.join(&y).exists());
        assert!(!d.join(format!("{x}.sha256")).exists());
        // `current` is one rule across origins: the newest, a URL's here.
        assert!(is_newest(d, p, "ONNX", &z) && !is_newest(d, p, "ONNX", &b));
        assert!(!is_newest(d, p, "ONNX", &a));
    }

    /// Issue 17, finding 8: with `keep_last = 1`, a message-named URL
    /// model with an old `Last-Modified` took `current-…` from a newer
    /// backup, because the newest was looked for within its origin (and
    /// its `.ONNX.zip` apart from the backup's `.ONNX`).
    #[test]
    fn current_is_the_newest_of_the_platform_across_origins_and_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = Uuid::new_v4();
        let backup = store(d, p, "ONNX", Origin::Container, Some(2_000));
        let old_url = store(d, p, "ONNX.zip", Origin::Url, Some(1_000));
        assert!(!is_newest(d, p, "ONNX.zip", &old_url));
        assert!(is_newest(d, p, "ONNX", &backup));
        let new_url = store(d, p, "ONNX.zip", Origin::Url, Some(3_000));
        assert!(is_newest(d, p, "ONNX.zip", &new_url));
        assert!(!is_newest(d, p, "ONNX", &backup));
        // Another platform is another link.
        let coreml = store(d, p, "CoreML.zip", Origin::Url, Some(1));
        assert!(is_newest(d, p, "CoreML.zip", &coreml));
    }

    #[test]
    fn an_old_export_stored_again_is_not_newest_and_not_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = Uuid::new_v4();
        let _new1 = store(d, p, "ONNX.zip", Origin::Container, Some(300));
        let _new2 = store(d, p, "ONNX.zip", Origin::Container, Some(200));
        let old = store(d, p, "ONNX.zip", Origin::Container, Some(100));
        assert!(prune(d, p, "ONNX.zip", &old, 2).is_empty());
        assert!(!is_newest(d, p, "ONNX.zip", &old));
        // Another platform is another group.
        let coreml = store(d, p, "CoreML.zip", Origin::Container, Some(1));
        assert!(prune(d, p, "CoreML.zip", &coreml, 1).is_empty());
        assert!(is_newest(d, p, "CoreML.zip", &coreml));
    }
}
