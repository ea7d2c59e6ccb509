//! [`DownloadHandler`]: one completed export → one stored model.
//!
//! Order of work for an export: decide whether and how its URL may be
//! fetched ([`super::trust`]) and its name ([`super::name`]); if the model
//! is already stored and matches its `.sha256`, done. Otherwise wait for a
//! download slot, stream the blob into a new random hidden file in `dir`
//! ([`super::fetch`]), check a zip ([`super::archive`]), unpack it on
//! request, write the side file and `.sha256`, and only then rename the
//! model (and its folder) into place; prune and switch the `current-…`
//! link last ([`super::stored`]). A partial file never has the final name,
//! and every file the handler writes is written safely against planted
//! symlinks ([`super::files`]).

use super::archive;
use super::config::DownloadConfig;
use super::error::{DownloadError, io};
use super::fetch::write_blob;
use super::files::{self, Folder, Removes};
use super::name::ModelName;
use super::place::{Place, place_of};
use super::stored::{self, BlobMeta, Meta, Origin};
use super::trust::{self, Sources};
use crate::blob::BlobSource;
use crate::event::grid::Data;
use crate::event::{Event, ExportStatus};
use crate::handler::types::{Delivery, Handler, HandlerError, StoredModel};
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use url::Url;
use uuid::Uuid;

pub struct DownloadHandler {
    config: DownloadConfig,
    /// `dir`, absolute, for the paths handed to later handlers.
    dir: PathBuf,
    sources: Sources,
    blobs: Arc<dyn BlobSource>,
    /// `max_downloads`.
    slots: Semaphore,
    /// One store at a time per file name in this process: a duplicate
    /// delivery waits and then finds the model stored.
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl DownloadHandler {
    pub fn new(config: &DownloadConfig, blobs: Arc<dyn BlobSource>) -> Result<Self, DownloadError> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| DownloadError::CreateDir(config.dir.clone(), e))?;
        let dir = std::path::absolute(&config.dir)
            .map_err(|e| DownloadError::CreateDir(config.dir.clone(), e))?;
        let endpoint = blobs.configured_endpoint();
        let sources = Sources::new(&config.container, &config.allowed_hosts, endpoint.as_ref())?;
        Ok(Self {
            config: config.clone(),
            dir,
            sources,
            blobs,
            slots: Semaphore::new(config.max_downloads),
            busy: Mutex::new(HashMap::new()),
        })
    }

    fn lock_for(&self, file: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut busy = self.busy.lock().expect("not poisoned");
        busy.retain(|_, m| Arc::strong_count(m) > 1);
        busy.entry(file.to_owned()).or_default().clone()
    }

    /// Stores the event's model or blob; `None` for events with nothing to
    /// download.
    pub async fn store(&self, d: &Delivery) -> Result<Option<StoredModel>, DownloadError> {
        let job = match &d.notification.event {
            Event::Export {
                project_id,
                iteration_id,
                status: ExportStatus::Completed,
                model_uri: Some(uri),
                ..
            } => Some(self.export_job(uri, *project_id, *iteration_id)?),
            // `blob_deleted` is not acted on: a stored copy stays.
            Event::Grid(g) => match &g.data {
                Data::BlobCreated(b) => self.blob_job(&BlobCreated {
                    url: &b.url,
                    container: &b.container,
                    blob: &b.blob,
                    etag: b.etag.as_deref(),
                    sequencer: b.sequencer.as_deref(),
                })?,
                _ => None,
            },
            _ => None,
        };
        let Some(job) = job else {
            tracing::debug!("Nothing to download for this event");
            return Ok(None);
        };
        self.run(job).await
    }

    /// The job of a completed export whose model is at `uri`.
    fn export_job(&self, uri: &str, project: Uuid, iteration: Uuid) -> Result<Job, DownloadError> {
        let url = Url::parse(uri).map_err(DownloadError::NotAUrl)?;
        let decision = self.sources.decide(&url)?;
        let name = ModelName::of(&url, project, iteration)?;
        let origin = if decision.in_container && name.backup_named {
            Origin::Container
        } else {
            Origin::Url
        };
        Ok(Job {
            url,
            name,
            origin,
            authority: decision.authority,
            project: Some(project),
            dirs: Vec::new(),
            blob: None,
        })
    }

    /// The job of a created blob; `None` for Custom Vision's permission
    /// test. Refused, before any request, when the blob is outside every
    /// configured container or its path cannot be stored safely.
    fn blob_job(&self, b: &BlobCreated<'_>) -> Result<Option<Job>, DownloadError> {
        let url = Url::parse(b.url).map_err(DownloadError::NotAUrl)?;
        let url = trust::blob_endpoint(&url);
        let at = self.sources.locate_blob(&url)?;
        if !same_name(b.container, &at.container) || !same_name(b.blob, &at.blob) {
            let shown = |c: &str, b: &str| {
                let text = format!("{c}/{b}");
                crate::limit::text(&crate::secret::escape_control(&text), 300).into_owned()
            };
            return Err(DownloadError::BlobMismatch {
                subject: shown(b.container, b.blob),
                url: shown(&at.container, &at.blob),
            });
        }
        // The path checks come first: `decide` also refuses `..`, but
        // without saying which rule of a stored path the blob breaks. Once
        // they passed, the blob is inside its container in `decide`'s sense
        // too, and `decide` checks the host and the scheme.
        Ok(Some(match place_of(&at.blob)? {
            Place::TestPermission => {
                tracing::info!("The blob is Custom Vision's permission test; nothing to store");
                return Ok(None);
            }
            Place::Backup { project, iteration } => Job {
                authority: self.sources.decide(&url)?.authority,
                name: ModelName::of(&url, project, iteration)?,
                url,
                origin: Origin::Container,
                project: Some(project),
                dirs: Vec::new(),
                blob: None,
            },
            Place::Path(path) => Job {
                authority: self.sources.decide(&url)?.authority,
                blob: Some(BlobMeta {
                    url: crate::secret::redact_url(url.as_str()),
                    etag: b.etag.map(|e| e.trim_matches('"').to_owned()),
                    sequencer: b.sequencer.map(str::to_owned),
                }),
                url,
                name: ModelName {
                    file: path.file,
                    rest: String::new(),
                    backup_named: false,
                },
                origin: Origin::Container,
                project: None,
                dirs: path.dirs,
            },
        }))
    }

    /// Stores the blob a `blob_created` event names; `None` when there is
    /// nothing to store.
    pub async fn store_blob(
        &self,
        b: &BlobCreated<'_>,
    ) -> Result<Option<StoredModel>, DownloadError> {
        match self.blob_job(b)? {
            Some(job) => self.run(job).await,
            None => Ok(None),
        }
    }

    /// One store at a time per file; done if it is stored already.
    async fn run(&self, job: Job) -> Result<Option<StoredModel>, DownloadError> {
        let lock = self.lock_for(&job.relative());
        let _one_at_a_time = lock.lock().await;
        let folder = self.folder(&job).await?;
        if let Some(model) = self.already_stored(&job, &folder).await? {
            return Ok(Some(model));
        }
        let _slot = self.slots.acquire().await.expect("never closed");
        match tokio::time::timeout(self.config.timeout, self.download(&job, &folder)).await {
            Ok(r) => r.map(Some).map_err(|e| shown(e, &folder)),
            Err(_) => Err(DownloadError::Timeout(self.config.timeout.into())),
        }
    }

    /// The folder the job's file goes into, opened without following a
    /// symlink (`dir` itself for models).
    async fn folder(&self, job: &Job) -> Result<Arc<Folder>, DownloadError> {
        if job.dirs.is_empty() {
            return Ok(Arc::new(Folder::top(&self.dir)));
        }
        let (dir, dirs) = (self.dir.clone(), job.dirs.clone());
        let opened = tokio::task::spawn_blocking(move || Folder::open(&dir, &dirs))
            .await
            .map_err(|e| io("open", &self.dir)(std::io::Error::other(e)))?;
        let shown = job.dirs.iter().fold(self.dir.clone(), |p, d| p.join(d));
        match opened {
            Ok(f) => Ok(Arc::new(f)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                Err(DownloadError::Clash {
                    url: crate::secret::redact_url(job.url.as_str()),
                    path: shown,
                    what: "a file or a symbolic link is there where its folder should be".into(),
                })
            }
            Err(e) => Err(io("create", &shown)(e)),
        }
    }

    /// The model, when it is stored, matches its `.sha256`, and came from
    /// a source at least as trusted as this one (a URL's copy does not
    /// stand in for the container's); for a blob stored at its path, when
    /// it holds the same write of the same blob (another blob's file there
    /// is refused). Unpacks it if that is missing, and sets a missing link
    /// when it is the newest model (the one rule of [`stored`]).
    async fn already_stored(
        &self,
        job: &Job,
        folder: &Arc<Folder>,
    ) -> Result<Option<StoredModel>, DownloadError> {
        let (j, f) = (job.clone(), folder.clone());
        let found = tokio::task::spawn_blocking(move || -> Result<Option<String>, DownloadError> {
            let (dir, file) = (&f.work, &j.name.file);
            let path = dir.join(file);
            let read = |e| shown(io("read", &path)(e), &f);
            if let Some(blob) = &j.blob {
                let there = match std::fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(read(e)),
                };
                let stored = stored::meta_of(dir, file).blob;
                let what = if there.is_dir() {
                    Some("a folder is there already".to_owned())
                } else if !there.is_file() {
                    Some("something other than a file (a symbolic link?) is there already".to_owned())
                } else {
                    match &stored {
                        Some(s) if s.url == blob.url => None,
                        Some(s) => Some(format!("the file of the blob {} is there already", s.url)),
                        None => Some(
                            "a file this handler did not store from a blob is there already"
                                .to_owned(),
                        ),
                    }
                };
                if let Some(what) = what {
                    return Err(DownloadError::Clash {
                        url: blob.url.clone(),
                        path: f.show(&path),
                        what,
                    });
                }
                let stored = stored.expect("checked above");
                let older = stored.is_newer_than(blob.sequencer.as_deref());
                if older {
                    tracing::info!(sequencer = ?blob.sequencer, stored = ?stored.sequencer, "The event is older than the blob stored");
                } else if blob.etag.is_some() && stored.etag != blob.etag {
                    return Ok(None);
                }
            }
            let Some(expected) =
                files::read_small(&dir.join(format!("{file}.sha256")), 4096).map_err(read)?
            else {
                return Ok(None);
            };
            let expected = String::from_utf8_lossy(&expected)
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            if j.origin == Origin::Container && stored::meta_of(dir, file).origin == Origin::Url {
                return Ok(None);
            }
            Ok(files::sha256_of(&path).map_err(read)?.filter(|got| *got == expected))
        })
        .await
        .map_err(|e| io("read", &self.dir)(std::io::Error::other(e)))??;
        let Some(sha256) = found else {
            return Ok(None);
        };
        let path = folder.shown.join(&job.name.file);
        tracing::info!(file = %path.display(), "The model is already downloaded");
        let (j, f, config) = (job.clone(), folder.clone(), self.config.clone());
        tokio::task::spawn_blocking(move || -> Result<(), DownloadError> {
            let (dir, name) = (&f.work, &j.name);
            let archive = j.is_archive(&dir.join(&name.file))?;
            let unpacked = dir.join(name.unpacked());
            if config.extract && archive && std::fs::symlink_metadata(&unpacked).is_err() {
                let tmp = archive::unpack(
                    &dir.join(&name.file),
                    dir,
                    &name.file,
                    config.max_size.as_u64(),
                )
                .map_err(DownloadError::archive)?;
                files::place_dir(&tmp, &unpacked).map_err(io("rename", &tmp))?;
            }
            if let Some(project) = j.project {
                let link = stored::link_name(project, name.platform());
                if config.link_current
                    && files::link_target(dir, &link).is_none()
                    && stored::is_newest(dir, project, &name.rest, &name.file)
                {
                    files::switch_link(dir, &link, &link_target(&config, name, archive))
                        .map_err(io("link", &dir.join(&link)))?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| io("write", &self.dir)(std::io::Error::other(e)))?
        .map_err(|e| shown(e, folder))?;
        Ok(Some(StoredModel { path, sha256 }))
    }

    async fn download(
        &self,
        job: &Job,
        folder: &Arc<Folder>,
    ) -> Result<StoredModel, DownloadError> {
        let partial = files::temp_path(&folder.work, &job.name.file, "partial");
        let file = files::create_new(&partial).map_err(io("create", &partial))?;
        let guard = Removes(Some(partial.clone()));
        tracing::info!(file = %job.relative(), "Downloading the model");
        let blob = self.blobs.open(&job.url, job.authority).await?;
        let last_modified = blob.last_modified.map(|t| t.unix_timestamp());
        let written = write_blob(blob, file, &partial, self.config.max_size).await?;

        let (j, f, config) = (job.clone(), folder.clone(), self.config.clone());
        let sha256 = written.sha256.clone();
        let finished = tokio::task::spawn_blocking(move || {
            finish(&f.work, &partial, &j, &config, last_modified, &sha256)
        });
        let path = finished
            .await
            .map_err(|e| io("write", &self.dir)(std::io::Error::other(e)))??;
        guard.disarm();
        let path = folder.show(&path);
        tracing::info!(file = %path.display(), bytes = written.len, sha256 = %written.sha256, "Model downloaded");
        Ok(StoredModel {
            path,
            sha256: written.sha256,
        })
    }
}

/// A `blob_created` event's blob, as the handler reads it.
#[derive(Debug, Clone, Copy)]
pub struct BlobCreated<'a> {
    pub url: &'a str,
    /// The container and the blob's path in it, as the event names them
    /// (from its subject): they must name the blob of `url`.
    pub container: &'a str,
    pub blob: &'a str,
    pub etag: Option<&'a str>,
    pub sequencer: Option<&'a str>,
}

/// Whether a name the event gives is the one decoded from its URL: as it
/// is, or percent-decoded (whether the subject encodes a backup name's
/// spaces is not documented; accept both).
fn same_name(event: &str, from_url: &str) -> bool {
    event == from_url
        || percent_encoding::percent_decode_str(event)
            .decode_utf8()
            .is_ok_and(|d| d == from_url)
}

/// What one store is about.
#[derive(Debug, Clone)]
struct Job {
    url: Url,
    name: ModelName,
    origin: Origin,
    authority: crate::blob::Authority,
    /// A model's project (`current-…`, `keep_last`); `None` for a blob
    /// stored at its path, which has neither.
    project: Option<Uuid>,
    /// The folders under `dir` the file is in (a blob stored at its path).
    dirs: Vec<String>,
    /// For a blob stored at its path: which blob and which write of it.
    blob: Option<BlobMeta>,
}

impl Job {
    /// The file's path relative to `dir`: one store at a time for each.
    fn relative(&self) -> String {
        let mut s: String = self.dirs.iter().map(|d| format!("{d}/")).collect();
        s.push_str(&self.name.file);
        s
    }

    /// Whether the file is checked (and unpacked) as a zip: a model when
    /// its name says so or its bytes look like one (exports are zips); a
    /// blob stored at its path only when its name ends in `.zip` (a `.pt`
    /// or `.keras` model is a zip inside, and is stored as it is).
    fn is_archive(&self, path: &Path) -> Result<bool, DownloadError> {
        if self.blob.is_some() {
            let f = &self.name.file;
            return Ok(f.len() > 4
                && f.is_char_boundary(f.len() - 4)
                && f[f.len() - 4..].eq_ignore_ascii_case(".zip"));
        }
        Ok(self.name.says_zip() || archive::looks_like_zip(path).map_err(io("read", path))?)
    }
}

/// `e` with a path under the folder's `/proc/self/fd/…` name shown as the
/// folder's own path.
fn shown(e: DownloadError, folder: &Folder) -> DownloadError {
    match e {
        DownloadError::Io { what, path, source } => DownloadError::Io {
            what,
            path: folder.show(&path),
            source,
        },
        e => e,
    }
}

/// What `current-…` points at: the unpacked folder, or the model.
fn link_target(config: &DownloadConfig, name: &ModelName, archive: bool) -> String {
    if config.extract && archive {
        name.unpacked()
    } else {
        name.file.clone()
    }
}

/// After a complete, checked download in `partial`: check and unpack an
/// archive, write the side file and `.sha256`, rename everything into
/// place, prune, switch the link (a model's only). Blocking.
fn finish(
    dir: &Path,
    partial: &Path,
    job: &Job,
    config: &DownloadConfig,
    last_modified: Option<i64>,
    sha256: &str,
) -> Result<PathBuf, DownloadError> {
    let name = &job.name;
    let max = config.max_size.as_u64();
    let archive = job.is_archive(partial)?;
    let mut unpacked = None;
    if archive {
        archive::check(partial, max).map_err(DownloadError::archive)?;
        if config.extract {
            let tmp =
                archive::unpack(partial, dir, &name.file, max).map_err(DownloadError::archive)?;
            unpacked = Some(Removes(Some(tmp)));
        }
    }
    stored::write_meta(
        dir,
        &name.file,
        Meta {
            origin: job.origin,
            last_modified,
            blob: job.blob.clone(),
        },
    )
    .map_err(io("write", &dir.join(&name.file)))?;
    let sha_name = format!("{}.sha256", name.file);
    files::write_file(
        dir,
        &sha_name,
        format!("{sha256}  {}\n", name.file).as_bytes(),
    )
    .map_err(io("write", &dir.join(&sha_name)))?;
    let final_path = dir.join(&name.file);
    std::fs::rename(partial, &final_path).map_err(io("rename", partial))?;
    if let Some(tmp) = unpacked {
        let target = dir.join(name.unpacked());
        let from = tmp.0.clone().expect("armed");
        files::place_dir(&from, &target).map_err(io("rename", &from))?;
        tmp.disarm();
    }
    files::sync_dir(dir);
    let Some(project) = job.project else {
        return Ok(final_path);
    };
    // The link first: pruning may remove the model it pointed at.
    if config.link_current && stored::is_newest(dir, project, &name.rest, &name.file) {
        let link = stored::link_name(project, name.platform());
        files::switch_link(dir, &link, &link_target(config, name, archive))
            .map_err(io("link", &dir.join(&link)))?;
    }
    if let Some(keep) = config.keep_last {
        for removed in stored::prune(dir, project, &name.rest, &name.file, keep as usize) {
            tracing::info!(file = %dir.join(&removed).display(), keep_last = keep, "Removed an older model");
        }
    }
    Ok(final_path)
}

fn handler_error(e: DownloadError) -> HandlerError {
    if e.is_permanent() {
        HandlerError::permanent(e)
    } else {
        HandlerError::new(e)
    }
}

#[async_trait]
impl Handler for DownloadHandler {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        self.store(d).await.map(|_| ()).map_err(handler_error)
    }

    fn stores_models(&self) -> bool {
        true
    }

    async fn store_model(&self, d: &Delivery) -> Result<Option<StoredModel>, HandlerError> {
        self.store(d).await.map_err(handler_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BlobError, BlobStream};
    use crate::config::{Config, HandlerConfig};

    /// Blobs in memory, by URL, with every `open` recorded: a stand-in
    /// for the blob service where the test is about what the handler asks
    /// for and writes (the Azurite tests cover the wire).
    #[derive(Default)]
    struct Memory {
        blobs: Mutex<HashMap<String, Vec<u8>>>,
        opened: Mutex<Vec<String>>,
    }

    impl Memory {
        fn put(&self, url: &str, bytes: &[u8]) {
            let url = Url::parse(url).unwrap().to_string();
            self.blobs.lock().unwrap().insert(url, bytes.to_vec());
        }
        fn opened(&self) -> Vec<String> {
            self.opened.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl BlobSource for Memory {
        fn configured_endpoint(&self) -> Option<Url> {
            None
        }
        async fn open(
            &self,
            url: &Url,
            _: crate::blob::Authority,
        ) -> Result<BlobStream, BlobError> {
            self.opened.lock().unwrap().push(url.to_string());
            let bytes = self
                .blobs
                .lock()
                .unwrap()
                .get(url.as_str())
                .cloned()
                .ok_or(BlobError::NotFound)?;
            Ok(BlobStream {
                content_length: Some(bytes.len() as u64),
                range: None,
                md5: None,
                last_modified: None,
                body: Box::pin(futures_util::stream::once(async move {
                    Ok(bytes::Bytes::from(bytes))
                })),
            })
        }
    }

    const A: &str = "https://acct.blob.core.windows.net";

    fn handler(dir: &Path, keys: &str) -> (DownloadHandler, Arc<Memory>) {
        let text = format!(
            "[queue]\nname = \"q-x\"\naccount = \"acct\"\n[[handlers]]\ntype = \"download\"\ndir = \"{}\"\ncontainer = [\"{A}/models\", \"{A}/other\"]\n{keys}\n",
            dir.display()
        );
        let Some(HandlerConfig::Download(c)) = Config::from_toml(&text)
            .unwrap()
            .handlers
            .into_iter()
            .next()
        else {
            panic!("a download table")
        };
        let blobs = Arc::new(Memory::default());
        (DownloadHandler::new(&c, blobs.clone()).unwrap(), blobs)
    }

    fn event<'a>(url: &'a str, container: &'a str, blob: &'a str) -> BlobCreated<'a> {
        BlobCreated {
            url,
            container,
            blob,
            etag: None,
            sequencer: None,
        }
    }

    #[tokio::test]
    async fn a_new_write_replaces_the_blob_and_an_older_or_repeated_event_fetches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (h, mem) = handler(dir.path(), "");
        let url = format!("{A}/models/run%201/model.onnx");
        let write = |etag, seq| BlobCreated {
            etag: Some(etag),
            sequencer: Some(seq),
            ..event(&url, "models", "run 1/model.onnx")
        };
        mem.put(&url, b"v1");
        let stored = h
            .store_blob(&write("\"0x1\"", "01"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.path, dir.path().join("run 1/model.onnx"));
        assert_eq!(std::fs::read(&stored.path).unwrap(), b"v1");
        // The same write again (a redelivery): nothing fetched.
        h.store_blob(&write("0x1", "01")).await.unwrap().unwrap();
        assert_eq!(mem.opened().len(), 1);
        // A new write: fetched, replaced.
        mem.put(&url, b"v2");
        h.store_blob(&write("0x2", "02")).await.unwrap().unwrap();
        assert_eq!(std::fs::read(&stored.path).unwrap(), b"v2");
        assert_eq!(mem.opened().len(), 2);
        // The first write's event, late: older than the copy, nothing.
        let late = h.store_blob(&write("0x1", "01")).await.unwrap().unwrap();
        assert_eq!(late.path, stored.path);
        assert_eq!(std::fs::read(&stored.path).unwrap(), b"v2");
        assert_eq!(mem.opened().len(), 2);
        let sha = std::fs::read_to_string(dir.path().join("run 1/model.onnx.sha256")).unwrap();
        assert_eq!(sha, format!("{}  model.onnx\n", late.sha256));
    }

    #[tokio::test]
    async fn two_blobs_mapping_to_one_file_are_not_stored_over_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let (h, mem) = handler(dir.path(), "");
        for (url, body) in [
            (format!("{A}/models/x/y.onnx"), b"models" as &[u8]),
            (format!("{A}/other/x/y.onnx"), b"other"),
            (format!("{A}/models/x"), b"file"),
            (format!("{A}/models/f"), b"file"),
            (format!("{A}/models/f/g"), b"under a file"),
        ] {
            mem.put(&url, body);
        }
        h.store_blob(&event(
            &format!("{A}/models/x/y.onnx"),
            "models",
            "x/y.onnx",
        ))
        .await
        .unwrap();
        h.store_blob(&event(&format!("{A}/models/f"), "models", "f"))
            .await
            .unwrap();
        for (url, container, blob, what) in [
            (
                "other/x/y.onnx",
                "other",
                "x/y.onnx",
                "the file of the blob",
            ),
            ("models/x", "models", "x", "a folder"),
            ("models/f/g", "models", "f/g", "where its folder should be"),
        ] {
            let url = format!("{A}/{url}");
            let e = h
                .store_blob(&event(&url, container, blob))
                .await
                .unwrap_err();
            assert!(e.is_permanent(), "{e}");
            let text = e.to_string();
            assert!(text.contains(what) && text.contains(&url), "{text}");
        }
        assert_eq!(
            std::fs::read(dir.path().join("x/y.onnx")).unwrap(),
            b"models"
        );
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"file");
        // Only the two stored were fetched.
        assert_eq!(mem.opened().len(), 2, "{:?}", mem.opened());
    }

    #[tokio::test]
    async fn the_subject_must_name_the_blob_of_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let (h, mem) = handler(dir.path(), "");
        let url = format!("{A}/models/a%20b.onnx");
        mem.put(&url, b"m");
        for blob in ["a b.onnx", "a%20b.onnx"] {
            h.store_blob(&event(&url, "models", blob)).await.unwrap();
        }
        for (container, blob) in [("models", "c.onnx"), ("other", "a b.onnx")] {
            let e = h
                .store_blob(&event(&url, container, blob))
                .await
                .unwrap_err();
            assert!(matches!(e, DownloadError::BlobMismatch { .. }), "{e}");
        }
        assert_eq!(mem.opened().len(), 1);
    }

    #[tokio::test]
    async fn a_backup_blob_is_the_exports_file_and_the_permission_test_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (h, mem) = handler(dir.path(), "link_current = true\nkeep_last = 1");
        let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
        let url = format!("{A}/models/{p}%20-%20{i}.ONNX");
        mem.put(&url, b"onnx");
        let by_event = h
            .store_blob(&event(&url, "models", &format!("{p} - {i}.ONNX")))
            .await
            .unwrap()
            .unwrap();
        let by_export = h
            .run(h.export_job(&url, p, i).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_event, by_export);
        assert_eq!(by_event.path, dir.path().join(format!("{p} - {i}.ONNX")));
        // The spaces as they are in the URL, `%20` in the subject: the
        // same file, found stored.
        let literal = format!("{A}/models/{p} - {i}.ONNX");
        let again = h
            .store_blob(&event(&literal, "models", &format!("{p}%20-%20{i}.ONNX")))
            .await
            .unwrap();
        assert_eq!(again, Some(by_event.clone()));
        assert_eq!(mem.opened().len(), 1);
        assert_eq!(
            files::link_target(dir.path(), &format!("current-{p}-ONNX")),
            Some(PathBuf::from(format!("{p} - {i}.ONNX")))
        );
        let probe = format!("{A}/models/CustomVision-TestPermission/x");
        mem.put(&probe, b"t");
        let none = h
            .store_blob(&event(&probe, "models", "CustomVision-TestPermission/x"))
            .await
            .unwrap();
        assert_eq!(none, None);
        assert_eq!(mem.opened().len(), 1);
        assert!(!dir.path().join("CustomVision-TestPermission").exists());
    }

    #[tokio::test]
    async fn a_zip_blob_is_checked_and_unpacked_beside_itself() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let (h, mem) = handler(dir.path(), "extract = true");
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("model.onnx", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"m").unwrap();
        let zip = w.finish().unwrap().into_inner();
        let url = format!("{A}/models/out/m.zip");
        mem.put(&url, &zip);
        h.store_blob(&event(&url, "models", "out/m.zip"))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("out/m.zip.unzipped/model.onnx")).unwrap(),
            b"m"
        );
        // Not a zip inside: refused, nothing left.
        let bad = format!("{A}/models/out/bad.zip");
        mem.put(&bad, b"not a zip");
        let e = h
            .store_blob(&event(&bad, "models", "out/bad.zip"))
            .await
            .unwrap_err();
        assert!(e.is_permanent(), "{e}");
        assert!(!dir.path().join("out/bad.zip").exists());
    }
}
