//! What a build leaves besides its log (issue 30): its files (artifacts) streamed in and
//! out in bounded memory, its test results (`tests.json`) and what it left
//! (`outputs.json`, written after the rest: a build that has it has all of it).

use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use kubeci_build::BuildRef;
use kubeci_results::{BuildOutputs, TestResults};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode};
use serde::Serialize;

use crate::archive::Archive;
use crate::error::{ArchiveError, Result};
use crate::upload::Upload;

/// A file's bytes read back, in the store's pieces; an error ends them.
pub type FileBytes = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

impl Archive {
    /// Writes one of a build's files at `path` (relative to its `workdir`) from `bytes` as
    /// they come, replacing any earlier copy; the object appears whole or not at all. More
    /// than `limit` bytes is [`ArchiveError::FileOverLimit`] and nothing is written.
    pub async fn put_file<S, E>(
        &self,
        build: BuildRef<'_>,
        path: &str,
        bytes: S,
        limit: u64,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let key = self.layout.artifact(build, path)?;
        self.put_streamed(key, bytes, limit).await
    }

    pub(crate) async fn put_streamed<S, E>(&self, key: String, bytes: S, limit: u64) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut bytes = std::pin::pin!(bytes);
        let mut upload = Upload::new(self.store.as_ref(), &key);
        let outcome: Result<()> = async {
            while let Some(piece) = bytes.next().await {
                let piece = piece.map_err(|source| ArchiveError::FileSource {
                    key: key.clone(),
                    source: Box::new(source),
                })?;
                if upload.bytes + piece.len() as u64 > limit {
                    return Err(ArchiveError::FileOverLimit {
                        key: key.clone(),
                        limit,
                    });
                }
                upload.push(&piece).await?;
            }
            Ok(())
        }
        .await;
        if let Err(error) = outcome {
            upload.abort().await;
            return Err(error);
        }
        upload.finish().await
    }

    /// One of a build's files: its size and its bytes, read as they are taken; `None`
    /// when the build left no file there.
    pub async fn file(&self, build: BuildRef<'_>, path: &str) -> Result<Option<(u64, FileBytes)>> {
        let key = self.layout.artifact(build, path)?;
        self.read_streamed(key).await
    }

    /// One of a build's test reports as its pod sent it; `None` when there is none.
    pub async fn report(
        &self,
        build: BuildRef<'_>,
        path: &str,
    ) -> Result<Option<(u64, FileBytes)>> {
        let key = self.layout.report(build, path)?;
        self.read_streamed(key).await
    }

    async fn read_streamed(&self, key: String) -> Result<Option<(u64, FileBytes)>> {
        let got = match self.store.get(&Path::from(key.as_str())).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(ArchiveError::Read { key, source }),
        };
        let size = got.meta.size;
        let pieces = got.into_stream().map(move |piece| {
            piece.map_err(|source| ArchiveError::Read {
                key: key.clone(),
                source,
            })
        });
        Ok(Some((size, Box::pin(pieces))))
    }

    /// A build's files of one kind (`dir`: `artifacts`, `reports`) as the store holds
    /// them: each path (relative to the build's `workdir`) and size, sorted by path, at
    /// most `at_most` (the rest are not listed).
    pub async fn list_files(
        &self,
        build: BuildRef<'_>,
        dir: &'static str,
        at_most: usize,
    ) -> Result<Vec<(String, u64)>> {
        let prefix = self.layout.files_dir(build, dir)?;
        let under = Path::from(prefix.as_str());
        let depth = under.parts().count();
        let mut listed = self.store.list(Some(&under));
        let mut files = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|source| ArchiveError::List {
                prefix: prefix.clone(),
                source,
            })?;
            let parts: Vec<String> = (meta.location.parts().skip(depth))
                .map(|part| {
                    let raw = part.as_ref().to_owned();
                    (percent_encoding::percent_decode_str(&raw).decode_utf8())
                        .map_or(raw.clone(), |decoded| decoded.into_owned())
                })
                .collect();
            // A staging file a kill left beside its object (`PATH#1`; a `#` in a name is
            // stored escaped) is not a file.
            if !meta.location.as_ref().contains('#') {
                files.push((parts.join("/"), meta.size));
            }
            if files.len() >= at_most {
                break;
            }
        }
        files.sort();
        Ok(files)
    }

    /// Writes what a build left: its test results (when it has any), then its outputs —
    /// the commit point, written once: `false` when the build's outputs were already
    /// there (nothing is written).
    pub async fn put_outputs(
        &self,
        build: BuildRef<'_>,
        tests: Option<&TestResults>,
        outputs: &BuildOutputs,
    ) -> Result<bool> {
        if self.outputs(build).await?.is_some() {
            return Ok(false);
        }
        if let Some(tests) = tests {
            self.put_json(&self.layout.tests(build)?, tests).await?;
        }
        let key = self.layout.outputs(build)?;
        let written = self.put_json_as(&key, outputs, PutMode::Create).await?;
        Ok(written.is_some())
    }

    /// What a build left; `None` when it left nothing (or not yet).
    pub async fn outputs(&self, build: BuildRef<'_>) -> Result<Option<BuildOutputs>> {
        let key = self.layout.outputs(build)?;
        let read = self.read_json(&key, "a build's outputs").await?;
        Ok(read.map(|(outputs, _)| outputs))
    }

    /// A build's test results; `None` when it has none.
    pub async fn tests(&self, build: BuildRef<'_>) -> Result<Option<TestResults>> {
        let key = self.layout.tests(build)?;
        let read = self.read_json(&key, "a build's test results").await?;
        Ok(read.map(|(tests, _)| tests))
    }

    /// Writes `value` as JSON at `key`, whole, replacing any earlier object.
    pub(crate) async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|source| ArchiveError::Encode {
            key: key.to_owned(),
            source,
        })?;
        self.store
            .put(&Path::from(key), bytes.into())
            .await
            .map_err(|source| ArchiveError::Write {
                key: key.to_owned(),
                source,
            })?;
        Ok(())
    }
}
