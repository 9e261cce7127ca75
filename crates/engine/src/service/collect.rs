//! A build pod's collector handing its build's files over (issue 30), written once over
//! the store: who it is (the store asks its cluster), which build and which files it may
//! send ([`crate::collector`]), each file staged in the archive as it comes (within this
//! kubeci's slots and a deadline, [`super::uploads`]), then — when it says it is done —
//! the files staged for the build, within its limits, taken into place and committed
//! ([`crate::archive::commit`]) by one `done` at a time. No state spans two requests:
//! any replica takes any request; the archive's commit claim orders the `done`s, and
//! `outputs.json`, created once, is the commit point after which nothing of the build is
//! written again (an upload that ends later stays staged, never one of its files).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use kubeci_build::BuildRef;
use kubeci_results::limits::{Limits, Taken};
use kubeci_results::{ArtifactFile, BuildOutputs, RefusedFile};

use super::uploads::{within, FILE_DEADLINE, SLOT_WAIT};
use super::{BuildStore, Service};
use crate::api::RefusedList;
use crate::archive::commit::{commit_outputs, OpenReport, ReportSource};
use crate::archive::{
    ArchiveError, ArchiveErrorKind, BuildArchive, CommitClaim, FileChunks, FileKind, StagedFile,
    StepReadError,
};
use crate::collector::{authorize_file, authorize_pod, CollectRefusal, CollectingBuild};

/// The most refusals a collector's `done` may report, and the longest path and reason
/// kept of each: what it says is shown on the build's page, bounded.
pub const MAX_REPORTED_REFUSALS: usize = 1_000;
const MAX_REFUSAL_CHARS: usize = 1_024;

/// How long a `done` holds its build's commit: another `done` of the build waits (`503`)
/// meanwhile; one cut short is taken over after it.
pub const COMMIT_LEASE: std::time::Duration = std::time::Duration::from_secs(120);

fn unavailable(error: &ArchiveError) -> CollectRefusal {
    let status = if error.kind == ArchiveErrorKind::Unavailable {
        503
    } else {
        502
    };
    CollectRefusal::new(
        status,
        "archive-unavailable",
        format!("the archive: {error}"),
    )
}

fn cut(text: &str) -> String {
    let text: String = text.chars().take(MAX_REFUSAL_CHARS).collect();
    text.escape_default().to_string()
}

impl<S: BuildStore> Service<'_, S> {
    /// The build whose files `token`'s pod may hand over now, and the archive they go to.
    async fn collecting(
        &self,
        token: &str,
    ) -> Result<(CollectingBuild, Arc<dyn BuildArchive>), CollectRefusal> {
        let who = self.0.review_collector(token).await?;
        let archive = self.the_archive().ok_or_else(CollectRefusal::not_taken)?;
        let (pod, job) = self.0.collector_objects(&who);
        let build = authorize_pod(&who, pod.as_deref(), job.as_deref())?;
        match archive.outputs(build.build_ref()).await {
            Ok(None) => Ok((build, archive)),
            Ok(Some(_)) => Err(outputs_done_already(&build)),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Writes one file of `token`'s build, as `kind` at `path`, from `bytes` as they come,
    /// staged until its build's `done` ([`crate::archive::BuildArchive::put_staged`]);
    /// the bytes written. Past one file's limit nothing is written (413), nor past its
    /// deadline (408); past this kubeci's uploads at once, `503`.
    pub async fn put_output(
        &self,
        token: &str,
        kind: FileKind,
        path: &str,
        bytes: FileChunks,
    ) -> Result<u64, CollectRefusal> {
        let (build, archive) = self.collecting(token).await?;
        authorize_file(&build, kind, path)?;
        let at = build.build_ref();
        let slots = &self.0.common().uploads;
        let _slot = slots.take(at, SLOT_WAIT).await?;
        let limit = Limits::default().file_bytes;
        let over = Arc::new(AtomicBool::new(false));
        let late = Arc::new(AtomicBool::new(false));
        let counted = {
            let over = over.clone();
            let mut total = 0u64;
            within(bytes, FILE_DEADLINE, late.clone()).map(move |piece| {
                let piece = piece?;
                total += piece.len() as u64;
                if total > limit {
                    over.store(true, Ordering::Relaxed);
                    return Err(StepReadError::Lost("over the limit of one file".into()));
                }
                Ok(piece)
            })
        };
        let written = archive
            .put_staged(at, kind, path, Box::pin(counted), limit)
            .await;
        match written {
            Ok(size) => Ok(size),
            Err(_) if over.load(Ordering::Relaxed) => Err(CollectRefusal::new(
                413,
                "file-too-large",
                format!(
                    "`{}` is over the limit of one file ({})",
                    path.escape_debug(),
                    kubeci_results::limits::human_size(limit)
                ),
            )),
            Err(_) if late.load(Ordering::Relaxed) => Err(CollectRefusal::new(
                408,
                "file-too-slow",
                format!(
                    "`{}` did not arrive within {} s",
                    path.escape_debug(),
                    FILE_DEADLINE.as_secs()
                ),
            )),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// `token`'s build has handed over all its files (`refused`, read once the token is
    /// known: those its collector did not send, and why): the files staged for it, within
    /// its limits, become its files and are committed with its test results — by one
    /// `done` at a time, once. What it left. A `done` that fails gives its claim up, so
    /// the collector's next try goes ahead at once.
    pub async fn outputs_done(
        &self,
        token: &str,
        refused: RefusedList,
    ) -> Result<BuildOutputs, CollectRefusal> {
        let (build, archive) = self.collecting(token).await?;
        let refused = refused.await?;
        let at = build.build_ref();
        let now = jiff::Timestamp::now().as_second();
        let claimed = archive.claim_commit(at, lease_seconds(), now).await;
        let Some(claim) = claimed.map_err(|e| unavailable(&e))? else {
            return Err(being_committed(&build));
        };
        let mut commit = Commit {
            build: &build,
            archive: archive.as_ref(),
            shared: archive.clone(),
            claim,
        };
        let committed = commit.run(refused).await;
        if committed.is_err() {
            if let Err(error) = archive.release_commit(at, &commit.claim).await {
                tracing::warn!(%error, build = %at, "a failed commit's claim was not given up: the next waits for its lease");
            }
        }
        committed
    }
}

fn lease_seconds() -> i64 {
    i64::try_from(COMMIT_LEASE.as_secs()).unwrap_or(i64::MAX)
}

fn being_committed(build: &CollectingBuild) -> CollectRefusal {
    CollectRefusal::new(
        503,
        "outputs-committing",
        format!(
            "the files of build {} of job {}/{} are being committed: ask again in a few seconds",
            build.number, build.namespace, build.job
        ),
    )
}

/// One `done`'s commit of its build's files, under its claim.
struct Commit<'a> {
    build: &'a CollectingBuild,
    archive: &'a dyn BuildArchive,
    /// The same archive, for the reports opened as they are read.
    shared: Arc<dyn BuildArchive>,
    claim: CommitClaim,
}

impl Commit<'_> {
    /// Renews the claim when half its lease has gone (`always`: whatever its age); a
    /// claim another `done` took over (this one ran past its lease) stops this one.
    async fn hold(&mut self, always: bool) -> Result<(), CollectRefusal> {
        let now = jiff::Timestamp::now().as_second();
        if !always && now < self.claim.since.saturating_add(lease_seconds() / 2) {
            return Ok(());
        }
        let at = self.build.build_ref();
        let renewed = self.archive.renew_commit(at, &self.claim, now).await;
        match renewed.map_err(|e| unavailable(&e))? {
            Some(claim) => {
                self.claim = claim;
                Ok(())
            }
            None => Err(being_committed(self.build)),
        }
    }

    // Long on purpose: the commit's steps in their order (list, admit, take, read,
    // write), each a call of the archive under the claim.
    async fn run(&mut self, refused: Vec<RefusedFile>) -> Result<BuildOutputs, CollectRefusal> {
        let (build, archive) = (self.build, self.archive);
        let at = build.build_ref();
        // A `done` that took over a claim whose holder committed meanwhile moves nothing.
        let committed = archive.outputs(at).await.map_err(|e| unavailable(&e))?;
        if committed.is_some() {
            return Err(outputs_done_already(build));
        }
        let limits = Limits::default();
        let declares_reports = !build.declared.test_reports.is_empty();
        let found = found_files(archive, at, limits.files).await?;
        let mut outputs = BuildOutputs::new();
        outputs.refused = (refused.into_iter().take(MAX_REPORTED_REFUSALS))
            .map(|r| RefusedFile {
                path: cut(&r.path),
                why: cut(&r.why),
            })
            .collect();
        let mut reports = Vec::new();
        let mut taken = Taken::default();
        for (path, file) in found {
            let kinds = (file.report.is_some(), file.artifact.is_some());
            if let Err(why) = limits.admit(kinds, file.size, &mut taken) {
                outputs.refused.push(RefusedFile { path, why });
                continue;
            }
            for staged in [&file.report, &file.artifact]
                .into_iter()
                .flatten()
                .flatten()
            {
                self.hold(false).await?;
                let moved = archive.take_staged(at, staged).await;
                moved.map_err(|e| unavailable(&e))?;
            }
            if file.artifact.is_some() {
                outputs.artifacts.push(ArtifactFile {
                    path: path.clone(),
                    size: file.size,
                });
            }
            if file.report.is_some() {
                let bytes = open_report(self.shared.clone(), at, path.clone());
                reports.push(ReportSource { path, bytes });
            }
        }
        if let Err(error) = archive.clear_staged(at).await {
            tracing::warn!(%error, build = %at, "the build's staged uploads were not all deleted");
        }
        // The reports are read (and `tests.json` written) within the claim: renewed first.
        self.hold(true).await?;
        let committed = commit_outputs(archive, at, declares_reports, reports, outputs);
        committed
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or_else(|| outputs_done_already(build))
    }
}

/// One path of a build's files at its `done`: as which kinds it was handed over —
/// `Some(None)` already in place (a `done` cut short took it), `Some(Some(_))` staged —
/// and its size.
#[derive(Default)]
struct Found {
    report: Option<Option<StagedFile>>,
    artifact: Option<Option<StagedFile>>,
    size: u64,
}

impl Found {
    fn of_kind(&mut self, kind: FileKind) -> &mut Option<Option<StagedFile>> {
        match kind {
            FileKind::Report => &mut self.report,
            FileKind::Artifact => &mut self.artifact,
        }
    }
}

/// Each path of a build's files, whether staged or taken by an earlier `done` that was
/// cut short (a staged upload is newer, and replaces it); at most about `files` of each.
async fn found_files(
    archive: &dyn BuildArchive,
    at: BuildRef<'_>,
    files: usize,
) -> Result<BTreeMap<String, Found>, CollectRefusal> {
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for kind in [FileKind::Report, FileKind::Artifact] {
        let listed = archive.list_files(at, kind, files + 1).await;
        for (path, size) in listed.map_err(|e| unavailable(&e))? {
            let file = found.entry(path).or_default();
            *file.of_kind(kind) = Some(None);
            file.size = file.size.max(size);
        }
    }
    let staged = archive.list_staged(at, 2 * (files + 1)).await;
    for staged in staged.map_err(|e| unavailable(&e))? {
        let file = found.entry(staged.path.clone()).or_default();
        file.size = file.size.max(staged.size);
        let kind = staged.kind;
        *file.of_kind(kind) = Some(Some(staged));
    }
    Ok(found)
}

fn outputs_done_already(build: &CollectingBuild) -> CollectRefusal {
    CollectRefusal::new(
        409,
        "outputs-done",
        format!(
            "build {} of job {}/{} has handed over its files: nothing more is taken",
            build.number, build.namespace, build.job
        ),
    )
}

/// Opens report `path` of build `at` when the commit reads it: a failure that may pass
/// fails the commit (try again), any other is that report's.
fn open_report(archive: Arc<dyn BuildArchive>, at: BuildRef<'_>, path: String) -> OpenReport {
    let (namespace, job, number) = (at.namespace.to_owned(), at.job.to_owned(), at.number);
    Box::pin(async move {
        let at = BuildRef {
            namespace: &namespace,
            job: &job,
            number,
        };
        match archive.report(at, &path).await {
            Ok(Some((_, bytes))) => Ok(as_chunks(bytes)),
            Ok(None) => Err("it is gone from the archive".to_owned()),
            Err(e) if e.is_retryable() => {
                let failed: FileChunks = Box::pin(futures_util::stream::iter([Err(
                    StepReadError::Retry(e.to_string()),
                )]));
                Ok(failed)
            }
            Err(e) => Err(e.to_string()),
        }
    })
}

/// A file read back from the archive, as the commit reads a report: a failure that may
/// pass fails the commit (try again), any other is that report's.
fn as_chunks(bytes: crate::archive::ArchivedFile) -> FileChunks {
    Box::pin(bytes.map(|piece| {
        piece.map_err(|e| {
            if e.is_retryable() {
                StepReadError::Retry(e.to_string())
            } else {
                StepReadError::Lost(e.to_string())
            }
        })
    }))
}
