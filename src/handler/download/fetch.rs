//! Streaming a blob into a file, bounded.
//!
//! The size the server announces (`Content-Length`, the total of a
//! `Content-Range`) is checked against `max_size` before the first byte is
//! read, and the bytes received are counted against it as they arrive:
//! nothing is ever allocated from a number the server sent. The body goes
//! through a small bounded channel to one blocking thread that hashes
//! (SHA-256) and writes, and from it to another that computes the MD5 when
//! the service sent one, so receiving, hashing and writing overlap and at
//! most `2 * CHANNEL_CHUNKS` transport chunks (shared, not copied) plus the
//! write buffer are held per download (a few MiB), whatever the size.

use super::error::{DownloadError, io};
use super::files::hex;
use crate::blob::BlobStream;
use futures_util::StreamExt as _;
use md5::Digest as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Chunks in flight between the network and the writer thread (and between
/// it and the MD5 thread). A chunk is what the transport read at once (at
/// most its buffer, about 400 KiB).
const CHANNEL_CHUNKS: usize = 8;
/// The writer's buffer.
const WRITE_BUFFER: usize = 1 << 20;
/// Written data is handed to the disk every this many bytes, so that the
/// final `fsync` finds little left to do instead of the whole model.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Starts writing `len` bytes at `offset` of `file` to disk without waiting
/// (`sync_file_range`, Linux; not a durability guarantee, the final
/// `fsync` is). Errors are ignored: it is only an early start.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open descriptor; no memory is
    // passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    pub len: u64,
    pub sha256: String,
}

/// The size the answer announces, checked against `max`: the total of a
/// `Content-Range` (which must cover the whole blob) or `Content-Length`.
pub fn announced_size(
    blob: &BlobStream,
    max: bytesize::ByteSize,
) -> Result<Option<u64>, DownloadError> {
    let too_large = |size, how| DownloadError::TooLarge { size, how, max };
    if let Some(r) = blob.range {
        if r.total > max.as_u64() {
            return Err(too_large(r.total, "the total of its Content-Range"));
        }
        if r.first != 0 || r.last + 1 != r.total {
            return Err(DownloadError::Partial(r));
        }
        return Ok(Some(r.total));
    }
    match blob.content_length {
        Some(len) if len > max.as_u64() => Err(too_large(len, "its Content-Length")),
        other => Ok(other),
    }
}

/// Streams `blob` into `file` (at `path`), at most `max` bytes, and syncs
/// it. Checks the length against what was announced and the MD5 against
/// the service's.
pub async fn write_blob(
    blob: BlobStream,
    file: File,
    path: &Path,
    max: bytesize::ByteSize,
) -> Result<Written, DownloadError> {
    let expected = announced_size(&blob, max)?;
    let expected_md5 = blob.md5;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(CHANNEL_CHUNKS);
    // MD5 (only when the service sent one to check) on a thread of its
    // own, beside SHA-256 and the writes; the chunks are shared, not copied.
    let (md5_tx, md5_task) = match expected_md5 {
        Some(_) => {
            let (md5_tx, md5_rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(CHANNEL_CHUNKS);
            let task = tokio::task::spawn_blocking(move || {
                let mut md5 = md5::Md5::new();
                for chunk in md5_rx {
                    md5.update(&chunk);
                }
                <[u8; 16]>::from(md5.finalize())
            });
            (Some(md5_tx), Some(task))
        }
        None => (None, None),
    };
    let owned: PathBuf = path.to_owned();
    let writer = tokio::task::spawn_blocking(move || {
        let mut sha = sha2::Sha256::new();
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        let (mut buffered, mut flushed) = (0u64, 0u64);
        while let Some(chunk) = rx.blocking_recv() {
            if let Some(md5) = &md5_tx {
                // Fails only if that thread is gone, which it is not
                // before this sender is dropped.
                let _ = md5.send(chunk.clone());
            }
            sha.update(&chunk);
            out.write_all(&chunk).map_err(io("write", &owned))?;
            buffered += chunk.len() as u64;
            if buffered - flushed >= WRITEBACK_EVERY {
                out.flush().map_err(io("write", &owned))?;
                start_writeback(out.get_ref(), flushed, buffered - flushed);
                flushed = buffered;
            }
        }
        drop(md5_tx);
        let file = out
            .into_inner()
            .map_err(|e| io("write", &owned)(e.into_error()))?;
        file.sync_all().map_err(io("sync", &owned))?;
        Ok::<_, DownloadError>(hex(&sha.finalize()))
    });

    let mut written = 0u64;
    let mut body = blob.body;
    let mut writer_gone = false;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| DownloadError::Broken { written, source })?;
        written += chunk.len() as u64;
        if written > max.as_u64() {
            return Err(DownloadError::TooLarge {
                size: written,
                how: "bytes received so far",
                max,
            });
        }
        if let Some(expected) = expected
            && written > expected
        {
            return Err(DownloadError::Long { expected });
        }
        if tx.send(chunk).await.is_err() {
            // The writer failed; its error says why.
            writer_gone = true;
            break;
        }
    }
    drop(tx);
    let sha256 = writer
        .await
        .map_err(|e| io("write", path)(std::io::Error::other(e)))??;
    let md5 = match md5_task {
        Some(task) => Some(
            task.await
                .map_err(|e| io("hash", path)(std::io::Error::other(e)))?,
        ),
        None => None,
    };
    debug_assert!(!writer_gone, "a writer that stopped early returns an error");
    if let Some(expected) = expected
        && expected != written
    {
        return Err(DownloadError::Short { written, expected });
    }
    if let (Some(expected), Some(got)) = (expected_md5, md5)
        && expected != got
    {
        return Err(DownloadError::Md5Mismatch);
    }
    Ok(Written {
        len: written,
        sha256,
    })
}
