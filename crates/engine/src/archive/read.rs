//! An archived build's log as `Backend::log` serves it: its steps' lines one after the
//! other, each written as the live log wrote it (with its time when asked for), read
//! from the archive a piece at a time.

use std::sync::Arc;

use futures_util::StreamExt;
use kubeci_build::BuildRef;

use super::{ArchiveError, ArchiveErrorKind, ArchivedBuild, ArchivedLines, BuildArchive};
use crate::api::LogStream;

/// How many bytes of lines are sent together at most (a line more at most).
const CHUNK: usize = 64 * 1024;

/// Where reading an archived log's lines is.
struct Reading {
    archive: Arc<dyn BuildArchive>,
    record: ArchivedBuild,
    /// The next step to open.
    next_step: usize,
    lines: Option<ArchivedLines>,
    done: bool,
}

/// `record`'s lines from `archive`, every step's one after the other; an error ends them.
pub fn lines_of(archive: Arc<dyn BuildArchive>, record: ArchivedBuild) -> ArchivedLines {
    let reading = Reading {
        archive,
        record,
        next_step: 0,
        lines: None,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(reading, Reading::line))
}

/// `record`'s log from `archive`, as the live log showed it, in chunks of whole lines.
pub fn build_log(
    archive: Arc<dyn BuildArchive>,
    record: ArchivedBuild,
    timestamps: bool,
) -> LogStream {
    let lines = lines_of(archive, record);
    let chunks = futures_util::stream::unfold(Some(lines), move |lines| async move {
        let mut lines = lines?;
        let mut chunk = Vec::new();
        while chunk.len() < CHUNK {
            match lines.next().await {
                Some(Ok(line)) => chunk.extend(line.written(timestamps)),
                // What was read, then the error, as the next item.
                Some(Err(e)) if !chunk.is_empty() => {
                    let error = futures_util::stream::once(async move { Err(e) });
                    return Some((Ok(chunk), Some(Box::pin(error) as ArchivedLines)));
                }
                Some(Err(e)) => return Some((Err(e.to_string()), None)),
                None => return (!chunk.is_empty()).then_some((Ok(chunk), None)),
            }
        }
        Some((Ok(chunk), Some(lines)))
    });
    Box::pin(chunks)
}

impl Reading {
    /// The next line, or the error that ends them.
    async fn line(mut self) -> Option<(Result<super::TimedLine, ArchiveError>, Reading)> {
        loop {
            if self.done {
                return None;
            }
            let Some(lines) = self.lines.as_mut() else {
                match self.open_next().await {
                    Ok(true) => continue,
                    Ok(false) => return None,
                    Err(e) => {
                        self.done = true;
                        return Some((Err(e), self));
                    }
                }
            };
            match lines.next().await {
                Some(Ok(line)) => return Some((Ok(line), self)),
                Some(Err(e)) => {
                    self.done = true;
                    return Some((Err(e), self));
                }
                None => self.lines = None,
            }
        }
    }

    /// Opens the next step's lines; false when there is none.
    async fn open_next(&mut self) -> Result<bool, ArchiveError> {
        let Some(step) = self.record.log.get(self.next_step) else {
            return Ok(false);
        };
        self.next_step += 1;
        let build = BuildRef {
            namespace: &self.record.namespace,
            job: &self.record.job,
            number: self.record.build.number,
        };
        match self.archive.step_log(build, &step.name).await? {
            Some(lines) => self.lines = Some(lines),
            None if step.lines == 0 => {}
            None => {
                return Err(ArchiveError::new(
                    ArchiveErrorKind::BadObject,
                    format!(
                        "the log of step {} of {build} is missing from the archive",
                        step.name
                    ),
                ))
            }
        }
        Ok(true)
    }
}
