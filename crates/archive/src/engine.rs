//! [`Archive`] as the engine's [`BuildArchive`]: a build's record is `record.json`, its
//! steps' logs `logs/STEP.log`, its summary its entry in the job's index
//! (docs/archive.md). Errors become the engine's, by kind: the store unreachable (try
//! again later), an object that is not kubeci's (an error for that build only), or a
//! refusal.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use kubeci_build::{BuildRef, JobRef};
use kubeci_engine::archive::{
    ArchiveCall, ArchiveErrorKind, ArchiveRetention, ArchivedBuild, ArchivedFile, ArchivedLines,
    ArchivedStep, ArchivedSummary, BuildArchive, CommitClaim, FileChunks, FileKind, StagedFile,
    StepLog, StepReadError, TimedLine,
};
use kubeci_results::{BuildOutputs, TestResults};

use crate::error::ArchiveError;
use crate::index::{IndexEntry, Retention};
use crate::logformat::LogLine;
use crate::Archive;

/// The engine's error for `error`: its kind from what failed, its message naming the key.
pub fn engine_error(error: ArchiveError) -> kubeci_engine::archive::ArchiveError {
    let kind = match &error {
        e if e.is_retryable() => ArchiveErrorKind::Unavailable,
        ArchiveError::Decode { .. }
        | ArchiveError::TooLarge { .. }
        | ArchiveError::BadLog { .. }
        | ArchiveError::BadOffset { .. } => ArchiveErrorKind::BadObject,
        _ => ArchiveErrorKind::Refused,
    };
    let shown = error.shown();
    if shown != error.to_string() {
        tracing::warn!(%error, "the archive's store failed (its answer is logged, not shown)");
    }
    kubeci_engine::archive::ArchiveError::new(kind, shown)
}

/// A read of what a name that cannot be a key would name: nothing is archived there (a
/// request for a job `a/b` is not the archive's failure).
fn or_absent<T>(read: Result<T, ArchiveError>, absent: T) -> Result<T, ArchiveError> {
    match read {
        Err(ArchiveError::Name { .. }) => Ok(absent),
        read => read,
    }
}

fn job_of(build: BuildRef<'_>) -> JobRef<'_> {
    JobRef {
        namespace: build.namespace,
        job: build.job,
    }
}

/// The index entry of `record`: ended once it is complete.
fn entry(record: &ArchivedBuild) -> IndexEntry<&ArchivedSummary> {
    let summary = &record.build;
    IndexEntry {
        number: summary.number,
        started: summary.began().unwrap_or(record.archived_at),
        ended: record
            .complete
            .then(|| summary.finished_at.unwrap_or(record.archived_at)),
        summary,
    }
}

/// A file read back (an artifact, a raw report) as the engine takes it: its size and its
/// bytes, each failure the engine's; nothing there is `None`.
fn archived_file(
    read: Result<Option<(u64, crate::FileBytes)>, ArchiveError>,
) -> Result<Option<(u64, ArchivedFile)>, kubeci_engine::archive::ArchiveError> {
    let Some((size, bytes)) = or_absent(read, None).map_err(engine_error)? else {
        return Ok(None);
    };
    let bytes: ArchivedFile = Box::pin(bytes.map(|piece| piece.map_err(engine_error)));
    Ok(Some((size, bytes)))
}

/// A step's lines as `put_log` takes them: a [`StepReadError::Lost`] ends them (noted in
/// `lost`: the step is kept as read), a [`StepReadError::Retry`] fails the upload.
fn step_lines(
    step: StepLog,
    lost: Arc<Mutex<Option<String>>>,
) -> impl futures_core::Stream<Item = Result<LogLine, StepReadError>> + Send {
    futures_util::stream::unfold(Some(step.lines), move |lines| {
        let lost = lost.clone();
        async move {
            let mut lines = lines?;
            match lines.next().await? {
                Ok(line) => {
                    let line = LogLine {
                        time: line.time,
                        text: Bytes::from(line.text),
                    };
                    Some((Ok(line), Some(lines)))
                }
                Err(StepReadError::Lost(why)) => {
                    *lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                    None
                }
                Err(retry) => Some((Err(retry), None)),
            }
        }
    })
}

impl Archive {
    /// Writes each step's log; what the record says of them.
    async fn put_steps(
        &self,
        build: BuildRef<'_>,
        steps: Vec<StepLog>,
    ) -> Result<Vec<ArchivedStep>, ArchiveError> {
        let mut written = Vec::with_capacity(steps.len());
        for step in steps {
            let name = step.name.clone();
            let known = step.incomplete.clone();
            let lost = Arc::new(Mutex::new(None));
            let lines = step_lines(step, lost.clone());
            let put = self.put_log(build, &name, lines).await?;
            let lost = lost.lock().unwrap_or_else(|e| e.into_inner()).take();
            written.push(ArchivedStep {
                name,
                lines: put.lines,
                bytes: put.bytes,
                incomplete: known.or(lost),
            });
        }
        Ok(written)
    }
}

impl BuildArchive for Archive {
    fn put_first<'a>(&'a self, record: &'a ArchivedBuild) -> ArchiveCall<'a, ()> {
        Box::pin(async move {
            let build = record.build_ref();
            // Never over a complete record (two leaders, a mark lost after archiving).
            let stored: Option<ArchivedBuild> = self.record(build).await.unwrap_or(None);
            if !stored.is_some_and(|stored| stored.complete) {
                self.put_record(build, record).await.map_err(engine_error)?;
            }
            let entry = entry(record);
            (self.add_to_index(job_of(build), &[entry]).await).map_err(engine_error)
        })
    }

    fn put_complete<'a>(
        &'a self,
        mut record: ArchivedBuild,
        steps: Vec<StepLog>,
    ) -> ArchiveCall<'a, ArchivedBuild> {
        Box::pin(async move {
            let build = record.build_ref();
            let log = self.put_steps(build, steps).await.map_err(engine_error)?;
            // What it left, in its record and index entry: the job's pages and its tests'
            // history read no more than the index.
            let outputs = or_absent(self.outputs(build).await, None).map_err(engine_error)?;
            if let Some(outputs) = outputs {
                record.build.tests = outputs.tests;
                record.build.artifacts = outputs.artifacts.len() as u64;
            }
            record.complete = true;
            record.log = log;
            let build = record.build_ref();
            self.put_record(build, &record)
                .await
                .map_err(engine_error)?;
            let entry = entry(&record);
            (self.add_to_index(job_of(build), &[entry]).await).map_err(engine_error)?;
            Ok(record)
        })
    }

    fn record<'a>(&'a self, build: BuildRef<'a>) -> ArchiveCall<'a, Option<ArchivedBuild>> {
        Box::pin(async move {
            let record = or_absent(Archive::record(self, build).await, None);
            let record: Option<ArchivedBuild> = record.map_err(engine_error)?;
            let Some(record) = record else {
                return Ok(None);
            };
            if let Err(problem) = record.check(build) {
                let key = self.layout.record(build).unwrap_or_default();
                return Err(kubeci_engine::archive::ArchiveError::new(
                    ArchiveErrorKind::BadObject,
                    format!("{key} in the archive is not this build's record: {problem}"),
                ));
            }
            Ok(Some(record))
        })
    }

    fn page<'a>(
        &'a self,
        job: JobRef<'a>,
        before: Option<u64>,
        limit: usize,
    ) -> ArchiveCall<'a, Vec<ArchivedSummary>> {
        Box::pin(async move {
            let page = Archive::page::<ArchivedSummary>(self, job, before, limit).await;
            let page = or_absent(page, Vec::new()).map_err(engine_error)?;
            Ok(page.into_iter().map(|entry| entry.summary).collect())
        })
    }

    fn highest<'a>(&'a self, job: JobRef<'a>) -> ArchiveCall<'a, Option<u64>> {
        Box::pin(async move {
            let highest = Archive::highest(self, job).await;
            or_absent(highest, None).map_err(engine_error)
        })
    }

    fn step_log<'a>(
        &'a self,
        build: BuildRef<'a>,
        step: &'a str,
    ) -> ArchiveCall<'a, Option<ArchivedLines>> {
        Box::pin(async move {
            let lines = or_absent(self.log(build, step, 0).await, None);
            let Some(lines) = lines.map_err(engine_error)? else {
                return Ok(None);
            };
            let lines: ArchivedLines = Box::pin(lines.map(|line| {
                line.map(|read| TimedLine {
                    time: read.line.time,
                    text: read.line.text.to_vec(),
                })
                .map_err(engine_error)
            }));
            Ok(Some(lines))
        })
    }

    fn put_file<'a>(
        &'a self,
        build: BuildRef<'a>,
        path: &'a str,
        bytes: FileChunks,
        limit: u64,
    ) -> ArchiveCall<'a, u64> {
        Box::pin(async move {
            let written = Archive::put_file(self, build, path, bytes, limit).await;
            written.map_err(engine_error)
        })
    }

    fn put_staged<'a>(
        &'a self,
        build: BuildRef<'a>,
        kind: FileKind,
        path: &'a str,
        bytes: FileChunks,
        limit: u64,
    ) -> ArchiveCall<'a, u64> {
        Box::pin(async move {
            let written = Archive::put_staged(self, build, kind, path, bytes, limit).await;
            written.map_err(engine_error)
        })
    }

    fn list_staged<'a>(
        &'a self,
        build: BuildRef<'a>,
        at_most: usize,
    ) -> ArchiveCall<'a, Vec<StagedFile>> {
        Box::pin(async move {
            let listed = Archive::list_staged(self, build, at_most).await;
            listed.map_err(engine_error)
        })
    }

    fn take_staged<'a>(
        &'a self,
        build: BuildRef<'a>,
        staged: &'a StagedFile,
    ) -> ArchiveCall<'a, ()> {
        Box::pin(async move {
            let taken = Archive::take_staged(self, build, staged).await;
            taken.map_err(engine_error)
        })
    }

    fn clear_staged<'a>(&'a self, build: BuildRef<'a>) -> ArchiveCall<'a, ()> {
        Box::pin(async move {
            Archive::clear_staged(self, build)
                .await
                .map_err(engine_error)
        })
    }

    fn claim_commit<'a>(
        &'a self,
        build: BuildRef<'a>,
        lease_seconds: i64,
        now: i64,
    ) -> ArchiveCall<'a, Option<CommitClaim>> {
        Box::pin(async move {
            let claimed = Archive::claim_commit(self, build, lease_seconds, now).await;
            claimed.map_err(engine_error)
        })
    }

    fn renew_commit<'a>(
        &'a self,
        build: BuildRef<'a>,
        claim: &'a CommitClaim,
        now: i64,
    ) -> ArchiveCall<'a, Option<CommitClaim>> {
        Box::pin(async move {
            let renewed = Archive::renew_commit(self, build, claim, now).await;
            renewed.map_err(engine_error)
        })
    }

    fn release_commit<'a>(
        &'a self,
        build: BuildRef<'a>,
        claim: &'a CommitClaim,
    ) -> ArchiveCall<'a, ()> {
        Box::pin(async move {
            let released = Archive::release_commit(self, build, claim).await;
            released.map_err(engine_error)
        })
    }

    fn report<'a>(
        &'a self,
        build: BuildRef<'a>,
        path: &'a str,
    ) -> ArchiveCall<'a, Option<(u64, ArchivedFile)>> {
        Box::pin(async move { archived_file(Archive::report(self, build, path).await) })
    }

    fn list_files<'a>(
        &'a self,
        build: BuildRef<'a>,
        kind: FileKind,
        at_most: usize,
    ) -> ArchiveCall<'a, Vec<(String, u64)>> {
        Box::pin(async move {
            let listed = Archive::list_files(self, build, kind.dir(), at_most).await;
            listed.map_err(engine_error)
        })
    }

    fn put_outputs<'a>(
        &'a self,
        build: BuildRef<'a>,
        tests: Option<&'a TestResults>,
        outputs: &'a BuildOutputs,
    ) -> ArchiveCall<'a, bool> {
        Box::pin(async move {
            let written = Archive::put_outputs(self, build, tests, outputs).await;
            written.map_err(engine_error)
        })
    }

    fn outputs<'a>(&'a self, build: BuildRef<'a>) -> ArchiveCall<'a, Option<BuildOutputs>> {
        Box::pin(async move {
            let outputs = or_absent(Archive::outputs(self, build).await, None);
            outputs.map_err(engine_error)
        })
    }

    fn tests<'a>(&'a self, build: BuildRef<'a>) -> ArchiveCall<'a, Option<TestResults>> {
        Box::pin(async move {
            let tests = or_absent(Archive::tests(self, build).await, None);
            tests.map_err(engine_error)
        })
    }

    fn file<'a>(
        &'a self,
        build: BuildRef<'a>,
        path: &'a str,
    ) -> ArchiveCall<'a, Option<(u64, ArchivedFile)>> {
        Box::pin(async move { archived_file(Archive::file(self, build, path).await) })
    }

    fn apply_retention<'a>(
        &'a self,
        job: JobRef<'a>,
        retention: ArchiveRetention,
        now: i64,
        batch: usize,
    ) -> ArchiveCall<'a, Vec<u64>> {
        Box::pin(async move {
            let retention = Retention {
                max_age: retention.max_age.map(std::time::Duration::from_secs),
                max_count: retention
                    .max_count
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            };
            let now = jiff::Timestamp::from_second(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let deleted = Archive::apply_retention(self, job, &retention, now, batch).await;
            deleted.map_err(engine_error)
        })
    }
}
