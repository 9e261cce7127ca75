//! A step's log: written as it streams in (one object, whole or not at all), read back as
//! a stream of lines with range reads.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use futures_util::StreamExt;
use kubeci_build::BuildRef;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::archive::Archive;
use crate::error::{ArchiveError, Result};
use crate::logformat::{decode, encode, LogLine, MAX_LINE};
use crate::upload::Upload;

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
    /// why. Memory stays within about one [`crate::PART_SIZE`] whatever the log's length.
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
        let mut lines = std::pin::pin!(lines);
        let mut upload = Upload::new(self.store.as_ref(), &key);
        let mut encoded = Vec::new();
        let mut count = 0;
        let outcome: Result<()> = async {
            while let Some(line) = lines.next().await {
                let line = line.map_err(|source| ArchiveError::LogSource {
                    key: key.clone(),
                    source: Box::new(source),
                })?;
                count += 1;
                encoded.clear();
                encode(&line, &mut encoded).map_err(|problem| ArchiveError::BadLine {
                    key: key.clone(),
                    line: count,
                    problem,
                })?;
                upload.push(&encoded).await?;
            }
            Ok(())
        }
        .await;
        if let Err(error) = outcome {
            upload.abort().await;
            return Err(error);
        }
        let bytes = upload.finish().await?;
        Ok(LogWritten {
            lines: count,
            bytes,
        })
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
