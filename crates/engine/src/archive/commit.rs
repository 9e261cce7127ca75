//! What a build left, committed — written once for both engines: its JUnit reports read
//! into its test results as their bytes come (from its workspace with the local engine,
//! from the archive where its build pod's collector put them with the Kubernetes engine),
//! then `tests.json` and `outputs.json`, the commit point.

use std::io::{BufReader, Read};

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use kubeci_build::BuildRef;
use kubeci_results::{
    summarize, BuildOutputs, JunitLimits, ReportFile, ResultsBuilder, TestResults,
};
use tokio::sync::mpsc;

use super::{ArchiveError, ArchiveErrorKind, BuildArchive, FileChunks, StepReadError};

/// One test report to read: its path (relative to the build's `workdir`) and how to open
/// it — its bytes, or why it cannot be read at all. Opened only when its turn comes: a
/// build's thousands of reports never hold thousands of files or connections open.
pub struct ReportSource {
    pub path: String,
    pub bytes: OpenReport,
}

/// Opens one report when it is read.
pub type OpenReport =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<FileChunks, String>> + Send>>;

/// How many pieces of a report wait between their reader and the parser.
const PIECES_IN_FLIGHT: usize = 4;

enum Piece {
    /// A report that cannot be read at all.
    Unreadable(ReportFile),
    Start(String),
    Bytes(Bytes),
    /// The end of a report: `Some` when it could not be read on (why).
    End(Option<String>),
}

/// A report's bytes as the parser reads them, from the pieces sent to it.
struct Pieces<'a> {
    from: &'a mut mpsc::Receiver<Piece>,
    current: Bytes,
    ended: bool,
}

impl Read for Pieces<'_> {
    fn read(&mut self, into: &mut [u8]) -> std::io::Result<usize> {
        while !self.current.has_remaining() {
            if self.ended {
                return Ok(0);
            }
            match self.from.blocking_recv() {
                Some(Piece::Bytes(bytes)) => self.current = bytes,
                Some(Piece::End(None)) | None => self.ended = true,
                Some(Piece::End(Some(why))) => {
                    self.ended = true;
                    return Err(std::io::Error::other(why));
                }
                Some(Piece::Start(_) | Piece::Unreadable(_)) => self.ended = true,
            }
        }
        let n = into.len().min(self.current.remaining());
        self.current.copy_to_slice(&mut into[..n]);
        Ok(n)
    }
}

impl Pieces<'_> {
    /// What the parser left of the report (it stopped early): read and dropped.
    fn drain(&mut self) {
        while !self.ended {
            match self.from.blocking_recv() {
                Some(Piece::Bytes(_)) => {}
                _ => self.ended = true,
            }
        }
    }
}

/// Reads each report, in the order given, into one build's results: the parsing on a
/// blocking thread, the bytes handed to it a few pieces at a time (bounded memory
/// whatever a report's size). A report that cannot be read is in the results with why;
/// one whose bytes failed in a way that may pass ([`StepReadError::Retry`]) fails it all
/// (nothing is committed; try again).
pub async fn read_reports(reports: Vec<ReportSource>) -> Result<TestResults, ArchiveError> {
    let (send, mut receive) = mpsc::channel::<Piece>(PIECES_IN_FLIGHT);
    let parser = tokio::task::spawn_blocking(move || {
        let mut results = ResultsBuilder::new();
        let limits = JunitLimits::default();
        loop {
            match receive.blocking_recv() {
                Some(Piece::Start(path)) => {
                    let mut pieces = Pieces {
                        from: &mut receive,
                        current: Bytes::new(),
                        ended: false,
                    };
                    results.read_junit(BufReader::new(&mut pieces), &path, &limits);
                    pieces.drain();
                }
                Some(Piece::Unreadable(file)) => results.file(file),
                _ => break,
            }
        }
        results.finish()
    });
    let mut failed = None;
    for report in reports {
        let mut bytes = match report.bytes.await {
            Ok(bytes) => bytes,
            Err(why) => {
                let _ = send
                    .send(Piece::Unreadable(unreadable(&report.path, &why)))
                    .await;
                continue;
            }
        };
        let _ = send.send(Piece::Start(report.path)).await;
        let mut end = None;
        while let Some(piece) = bytes.next().await {
            match piece {
                Ok(piece) => {
                    let _ = send.send(Piece::Bytes(piece)).await;
                }
                Err(error) => {
                    end = Some(error.to_string());
                    if let StepReadError::Retry(why) = error {
                        failed = Some(why);
                    }
                    break;
                }
            }
        }
        let _ = send.send(Piece::End(end)).await;
        if failed.is_some() {
            break;
        }
    }
    drop(send);
    let results = parser.await.map_err(|e| {
        ArchiveError::new(
            ArchiveErrorKind::Unavailable,
            format!("reading the test reports stopped: {e}"),
        )
    })?;
    match failed {
        Some(why) => Err(ArchiveError::new(
            ArchiveErrorKind::Unavailable,
            format!("a test report could not be read now: {why}"),
        )),
        None => Ok(results),
    }
}

/// Commits what build `build` left: its `reports` read into its test results (when its
/// job declares `test_reports`, even if none was found), then `tests.json` and
/// `outputs.json` — `outputs` with its tests' summary. Its artifacts must be written
/// before. What was committed; `None` when the build's files had been committed already
/// (once is all: nothing is written).
pub async fn commit_outputs(
    archive: &dyn BuildArchive,
    build: BuildRef<'_>,
    declares_reports: bool,
    reports: Vec<ReportSource>,
    mut outputs: BuildOutputs,
) -> Result<Option<BuildOutputs>, ArchiveError> {
    let results = if declares_reports {
        Some(read_reports(reports).await?)
    } else {
        None
    };
    outputs.tests = results.as_ref().map(summarize);
    let written = archive
        .put_outputs(build, results.as_ref(), &outputs)
        .await?;
    Ok(written.then_some(outputs))
}

/// A report that could not be opened, as its results record it.
pub fn unreadable(path: &str, why: &str) -> ReportFile {
    ReportFile {
        path: path.to_owned(),
        cases: 0,
        error: Some(format!("cannot be read: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A build may hand over 10,000 reports: each is opened only when it is read, so
    /// they never hold 10,000 files or connections open at once.
    #[tokio::test]
    async fn reports_are_opened_one_at_a_time_as_they_are_read() {
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let reports = (0..50)
            .map(|n| {
                let (open, most) = (open.clone(), most.clone());
                let bytes: OpenReport = Box::pin(async move {
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let xml =
                        format!("<testsuite><testcase classname=\"c\" name=\"t{n}\"/></testsuite>");
                    let closes = futures_util::stream::once(async move {
                        open.fetch_sub(1, Ordering::SeqCst);
                        Ok(Bytes::new())
                    });
                    let pieces = futures_util::stream::iter([Ok(Bytes::from(xml))]).chain(closes);
                    Ok(Box::pin(pieces) as FileChunks)
                });
                ReportSource {
                    path: format!("reports/{n}.xml"),
                    bytes,
                }
            })
            .collect();
        let results = read_reports(reports).await.unwrap();
        assert_eq!(results.counts.passed, 50);
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "at most one report open at a time"
        );
    }
}
