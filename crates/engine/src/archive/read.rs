//! An archived build's log as `Backend::log` serves it: its steps' lines one after the
//! other, each written as the live log wrote it (with its time when asked for), read
//! from the archive a piece at a time.

use std::sync::Arc;

use futures_util::StreamExt;
use kubeci_build::BuildRef;

use super::{ArchivedBuild, ArchivedLines, BuildArchive};
use crate::api::LogStream;

/// How many bytes of lines are sent together at most (a line more at most).
const CHUNK: usize = 64 * 1024;

/// Where reading an archived log is.
struct Reading {
    archive: Arc<dyn BuildArchive>,
    record: ArchivedBuild,
    timestamps: bool,
    /// The next step to open.
    next_step: usize,
    lines: Option<ArchivedLines>,
    done: bool,
}

/// `record`'s log from `archive`, as the live log showed it.
pub fn build_log(
    archive: Arc<dyn BuildArchive>,
    record: ArchivedBuild,
    timestamps: bool,
) -> LogStream {
    let reading = Reading {
        archive,
        record,
        timestamps,
        next_step: 0,
        lines: None,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(reading, Reading::chunk))
}

impl Reading {
    /// The next chunk of whole lines, or the error that ends the log.
    async fn chunk(mut self) -> Option<(Result<Vec<u8>, String>, Reading)> {
        if self.done {
            return None;
        }
        let mut chunk = Vec::new();
        while chunk.len() < CHUNK {
            let Some(lines) = self.lines.as_mut() else {
                match self.open_next().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => return self.fail(chunk, e),
                }
            };
            match lines.next().await {
                Some(Ok(line)) => chunk.extend(line.written(self.timestamps)),
                Some(Err(e)) => return self.fail(chunk, e.to_string()),
                None => self.lines = None,
            }
        }
        if chunk.is_empty() {
            return None;
        }
        Some((Ok(chunk), self))
    }

    /// Opens the next step's lines; false when there is none.
    async fn open_next(&mut self) -> Result<bool, String> {
        let Some(step) = self.record.log.get(self.next_step) else {
            return Ok(false);
        };
        self.next_step += 1;
        let build = BuildRef {
            namespace: &self.record.namespace,
            job: &self.record.job,
            number: self.record.build.number,
        };
        let opened = self.archive.step_log(build, &step.name).await;
        match opened.map_err(|e| e.to_string())? {
            Some(lines) => self.lines = Some(lines),
            None if step.lines == 0 => {}
            None => {
                return Err(format!(
                    "the log of step {} of {build} is missing from the archive",
                    step.name
                ))
            }
        }
        Ok(true)
    }

    /// What was read, then `error` (a log cut where its archive failed).
    fn fail(mut self, chunk: Vec<u8>, error: String) -> Option<(Result<Vec<u8>, String>, Reading)> {
        self.done = true;
        if chunk.is_empty() {
            return Some((Err(error), self));
        }
        // The error is the stream's next item.
        self.lines = Some(Box::pin(futures_util::stream::once(async move {
            Err(super::ArchiveError::new(
                super::ArchiveErrorKind::BadObject,
                error,
            ))
        })));
        self.done = false;
        self.record.log.clear();
        Some((Ok(chunk), self))
    }
}
