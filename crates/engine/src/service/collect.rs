//! A build pod's collector handing its build's files over (issue 30), written once over
//! the store: who it is (the store asks its cluster), which build and which files it may
//! send ([`crate::collector`]), each file written to the archive as it comes, then — when
//! it says it is done — the build's files as the archive holds them, within the build's
//! limits, committed ([`crate::archive::commit`]). No state spans two requests: any
//! replica takes any request, and `outputs.json` is the commit point after which nothing
//! of the build is written again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use kubeci_results::limits::{Limits, Taken};
use kubeci_results::{ArtifactFile, BuildOutputs, RefusedFile};

use super::{BuildStore, Service};
use crate::archive::commit::{commit_outputs, ReportSource};
use crate::archive::{
    ArchiveError, ArchiveErrorKind, BuildArchive, FileChunks, FileKind, StepReadError,
};
use crate::collector::{authorize_file, authorize_pod, CollectRefusal, CollectingBuild};

/// The most refusals a collector's `done` may report, and the longest path and reason
/// kept of each: what it says is shown on the build's page, bounded.
pub const MAX_REPORTED_REFUSALS: usize = 1_000;
const MAX_REFUSAL_CHARS: usize = 1_024;

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
            Ok(Some(_)) => Err(CollectRefusal::new(
                409,
                "outputs-done",
                format!(
                    "build {} of job {}/{} has handed over its files: nothing more is taken",
                    build.number, build.namespace, build.job
                ),
            )),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Writes one file of `token`'s build, as `kind` at `path`, from `bytes` as they come;
    /// the bytes written. Past one file's limit nothing is written (413).
    pub async fn put_output(
        &self,
        token: &str,
        kind: FileKind,
        path: &str,
        bytes: FileChunks,
    ) -> Result<u64, CollectRefusal> {
        let (build, archive) = self.collecting(token).await?;
        authorize_file(&build, kind, path)?;
        let limit = Limits::default().file_bytes;
        let over = Arc::new(AtomicBool::new(false));
        let counted = {
            let over = over.clone();
            let mut total = 0u64;
            bytes.map(move |piece| {
                let piece = piece?;
                total += piece.len() as u64;
                if total > limit {
                    over.store(true, Ordering::Relaxed);
                    return Err(StepReadError::Lost("over the limit of one file".into()));
                }
                Ok(piece)
            })
        };
        let at = build.build_ref();
        let written = match kind {
            FileKind::Artifact => archive.put_file(at, path, Box::pin(counted), limit).await,
            FileKind::Report => archive.put_report(at, path, Box::pin(counted), limit).await,
        };
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
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// `token`'s build has handed over all its files (`refused`: those its collector did
    /// not send, and why): the files the archive holds for it, within its limits, are
    /// committed with its test results. What it left.
    pub async fn outputs_done(
        &self,
        token: &str,
        refused: Vec<RefusedFile>,
    ) -> Result<BuildOutputs, CollectRefusal> {
        let (build, archive) = self.collecting(token).await?;
        let at = build.build_ref();
        let limits = Limits::default();
        let declares_reports = !build.declared.test_reports.is_empty();
        // Each path with the kinds it was handed over as, and its size.
        let mut found: BTreeMap<String, (bool, bool, u64)> = BTreeMap::new();
        for kind in [FileKind::Report, FileKind::Artifact] {
            let listed = archive.list_files(at, kind, limits.files + 1).await;
            for (path, size) in listed.map_err(|e| unavailable(&e))? {
                let entry = found.entry(path).or_insert((false, false, 0));
                match kind {
                    FileKind::Report => entry.0 = true,
                    FileKind::Artifact => entry.1 = true,
                }
                entry.2 = entry.2.max(size);
            }
        }
        let mut outputs = BuildOutputs::new();
        outputs.refused = (refused.into_iter().take(MAX_REPORTED_REFUSALS))
            .map(|r| RefusedFile {
                path: cut(&r.path),
                why: cut(&r.why),
            })
            .collect();
        let mut reports = Vec::new();
        let mut taken = Taken::default();
        for (path, (report, artifact, size)) in found {
            if let Err(why) = limits.admit((report, artifact), size, &mut taken) {
                outputs.refused.push(RefusedFile { path, why });
                continue;
            }
            if artifact {
                outputs.artifacts.push(ArtifactFile {
                    path: path.clone(),
                    size,
                });
            }
            if report {
                let bytes = match archive.report(at, &path).await {
                    Ok(Some((_, bytes))) => Ok(as_chunks(bytes)),
                    Ok(None) => Err("it is gone from the archive".to_owned()),
                    Err(e) if e.is_retryable() => return Err(unavailable(&e)),
                    Err(e) => Err(e.to_string()),
                };
                reports.push(ReportSource { path, bytes });
            }
        }
        commit_outputs(archive.as_ref(), at, declares_reports, reports, outputs)
            .await
            .map_err(|e| unavailable(&e))
    }
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
