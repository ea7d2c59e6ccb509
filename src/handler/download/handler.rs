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
use super::files::{self, Removes};
use super::name::ModelName;
use super::stored::{self, Meta, Origin};
use super::trust::Sources;
use crate::blob::BlobSource;
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

    /// Stores the export's model; `None` for events with nothing to
    /// download.
    pub async fn store(&self, d: &Delivery) -> Result<Option<StoredModel>, DownloadError> {
        let Event::Export {
            project_id,
            iteration_id,
            status: ExportStatus::Completed,
            model_uri: Some(uri),
            ..
        } = &d.notification.event
        else {
            tracing::debug!("Nothing to download for this event");
            return Ok(None);
        };
        let url = Url::parse(uri).map_err(DownloadError::NotAUrl)?;
        let decision = self.sources.decide(&url)?;
        let name = ModelName::of(&url, *project_id, *iteration_id)?;
        let origin = if decision.in_container && name.backup_named {
            Origin::Container
        } else {
            Origin::Url
        };
        let job = Job {
            url,
            project: *project_id,
            name,
            origin,
            authority: decision.authority,
        };
        let lock = self.lock_for(&job.name.file);
        let _one_at_a_time = lock.lock().await;
        if let Some(model) = self.already_stored(&job).await? {
            return Ok(Some(model));
        }
        let _slot = self.slots.acquire().await.expect("never closed");
        match tokio::time::timeout(self.config.timeout, self.download(&job)).await {
            Ok(r) => r.map(Some),
            Err(_) => Err(DownloadError::Timeout(self.config.timeout.into())),
        }
    }

    /// The model, when it is stored, matches its `.sha256`, and came from
    /// a source at least as trusted as this one (a URL's copy does not
    /// stand in for the container's). Unpacks it if that is missing, and
    /// sets a missing link when it is the newest model (the one rule of
    /// [`stored`]).
    async fn already_stored(&self, job: &Job) -> Result<Option<StoredModel>, DownloadError> {
        let dir = self.dir.clone();
        let file = job.name.file.clone();
        let origin = job.origin;
        let found = tokio::task::spawn_blocking(move || -> std::io::Result<Option<String>> {
            let path = dir.join(&file);
            let Some(expected) = files::read_small(&dir.join(format!("{file}.sha256")), 4096)?
            else {
                return Ok(None);
            };
            let expected = String::from_utf8_lossy(&expected)
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            if origin == Origin::Container && stored::meta_of(&dir, &file).origin == Origin::Url {
                return Ok(None);
            }
            Ok(files::sha256_of(&path)?.filter(|got| *got == expected))
        })
        .await
        .map_err(|e| io("read", &self.dir)(std::io::Error::other(e)))?
        .map_err(io("read", &self.dir.join(&job.name.file)))?;
        let Some(sha256) = found else {
            return Ok(None);
        };
        let path = self.dir.join(&job.name.file);
        tracing::info!(file = %path.display(), "The model is already downloaded");
        let (dir, name, config) = (self.dir.clone(), job.name.clone(), self.config.clone());
        let project = job.project;
        tokio::task::spawn_blocking(move || -> Result<(), DownloadError> {
            let archive = is_archive(&name, &dir.join(&name.file))?;
            let unpacked = dir.join(name.unpacked());
            if config.extract && archive && std::fs::symlink_metadata(&unpacked).is_err() {
                let tmp = archive::unpack(
                    &dir.join(&name.file),
                    &dir,
                    &name.file,
                    config.max_size.as_u64(),
                )
                .map_err(DownloadError::archive)?;
                files::place_dir(&tmp, &unpacked).map_err(io("rename", &tmp))?;
            }
            let link = stored::link_name(project, name.platform());
            if config.link_current
                && files::link_target(&dir, &link).is_none()
                && stored::is_newest(&dir, project, &name.rest, &name.file)
            {
                files::switch_link(&dir, &link, &link_target(&config, &name, archive))
                    .map_err(io("link", &dir.join(&link)))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| io("write", &self.dir)(std::io::Error::other(e)))??;
        Ok(Some(StoredModel { path, sha256 }))
    }

    async fn download(&self, job: &Job) -> Result<StoredModel, DownloadError> {
        let dir = &self.dir;
        let partial = files::temp_path(dir, &job.name.file, "partial");
        let file = files::create_new(&partial).map_err(io("create", &partial))?;
        let guard = Removes(Some(partial.clone()));
        tracing::info!(file = %job.name.file, "Downloading the model");
        let blob = self.blobs.open(&job.url, job.authority).await?;
        let last_modified = blob.last_modified.map(|t| t.unix_timestamp());
        let written = write_blob(blob, file, &partial, self.config.max_size).await?;

        let (dir, name, config) = (dir.clone(), job.name.clone(), self.config.clone());
        let (project, origin, sha256) = (job.project, job.origin, written.sha256.clone());
        let finished = tokio::task::spawn_blocking(move || {
            finish(
                &dir,
                &partial,
                &name,
                &config,
                project,
                origin,
                last_modified,
                &sha256,
            )
        });
        let path = finished
            .await
            .map_err(|e| io("write", &self.dir)(std::io::Error::other(e)))??;
        guard.disarm();
        tracing::info!(file = %path.display(), bytes = written.len, sha256 = %written.sha256, "Model downloaded");
        Ok(StoredModel {
            path,
            sha256: written.sha256,
        })
    }
}

/// What one store is about.
struct Job {
    url: Url,
    project: Uuid,
    name: ModelName,
    origin: Origin,
    authority: crate::blob::Authority,
}

fn is_archive(name: &ModelName, path: &Path) -> Result<bool, DownloadError> {
    Ok(name.says_zip() || archive::looks_like_zip(path).map_err(io("read", path))?)
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
/// place, prune, switch the link. Blocking.
#[allow(clippy::too_many_arguments)]
fn finish(
    dir: &Path,
    partial: &Path,
    name: &ModelName,
    config: &DownloadConfig,
    project: Uuid,
    origin: Origin,
    last_modified: Option<i64>,
    sha256: &str,
) -> Result<PathBuf, DownloadError> {
    let max = config.max_size.as_u64();
    let archive = is_archive(name, partial)?;
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
            origin,
            last_modified,
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
