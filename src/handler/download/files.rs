//! File operations in `dir` that no planted symlink can redirect.
//!
//! Everything the handler writes is first created under a random hidden
//! name with `O_CREAT | O_EXCL | O_NOFOLLOW` (an existing name, a symlink
//! included, makes the call fail instead of being followed) and then
//! renamed onto its final name, which replaces whatever is there (a symlink
//! itself, never its target). Files are read with `O_NOFOLLOW`, so a
//! symlink at a name the handler reads counts as absent. Blocking calls:
//! run them off the async threads.

use sha2::Digest as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A random hidden name in `dir` for a temporary copy of `name`.
pub fn temp_path(dir: &Path, name: &str, suffix: &str) -> PathBuf {
    dir.join(format!(
        ".{name}.{}.{suffix}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Creates a new file at `path`, failing if anything (a symlink too)
/// is there.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens a regular file for reading without following a symlink; `None`
/// when nothing, a symlink or something other than a file is there.
pub fn open_regular(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) if f.metadata()?.is_file() => Ok(Some(f)),
        Ok(_) => Ok(None),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ELOOP)
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads a small regular file (at most `limit` bytes), as
/// [`open_regular`]; `None` when absent or larger.
pub fn read_small(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let Some(f) = open_regular(path)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}

/// SHA-256 (hex) of the regular file at `path`; `None` when absent.
pub fn sha256_of(path: &Path) -> io::Result<Option<String>> {
    let Some(mut f) = open_regular(path)? else {
        return Ok(None);
    };
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(hex(&hasher.finalize())))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Writes `bytes` to `dir/name` through a new random temporary file and a
/// rename.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(dir, name, "tmp");
    let guard = Removes(Some(tmp.clone()));
    let mut f = create_new(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    guard.disarm();
    Ok(())
}

/// Points the symlink `dir/name` at `target` (relative to `dir`): a new
/// link under a random name, renamed over the old one, so a reader sees
/// the old target or the new one and never no link.
pub fn switch_link(dir: &Path, name: &str, target: &str) -> io::Result<()> {
    let tmp = temp_path(dir, name, "link");
    std::os::unix::fs::symlink(target, &tmp)?;
    let guard = Removes(Some(tmp.clone()));
    std::fs::rename(&tmp, dir.join(name))?;
    guard.disarm();
    Ok(())
}

/// Where the symlink `dir/name` points; `None` when it is not a symlink.
pub fn link_target(dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_link(dir.join(name)).ok()
}

/// Puts the directory `tmp` at `target` in one step: renamed there, or
/// exchanged with a directory already there (which is then removed), so a
/// reader never sees a half-filled folder. A symlink or file at `target`
/// is removed first, never followed.
pub fn place_dir(tmp: &Path, target: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::rename(tmp, target),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => {
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                tmp,
                nix::fcntl::AT_FDCWD,
                target,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(io::Error::from)?;
            // `tmp` now holds the old folder.
            std::fs::remove_dir_all(tmp)
        }
        Ok(_) => {
            std::fs::remove_file(target)?;
            std::fs::rename(tmp, target)
        }
    }
}

/// A folder under `dir` that a blob stored at its path goes into, held
/// open: [`Folder::work`] names it through `/proc/self/fd`, so every later
/// call reaches this very folder, whatever is renamed or linked in `dir`
/// meanwhile; [`Folder::shown`] is its ordinary path, for messages and the
/// path handed to hooks.
pub struct Folder {
    /// `/proc/self/fd/{n}` (or `dir` itself for no subfolder).
    pub work: PathBuf,
    pub shown: PathBuf,
    /// Keeps `work` valid.
    _fd: Option<std::os::fd::OwnedFd>,
}

impl Folder {
    /// `dir` itself.
    pub fn top(dir: &Path) -> Self {
        Self {
            work: dir.to_owned(),
            shown: dir.to_owned(),
            _fd: None,
        }
    }

    /// The folder `dirs` under `dir`, created (mode 0755) where missing,
    /// following no symlink on the way: each step opens the next name with
    /// `O_NOFOLLOW | O_DIRECTORY` relative to the folder before it, so a
    /// symlink or a file where a folder should be fails the call (`ELOOP`,
    /// `ENOTDIR`) instead of leading out of `dir`. Why not a crate:
    /// `cap-std` would do it too, but `nix` (already here) has the calls.
    pub fn open(dir: &Path, dirs: &[String]) -> io::Result<Self> {
        use nix::fcntl::{OFlag, openat};
        use nix::sys::stat::{Mode, mkdirat};
        if dirs.is_empty() {
            return Ok(Self::top(dir));
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut fd = nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        for name in dirs {
            let name = Path::new(name);
            fd = match openat(&fd, name, flags, Mode::empty()) {
                Ok(next) => next,
                Err(nix::errno::Errno::ENOENT) => {
                    match mkdirat(&fd, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    openat(&fd, name, flags, Mode::empty())?
                }
                Err(e) => return Err(e.into()),
            };
        }
        use std::os::fd::AsRawFd as _;
        Ok(Self {
            work: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            shown: dirs.iter().fold(dir.to_owned(), |p, d| p.join(d)),
            _fd: Some(fd),
        })
    }

    /// `path` (under [`Folder::work`]) as [`Folder::shown`] names it.
    pub fn show(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.work) {
            Ok(rest) => self.shown.join(rest),
            Err(_) => path.to_owned(),
        }
    }
}

/// Syncs the directory itself, so renames in it survive a crash.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Modification time of a regular file, in ns since the epoch (without
/// following a symlink).
pub fn mtime_ns(path: &Path) -> Option<i128> {
    let m = std::fs::symlink_metadata(path).ok()?;
    m.is_file()
        .then(|| m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128)
}

/// Removes a file (or, for a directory, a directory tree) on drop unless
/// disarmed: covers errors and the handler being dropped at shutdown.
pub struct Removes(pub Option<PathBuf>);

impl Removes {
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Removes {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::remove_dir_all(&p);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(&p);
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subfolder_is_reached_through_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let d = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let f = Folder::open(dir.path(), &d(&["a", "b"])).unwrap();
        assert_eq!(f.shown, dir.path().join("a/b"));
        write_file(&f.work, "m.onnx", b"m").unwrap();
        assert_eq!(std::fs::read(dir.path().join("a/b/m.onnx")).unwrap(), b"m");
        assert_eq!(
            f.show(&f.work.join("m.onnx")),
            dir.path().join("a/b/m.onnx")
        );
        // Renaming the folder away after it was opened: writes follow the
        // folder opened, never a link planted at its old name.
        std::fs::rename(dir.path().join("a"), dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a")).unwrap();
        write_file(&f.work, "n.onnx", b"n").unwrap();
        assert!(dir.path().join("moved/b/n.onnx").exists());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        // A planted link or a file where a folder should be fails.
        for names in [&["a", "b"][..], &["moved", "b", "m.onnx", "c"][..]] {
            let e = Folder::open(dir.path(), &d(names)).err().expect("refused");
            assert!(
                matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)),
                "{names:?}: {e}"
            );
        }
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn nothing_follows_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = dir.path().join("x");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        // Creating over it fails; reading through it sees nothing.
        assert!(create_new(&planted).is_err());
        assert!(open_regular(&planted).unwrap().is_none());
        assert_eq!(sha256_of(&planted).unwrap(), None);
        // Writing `x` replaces the link itself.
        write_file(dir.path(), "x", b"new").unwrap();
        assert!(!std::fs::symlink_metadata(&planted).unwrap().is_symlink());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A link switch replaces a link, never its target's contents.
        std::os::unix::fs::symlink(&victim, dir.path().join("current")).unwrap();
        switch_link(dir.path(), "current", "x").unwrap();
        assert_eq!(link_target(dir.path(), "current").unwrap(), Path::new("x"));
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A folder placed over a planted link replaces the link.
        let tmp = dir.path().join(".t");
        std::fs::create_dir(&tmp).unwrap();
        std::fs::write(tmp.join("model.onnx"), b"m").unwrap();
        let target = dir.path().join("unpacked");
        std::os::unix::fs::symlink(outside.path(), &target).unwrap();
        place_dir(&tmp, &target).unwrap();
        assert!(std::fs::symlink_metadata(&target).unwrap().is_dir());
        assert!(!outside.path().join("model.onnx").exists());
        // And over an existing folder, by exchange.
        std::fs::create_dir(&tmp).unwrap();
        std::fs::write(tmp.join("model.onnx"), b"m2").unwrap();
        place_dir(&tmp, &target).unwrap();
        assert_eq!(std::fs::read(target.join("model.onnx")).unwrap(), b"m2");
        assert!(!tmp.exists());
    }
}
