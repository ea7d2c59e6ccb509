//! Zip models: checked before they are stored, and unpacked on request.
//!
//! A stored zip must have a readable central directory, and no entry may
//! have an absolute path, a `..` (or `.`) component, a backslash, a drive
//! letter, a symlink type, or encryption. Unpacking writes into a new
//! private folder in `dir` (then moved into place in one rename by the
//! caller), counts the bytes actually written against `max_size` (a zip
//! bomb's declared sizes may lie), and gives every file mode 0644.
//!
//! Errors say whose fault they are ([`ArchiveError::is_permanent`]): the
//! bytes (a broken zip, an unsafe or colliding entry, a bomb), which no
//! retry changes, or the machine (a full disk, a quota, too many open
//! files, a failing device, an interrupted call), which can pass, so the
//! delivery is retried. Blocking calls: run them off the async threads.

use super::files::{Removes, create_new, temp_path};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Most entries accepted. Exports hold a handful to a few hundred; the zip
/// reader keeps every entry of the central directory in memory, so the
/// count is checked (from the end record, before that reader runs) to
/// bound it.
const MAX_ENTRIES: u64 = 10_000;
/// Largest central directory accepted, for the same reason.
const MAX_DIRECTORY: u64 = 16 << 20;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("it is not a readable zip ({0})")]
    Corrupt(&'static str),
    #[error("it is not a readable zip")]
    Unreadable(#[source] zip::result::ZipError),
    #[error(
        "the zip lists {0} entries or a central directory of {1} bytes, more than this handler reads ({MAX_ENTRIES} entries, 16 MiB)"
    )]
    TooManyEntries(u64, u64),
    #[error("entry `{0}` has an absolute path, `.` or `..`, a backslash or a drive letter")]
    UnsafePath(String),
    #[error("entry `{0}` is a symbolic link")]
    Symlink(String),
    #[error("entry `{0}` is encrypted")]
    Encrypted(String),
    #[error("the zip holds two entries named `{0}`")]
    Duplicate(String),
    #[error("the zip unpacks to {size} bytes or more, more than max_size ({max}) (a zip bomb?)")]
    TooLarge { size: u64, max: bytesize::ByteSize },
    #[error("entry `{0}` collides with another entry (a file where a folder is, or the reverse)")]
    Collision(String),
    #[error("entry `{0}` has a name the file system does not take (too long)")]
    BadName(String),
    /// Writing the unpacked files failed on this machine.
    #[error("cannot unpack into {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading the downloaded archive failed on this machine.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// Whether the archive's bytes make it impossible, so that no retry
    /// can help; false for the machine's I/O errors (a full disk, a quota,
    /// too many open files, a device error, an interrupted call...), which
    /// can pass.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, ArchiveError::Io { .. } | ArchiveError::Read { .. })
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |source| ArchiveError::Io { path, source }
}

/// Whether an error reading a file we wrote ourselves comes from its bytes:
/// they end early or hold nonsense (a seek past the end, a corrupt
/// stream). Anything else (EIO, EMFILE, ENFILE, EAGAIN, EINTR, ENOMEM...)
/// is the machine's.
fn from_the_bytes(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
    )
}

/// An error reading the archive at `path`, classified by its cause.
fn read_error(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |e| {
        if from_the_bytes(&e) {
            ArchiveError::Unreadable(e.into())
        } else {
            ArchiveError::Read { path, source: e }
        }
    }
}

/// A zip reader's error on the archive at `path`: its I/O errors
/// classified by cause, everything else the bytes'.
fn zip_error(path: &Path) -> impl FnOnce(zip::result::ZipError) -> ArchiveError {
    let path = path.to_owned();
    move |e| match e {
        zip::result::ZipError::Io(io) => read_error(&path)(io),
        other => ArchiveError::Unreadable(other),
    }
}

/// An error creating entry `name`'s file or folder at `path`: the entry's
/// fault when it collides with another entry or its name is too long for
/// the file system, the machine's otherwise (a full disk...).
fn entry_error(name: &str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let (name, path) = (shown(name), path.to_owned());
    move |e| match e.kind() {
        io::ErrorKind::AlreadyExists
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::IsADirectory => ArchiveError::Collision(name),
        io::ErrorKind::InvalidFilename => ArchiveError::BadName(name),
        _ => ArchiveError::Io { path, source: e },
    }
}

/// An entry name for a message: at most 200 characters.
fn shown(name: &str) -> String {
    name.chars().take(200).collect()
}

/// Whether the file starts like a zip (a local header or an empty zip's
/// end record). An error opening or reading it is the machine's and
/// returned: guessing "not a zip" would store an archive unchecked.
pub fn looks_like_zip(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 4];
    match File::open(path)?.read_exact(&mut magic) {
        Ok(()) => Ok(magic == *b"PK\x03\x04" || magic == *b"PK\x05\x06"),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}
fn u32_at(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as u64
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the entry count and directory size from every end-of-central-
/// directory record in the file's tail (and the ZIP64 record a locator
/// points to) and refuses any that is too large. Written by hand because
/// the zip crate offers no limit, and sizes its tables from these numbers.
fn check_directory_size(f: &mut File, path: &Path) -> Result<(), ArchiveError> {
    let len = f.seek(SeekFrom::End(0)).map_err(read_error(path))?;
    let tail_len = len.min(22 + 65_535);
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::Start(len - tail_len))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(read_error(path))?;
    let mut found = false;
    for at in (0..tail.len().saturating_sub(21)).rev() {
        if tail[at..at + 4] != *b"PK\x05\x06" {
            continue;
        }
        found = true;
        let (mut entries, mut size) = (u16_at(&tail, at + 10), u32_at(&tail, at + 12));
        if (entries == 0xFFFF || size == 0xFFFF_FFFF)
            && at >= 20
            && tail[at - 20..at - 16] == *b"PK\x06\x07"
        {
            let offset = u64_at(&tail, at - 20 + 8);
            let mut record = [0u8; 56];
            if offset.checked_add(56).is_none_or(|end| end > len) {
                return Err(ArchiveError::Corrupt("a broken ZIP64 end record"));
            }
            f.seek(SeekFrom::Start(offset))
                .and_then(|_| f.read_exact(&mut record))
                .map_err(read_error(path))?;
            if record[..4] != *b"PK\x06\x06" {
                return Err(ArchiveError::Corrupt("a broken ZIP64 end record"));
            }
            entries = u64_at(&record, 32);
            size = u64_at(&record, 40);
        }
        if entries > MAX_ENTRIES || size > MAX_DIRECTORY {
            return Err(ArchiveError::TooManyEntries(entries, size));
        }
    }
    if !found {
        return Err(ArchiveError::Corrupt("no end of central directory record"));
    }
    Ok(())
}

/// `name` as safe relative components; a trailing `/` (a folder) dropped.
fn components(name: &str) -> Result<Vec<&str>, ArchiveError> {
    let bad = || ArchiveError::UnsafePath(shown(name));
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    let parts: Vec<&str> = trimmed.split('/').collect();
    let drive = parts
        .first()
        .is_some_and(|p| p.len() == 2 && p.ends_with(':'));
    if trimmed.is_empty()
        || drive
        || name.contains('\\')
        || name.contains('\0')
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(bad());
    }
    Ok(parts)
}

/// What a checked archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub entries: usize,
    /// The sum of the sizes its entries declare.
    pub declared: u64,
}

fn open(path: &Path) -> Result<zip::ZipArchive<BufReader<File>>, ArchiveError> {
    let mut f = File::open(path).map_err(|source| ArchiveError::Read {
        path: path.to_owned(),
        source,
    })?;
    check_directory_size(&mut f, path)?;
    f.seek(SeekFrom::Start(0)).map_err(read_error(path))?;
    zip::ZipArchive::new(BufReader::new(f)).map_err(zip_error(path))
}

/// Checks the zip at `path` (see the module doc) and that the sizes its
/// entries declare add up to at most `max_size`.
pub fn check(path: &Path, max_size: u64) -> Result<Summary, ArchiveError> {
    let archive = open(path)?;
    let meta = archive.metadata();
    let mut declared = 0u64;
    for i in 0..meta.len() {
        let e = meta.entry(i).map_err(zip_error(path))?;
        let name = e.name().map_err(zip_error(path))?;
        components(&name)?;
        if e.is_symlink() {
            return Err(ArchiveError::Symlink(shown(&name)));
        }
        if e.encrypted() {
            return Err(ArchiveError::Encrypted(shown(&name)));
        }
        declared = declared.saturating_add(e.size());
    }
    if meta.has_duplicate_names() {
        return Err(ArchiveError::Duplicate(String::new()));
    }
    if declared > max_size {
        return Err(ArchiveError::TooLarge {
            size: declared,
            max: bytesize::ByteSize::b(max_size),
        });
    }
    Ok(Summary {
        entries: meta.len(),
        declared,
    })
}

/// Unpacks the (checked) zip at `path` into a new private folder in `dir`
/// and returns it; the caller moves it into place. Stops as soon as the
/// bytes written pass `max_size`.
pub fn unpack(path: &Path, dir: &Path, name: &str, max_size: u64) -> Result<PathBuf, ArchiveError> {
    check(path, max_size)?;
    let mut archive = open(path)?;
    let tmp = temp_path(dir, name, "unpack");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(io_at(&tmp))?;
    let guard = Removes(Some(tmp.clone()));
    let mut written = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_error(path))?;
        let entry_name = entry.name().map_err(zip_error(path))?.into_owned();
        let parts = components(&entry_name)?;
        let target = parts.iter().fold(tmp.clone(), |p, c| p.join(c));
        if entry.is_dir() {
            std::fs::create_dir_all(&target).map_err(entry_error(&entry_name, &target))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            // Only inside the private folder made above: no one else can
            // have put a symlink there.
            std::fs::create_dir_all(parent).map_err(entry_error(&entry_name, parent))?;
        }
        let mut out = create_new(&target).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                ArchiveError::Duplicate(shown(&entry_name))
            } else {
                entry_error(&entry_name, &target)(e)
            }
        })?;
        let room = max_size - written;
        let n = io::copy(&mut (&mut entry).take(room + 1), &mut out).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
                ArchiveError::Unreadable(e.into())
            } else {
                ArchiveError::Io {
                    path: target.clone(),
                    source: e,
                }
            }
        })?;
        if n > room {
            return Err(ArchiveError::TooLarge {
                size: written + n,
                max: bytesize::ByteSize::b(max_size),
            });
        }
        written += n;
    }
    // Readable by a model server running as another user, like the model.
    for entry in walk(&tmp).map_err(io_at(&tmp))? {
        let mode = if entry.1 { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry.0, std::fs::Permissions::from_mode(mode))
            .map_err(io_at(&entry.0))?;
    }
    guard.disarm();
    Ok(tmp)
}

/// Every path under `root` (root included) with whether it is a folder.
fn walk(root: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
    let mut out = vec![(root.to_owned(), true)];
    let mut i = 0;
    while i < out.len() {
        if out[i].1 {
            for e in std::fs::read_dir(&out[i].0)? {
                let e = e?;
                let is_dir = e.file_type()?.is_dir();
                out.push((e.path(), is_dir));
            }
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, body) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(body).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join("m.zip");
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn an_export_is_checked_and_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &zip_of(&[
                ("cvexport.manifest", b"{}"),
                ("labels.txt", b"cat\ndog\n"),
                ("model.onnx", &[7u8; 10_000]),
                ("python/predict.py", b"print(1)"),
            ]),
        );
        assert!(looks_like_zip(&p).unwrap());
        let s = check(&p, 1 << 20).unwrap();
        assert_eq!(s.entries, 4);
        let out = unpack(&p, dir.path(), "m.zip", 1 << 20).unwrap();
        assert_eq!(std::fs::read(out.join("model.onnx")).unwrap().len(), 10_000);
        assert_eq!(
            std::fs::read(out.join("python/predict.py")).unwrap(),
            b"print(1)"
        );
    }

    #[test]
    fn corrupt_escaping_and_oversized_zips_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), b"PK\x03\x04 this is not a zip at all");
        assert!(matches!(check(&p, 1 << 20), Err(ArchiveError::Corrupt(_))));
        let mut truncated = zip_of(&[("model.onnx", &[1u8; 1000])]);
        truncated.truncate(truncated.len() - 10);
        let p = write(dir.path(), &truncated);
        assert!(check(&p, 1 << 20).is_err());
        for name in ["../x", "/etc/x", "a/../../x", "a\\..\\x", "C:/x", "./x"] {
            let p = write(dir.path(), &zip_of(&[(name, b"x")]));
            assert!(
                matches!(check(&p, 1 << 20), Err(ArchiveError::UnsafePath(_))),
                "{name}: {:?}",
                check(&p, 1 << 20)
            );
        }
        let p = write(dir.path(), &zip_of(&[("big", &[0u8; 5000])]));
        assert!(matches!(
            check(&p, 4096),
            Err(ArchiveError::TooLarge { .. })
        ));
    }

    #[test]
    fn symlink_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        w.add_symlink("model.onnx", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        let p = write(dir.path(), &w.finish().unwrap().into_inner());
        assert!(matches!(check(&p, 1 << 20), Err(ArchiveError::Symlink(_))));
    }

    /// Issue 17, finding 2: every archive error counted as permanent, so a
    /// full disk while unpacking poisoned a healthy model. The machine's
    /// I/O errors can pass; only the bytes' are permanent.
    #[test]
    fn the_machines_io_errors_can_pass_and_only_the_bytes_are_permanent() {
        let p = Path::new("/m.zip");
        for errno in [
            libc::ENOSPC,
            libc::EDQUOT,
            libc::EMFILE,
            libc::ENFILE,
            libc::EIO,
            libc::EAGAIN,
            libc::EINTR,
        ] {
            let e = || io::Error::from_raw_os_error(errno);
            for got in [
                io_at(p)(e()),
                read_error(p)(e()),
                zip_error(p)(zip::result::ZipError::Io(e())),
                entry_error("model.onnx", p)(e()),
            ] {
                assert!(!got.is_permanent(), "errno {errno}: {got:?}");
            }
        }
        assert!(!io_at(p)(io::Error::from(io::ErrorKind::Interrupted)).is_permanent());
        for kind in [
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::InvalidData,
            io::ErrorKind::InvalidInput,
        ] {
            let got = zip_error(p)(zip::result::ZipError::Io(kind.into()));
            assert!(got.is_permanent(), "{kind:?}: {got:?}");
        }
        assert!(zip_error(p)(zip::result::ZipError::InvalidArchive("x".into())).is_permanent());
        for errno in [
            libc::EEXIST,
            libc::ENOTDIR,
            libc::EISDIR,
            libc::ENAMETOOLONG,
        ] {
            let got = entry_error("a/b", p)(io::Error::from_raw_os_error(errno));
            assert!(got.is_permanent(), "errno {errno}: {got:?}");
        }
    }

    #[test]
    fn a_file_and_a_folder_of_one_name_collide_and_are_permanent() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), &zip_of(&[("a", b"file"), ("a/b", b"inside")]));
        check(&p, 1 << 20).unwrap();
        let e = unpack(&p, dir.path(), "m.zip", 1 << 20).unwrap_err();
        assert!(matches!(e, ArchiveError::Collision(_)), "{e:?}");
        assert!(e.is_permanent());
        // The private folder went with the error.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("m.zip")]);
    }

    #[test]
    fn too_many_entries_are_refused_before_the_reader_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = zip_of(&[("a", b"x")]);
        // Claim 60,000 entries in the end record.
        let at = bytes.len() - 22;
        bytes[at + 8..at + 10].copy_from_slice(&60_000u16.to_le_bytes());
        bytes[at + 10..at + 12].copy_from_slice(&60_000u16.to_le_bytes());
        let p = write(dir.path(), &bytes);
        assert!(matches!(
            check(&p, 1 << 20),
            Err(ArchiveError::TooManyEntries(60_000, _))
        ));
    }
}
