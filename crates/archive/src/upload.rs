//! One object written as its bytes stream in: whole or not at all, holding about one
//! [`PART_SIZE`] whatever its length. Logs and a build's files are written through it.

use bytes::BytesMut;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt};

use crate::error::{ArchiveError, Result};

/// The size of each part of a multipart upload (S3's smallest) and so the most of an
/// object held before it is sent: an object below it is written with one request. Each
/// part is sent before the next fills, from one buffer reused for the whole object.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// An object being written: [`Upload::push`] its bytes, then [`Upload::finish`] it, or
/// [`Upload::abort`] it (nothing is written).
pub(crate) struct Upload<'a> {
    store: &'a dyn ObjectStore,
    key: &'a str,
    path: Path,
    /// One buffer for the whole object: each part is sent from it and waited for, then its
    /// room is taken back (`reserve` reclaims it once the part's bytes are dropped), so the
    /// same allocation holds every part whichever thread runs this.
    part: BytesMut,
    started: Option<Box<dyn MultipartUpload>>,
    pub(crate) bytes: u64,
}

impl<'a> Upload<'a> {
    pub(crate) fn new(store: &'a dyn ObjectStore, key: &'a str) -> Self {
        Upload {
            store,
            key,
            path: Path::from(key),
            part: BytesMut::new(),
            started: None,
            bytes: 0,
        }
    }

    fn write_error(&self, source: object_store::Error) -> ArchiveError {
        ArchiveError::Write {
            key: self.key.to_owned(),
            source,
        }
    }

    /// Adds `bytes`, sending a part once one is full.
    pub(crate) async fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.bytes += bytes.len() as u64;
        self.part.extend_from_slice(bytes);
        while self.part.len() >= PART_SIZE {
            if self.started.is_none() {
                let started = self.store.put_multipart(&self.path).await;
                self.started = Some(started.map_err(|e| self.write_error(e))?);
            }
            let sent = self.part.split_to(PART_SIZE).freeze();
            let writer = self.started.as_mut().expect("started above");
            let put = writer.put_part(sent.into()).await;
            put.map_err(|e| self.write_error(e))?;
            self.part.reserve(PART_SIZE);
        }
        Ok(())
    }

    /// Writes the object: with one request when it is below a part, else by completing
    /// the multipart upload (aborted if that fails).
    pub(crate) async fn finish(mut self) -> Result<u64> {
        let Some(mut writer) = self.started.take() else {
            let whole = std::mem::take(&mut self.part).freeze();
            let put = self.store.put(&self.path, whole.into()).await;
            put.map_err(|e| self.write_error(e))?;
            return Ok(self.bytes);
        };
        let rest = std::mem::take(&mut self.part);
        let finished = async {
            if !rest.is_empty() {
                writer.put_part(rest.freeze().into()).await?;
            }
            writer.complete().await
        };
        if let Err(source) = finished.await {
            let _ = writer.abort().await;
            return Err(self.write_error(source));
        }
        Ok(self.bytes)
    }

    /// Gives the object up: nothing of it is visible. Best effort: an upload left behind
    /// is never visible, and a bucket's lifecycle rule removes its parts
    /// (docs/archive.md).
    pub(crate) async fn abort(mut self) {
        if let Some(mut writer) = self.started.take() {
            let _ = writer.abort().await;
        }
    }
}
