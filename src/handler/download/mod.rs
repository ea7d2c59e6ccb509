//! `type = "download"`: keeps a local copy of every exported model.
//!
//! On `Export` + `ExportCompleted` the blob at `modelUri` is stored in
//! `dir` as `{projectId} - {iterationId}.{rest}`, `rest` keeping the
//! platform, flavor and archive extension of the blob name (`ONNX.zip`).
//! Files, lowest first: [`config`] (the `[[handlers]]` table and its
//! validation; below the handlers, with the configuration), [`name`] (the
//! stored name, pure), [`trust`] (which URLs are fetched and with whose
//! authority, pure), [`error`], [`files`] (writes no planted symlink can
//! redirect), [`fetch`] (the bounded stream into a file), [`archive`] (zip
//! checks and unpacking), [`stored`] (origins, pruning, `current-…` links)
//! and [`handler`] (the handler).

mod archive;
pub mod config;
mod error;
mod fetch;
mod files;
mod handler;
mod name;
mod place;
mod stored;
mod trust;

pub use config::DownloadConfig;
pub use error::DownloadError;
pub use handler::DownloadHandler;
