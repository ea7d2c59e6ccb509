//! [`AzureContainer`]: looking into one blob container with the daemon's
//! credential, key or SAS; what `setup` needs to see the test blob Custom
//! Vision writes, and `check` to see the backup container exists.
//!
//! Clients are made by [`super::Connector::container`]. Listing reads one
//! page of at most 100 names: the callers look for a few blobs under a
//! prefix, never for a whole container.

use azure_storage_blob::BlobContainerClient;
use azure_storage_blob::models::BlobContainerClientListBlobsOptions;
use futures_util::TryStreamExt as _;

/// Why a container could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("the container does not exist")]
    NotFound,
    #[error(
        "access denied ({code}); the identity needs 'Storage Blob Data Reader' (or Contributor) on the container"
    )]
    Forbidden { code: String },
    /// Another answer (its body is not kept: XML of any length).
    #[error("HTTP {status}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status { status: u16, code: Option<String> },
    /// No answer, or one the client could not read: the SDK's error.
    #[error(transparent)]
    Client(azure_core::Error),
}

/// One blob container.
pub struct AzureContainer {
    client: BlobContainerClient,
}

impl AzureContainer {
    pub(super) fn new(client: BlobContainerClient) -> Self {
        Self { client }
    }

    fn classify(e: azure_core::Error) -> ContainerError {
        match e.kind() {
            azure_core::error::ErrorKind::HttpResponse {
                status, error_code, ..
            } => match u16::from(*status) {
                404 => ContainerError::NotFound,
                403 => ContainerError::Forbidden {
                    code: error_code.clone().unwrap_or_else(|| "HTTP 403".into()),
                },
                status => ContainerError::Status {
                    status,
                    code: error_code.clone(),
                },
            },
            _ => ContainerError::Client(e),
        }
    }

    /// Names of blobs under `prefix` (the first 100).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ContainerError> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(prefix.to_owned()),
            maxresults: Some(100),
            ..Default::default()
        };
        let mut pages = self
            .client
            .list_blobs(Some(options))
            .map_err(Self::classify)?
            .into_pages();
        let Some(page) = pages.try_next().await.map_err(Self::classify)? else {
            return Ok(Vec::new());
        };
        let page = page.into_model().map_err(Self::classify)?;
        Ok(page.blob_items.into_iter().filter_map(|b| b.name).collect())
    }

    /// Creates the container unless it exists.
    pub async fn create_if_missing(&self) -> Result<(), ContainerError> {
        match self.client.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status().map(u16::from) == Some(409) => Ok(()),
            Err(e) => Err(Self::classify(e)),
        }
    }
}
