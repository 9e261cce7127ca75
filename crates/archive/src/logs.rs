//! A step's log: written as it streams in (one object, whole or not at all), read back as
//! a stream of lines with range reads.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use futures_core::Stream;
use futures_util::StreamExt;
use kubeci_build::BuildRef;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt};

use crate::archive::Archive;
use crate::error::{ArchiveError, Result};
use crate::logformat::{decode, encode, LogLine, MAX_LINE};

/// The size of each part of a log's multipart upload (S3's smallest) and so the most of a
/// log held before it is sent: a log below it is written with one request. Each part is
/// sent before the next fills, from one buffer reused for the whole log, so writing holds
/// about one part.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// The size of each range read of a log.
pub const READ_PIECE: u64 = 256 * 1024;

/// What `put_log` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogWritten {
    pub lines: u64,
    pub bytes: u64,
}

/// A line read back, with where the next line starts (pass it as `from` to go on later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedLine {
    pub line: LogLine,
    pub next: u64,
}

/// A log read back: its lines in order, then the end (or one error, then the end).
pub type LogLines = Pin<Box<dyn Stream<Item = Result<ArchivedLine>> + Send>>;

impl Archive {
    /// Writes a step's log from `lines` as they come, replacing any earlier copy. The
    /// object appears whole or not at all: when `lines` fails, a line cannot be stored,
    /// or the store fails, nothing is written (the upload is aborted) and the error says
    /// why. Memory stays within about one [`PART_SIZE`] whatever the log's length.
    pub async fn put_log<L, E>(
        &self,
        build: BuildRef<'_>,
        step: &str,
        lines: L,
    ) -> Result<LogWritten>
    where
        L: Stream<Item = std::result::Result<LogLine, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let key = self.layout.log(build, step)?;
        let path = Path::from(key.as_str());
        let mut lines = std::pin::pin!(lines);
        let write_error = |source| ArchiveError::Write {
            key: key.clone(),
            source,
        };
        // One buffer for the whole log: each part is sent from it and waited for, then its
        // room is taken back (`reserve` reclaims it once the part's bytes are dropped), so
        // the same allocation holds every part whichever thread runs this.
        let mut part = BytesMut::new();
        let mut encoded = Vec::new();
        let mut upload: Option<Box<dyn MultipartUpload>> = None;
        let mut written = LogWritten { lines: 0, bytes: 0 };
        let outcome: Result<()> = async {
            while let Some(line) = lines.next().await {
                let line = line.map_err(|source| ArchiveError::LogSource {
                    key: key.clone(),
                    source: Box::new(source),
                })?;
                written.lines += 1;
                encoded.clear();
                encode(&line, &mut encoded).map_err(|problem| ArchiveError::BadLine {
                    key: key.clone(),
                    line: written.lines,
                    problem,
                })?;
                written.bytes += encoded.len() as u64;
                part.extend_from_slice(&encoded);
                if part.len() < PART_SIZE {
                    continue;
                }
                let writer = match &mut upload {
                    Some(writer) => writer,
                    None => {
                        let started = self.store.put_multipart(&path).await;
                        upload.insert(started.map_err(write_error)?)
                    }
                };
                let sent = part.split_to(PART_SIZE).freeze();
                writer.put_part(sent.into()).await.map_err(write_error)?;
                part.reserve(PART_SIZE);
            }
            Ok(())
        }
        .await;
        match (outcome, upload) {
            (Err(error), Some(mut writer)) => {
                // Best effort: an upload left behind is never visible, and a bucket's
                // lifecycle rule removes its parts (docs/archive.md).
                let _ = writer.abort().await;
                Err(error)
            }
            (Err(error), None) => Err(error),
            (Ok(()), None) => {
                let whole = part.freeze();
                self.store
                    .put(&path, whole.into())
                    .await
                    .map_err(write_error)?;
                Ok(written)
            }
            (Ok(()), Some(mut writer)) => {
                let finished = async {
                    if !part.is_empty() {
                        writer.put_part(part.freeze().into()).await?;
                    }
                    writer.complete().await
                };
                if let Err(source) = finished.await {
                    let _ = writer.abort().await;
                    return Err(write_error(source));
                }
                Ok(written)
            }
        }
    }

    /// A step's log from byte `from` (0, or a line's `next`), read in pieces of
    /// [`READ_PIECE`]; `None` when the step has no archived log.
    pub async fn log(
        &self,
        build: BuildRef<'_>,
        step: &str,
        from: u64,
    ) -> Result<Option<LogLines>> {
        let key = self.layout.log(build, step)?;
        let path = Path::from(key.as_str());
        let read_error = |source| ArchiveError::Read {
            key: key.clone(),
            source,
        };
        let size = match self.store.head(&path).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(read_error(source)),
        };
        let bad_offset = |problem: &str| ArchiveError::BadOffset {
            key: key.clone(),
            from,
            problem: problem.to_owned(),
        };
        if from > size {
            return Err(bad_offset("the log is shorter"));
        }
        if from > 0 {
            let before = self.store.get_range(&path, from - 1..from).await;
            if before.map_err(read_error)?.as_ref() != b"\n" {
                return Err(bad_offset("no line starts there"));
            }
        }
        let reader = Reader {
            store: self.store.clone(),
            path,
            key,
            offset: from,
            size,
            carry: Vec::new(),
            ready: VecDeque::new(),
            done: false,
        };
        Ok(Some(Box::pin(futures_util::stream::unfold(
            reader,
            Reader::next,
        ))))
    }
}

/// The state of one log being read.
struct Reader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    key: String,
    /// Where the next range read starts.
    offset: u64,
    size: u64,
    /// The start of a line whose end is in a later piece.
    carry: Vec<u8>,
    ready: VecDeque<Result<ArchivedLine>>,
    done: bool,
}

impl Reader {
    async fn next(mut self) -> Option<(Result<ArchivedLine>, Self)> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            if self.offset >= self.size {
                self.done = true;
                if self.carry.is_empty() {
                    return None;
                }
                let error = self.bad(
                    self.size - self.carry.len() as u64,
                    "the last line has no newline: the object was cut short",
                );
                return Some((Err(error), self));
            }
            let end = self.size.min(self.offset + READ_PIECE);
            match self.store.get_range(&self.path, self.offset..end).await {
                Ok(piece) => self.take(&piece),
                Err(source) => {
                    self.done = true;
                    let error = ArchiveError::Read {
                        key: self.key.clone(),
                        source,
                    };
                    return Some((Err(error), self));
                }
            }
        }
    }

    /// Splits a piece into lines, keeping an unfinished one for the next piece.
    fn take(&mut self, piece: &[u8]) {
        let base = self.offset - self.carry.len() as u64;
        self.offset += piece.len() as u64;
        let mut buffer = std::mem::take(&mut self.carry);
        buffer.extend_from_slice(piece);
        let mut start = 0;
        while let Some(newline) = buffer[start..].iter().position(|b| *b == b'\n') {
            let end = start + newline;
            match decode(&buffer[start..end]) {
                Ok(line) => self.ready.push_back(Ok(ArchivedLine {
                    line,
                    next: base + end as u64 + 1,
                })),
                Err(problem) => {
                    let error = self.bad(base + start as u64, &problem);
                    self.ready.push_back(Err(error));
                    self.done = true;
                    return;
                }
            }
            start = end + 1;
        }
        buffer.drain(..start);
        // A time, a space and the longest line the format allows.
        if buffer.len() > MAX_LINE + 64 {
            let error = self.bad(
                base + start as u64,
                "a line is longer than the format allows",
            );
            self.ready.push_back(Err(error));
            self.done = true;
            return;
        }
        self.carry = buffer;
    }

    fn bad(&self, offset: u64, problem: &str) -> ArchiveError {
        ArchiveError::BadLog {
            key: self.key.clone(),
            offset,
            problem: problem.to_owned(),
        }
    }
}
